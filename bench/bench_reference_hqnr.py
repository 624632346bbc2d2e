"""Where the truth stands on HQNR: at the reduced scale of Wald's protocol the reference (the original MS) is
the perfect fusion of the reduced pair, so the no-reference index can be checked against it there.

    .venv/bin/python bench/bench_quality.py --no-peers --work /tmp/bq --scenes landsat8_istanbul ...
    .venv/bin/python bench/bench_reference_hqnr.py --work /tmp/bq --scenes landsat8_istanbul ...

For each scene of a ``bench_quality.py`` work folder, D_lambda, D_s and HQNR of the reduced pair's
reference and of every fused raster in ``reduced/`` (computed on the reduced pair, as HQNR is computed on
the full pair), with each raster's ERGAS against the reference. A method whose HQNR there exceeds the
reference's is rewarded by the index for departing from the truth. The table is printed and written as
Markdown (``--out``).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [p for p in (REPO,) if p not in sys.path]

from bench.bench_quality import DEEP_ROWS, OUT, scene_folder, scenes_for, write_report  # noqa: E402
from panadapter_qgis.backend import assess  # noqa: E402
from panadapter_qgis.backend.classical import METHODS  # noqa: E402

REFERENCE = "reference"


def reference_rows(folder, sensor, rasters):
    """[(row, {d_lambda, d_s, hqnr, ergas})] of the reference and of ``rasters`` (names of ``folder/reduced/*.tif``),
    HQNR on the reduced pair ``pan_lr.tif``/``ms_lr.tif``, best HQNR first; the reference's ERGAS is 0."""
    reference = os.path.join(folder, "reference.tif")
    paths = [reference] + [os.path.join(folder, "reduced", name + ".tif") for name in rasters]
    full = assess.assess_full(paths, os.path.join(folder, "pan_lr.tif"), os.path.join(folder, "ms_lr.tif"),
                              sensor=sensor)
    reduced = assess.assess_reduced(paths[1:], reference, dim_cut=21, sensor=sensor) if rasters else {"rows": []}
    ergas = [0.0] + [row["ergas"] for row in reduced["rows"]]
    rows = [(name, {"d_lambda": row["d_lambda"], "d_s": row["d_s"], "hqnr": row["hqnr"], "ergas": e})
            for name, row, e in zip([REFERENCE] + list(rasters), full["rows"], ergas)]
    return sorted(rows, key=lambda r: -r[1]["hqnr"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="the --work folder of a bench_quality.py run")
    parser.add_argument("--scenes", default="default", help="as bench_quality.py's --scenes")
    parser.add_argument("--out", default=os.path.join(OUT, "reference_hqnr.md"))
    args = parser.parse_args(argv)
    lines = ["# HQNR of the reduced pairs: the reference (the truth) among the methods", "",
             "| scene | row | HQNR | D_λ | D_s | ERGAS | above the reference |", "|---|---|---:|---:|---:|---:|---|"]
    summary = []
    for scene in scenes_for(args.scenes, args.work):
        folder = scene_folder(args.work, scene)
        if not os.path.isfile(os.path.join(folder, "reference.tif")):
            continue
        rasters = [m for m in list(METHODS) + list(DEEP_ROWS)
                   if os.path.isfile(os.path.join(folder, "reduced", m + ".tif"))]
        rows = reference_rows(folder, scene.sensor, rasters)
        truth = dict(rows)[REFERENCE]["hqnr"]
        above = [name for name, v in rows if v["hqnr"] > truth]
        print(f"== {scene.name}: reference HQNR {truth:.4f}; above it: {', '.join(above) or 'none'}", flush=True)
        summary.append(f"- {scene.name}: {len(above)} of {len(rows) - 1} rasters score a higher HQNR than the truth")
        for name, v in rows:
            lines.append(f"| {scene.name} | {name} | {v['hqnr']:.4f} | {v['d_lambda']:.4f} | {v['d_s']:.4f} | "
                         f"{v['ergas']:.3f} | {'yes' if v['hqnr'] > truth else ''} |")
    lines += [""] + summary
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
