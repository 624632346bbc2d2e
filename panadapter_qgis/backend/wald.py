"""Wald's protocol on a PAN/MS pair: the reduced-resolution pair whose reference is the original MS.

MS: sensor MTF-matched Gaussian per band, then decimation by the ratio; PAN: its MTF Gaussian (or the
antialiased bicubic of MATLAB's imresize) and decimation (METHODS.md §3.1). The outputs are georeferenced on
the same footprint with pixels ``ratio`` times larger, so any tool (ours or a peer) can fuse them like a real
pair, and a fused result lands on the grid of the original MS, which is the reference:

* PAN_LR: on the MS-resolution processing grid (pixel = MS pixel, origin = the grid's origin);
* MS_LR: pixel = ``ratio`` x MS pixel, same origin, same CRS (the PAN's);
* the grid is cut to a multiple of the ratio, so that both reduced grids tile it exactly.

:func:`degrade` streams the rasters in tiles with a halo (memory bounded by the tile size, whatever the
raster size) and gives the same numbers as :func:`degrade_arrays`, the whole-array reference implementation;
borders are replicated beyond the processing grid in both, as ``imfilter(..., 'replicate')`` does.
"""
import dataclasses
import math
import os
import time
from typing import Callable, Optional

import numpy as np

from . import cluster, mtf, raster
from .device import import_torch
from .errors import Cancelled, PansharpenError, user_errors
from .sensors import sensor_by_index

PAN_MODES = ("mtf", "bicubic")  # PAN_MODE enum order of the degrade algorithm


def _pan_mode_name(pan_mode) -> str:
    if isinstance(pan_mode, int) and not isinstance(pan_mode, bool):
        if not 0 <= pan_mode < len(PAN_MODES):
            raise PansharpenError(f"Unknown PAN degradation {pan_mode}; choose 0 (MTF) or 1 (bicubic).")
        return PAN_MODES[pan_mode]
    if pan_mode not in PAN_MODES:
        raise PansharpenError(f"Unknown PAN degradation '{pan_mode}'; choose 'mtf' or 'bicubic'.")
    return pan_mode


def _kernels(ratio, ms_gains, pan_gain, pan_mode):
    """Per-band MS decimation kernels and the PAN one, with the parity of the ratio (``mtf.decimate``)."""
    ms_k = np.stack([mtf.decimation_kernel(mtf.mtf_kernel_1d(float(g), ratio), ratio) for g in ms_gains])
    pan_1d = mtf.mtf_kernel_1d(float(pan_gain), ratio) if pan_mode == "mtf" else \
        mtf.bicubic_decimation_kernel_1d(ratio)
    return ms_k, mtf.decimation_kernel(pan_1d, ratio)


def degrade_arrays(pan, ms, ratio: int, ms_gains, pan_gain: float, pan_mode="mtf"):
    """Whole-array Wald degradation: (1, H, W) PAN and (C, h, w) MS -> (1, h, w) PAN_LR, (C, h/r, w/r) MS_LR.

    ``H = ratio * h``; ``h`` and ``w`` multiples of the ratio. float64 numpy arrays out. The reference
    implementation that :func:`degrade` is tested against.
    """
    torch = import_torch()
    with torch.no_grad():
        pan_lr, ms_lr = mtf.wald_degrade(torch.from_numpy(np.asarray(pan, dtype=np.float64))[None],
                                         torch.from_numpy(np.asarray(ms, dtype=np.float64))[None],
                                         ratio, ms_gains, pan_gain, _pan_mode_name(pan_mode))
    return pan_lr[0].numpy(), ms_lr[0].numpy()


class _Output(raster.TiledGeoTiff):
    """A degraded raster: values rounded and clipped to its type, nodata where ``invalid``."""

    def write(self, data: np.ndarray, row: int, col: int, invalid: Optional[np.ndarray] = None):
        super().write(self.to_output(data, invalid), row, col)

    def to_output(self, data: np.ndarray, invalid: Optional[np.ndarray] = None) -> np.ndarray:
        """``data`` in the output type (what ``write`` writes); also run by cluster workers (``_OutputType``)."""
        out = data
        if self.vmin is not None:
            out = np.clip(np.rint(out), self.vmin, self.vmax)
        out = out.astype(self.np_type)
        if invalid is not None and self.nodata is not None:
            out[:, invalid] = self.nodata
        return out


