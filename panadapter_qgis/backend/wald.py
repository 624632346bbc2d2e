"""Wald's protocol on a PAN/MS pair: the reduced-resolution pair whose reference is the original MS.

MS: sensor MTF-matched Gaussian per band, then decimation by the ratio; PAN: its MTF Gaussian (or the
antialiased bicubic of MATLAB's imresize) and decimation. The outputs are georeferenced on the same
footprint with pixels ``ratio`` times larger, so any tool (ours or a peer) can fuse them like a real pair.
"""
import numpy as np

from . import mtf, raster
from .device import import_torch
from .errors import user_errors
from .sensors import sensor_by_index


@user_errors
def degrade_pair(pan_path, ms_path, out_pan, out_ms, sensor=0, pan_mode="mtf", ms_bands=None):
    """Write the reduced-resolution PAN and MS; returns (PairInfo of the input, ratio).

    The reference is the input MS restricted to the processing grid (``reference_ms``). The grid is cut to
    a multiple of the ratio so the reduced grids tile it exactly.
    """
    from osgeo import gdal
    torch = import_torch()
    info = raster.inspect_pair(pan_path, ms_path, ms_bands)
    r = info.ratio
    rows, cols = (info.rows // r) * r, (info.cols // r) * r
    reader = raster.PairReader(info)
    ms = reader.read_ms(0, rows, 0, cols)
    pan = reader.read_pan(0, rows * r, 0, cols * r)
    sens = sensor_by_index(sensor)
    count = raster.open_raster(ms_path, "MS").RasterCount
    gains = sens.gains_for(info.ms_bands, band_count=count)
    with torch.no_grad():
        pan_lr, ms_lr = mtf.wald_degrade(torch.from_numpy(pan)[None].double(), torch.from_numpy(ms)[None].double(),
                                         r, gains, sens.pan_gain, pan_mode)
    gt = info.out_geotransform
    for path, arr, px in ((out_pan, pan_lr[0].numpy(), r), (out_ms, ms_lr[0].numpy(), r * r)):
        ds = gdal.GetDriverByName("GTiff").Create(path, arr.shape[2], arr.shape[1], arr.shape[0],
                                                  gdal.GDT_Float32, ["COMPRESS=DEFLATE", "TILED=YES"])
        ds.SetGeoTransform((gt[0], gt[1] * px, 0.0, gt[3], 0.0, gt[5] * px))
        ds.SetProjection(info.crs_wkt)
        for i in range(arr.shape[0]):
            band = ds.GetRasterBand(i + 1)
            band.WriteArray(arr[i].astype(np.float32))
            if path == out_ms:
                band.SetDescription(info.band_descriptions[i])
        ds = None
    return info, ms[:, :rows, :cols]
