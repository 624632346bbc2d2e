"""What SSDiff is for, on real scenes its bundled weights never saw (Wald's reduced-resolution test).

The bundled SSDiff weights (``make weights``) were trained on the FuseBox scenes whose number is not a
multiple of 5; these tests use scenes 10 and 15. Scene adaptation (L-BAF) sees only the reduced pair.
"""
import numpy as np
import pytest
from osgeo import gdal

from panadapter_qgis.backend import metrics, weights
from panadapter_qgis.backend.adapt import finetune_scene, ssdiff_scene
from panadapter_qgis.backend.classical import METHODS
from panadapter_qgis.backend.pipeline import pansharpen
from panadapter_qgis.backend.wald import degrade_pair

pytestmark = pytest.mark.skipif(weights.bundled("ssdiff") is None, reason="no bundled SSDiff weights")


def _scores(reference, path, ratio):
    fused = gdal.Open(str(path)).ReadAsArray().astype(np.float64)
    ref, fus = metrics.cut_border(reference), metrics.cut_border(np.nan_to_num(fused))
    return metrics.ergas(ref, fus, ratio), metrics.sam(ref, fus)


def _reduced(data_dir, tmp_path, name, sensor, methods):
    scene = data_dir / "pansharpening" / name
    pan, ms = str(tmp_path / "pan_lr.tif"), str(tmp_path / "ms_lr.tif")
    info, reference = degrade_pair(str(scene / "pan.tif"), str(scene / "ms.tif"), pan, ms, sensor)
    reference = reference.astype(np.float64)
    classical = {}
    for method in methods:
        out = tmp_path / f"{method}.tif"
        pansharpen(pan, ms, str(out), method, sensor=sensor, float32=True)
        classical[method] = _scores(reference, out, info.ratio)
    return pan, ms, reference, info.ratio, classical


@pytest.mark.slow
def test_bundled_ssdiff_beats_mtf_glp_fs_on_an_unseen_landsat7_scene(data_dir, tmp_path):
    pan, ms, reference, ratio, classical = _reduced(data_dir, tmp_path, "landsat7_fusebox/scene_15", 8,
                                                    ["upsample", "mtf_glp_fs"])
    out = tmp_path / "ssdiff.tif"
    ssdiff_scene(pan, ms, str(out), sensor=8, float32=True, device="cpu")
    ergas, sam = _scores(reference, out, ratio)
    assert ergas < classical["mtf_glp_fs"][0] and sam < classical["mtf_glp_fs"][1], (ergas, sam, classical)


@pytest.mark.slow
def test_scene_adapted_ssdiff_beats_every_classical_method_on_an_unseen_scene(data_dir, tmp_path):
    """FuseBox scene 10: L-BAF on its own reduced pair, then 10 DDIM steps: better ERGAS and SAM than the
    best of the provider's twelve classical methods."""
    pan, ms, reference, ratio, classical = _reduced(data_dir, tmp_path, "landsat7_fusebox/scene_10", 8, METHODS)
    adapter, out = str(tmp_path / "a.pt"), tmp_path / "ssdiff.tif"
    finetune_scene(pan, ms, adapter, model="ssdiff", sensor=8, iterations=600, device="cpu")
    ssdiff_scene(pan, ms, str(out), adapter=adapter, sensor=8, float32=True, device="cpu")
    ergas, sam = _scores(reference, out, ratio)
    assert ergas < min(v[0] for v in classical.values()), (ergas, classical)
    assert sam < min(v[1] for v in classical.values()), (sam, classical)
