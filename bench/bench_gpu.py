#!/usr/bin/env python3
"""The deep models on a GPU machine (issue 29, item 3): ``make bench-gpu`` runs this as it is on a machine with
an NVIDIA GPU.

    .venv/bin/python bench/bench_gpu.py [--mp 100] [--steps 10] [--iterations 600] [--install]
    .venv/bin/python bench/bench_gpu.py --smoke     # a 1-MP run on whatever device there is (checks the script)

With ``--install``, a CPU-only torch in this venv is replaced by the CUDA build of the same version (PyTorch's
cu126 index) when ``nvidia-smi`` finds a GPU. The scene: Landsat-7 FuseBox scene 10 (6 bands, ratio 2) repeated in
a mosaic (a VRT, no copy) to at least ``--mp`` PAN megapixels. Measured: ``panadapter:panadapter`` (bundled
weights, zero-shot) and ``panadapter:ssdiff`` (``--steps``) inference in MP/s with the peak GPU memory and the
batch of tiles that ran (the CUDA out-of-memory back-off halves it), and ``panadapter:finetune`` at its defaults
on a 1-MP part. Targets on an H100: PanAdapter >= 50 MP/s, SSDiff (10 steps) >= 5 MP/s. Prints a markdown table
and writes it to ``bench/out/gpu.md``.
"""
import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "pansharpening")
# 6 bands: the bundled SSDiff weights' band count (PanAdapter's universal preset takes any)
SCENE = os.path.join(DATA, "landsat7_fusebox", "scene_10")
SENSOR = 8   # Landsat


def install_cuda_torch():
    """Replace a CPU-only torch with the CUDA build of the same version when this machine has an NVIDIA GPU."""
    import torch

    if torch.version.cuda or not shutil.which("nvidia-smi"):
        return
    version = torch.__version__.split("+")[0]
    print(f"Installing the CUDA build of torch {version} ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-deps", f"torch=={version}",
                    "--index-url", "https://download.pytorch.org/whl/cu126"], check=True)
    os.execv(sys.executable, [sys.executable] + [a for a in sys.argv if a != "--install"])


def mosaic(src, dst, copies):
    """``bench_speed.mosaic_vrt`` (``src`` repeated ``copies`` x ``copies`` times in a VRT); returns its megapixels."""
    from bench_speed import mosaic_vrt

    from osgeo import gdal

    mosaic_vrt(src, dst, copies)
    ds = gdal.Open(dst)
    return ds.RasterXSize * ds.RasterYSize / 1e6


def run(label, fn, mp, device):
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    notes = []
    t = time.perf_counter()
    result = fn(notes.append)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    batch = next((n for n in notes if "out of memory" in n), "no back-off")
    print(f"{label}: {seconds:.1f} s, {mp / seconds:.3f} MP/s, peak GPU memory {peak:.2f} GiB, {batch}", flush=True)
    return dict(label=label, seconds=seconds, mps=mp / seconds, peak=peak, batch=batch, result=result)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mp", type=float, default=100.0, help="PAN megapixels of the mosaic")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=600, help="finetune iterations (its default)")
    ap.add_argument("--batch", type=int, default=32, help="tiles per forward pass on the GPU")
    ap.add_argument("--install", action="store_true", help="install torch's CUDA build first when there is a GPU")
    ap.add_argument("--smoke", action="store_true", help="a 1-MP mosaic, 2 SSDiff steps, 20 iterations")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "gpu.md"))
    args = ap.parse_args(argv)
    if args.install:
        install_cuda_torch()
    import torch
    from osgeo import gdal

    from panadapter_qgis.backend.adapt import finetune_scene, sharpen_scene, ssdiff_scene
    from panadapter_qgis.backend.device import describe, select_device

    if args.smoke:
        args.mp, args.steps, args.iterations = 1.0, 2, 20
    device = select_device("auto")
    tmp = tempfile.mkdtemp(prefix="bench-gpu-")
    side = gdal.Open(os.path.join(SCENE, "pan.tif")).RasterXSize
    copies = max(1, math.ceil(math.sqrt(args.mp * 1e6) / side))
    pan, ms = os.path.join(tmp, "pan.vrt"), os.path.join(tmp, "ms.vrt")
    mp = mosaic(os.path.join(SCENE, "pan.tif"), pan, copies)
    mosaic(os.path.join(SCENE, "ms.tif"), ms, copies)
    print(f"{describe(device)}; mosaic {copies} x {copies} of FuseBox scene 10: {mp:.1f} PAN MP", flush=True)
    rows = [run("panadapter:panadapter (zero-shot)",
                lambda log: sharpen_scene(pan, ms, os.path.join(tmp, "pa.tif"), sensor=SENSOR, batch=args.batch,
                                          log=log), mp, device),
            run(f"panadapter:ssdiff ({args.steps} steps)",
                lambda log: ssdiff_scene(pan, ms, os.path.join(tmp, "sd.tif"), sensor=SENSOR, steps=args.steps,
                                         batch=args.batch, log=log), mp, device)]
    part_pan, part_ms = os.path.join(tmp, "part_pan.tif"), os.path.join(tmp, "part_ms.tif")
    gdal.Translate(part_pan, pan, srcWin=[0, 0, 1024, 1024])
    gdal.Translate(part_ms, ms, srcWin=[0, 0, 512, 512])
    rows.append(run(f"panadapter:finetune ({args.iterations} iterations, 1 MP)",
                    lambda log: finetune_scene(part_pan, part_ms, os.path.join(tmp, "adapter.pt"), sensor=SENSOR,
                                               iterations=args.iterations, log=log), 1.05, device))
    lines = [f"# Deep models on {describe(device)} ({time.strftime('%Y-%m-%d')}, torch {torch.__version__})", "",
             f"Mosaic of Landsat-7 FuseBox scene 10, {mp:.1f} PAN MP, 6 bands, ratio 2; batch {args.batch} tiles.",
             "",
             "| run | s | MP/s | peak GPU memory (GiB) | batch |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['label']} | {r['seconds']:.1f} | {r['mps']:.3f} | {r['peak']:.2f} | {r['batch']} |"
              for r in rows]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
