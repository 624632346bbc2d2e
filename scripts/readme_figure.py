#!/usr/bin/env python3
"""The README's picture: one real scene as upsampled MS | PAN | fused, side by side (PNG), made with the backend.

    readme_figure.py [--scene DIR] [--sensor N] [--method mtf_glp_fs] [--crop X,Y,SIZE] [--out PNG]

DIR holds pan.tif and ms.tif (default: the Landsat-7 FuseBox scene 05 of ../shared/data, USGS imagery in the
public domain). The crop is in PAN pixels. The MS and the fused panel share one 2-98 % stretch per band (the
fused crop's), so their colours compare; the PAN has its own. The data is read in place and never copied here.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
from osgeo import gdal
from PIL import Image, ImageDraw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))

from panadapter_qgis.backend.pipeline import pansharpen  # noqa: E402
from quicklook import guess_rgb_bands  # noqa: E402

gdal.UseExceptions()


def read_crop(path, bands, x, y, size):
    dataset = gdal.Open(path)
    return np.stack([dataset.GetRasterBand(b).ReadAsArray(x, y, size, size).astype(np.float64) for b in bands])


def limits(planes, low=2.0, high=98.0):
    return [np.percentile(p[np.isfinite(p)], [low, high]) for p in planes]


def to_uint8(planes, lims):
    out = [np.clip((p - lo) / max(hi - lo, 1e-12), 0, 1) for p, (lo, hi) in zip(planes, lims)]
    return (np.stack(out, axis=-1) * 255 + 0.5).astype(np.uint8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default=os.path.join(REPO, "..", "shared", "data", "pansharpening",
                                                    "landsat7_fusebox", "scene_05"))
    ap.add_argument("--sensor", type=int, default=8, help="SENSOR index (8: Landsat 7/8/9)")
    ap.add_argument("--method", default="mtf_glp_fs")
    ap.add_argument("--crop", default="200,200,320", help="X,Y,SIZE of the crop in PAN pixels")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "images", "fused_scene.png"))
    args = ap.parse_args(argv)
    x, y, size = (int(v) for v in args.crop.split(","))
    pan, ms = os.path.join(args.scene, "pan.tif"), os.path.join(args.scene, "ms.tif")
    rgb = guess_rgb_bands(gdal.Open(ms))
    with tempfile.TemporaryDirectory() as work:
        up, fused = os.path.join(work, "up.tif"), os.path.join(work, "fused.tif")
        pansharpen(pan, ms, up, "upsample", sensor=args.sensor, float32=True, device="cpu")
        pansharpen(pan, ms, fused, args.method, sensor=args.sensor, float32=True, device="cpu")
        fused_planes = read_crop(fused, rgb, x, y, size)
        lims = limits(fused_planes)
        panels = [to_uint8(read_crop(up, rgb, x, y, size), lims),
                  np.repeat(to_uint8(read_crop(pan, [1], x, y, size), limits(read_crop(pan, [1], x, y, size))),
                            3, axis=-1),
                  to_uint8(fused_planes, lims)]
    gap, label_h = 6, 18
    canvas = Image.new("RGB", (3 * size + 2 * gap, size + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (panel, label) in enumerate(zip(panels, ("MS, upsampled", "PAN", f"fused ({args.method})"))):
        canvas.paste(Image.fromarray(panel), (i * (size + gap), label_h))
        draw.text((i * (size + gap) + 4, 3), label, fill="black")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # A 256-colour palette keeps the PNG small (<= 300 KB) with no visible loss at this size.
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"Wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KB) from bands {rgb} of {ms}, crop {x},{y},{size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
