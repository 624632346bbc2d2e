#!/usr/bin/env python3
"""Where the deep models' inference time goes (issue 29, item 1): the bundled PanAdapter on a real scene,
timed per module (forward hooks on the model's parts, which ``torch.profiler`` confirms op by op with
``--ops``), for several tile sizes.

    .venv/bin/python bench/profile_deep.py [--scene DIR] [--size 512] [--tiles 64,128,256] [--ops]

Default scene: Landsat-7 FuseBox scene 10 (6 bands, ratio 2), its top-left ``--size`` PAN pixels. Prints a
markdown table (seconds per module, MP/s) and writes it to ``bench/out/profile_deep.md``. The time of a
module includes the modules it calls (the adapters run inside the ViT blocks).
"""
import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "pansharpening")

from panadapter_qgis.backend.adapt import load_pretrained  # noqa: E402
from panadapter_qgis.backend.deep import DeepJob  # noqa: E402


def hook_times(net):
    """{module name: seconds} filled by forward hooks on the model's children and grandchildren."""
    times, starts = defaultdict(float), {}

    def pre(module, _):
        starts[id(module)] = time.perf_counter()

    def post(module, _, __):
        times[module.profile_name] += time.perf_counter() - starts.pop(id(module))

    for name, child in net.named_children():
        for sub, module in [(name, child)] + [(f"{name}.{n}", m) for n, m in child.named_children()]:
            module.profile_name = sub
            module.register_forward_pre_hook(pre)
            module.register_forward_hook(post)
    return times


def main(argv=None):
    import torch
    from osgeo import gdal

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default=os.path.join(DATA, "landsat7_fusebox", "scene_10"))
    ap.add_argument("--sensor", type=int, default=8)
    ap.add_argument("--size", type=int, default=512, help="PAN pixels of the top-left crop")
    ap.add_argument("--tiles", default="64,128,256")
    ap.add_argument("--ops", action="store_true", help="also print torch.profiler's top operators (128 tiles)")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "profile_deep.md"))
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="profile-deep-")
    pan, ms = os.path.join(tmp, "pan.tif"), os.path.join(tmp, "ms.tif")
    ratio = round(gdal.Open(os.path.join(args.scene, "ms.tif")).GetGeoTransform()[1]
                  / gdal.Open(os.path.join(args.scene, "pan.tif")).GetGeoTransform()[1])
    gdal.Translate(pan, os.path.join(args.scene, "pan.tif"), srcWin=[0, 0, args.size, args.size])
    gdal.Translate(ms, os.path.join(args.scene, "ms.tif"), srcWin=[0, 0, args.size // ratio, args.size // ratio])
    bands = gdal.Open(ms).RasterCount
    mp = args.size ** 2 / 1e6
    lines = [f"# PanAdapter inference per module ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
             f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f} at the start)", "",
             f"Scene {os.path.basename(args.scene)}: {args.size} x {args.size} PAN, {bands} bands, ratio {ratio}; "
             "bundled weights, classical base MTF-GLP-HPM (the zero-shot choice and check are not included).", ""]
    rows = {}
    for tile in [int(t) for t in args.tiles.split(",")]:
        net, _ = load_pretrained("panadapter", bands=bands)
        times = hook_times(net)
        job = DeepJob(pan, ms, net, sensor=args.sensor, base_method="mtf_glp_hpm", tile_size=tile)
        t = time.perf_counter()
        job.write(os.path.join(tmp, f"out_{tile}.tif"), float32=True)
        total = time.perf_counter() - t
        rows[tile] = (total, dict(times))
        print(f"tile {tile}: {total:.1f} s, {mp / total:.3f} MP/s", flush=True)
    names = sorted({n for _, t in rows.values() for n in t}, key=lambda n: -max(t.get(n, 0) for _, t in rows.values()))
    lines += ["| module | " + " | ".join(f"tile {t} (s)" for t in rows) + " |",
              "|---|" + "---:|" * len(rows)]
    lines += [f"| {n} | " + " | ".join(f"{t.get(n, 0.0):.2f}" for _, t in rows.values()) + " |"
              for n in names if "." not in n or max(t.get(n, 0) for _, t in rows.values()) > 0.05 * min(
                  total for total, _ in rows.values())]
    lines += ["| **total** | " + " | ".join(f"**{total:.2f}**" for total, _ in rows.values()) + " |",
              "| MP/s | " + " | ".join(f"{mp / total:.3f}" for total, _ in rows.values()) + " |", ""]
    if args.ops:
        from torch.profiler import ProfilerActivity, profile

        net, _ = load_pretrained("panadapter", bands=bands)
        job = DeepJob(pan, ms, net, sensor=args.sensor, base_method="mtf_glp_hpm", tile_size=128)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            job.fuse_window(0, min(256, args.size), 0, min(256, args.size))
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        lines += ["torch.profiler, 256 x 256 PAN window, 128-pixel tiles, top operators by self time:", "",
                  "```", table, "```", ""]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
