"""Throughput and peak memory of every classical method against GDAL's pansharpening, on one real scene.

    .venv/bin/python bench/bench_speed.py [--scene DIR] [--tiles N] [--methods a,b] [--large]

The real scene (default ``../shared/data/pansharpening/wv3_cristianics``) is enlarged by repeating it N x N
times into ``bench/out/`` (a GDAL VRT: nothing is copied), so the timings are not dominated by start-up.
Each run is a separate process: wall time from the parent, peak resident memory (``ru_maxrss``) from
``wait4``; every tool runs ``--repeat`` times in rounds and its fastest run counts (the machine may be busy).
Two times per tool: the whole process, and the work alone, timed inside the process once the tool's Python
libraries are imported (``osgeo`` for GDAL; ``torch`` and the backend for ours, which QGIS imports once per
session). Ours runs twice per round for that: a cold process that imports only the backend, as
``qgis_process`` or a session's first run does (torch then imports on a thread while GDAL opens the pair,
``device.preload_torch``), gives the process column; one that imported torch first gives the work column
(a later run in the same QGIS session). Every tool writes the same
output: a tiled GeoTIFF with our creation options (512-pixel blocks, DEFLATE level 1 on all CPUs, band
interleave, the horizontal predictor: floating-point for float types), in the MS data type; the previous
run's output is deleted first.
GDAL runs ``gdal_pansharpen.py`` (weighted Brovey, equal weights, cubic resampling, all CPUs).

``--large`` builds a PAN of at least 20000 x 20000 pixels (Landsat-7 FuseBox scene, uint8, ratio 2) and
reports the peak memory of ``brovey`` and ``mtf_glp_fs`` on it (target: under 2 GB).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from xml.sax.saxutils import escape

from osgeo import gdal

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "pansharpening")
OUT = os.path.join(HERE, "out")
# the creation options of ours (raster.TiledGeoTiff), PREDICTOR added by gdal_cmd for the output type
CREATION = ["TILED=YES", "BLOCKXSIZE=512", "BLOCKYSIZE=512", "COMPRESS=DEFLATE", "ZLEVEL=1", "NUM_THREADS=ALL_CPUS",
            "BIGTIFF=IF_SAFER", "INTERLEAVE=BAND"]
SENSORS = {"wv3_cristianics": 2, "landsat8_istanbul": 8, "zhengzhou_4band": 0}


def mosaic_vrt(src, dst, n):
    """A VRT that repeats the raster ``src`` n x n times (no pixel is copied)."""
    ds = gdal.Open(src)
    w, h, bands = ds.RasterXSize, ds.RasterYSize, ds.RasterCount
    gt = ds.GetGeoTransform()
    dtype = gdal.GetDataTypeName(ds.GetRasterBand(1).DataType)
    lines = [f'<VRTDataset rasterXSize="{w * n}" rasterYSize="{h * n}">',
             f"<SRS>{escape(ds.GetProjection())}</SRS>",
             f"<GeoTransform>{', '.join(repr(v) for v in gt)}</GeoTransform>"]
    for b in range(1, bands + 1):
        band = ds.GetRasterBand(b)
        lines.append(f'<VRTRasterBand dataType="{dtype}" band="{b}">')
        lines.append(f"<Description>{band.GetDescription()}</Description>")
        if band.GetNoDataValue() is not None:
            lines.append(f"<NoDataValue>{band.GetNoDataValue()}</NoDataValue>")
        for i in range(n):
            for j in range(n):
                lines.append(f'<SimpleSource><SourceFilename relativeToVRT="0">{os.path.abspath(src)}'
                             f'</SourceFilename><SourceBand>{b}</SourceBand>'
                             f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                             f'<DstRect xOff="{j * w}" yOff="{i * h}" xSize="{w}" ySize="{h}"/></SimpleSource>')
        lines.append("</VRTRasterBand>")
    lines.append("</VRTDataset>")
    with open(dst, "w") as f:
        f.write("\n".join(lines))
    return dst


WORK = "WORK_SECONDS"


def timed(cmd, env=None):
    """Run ``cmd``: wall seconds of the process, its peak RSS (MiB) and the work seconds it prints."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env or os.environ, stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with status {status}")
    work = [float(line.split()[1]) for line in stdout.splitlines() if line.startswith(WORK)]
    return seconds, usage.ru_maxrss / 1024.0, work[-1]


def _timed_python(setup, call):
    code = (f"import time\n{setup}\nt0 = time.perf_counter()\n{call}\n"
            f"print('{WORK}', time.perf_counter() - t0)")
    return [sys.executable, "-c", code]


def ours_cmd(method, pan, ms, out, sensor, tile, warm=False):
    """A cold process (the backend imported, torch not yet) or, ``warm``, one that imported torch first."""
    setup = ("import sys; sys.path.insert(0, %r); %s"
             "from panadapter_qgis.backend.pipeline import pansharpen" % (REPO, "import torch; " if warm else ""))
    return _timed_python(setup, "pansharpen(%r, %r, %r, %r, sensor=%d, tile_size=%d)"
                         % (pan, ms, out, method, sensor, tile))


