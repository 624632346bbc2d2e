#!/usr/bin/env python3
"""True-colour PNG quicklook of a multispectral GeoTIFF (2-98 % stretch per band), with GDAL and numpy.

    quicklook.py fused.tif fused.png [--bands R,G,B] [--max-size 2048]

Without --bands, the red, green and blue bands are found from the band descriptions ("... red ...");
failing that, from the band count: 8 bands -> 5,3,2 (WorldView order C,B,G,Y,R,RE,N1,N2),
4 -> 3,2,1 (B,G,R,NIR), otherwise 1,2,3 (one band: grey). Nodata and non-finite pixels are transparent.
"""
import argparse
import re
import sys

import numpy as np
from osgeo import gdal

gdal.UseExceptions()

COLOUR_WORDS = ("red", "green", "blue")


def guess_rgb_bands(dataset):
    """1-based band numbers (red, green, blue) of a dataset."""
    descriptions = [dataset.GetRasterBand(i + 1).GetDescription().lower() for i in range(dataset.RasterCount)]
    found = []
    for word in COLOUR_WORDS:
        matches = [i + 1 for i, text in enumerate(descriptions) if re.search(rf"\b{word}\b", text)]
        found.append(matches[0] if len(matches) == 1 else None)
    if None not in found:
        return found
    count = dataset.RasterCount
    if count == 8:
        return [5, 3, 2]
    if count == 4:
        return [3, 2, 1]
    if count >= 3:
        return [1, 2, 3]
    return [1, 1, 1]


def stretch(values, valid, low=2.0, high=98.0):
    """Map the low..high percentiles of the valid pixels to 0..255 (uint8)."""
    if not valid.any():
        return np.zeros(values.shape, np.uint8)
    lo, hi = np.percentile(values[valid], [low, high])
    scaled = (values.astype(np.float64) - lo) / max(hi - lo, 1e-12)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def quicklook(source, target, bands=None, max_size=2048):
    dataset = gdal.Open(source)
    bands = bands or guess_rgb_bands(dataset)
    scale = min(1.0, max_size / max(dataset.RasterXSize, dataset.RasterYSize))
    width = max(1, round(dataset.RasterXSize * scale))
    height = max(1, round(dataset.RasterYSize * scale))

    planes, valid = [], np.ones((height, width), bool)
    for number in bands:
        band = dataset.GetRasterBand(number)
        values = band.ReadAsArray(buf_xsize=width, buf_ysize=height,
                                  resample_alg=gdal.GRIORA_Average).astype(np.float64)
        ok = np.isfinite(values)
        nodata = band.GetNoDataValue()
        if nodata is not None:
            ok &= values != nodata
        planes.append(values)
        valid &= ok

    memory = gdal.GetDriverByName("MEM").Create("", width, height, 4, gdal.GDT_Byte)
    for index, values in enumerate(planes):
        memory.GetRasterBand(index + 1).WriteArray(stretch(values, valid) * valid)
    memory.GetRasterBand(4).WriteArray(valid.astype(np.uint8) * 255)
    gdal.GetDriverByName("PNG").CreateCopy(target, memory)
    return bands


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--bands", help="1-based red,green,blue band numbers, e.g. 5,3,2")
    parser.add_argument("--max-size", type=int, default=2048, help="longest side of the PNG in pixels")
    args = parser.parse_args(argv)
    bands = [int(b) for b in args.bands.split(",")] if args.bands else None
    used = quicklook(args.source, args.target, bands, args.max_size)
    print(f"Quicklook {args.target} from bands {','.join(map(str, used))} of {args.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
