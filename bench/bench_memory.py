#!/usr/bin/env python3
"""Peak memory of ``panadapter:panadapter`` on a 20000 x 20000 PAN (issue 29, item 2), through ``qgis_process``.

    .venv/bin/python bench/bench_memory.py [--side 20000] [--seconds 300]

The PAN and MS are Landsat-7 FuseBox scene 10 repeated in a mosaic (a VRT) to at least ``--side`` PAN pixels a
side (6 bands, ratio 2). On a 2-core CPU the whole run would take days, so it runs for ``--seconds`` and is then
stopped with SIGTERM (which removes the partial output): by then the run has chosen its classical base, checked
the model one scale down, taken the whole-image statistics, opened its writer and fused tiles, and from there
its memory is bounded by the tile loop (tiles in flight, never the image size). ``/usr/bin/time`` gives the
process's peak resident memory. Target: under 3 GB. Writes ``bench/out/memory.md``.
"""
import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_deep_speed import QGIS_PROCESS, qgis_env  # noqa: E402
from bench_gpu import SCENE, SENSOR, mosaic  # noqa: E402


def main(argv=None):
    from osgeo import gdal

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=20000)
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--scene", default=SCENE, help="a folder with pan.tif and ms.tif (default FuseBox scene 10)")
    ap.add_argument("--sensor", type=int, default=SENSOR)
    ap.add_argument("--weights", default="", help="WEIGHTS (a .pt; default the bundled choice, which on this "
                    "Landsat-7 mosaic may be the Landsat-7 weights and their 128-pixel tiles)")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "memory.md"))
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-memory-")
    side = gdal.Open(os.path.join(args.scene, "pan.tif")).RasterXSize
    copies = math.ceil(args.side / side)
    pan, ms = os.path.join(tmp, "pan.vrt"), os.path.join(tmp, "ms.vrt")
    mp = mosaic(os.path.join(args.scene, "pan.tif"), pan, copies)
    mosaic(os.path.join(args.scene, "ms.tif"), ms, copies)
    profile = os.path.join(tmp, "profile")
    env = qgis_env(profile)
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "panadapter_qgis"], env=env, capture_output=True, check=True)
    out = os.path.join(tmp, "fused.tif")
    t = time.time()
    ran = subprocess.run(["/usr/bin/time", "-v", "timeout", "-s", "TERM", str(args.seconds), QGIS_PROCESS, "run",
                          "panadapter:panadapter", f"--PAN={pan}", f"--MS={ms}", f"--SENSOR={args.sensor}",
                          f"--OUTPUT={out}"] + ([f"--WEIGHTS={args.weights}"] if args.weights else []),
                         env=env, capture_output=True, text=True)
    seconds = time.time() - t
    said = ran.stdout + ran.stderr
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", said).group(1))
    tiles = re.search(r"(\d+) tiles on", said)
    left = sorted(os.listdir(tmp))
    lines = [f"# Peak memory of panadapter:panadapter on a {copies * side} x {copies * side} PAN "
             f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)", "",
             f"Mosaic of {os.path.basename(os.path.normpath(args.scene))}: {mp:.0f} PAN MP, through qgis_process, "
             f"stopped by SIGTERM after {seconds:.0f} s (exit status {ran.returncode}).", "",
             f"- peak resident memory: **{peak_kb / 2**20:.2f} GiB** (target: under 3 GB)",
             f"- weights: {os.path.basename(args.weights) if args.weights else 'the bundled choice'}",
             f"- the tile loop was reached: {'yes, ' + tiles.group(1) + ' tiles' if tiles else 'NO'}",
             f"- files left in the output folder: {[f for f in left if f.startswith('fused')] or 'none'}"]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("\n".join(said.splitlines()[-40:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