class _OutputType:
    """An ``_Output``'s conversion without its file, for the cluster workers: they send output-typed blocks."""

    def __init__(self, output: _Output):
        self.np_type, self.vmin, self.vmax, self.nodata = output.np_type, output.vmin, output.vmax, output.nodata

    def to_output(self, data, invalid=None):
        return _Output.to_output(self, data, invalid)


def _blocks(bad: Optional[np.ndarray], factor: int) -> Optional[np.ndarray]:
    """(H, W) mask of the input's nodata pixels -> (H/f, W/f) mask of output pixels whose f x f input block
    holds one (None: none)."""
    if bad is None or not bad.any():
        return None
    h, w = bad.shape
    return bad.reshape(h // factor, factor, w // factor, factor).any(axis=(1, 3))


def _fitting_nodata(value, gdal_type):
    """The output's nodata value: the input's if the output type can hold it, else 0 (an integer type); NaN
    for a floating-point output of an input without one (it may still hold NaN or inf)."""
    _, vmin, vmax = raster.dtype_range(gdal_type)
    if vmin is None:
        return float("nan") if value is None else value
    if value is None:
        return None
    return value if not math.isnan(value) and vmin <= value <= vmax and float(value).is_integer() else 0.0


def _degrade_tile(reader, filler, tile, ratio, pad, ms_k, pan_k, reference=True):
    """The degraded blocks of one tile ``(a, b, c, d)`` (MS_LR rows a..b, cols c..d) with their nodata masks:
    ``((ms_lr, ms_lr_bad), (ms_in, ms_in_bad) or None, (pan_lr, pan_lr_bad))``; ``ms_in``: the reference's
    block (``reference``). The PAN/MS windows are read with ``pad`` pixels around them."""
    torch = import_torch()
    r, (a, b, c, d) = ratio, tile
    n_out = (b - a, d - c)
    with torch.no_grad():
        # MS rows r*a - pad .. r*b + pad: index q holds MS row r*a + q - pad
        ms, ms_bad = filler.ms(reader.read_ms(r * a - pad, r * b + pad, r * c - pad, r * d + pad))
        ms_lr = mtf.decimate(torch.from_numpy(ms).double()[None], ms_k, r, pad, n_out)[0].numpy()
        ms_in = ms[:, pad:pad + r * (b - a), pad:pad + r * (d - c)]
        bad_in = None if ms_bad is None else ms_bad[pad:pad + r * (b - a), pad:pad + r * (d - c)]
        ms_out = (ms_lr, _blocks(bad_in, r))
        ref_out = (ms_in, bad_in) if reference else None
        # PAN rows r*r*a - pad ..: PAN_LR rows r*a .. r*b (the MS grid)
        rr = r * r
        pan, pan_bad = filler.pan(reader.read_pan(rr * a - pad, rr * b + pad, rr * c - pad, rr * d + pad))
        pan_lr = mtf.decimate(torch.from_numpy(pan).double()[None], pan_k, r, pad,
                              (r * (b - a), r * (d - c)))[0].numpy()
        bad_in = None if pan_bad is None else pan_bad[pad:pad + rr * (b - a), pad:pad + rr * (d - c)]
    return ms_out, ref_out, (pan_lr, _blocks(bad_in, r))


class DegradeTiles:
    """``degrade``'s tiles on the cluster workers (``cluster.Cluster.run_tiles``): each worker thread opens
    the pair once (its own reader and nodata filler, whose means are the same everywhere: one regular sample
    of the whole image) and gives a tile's blocks already in the output types, so that this machine only
    writes them."""

    def __init__(self, pan_path, ms_path, ms_bands, rows, cols, ratio, pad, ms_k, pan_k, outputs):
        self.args = dict(pan_path=pan_path, ms_path=ms_path, ms_bands=ms_bands)
        self.rows, self.cols, self.ratio, self.pad, self.ms_k, self.pan_k = rows, cols, ratio, pad, ms_k, pan_k
        self.outputs = [None if o is None else _OutputType(o) for o in outputs]   # MS_LR, reference, PAN_LR

    def setup(self):
        info = raster.inspect_pair(self.args["pan_path"], self.args["ms_path"], self.args["ms_bands"])
        reader = raster.PairReader(dataclasses.replace(info, rows=self.rows, cols=self.cols))
        return reader, raster.Filler(reader)

    def __call__(self, job, tile):
        reader, filler = job
        blocks = _degrade_tile(reader, filler, tile, self.ratio, self.pad, self.ms_k, self.pan_k,
                               reference=self.outputs[1] is not None)
        return [None if part is None else out.to_output(*part) for part, out in zip(blocks, self.outputs)]


@user_errors
def degrade(pan_path: str, ms_path: str, out_pan: str, out_ms: str, *, sensor: int = 0, pan_mode="mtf",
            ms_bands=None, float32: bool = True, out_reference: Optional[str] = None, tile_size: int = 1024,
            progress: Optional[Callable] = None, is_cancelled: Optional[Callable] = None,
            log: Optional[Callable] = None, scheduler: Optional[str] = None) -> dict:
    """Write the reduced-resolution PAN and MS of Wald's protocol, streaming in tiles.

    ``sensor``: index into ``SENSORS`` (the MTF gains); ``pan_mode``: 'mtf' (0) or 'bicubic' (1);
    ``ms_bands``: 1-based MS band numbers (None: all); ``float32``: Float32 outputs, else the input data
    types (rounded and clipped); ``out_reference``: optionally also write the reference, the selected MS
    bands on the cut processing grid (needed when the MS is warped onto the PAN grid or when only some
    bands are selected; otherwise the original MS file is the reference); ``tile_size``: tile side in
    PAN pixels (rounded to a multiple of ratio^2); memory is a few times ``tile_size^2`` values.

    ``scheduler``: the address of a Dask scheduler whose workers read and degrade the tiles (this machine
    writes them, the same files); empty: this process.

    Returns ``dict(pan=, ms=, reference=, ratio=, rows=, cols=, bands=, seconds=, pan_mode=, sensor=)`` where
    ``rows`` x ``cols`` is the MS_LR size and ``reference`` the path of the reference (``out_reference`` or
    the input MS).
    """
    from osgeo import gdal
    t_start = time.perf_counter()
    log = log or (lambda message: None)
    torch = import_torch()
    pan_mode = _pan_mode_name(pan_mode)
    paths = [p for p in (out_pan, out_ms, out_reference) if p]
    if not out_pan or not out_ms:
        raise PansharpenError("Give both output files, the reduced PAN and the reduced MS.")
    if len({os.path.abspath(p) for p in paths}) != len(paths):
        raise PansharpenError("The output files must be different files.")
    for p in paths:
        if os.path.abspath(p) in (os.path.abspath(pan_path), os.path.abspath(ms_path)):
            raise PansharpenError("An output file must not be one of the input rasters.")
    info = raster.inspect_pair(pan_path, ms_path, ms_bands)
    for note in info.notes:
        log(note)
    r = info.ratio
    rows, cols = (info.rows // r) * r, (info.cols // r) * r
    if rows < r or cols < r:
        raise PansharpenError(f"The PAN/MS overlap ({info.rows} x {info.cols} MS pixels) is smaller than one "
                              f"reduced-resolution pixel ({r} x {r} MS pixels).")
    grid = dataclasses.replace(info, rows=rows, cols=cols)  # the reader replicates beyond the cut grid
    reader = raster.PairReader(grid)
    filler = raster.Filler(reader)
    sens = sensor_by_index(sensor)
    ms_count = raster.open_raster(ms_path, "MS").RasterCount
    gains = sens.gains_for(info.ms_bands, band_count=ms_count)
    ms_k, pan_k = _kernels(r, gains, sens.pan_gain, pan_mode)
    pad = r * (max(ms_k.shape[-1], pan_k.shape[-1]) // r + 1)

    pan_ds = raster.open_raster(pan_path, "PAN")
    pan_type = pan_ds.GetRasterBand(1).DataType
    gt = info.out_geotransform  # PAN pixel size, origin of the processing grid
    metadata = {"WALD_PROTOCOL": f"reduced resolution (ratio {r}) of {os.path.basename(pan_path)} + "
                                 f"{os.path.basename(ms_path)}",
                "RATIO": r, "SENSOR_MTF": sens.label, "PAN_DEGRADATION": pan_mode}
    bit_depth = raster.open_raster(ms_path, "MS").GetMetadataItem("BIT_DEPTH")
    if bit_depth:
        metadata["BIT_DEPTH"] = bit_depth
    ms_nodata = _fitting_nodata(info.ms_nodata, gdal.GDT_Float32 if float32 else info.ms_dtype)
    pan_nodata = _fitting_nodata(info.pan_nodata, gdal.GDT_Float32 if float32 else pan_type)
    f32 = gdal.GDT_Float32
    with cluster.connect(scheduler, log, (pan_path, ms_path)) as executor:
        outputs = []
        try:
            out_pan_w = _Output(out_pan, cols, rows, 1, f32 if float32 else pan_type,
                                (gt[0], gt[1] * r, 0.0, gt[3], 0.0, gt[5] * r), info.crs_wkt,
                                ["PAN, reduced resolution"], metadata, pan_nodata)
            outputs.append(out_pan_w)
            out_ms_w = _Output(out_ms, cols // r, rows // r, len(info.ms_bands), f32 if float32 else info.ms_dtype,
                               (gt[0], gt[1] * r * r, 0.0, gt[3], 0.0, gt[5] * r * r), info.crs_wkt,
                               info.band_descriptions, metadata, ms_nodata)
            outputs.append(out_ms_w)
            out_ref_w = None
            if out_reference:
                out_ref_w = _Output(out_reference, cols, rows, len(info.ms_bands),
                                    f32 if float32 else info.ms_dtype,
                                    (gt[0], gt[1] * r, 0.0, gt[3], 0.0, gt[5] * r), info.crs_wkt,
                                    info.band_descriptions,
                                    {k: v for k, v in metadata.items() if k != "PAN_DEGRADATION"}, ms_nodata)
                outputs.append(out_ref_w)

            lr_rows, lr_cols = rows // r, cols // r
            tile = max(1, int(tile_size) // (r * r))
            tiles = [(a, min(a + tile, lr_rows), c, min(c + tile, lr_cols))
                     for a in range(0, lr_rows, tile) for c in range(0, lr_cols, tile)]
            with torch.no_grad(), raster.limited_gdal_cache():
                if executor is None:
                    for i, (a, b, c, d) in enumerate(tiles):
                        if is_cancelled is not None and is_cancelled():
                            raise Cancelled()
                        ms_out, ref_out, pan_out = _degrade_tile(reader, filler, (a, b, c, d), r, pad, ms_k, pan_k,
                                                                 reference=out_ref_w is not None)
                        out_ms_w.write(ms_out[0], a, c, ms_out[1])
                        if out_ref_w is not None:
                            out_ref_w.write(ref_out[0], r * a, r * c, ref_out[1])
                        out_pan_w.write(pan_out[0], r * a, r * c, pan_out[1])
                        if progress is not None:
                            progress((i + 1) / len(tiles))
                else:
                    log(f"Wald's protocol: {len(tiles)} tiles on {executor.label}.")
                    task = DegradeTiles(pan_path, ms_path, ms_bands, rows, cols, r, pad, ms_k, pan_k,
                                        (out_ms_w, out_ref_w, out_pan_w))

                    def write(tile, blocks):    # already in the output types (the workers convert)
                        a, _, c, _ = tile
                        for output, block, at in zip((out_ms_w, out_ref_w, out_pan_w), blocks,
                                                     ((a, c), (r * a, r * c), (r * a, r * c))):
                            if output is not None:
                                raster.TiledGeoTiff.write(output, block, *at)

                    executor.run_tiles(tiles, task, write, progress, is_cancelled)
            for output in outputs:
                output.commit()
        except BaseException:
            for output in outputs:
                output.abort()
            raise
    reference = out_reference or ms_path
    if not out_reference and (info.warped or info.ms_bands != list(range(1, ms_count + 1))):
        log("The MS was warped onto the PAN grid or only some bands were selected: write the reference "
            "(the MS on the processing grid) too, and assess against it.")
    return dict(pan=out_pan, ms=out_ms, reference=reference, ratio=r, rows=rows // r, cols=cols // r,
                bands=len(info.ms_bands), seconds=time.perf_counter() - t_start, pan_mode=pan_mode,
                sensor=sens.key)


@user_errors
def degrade_pair(pan_path, ms_path, out_pan, out_ms, sensor=0, pan_mode="mtf", ms_bands=None):
    """Write the reduced-resolution PAN and MS (:func:`degrade`, Float32); returns (PairInfo, reference).

    ``reference``: (C, rows, cols) float32 array of the selected input MS bands on the processing grid cut
    to a multiple of the ratio: the ground truth of the reduced-resolution test. For tests and benchmarks
    on small scenes; the algorithm streams through :func:`degrade`.
    """
    degrade(pan_path, ms_path, out_pan, out_ms, sensor=sensor, pan_mode=pan_mode, ms_bands=ms_bands)
    info = raster.inspect_pair(pan_path, ms_path, ms_bands)
    r = info.ratio
    rows, cols = (info.rows // r) * r, (info.cols // r) * r
    return info, raster.PairReader(info).read_ms(0, rows, 0, cols)
