#!/usr/bin/env python3
"""Scores the bundled weights (PanAdapter, SSDiff) as they are (no scene adaptation) on held-out scenes and
writes the figures into their cards (``backend/weights/<name>.json``, key ``held_out_metrics``).

Reduced resolution (Wald's protocol, 21-pixel border cut) on the FuseBox scenes 05, 10, ..., 30, which
``scripts/train_weights.py`` never reads; upsampling and MTF-GLP-FS on the same degraded pairs for scale.
Part of ``make weights``.
"""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panadapter_qgis.backend import metrics, weights  # noqa: E402
from panadapter_qgis.backend.adapt import sharpen_scene, ssdiff_scene  # noqa: E402
from panadapter_qgis.backend.pipeline import pansharpen  # noqa: E402
from panadapter_qgis.backend.wald import degrade_pair  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pansharpening" / "landsat7_fusebox"


def scores(reference, path, ratio):
    fused = gdal.Open(path).ReadAsArray().astype(np.float64)
    ref, fus = metrics.cut_border(reference), metrics.cut_border(np.nan_to_num(fused))
    return dict(ergas=round(metrics.ergas(ref, fus, ratio), 4), sam=round(metrics.sam(ref, fus), 4))


SHARPEN = {"panadapter": sharpen_scene, "ssdiff": ssdiff_scene}


def main():
    models = [m for m in sys.argv[1:] or list(SHARPEN) if weights.bundled(m)]
    for model in models:
        score_model(model)


def score_model(model):
    card_path = weights.WEIGHTS_DIR / f"{weights.REGISTRY[model]}.json"
    card = json.loads(card_path.read_text())
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(5, 31, 5):
            scene = DATA / f"scene_{i:02d}"
            d = Path(tmp) / scene.name
            d.mkdir()
            pan, ms = str(d / "pan.tif"), str(d / "ms.tif")
            info, reference = degrade_pair(str(scene / "pan.tif"), str(scene / "ms.tif"), pan, ms, 8)
            reference = reference.astype(np.float64)
            row = {}
            for method in ("upsample", "mtf_glp_fs"):
                pansharpen(pan, ms, str(d / f"{method}.tif"), method, sensor=8, float32=True)
                row[method] = scores(reference, str(d / f"{method}.tif"), info.ratio)
            SHARPEN[model](pan, ms, str(d / "deep.tif"), sensor=8, float32=True, device="cpu")
            row[f"{model}_pretrained"] = scores(reference, str(d / "deep.tif"), info.ratio)
            table[scene.name] = row
            print(scene.name, row, flush=True)
    mean = {m: {k: round(float(np.mean([t[m][k] for t in table.values()])), 4) for k in ("ergas", "sam")}
            for m in next(iter(table.values()))}
    card["held_out_metrics"] = dict(
        protocol="reduced resolution (Wald, Landsat MTF), 21-pixel border cut; weights used as they are, "
                 "without scene adaptation", scenes=table, mean=mean)
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps(mean, indent=1))


if __name__ == "__main__":
    main()
