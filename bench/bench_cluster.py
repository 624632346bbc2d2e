#!/usr/bin/env python3
"""Throughput on a Dask cluster against in-process (issue 31, item 5): MTF-GLP-FS on a mosaic of ``--mp`` PAN
megapixels and PanAdapter (bundled weights, zero-shot) on ``--deep-mp``, each in this process and on a local
cluster of 1 and 2 worker processes (one thread each; this machine has 2 cores). The mosaic is Landsat-7
FuseBox scene 10 repeated (a VRT: every worker reads the same files). Checks that every cluster output equals
the in-process one; prints a markdown table and writes ``bench/out/cluster.md``.

    .venv/bin/python bench/bench_cluster.py [--mp 30] [--deep-mp 0.6]
"""
import argparse
import math
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from bench_gpu import SCENE, SENSOR, mosaic  # noqa: E402


def make_mosaic(tmp, name, mp):
    from osgeo import gdal

    side = gdal.Open(os.path.join(SCENE, "pan.tif")).RasterXSize
    copies = max(1, math.ceil(math.sqrt(mp * 1e6) / side))
    pan, ms = os.path.join(tmp, f"{name}_pan.vrt"), os.path.join(tmp, f"{name}_ms.vrt")
    got = mosaic(os.path.join(SCENE, "pan.tif"), pan, copies)
    mosaic(os.path.join(SCENE, "ms.tif"), ms, copies)
    return pan, ms, got


def main(argv=None):
    import distributed
    import numpy as np
    from osgeo import gdal

    from panadapter_qgis.backend.adapt import sharpen_scene
    from panadapter_qgis.backend.pipeline import pansharpen

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mp", type=float, default=30.0, help="PAN megapixels for MTF-GLP-FS")
    ap.add_argument("--deep-mp", type=float, default=0.6, help="PAN megapixels for PanAdapter")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "cluster.md"))
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-cluster-")
    jobs = {"mtf_glp_fs": make_mosaic(tmp, "classical", args.mp), "panadapter": make_mosaic(tmp, "deep", args.deep_mp)}

    def run(name, scheduler, out):
        pan, ms, _ = jobs[name]
        if name == "mtf_glp_fs":
            return pansharpen(pan, ms, out, "mtf_glp_fs", sensor=SENSOR, float32=True, scheduler=scheduler)
        return sharpen_scene(pan, ms, out, sensor=SENSOR, float32=True, scheduler=scheduler)

    rows = []
    for workers in (0, 1, 2):
        local = client = None
        if workers:
            local = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                             dashboard_address=None, env={"PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"})
            client = distributed.Client(local, set_as_default=False)
        try:
            for name in jobs:
                out = os.path.join(tmp, f"{name}_{workers}.tif")
                t = time.perf_counter()
                run(name, local.scheduler_address if local else None, out)
                seconds = time.perf_counter() - t
                same = ""
                if workers:
                    a = gdal.Open(os.path.join(tmp, f"{name}_0.tif")).ReadAsArray()
                    b = gdal.Open(out).ReadAsArray()
                    same = "identical" if np.array_equal(a, b) else f"max diff {float(np.abs(a - b).max()):.2g}"
                label = f"{workers} worker{'s' if workers > 1 else ''} x 1 thread" if workers else "in-process"
                rows.append((name, label, jobs[name][2], seconds, same))
                print(f"{name}, {label}: {seconds:.1f} s, {jobs[name][2] / seconds:.3f} MP/s {same}", flush=True)
        finally:
            if client is not None:
                client.close()
                local.close()
    lines = [f"# Dask cluster against in-process ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, load average "
             f"{os.getloadavg()[0]:.1f})", "", "Mosaics of Landsat-7 FuseBox scene 10 (6 bands, ratio 2); seconds "
             "include the cluster's start-of-run check, not its start.", "",
             "| method | where | PAN MP | s | MP/s | output |", "|---|---|---:|---:|---:|---|"]
    lines += [f"| {n} | {w} | {mp:.1f} | {s:.1f} | {mp / s:.3f} | {same or 'reference'} |" for n, w, mp, s, same in rows]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