def gdal_cmd(pan, ms, out):
    argv = ["gdal_pansharpen.py", "-q", "-r", "cubic", "-threads", "ALL_CPUS", pan, ms, out]
    floating = gdal.GetDataTypeName(gdal.Open(ms).GetRasterBand(1).DataType).startswith("Float")
    for co in CREATION + [f"PREDICTOR={3 if floating else 1}"]:
        argv += ["-co", co]
    # the script /usr/bin/gdal_pansharpen.py runs osgeo_utils.gdal_pansharpen.main, called here directly
    return _timed_python("from osgeo import gdal; from osgeo_utils.gdal_pansharpen import main",
                         "assert main(%r) == 0" % argv)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default=os.path.join(DATA, "wv3_cristianics"))
    ap.add_argument("--sensor", type=int, default=None)
    ap.add_argument("--tiles", type=int, default=10, help="repeat the scene N x N times (default 10)")
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--methods", default=None, help="comma-separated ids (default: all classical)")
    ap.add_argument("--large", action="store_true", help="peak memory on a >= 20000 x 20000 PAN")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the fastest counts (default 3)")
    args = ap.parse_args(argv)
    sys.path.insert(0, REPO)
    from panadapter_qgis.backend.classical import METHODS

    os.makedirs(OUT, exist_ok=True)
    if args.large:
        scene = os.path.join(DATA, "landsat7_fusebox", "scene_01")
        n = -(-20000 // gdal.Open(os.path.join(scene, "pan.tif")).RasterXSize)
        methods = (args.methods or "brovey,mtf_glp_fs").split(",")
        sensor = 8
    else:
        scene, n = args.scene, args.tiles
        methods = args.methods.split(",") if args.methods else list(METHODS)
        sensor = args.sensor if args.sensor is not None else SENSORS.get(os.path.basename(scene), 0)
    if not os.path.isdir(scene):
        sys.exit(f"scene not found: {scene} (pass --scene DIR with pan.tif and ms.tif)")
    pan = mosaic_vrt(os.path.join(scene, "pan.tif"), os.path.join(OUT, "pan.vrt"), n)
    ms = mosaic_vrt(os.path.join(scene, "ms.tif"), os.path.join(OUT, "ms.vrt"), n)
    pds = gdal.Open(pan)
    mpix = pds.RasterXSize * pds.RasterYSize / 1e6
    print(f"scene {scene} repeated {n}x{n}: PAN {pds.RasterXSize} x {pds.RasterYSize} ({mpix:.1f} MP), "
          f"MS {gdal.Open(ms).RasterCount} bands; {os.cpu_count()} CPUs; torch threads default")
    out = os.path.join(OUT, "fused.tif")
    # (name, process command, command for the work time or None: the same run gives both)
    commands = [] if args.large else [("gdal_pansharpen (Brovey)", gdal_cmd(pan, ms, out), None)]
    commands += [(m, ours_cmd(m, pan, ms, out, sensor, args.tile_size),
                  None if args.large else ours_cmd(m, pan, ms, out, sensor, args.tile_size, warm=True))
                 for m in methods]
    best = {}
    for _ in range(1 if args.large else max(1, args.repeat)):  # rounds over all tools: drift hits all alike
        for name, cmd, work_cmd in commands:
            if os.path.exists(out):  # deleting the last run's output is not part of the next one's work
                os.remove(out)
            secs, rss, work = timed(cmd)
            if work_cmd is not None:
                os.remove(out)
                _, rss_warm, work = timed(work_cmd)
                rss = max(rss, rss_warm)
            prev = best.get(name)
            best[name] = ((min(secs, prev[0]), max(rss, prev[1]), min(work, prev[2])) if prev
                          else (secs, rss, work))
    rows = [(name,) + best[name] for name, _, _ in commands]
    if os.path.exists(out):
        os.remove(out)
    ref = rows[0] if not args.large else None
    print(f"{'':26s} {'process':>8s} {'':>6s} {'work':>8s} {'work':>6s} {'':>9s} {'speed vs GDAL':>14s}")
    print(f"{'method':26s} {'seconds':>8s} {'MP/s':>6s} {'seconds':>8s} {'MP/s':>6s} {'peak MiB':>9s} "
          f"{'work':>6s} {'process':>7s}")
    for name, secs, rss, work in rows:
        rel = f"{ref[3] / work:5.2f}x {ref[1] / secs:6.2f}x" if ref else f"{'-':>6s} {'-':>7s}"
        print(f"{name:26s} {secs:8.2f} {mpix / secs:6.2f} {work:8.2f} {mpix / work:6.2f} {rss:9.0f} {rel}")
    with open(os.path.join(OUT, "bench_speed.json"), "w") as f:
        json.dump(dict(scene=scene, mosaic=n, megapixels=mpix,
                       columns=["tool", "process_s", "peak_mib", "work_s"], rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
