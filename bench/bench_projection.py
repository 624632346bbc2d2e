"""How much of a reduced-resolution gain Wald's own degradation model explains: the spectral-consistency
projection (``backend.consistency``) of each fused image of a ``bench_quality.py`` run, scored again.

    .venv/bin/python bench/bench_quality.py --no-peers --work /tmp/bq --scenes landsat8_istanbul ...
    .venv/bin/python bench/bench_projection.py --work /tmp/bq --scenes landsat8_istanbul \\
        [--methods bdsd_pc,panadapter] [--strengths 0,0.1,0.4]

For each scene and each fused raster that the quality bench left in its work folder (``reduced/`` and
``full/``), the projection onto the images whose sensor-MTF degradation is the MS (``strength`` 0: exact;
> 0: regularised, ``lambda`` = strength times the zero-frequency eigenvalue of ``D D^T``) is written beside
it and scored with the same indices: ERGAS and SAM against the reference at reduced resolution, D_lambda,
D_s and HQNR at full resolution. At reduced resolution the exact projection can only lower each band's
error (the reference degrades to the reduced MS by construction); at full resolution nothing guarantees
it. The table is printed and written as Markdown (``--out``).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [p for p in (REPO,) if p not in sys.path]

from bench.bench_quality import DEEP_ROWS, OUT, scene_folder, scenes_for, write_report  # noqa: E402
from panadapter_qgis.backend import assess, consistency  # noqa: E402
from panadapter_qgis.backend.classical import METHODS  # noqa: E402

FILES = {**{m: m for m in METHODS}, **{model: model for model in DEEP_ROWS}}  # row -> raster name


def score(scene, folder, tag, rasters, strengths, log):
    """[(row name, {index: value})] of the rasters of one resolution and their projections."""
    if tag == "reduced":
        pan, ms = os.path.join(folder, "pan_lr.tif"), os.path.join(folder, "ms_lr.tif")
    else:
        pan, ms = scene.pan, scene.ms
    paths = []
    for name in rasters:
        src = os.path.join(folder, tag, FILES[name] + ".tif")
        paths.append((name, src))
        for strength in strengths:
            out = os.path.join(folder, tag, f"{FILES[name]}_projected_{strength:g}.tif")
            consistency.project_raster(src, pan, ms, out, sensor=scene.sensor, strength=strength)
            paths.append((f"{name} + projection {strength:g}", out))
    if tag == "reduced":
        result = assess.assess_reduced([p for _, p in paths], os.path.join(folder, "reference.tif"), dim_cut=21,
                                       sensor=scene.sensor)
        keys = ("ergas", "sam")
    else:
        result = assess.assess_full([p for _, p in paths], pan, ms, sensor=scene.sensor)
        keys = ("d_lambda", "d_s", "hqnr")
    rows = [(name, {k: row[k] for k in keys}) for (name, _), row in zip(paths, result["rows"])]
    for name, values in rows:
        log(f"  {tag:7s} {name:36s} " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="the --work folder of a bench_quality.py run")
    parser.add_argument("--scenes", default="default", help="as bench_quality.py's --scenes")
    parser.add_argument("--methods", default=",".join(list(METHODS) + list(DEEP_ROWS)),
                        help="rows to project (classical method ids, panadapter, ssdiff); missing rasters are "
                             "skipped")
    parser.add_argument("--strengths", default="0,0.1,0.4", help="regularisation strengths (0: exact projection)")
    parser.add_argument("--out", default=os.path.join(OUT, "projection.md"))
    args = parser.parse_args(argv)
    strengths = [float(s) for s in args.strengths.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in FILES]
    if unknown or any(s < 0 for s in strengths):
        parser.error(f"unknown methods {unknown} or a negative strength")
    lines = ["# Spectral-consistency projection of the quality bench's rasters", "",
             "| scene | row | ERGAS | SAM° | D_λ | D_s | HQNR |", "|---|---|---:|---:|---:|---:|---:|"]
    for scene in scenes_for(args.scenes, args.work):
        folder = scene_folder(args.work, scene)
        rasters = [m for m in methods if all(os.path.isfile(os.path.join(folder, tag, FILES[m] + ".tif"))
                                             for tag in ("reduced", "full"))]
        if not rasters:
            continue
        print(f"== {scene.name}", flush=True)
        rr = score(scene, folder, "reduced", rasters, strengths, lambda m: print(m, flush=True))
        fr = dict(score(scene, folder, "full", rasters, strengths, lambda m: print(m, flush=True)))
        for name, values in rr:
            values = {**values, **fr[name]}
            lines.append(f"| {scene.name} | {name} | {values['ergas']:.3f} | {values['sam']:.3f} | "
                         f"{values['d_lambda']:.4f} | {values['d_s']:.4f} | {values['hqnr']:.4f} |")
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
