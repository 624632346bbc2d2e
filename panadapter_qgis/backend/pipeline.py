"""Entry point of the classical methods: PAN/MS files in, fused GeoTIFF out (docs/BACKEND_API.md).

layer paths -> ``raster`` (checks, aligned windows) -> statistics pass -> ``method.fit`` -> ``tiling`` loop
with ``method.apply`` on the device -> ``raster`` writer (renamed into place only on success).
"""
import math
import os
import time
from typing import Callable, Optional

import numpy as np

from . import cluster, raster
from .classical import create_method
from .classical.base import Moments, Stats, TileContext, feature_names, stack_features
from .device import (describe, import_torch, preload_torch, select_device, torch_owns_the_cores,
                     wait_for_preload)
from .errors import PansharpenError, user_errors
from .sensors import sensor_by_index
from .tiling import Tile, run_tiles, tile_grid

STATS_TILE_MS = 256              # fixed statistics tiling (MS pixels): statistics never depend on TILE_SIZE
MAX_STATS_PAN_PIXELS = 4 * 2**20  # above this, statistics use a regular subset of the statistics tiles
MAX_SUMMARY_SAMPLES = 4 * 2**20    # MS pixels per band sampled for percentiles


class TileData(tuple):
    """A tile's (pan, ms) arrays with their halo, nodata and non-finite values replaced by the image's fill
    values (so that no filter spreads them), and the masks of the pixels that were replaced (None: none)."""

    def __new__(cls, pan, ms, pan_bad=None, ms_bad=None):
        data = tuple.__new__(cls, (pan, ms))
        data.pan_bad, data.ms_bad = pan_bad, ms_bad
        return data


class TileSource:
    """Reads a tile with its halo as numpy arrays, and turns them into a TileContext on the device.

    Nodata of every kind (the declared value, NaN, +-inf) is masked: the pixels are filled with the image's
    per-band means of valid pixels (taken once, on a regular sample: they never depend on the tiling) before
    any filter sees them, the statistics skip every pixel whose filters reached a filled one, and the output
    is nodata where an input is.
    """

    def __init__(self, info: raster.PairInfo, halo: int, device, gains, pan_gain):
        self.info, self.halo, self.device = info, halo, device  # device: a torch.device or a callable giving one
        self.gains, self.pan_gain = gains, pan_gain
        self.reader = raster.PairReader(info)
        self.filler = raster.Filler(self.reader)

    def read(self, tile: Tile) -> TileData:
        r, h = self.info.ratio, self.halo
        ms = self.reader.read_ms(tile.r0 - h, tile.r1 + h, tile.c0 - h, tile.c1 + h)
        pan = self.reader.read_pan(r * (tile.r0 - h), r * (tile.r1 + h), r * (tile.c0 - h), r * (tile.c1 + h))
        (ms, ms_bad), (pan, pan_bad) = self.filler.ms(ms), self.filler.pan(pan)
        if ms_bad is None and pan_bad is None:
            return TileData(pan, ms)
        return TileData(pan, ms, *(np.zeros(a.shape[1:], bool) if m is None else m
                                   for a, m in ((pan, pan_bad), (ms, ms_bad))))

    def context(self, tile: Tile, data: TileData, reach: int = 0):
        """(TileContext, (PAN-scale, MS-scale) validity masks of the interior); ``reach``: MS pixels around
        a filled pixel that are also invalid (the statistics: the filters' reach)."""
        torch = import_torch()
        pan, ms = data
        if callable(self.device):
            self.device = self.device()
        pan_t = torch.from_numpy(pan).to(self.device)[None]
        ms_t = torch.from_numpy(ms).to(self.device)[None]
        ctx = TileContext(pan_t, ms_t, self.halo, self.info.ratio, self.gains, self.pan_gain)
        return ctx, self.valid_masks(data, tile, reach)

    def valid_masks(self, data: TileData, tile: Tile, reach: int = 0):
        """(PAN-scale mask, MS-scale mask) of the tile interior, or (None, None) when there is no nodata.
        ``reach`` > 0: a pixel within ``reach`` MS pixels of an invalid one (PAN or MS) is invalid too."""
        if data.ms_bad is None:
            return None, None
        torch = import_torch()
        h, r = self.halo, self.info.ratio
        ms_bad, pan_bad = data.ms_bad, data.pan_bad
        if reach:
            rows, cols = ms_bad.shape
            block_bad = ms_bad | pan_bad.reshape(rows, r, cols, r).any(axis=(1, 3))
            ms_bad = raster.dilate(block_bad, reach)
            pan_bad = np.repeat(np.repeat(ms_bad, r, 0), r, 1)
        ms_ok = ~ms_bad[h:h + tile.rows, h:h + tile.cols]
        pan_ok = ~pan_bad[r * h:r * (h + tile.rows), r * h:r * (h + tile.cols)]
        if ms_ok.all() and pan_ok.all():
            return None, None
        full = np.repeat(np.repeat(ms_ok, r, 0), r, 1) & pan_ok
        lr = ms_ok & pan_ok.reshape(tile.rows, r, tile.cols, r).all(axis=(1, 3))
        return torch.from_numpy(full).to(self.device), torch.from_numpy(lr).to(self.device)


def _band_summary(info: raster.PairInfo, percentile: bool = True):
    """Exact per-band minima and (when asked) a 1st percentile from a regular sample of the MS grid."""
    reader = raster.PairReader(info)
    step = max(1, int(math.ceil(math.sqrt(info.rows * info.cols / MAX_SUMMARY_SAMPLES))))
    mins = np.full(len(info.ms_bands), np.inf)
    samples = []
    for r0 in range(0, info.rows, 256):
        block = reader.read_ms(r0, min(r0 + 256, info.rows), 0, info.cols).reshape(len(info.ms_bands), -1)
        ok = ~raster.invalid_mask(block[:, None], info.ms_nodata)[0]
        valid = block[:, ok]
        if valid.size:
            mins = np.minimum(mins, valid.min(1))
        if percentile:
            rows = np.arange(r0, min(r0 + 256, info.rows))
            keep = (rows % step == 0)[:, None] & (np.arange(info.cols) % step == 0)[None, :]
            samples.append(block[:, keep.ravel() & ok])
    if not np.isfinite(mins).all():
        raise PansharpenError("The MS raster has no valid pixel in the PAN/MS overlap (all nodata).")
    return mins, (np.percentile(np.concatenate(samples, 1), 1, axis=1) if percentile else None)


def stats_tiles(info: raster.PairInfo):
    """The statistics tiles: a fixed grid, thinned to a regular lattice for large images (never TILE_SIZE)."""
    tiles = tile_grid(info.rows, info.cols, STATS_TILE_MS)
    pan_pixels = info.out_rows * info.out_cols
    if pan_pixels <= MAX_STATS_PAN_PIXELS:
        return tiles
    step = int(math.ceil(math.sqrt(pan_pixels / MAX_STATS_PAN_PIXELS)))
    n_rows, n_cols = -(-info.rows // STATS_TILE_MS), -(-info.cols // STATS_TILE_MS)
    off_r, off_c = min(step // 2, n_rows - 1), min(step // 2, n_cols - 1)
    return [t for t in tiles
            if (t.r0 // STATS_TILE_MS) % step == off_r and (t.c0 // STATS_TILE_MS) % step == off_c]


def compute_stats(method, source: TileSource, info: raster.PairInfo, progress=None, is_cancelled=None) -> Stats:
    """The method's global statistics: the band summary (GDAL and numpy only: it runs while torch may still
    be importing, ``device.preload_torch``), then the moments of the statistics tiles (torch)."""
    bands = len(info.ms_bands)
    stats = Stats()
    if method.needs_band_summary:
        stats.band_min, stats.band_p1 = _band_summary(info, percentile=method.needs_percentile(bands))
    if not method.pan_stats and not method.lr_stats:
        return stats
    with import_torch().inference_mode(), torch_owns_the_cores():
        _add_moments(method, source, info, stats, progress, is_cancelled)
    return stats


def _add_moments(method, source, info, stats, progress, is_cancelled):
    bands = len(info.ms_bands)
    stats.pan = Moments(feature_names(method.pan_stats, bands))
    stats.lr = Moments(feature_names(method.lr_stats, bands))
    tiles = stats_tiles(info)

    def process(tile, data):
        # a pixel whose filters reached a filled (nodata) pixel would bias the statistics
        ctx, (valid, valid_lr) = source.context(tile, data, reach=source.halo)
        if method.pan_stats:
            stats.pan.add(stack_features(ctx, method.pan_stats),
                          None if valid is None else valid.reshape(-1))
        if method.lr_stats:
            stats.lr.add(stack_features(ctx, method.lr_stats),
                         None if valid_lr is None else valid_lr.reshape(-1))

    run_tiles(tiles, source.read, process, progress=progress, is_cancelled=is_cancelled)
    for m in (stats.pan, stats.lr):
        if m.names and m.count < 2:
            raise PansharpenError("The PAN/MS overlap has too few valid pixels to estimate the method's "
                                  "statistics (check the nodata values).")


class FusionJob:
    """One PAN/MS pair and one classical method: checks, global statistics once, then any window or the
    whole scene. ``pansharpen`` writes a file with it; the map preview fuses canvas windows with it and gets
    exactly the pixels of a whole-scene run (the statistics are the whole image's).
    """

    @user_errors
    def __init__(self, pan_path, ms_path, method="mtf_glp_fs", *, sensor=0, ms_bands=None, device="auto",
                 log: Optional[Callable] = None):
        preload_torch()  # GDAL opens and checks the pair (and reads the band summary) meanwhile
        self.method = create_method(method)
        self.info = raster.inspect_pair(pan_path, ms_path, ms_bands, self.method.min_bands)
        self.log = log or (lambda msg: None)
        for note in self.info.notes:
            self.log(note)
        self._device_name, self._device = device, None
        sens = sensor_by_index(sensor)
        ms_count = raster.open_raster(ms_path, "MS").RasterCount
        gains = sens.gains_for(self.info.ms_bands, band_count=ms_count)
        self.source = TileSource(self.info, self.method.halo(self.info.ratio), lambda: self.device, gains,
                                 sens.pan_gain)
        self.params = None
        # what a cluster worker rebuilds this job from (``cluster.FusionTiles``), with ``params``
        self.args = dict(pan_path=pan_path, ms_path=ms_path, method=method, sensor=sensor, ms_bands=ms_bands,
                         device=device)

    @property
    def device(self):
        """The torch device (chosen on first use: the first use waits for torch's import)."""
        if self._device is None:
            self._device = select_device(self._device_name)
        return self._device

    @property
    def has_stats(self):
        m = self.method
        return bool(m.pan_stats or m.lr_stats or m.needs_band_summary)

    @user_errors
    def fit(self, progress=None, is_cancelled=None):
        """Global statistics and the method's coefficients (once; later calls return the cached ones)."""
        if self.params is None:
            with _guard(self.method):
                stats = compute_stats(self.method, self.source, self.info, progress, is_cancelled)
                self.params = self.method.fit(stats, len(self.info.ms_bands))
        return self.params

    def fuse_tile(self, tile: Tile, data):
        """(fused (C, r*rows, r*cols) float32 numpy, PAN-scale validity mask or None) of one tile."""
        ctx, (valid, _) = self.source.context(tile, data)
        fused = self.method.apply(ctx, self.params)[0].float().cpu().numpy()
        return fused, None if valid is None else valid.cpu().numpy()

    @user_errors
    def fuse_window(self, row0, row1, col0, col1, is_cancelled=None):
        """Float32 (C, row1-row0, col1-col0) of the output grid (PAN pixels), NaN where nodata.

        The window is clipped to the output grid; returns (array, geotransform of the window).
        """
        info, r = self.info, self.info.ratio
        row0, col0 = max(0, int(row0)), max(0, int(col0))
        row1, col1 = min(info.out_rows, int(row1)), min(info.out_cols, int(col1))
        if row1 <= row0 or col1 <= col0:
            raise PansharpenError("The requested window is outside the PAN/MS overlap.")
        self.fit(is_cancelled=is_cancelled)
        tile = Tile(row0 // r, -(-row1 // r), col0 // r, -(-col1 // r))
        torch = import_torch()
        with torch.inference_mode(), _guard(self.method), torch_owns_the_cores():
            fused, valid = self.fuse_tile(tile, self.source.read(tile))
        if valid is not None:
            fused[:, ~valid] = np.nan
        a, b = row0 - tile.r0 * r, col0 - tile.c0 * r
        gt = info.out_geotransform
        window_gt = (gt[0] + col0 * gt[1], gt[1], 0.0, gt[3] + row0 * gt[5], 0.0, gt[5])
        return fused[:, a:a + row1 - row0, b:b + col1 - col0], window_gt

    @user_errors
    def write(self, output_path, *, float32=False, tile_size=1024, progress=None, is_cancelled=None,
              executor=None):
        """The whole scene into the GeoTIFF ``output_path`` (renamed into place only on success);
        ``executor``: a ``cluster.Cluster`` whose workers fuse the tiles (None: this process)."""
        t_start = time.perf_counter()
        info, m = self.info, self.method
        if not output_path:
            raise PansharpenError("No output file was given.")
        for p in (info.pan_path, info.ms_path):
            if os.path.abspath(p) == os.path.abspath(output_path):
                raise PansharpenError("The output file must not be one of the input rasters.")
        split = 0.3 if self.has_stats and self.params is None else 0.0
        report = (lambda a, b: (lambda f: progress(a + (b - a) * f))) if progress else (lambda a, b: None)
        tile_ms = max(1, int(tile_size) // info.ratio)
        from osgeo import gdal
        gdal_cache = gdal.GetCacheMax()
        gdal.SetCacheMax(min(gdal_cache, 256 * 2**20))
        try:
            self.fit(report(0.0, split), is_cancelled)  # its band summary needs no torch (preload_torch)
            torch = import_torch()
            where = executor.label if executor is not None else f"device {describe(self.device)}"
            self.log(f"{m.name}: ratio {info.ratio}, output {info.out_cols} x {info.out_rows} x "
                     f"{len(info.ms_bands)}, {where}.")
            with torch.inference_mode(), _guard(m), torch_owns_the_cores():
                writer = raster.GeoTiffWriter(output_path, info, float32, m.id)
                try:
                    def process(tile, data):   # the fused tile is a fresh array: rounded in place
                        return writer.to_output(*self.fuse_tile(tile, data), consume=True)

                    def write(tile, out):
                        writer.write(out, tile.r0 * info.ratio, tile.c0 * info.ratio)

                    task = None
                    if executor is not None:
                        from .cluster import FusionTiles
                        task = FusionTiles(self, writer)
                    run_tiles(tile_grid(info.rows, info.cols, tile_ms), self.source.read, process, write,
                              report(split, 1.0), is_cancelled, executor=executor, task=task)
                    writer.commit()
                except BaseException:
                    writer.abort()
                    raise
        finally:
            gdal.SetCacheMax(gdal_cache)
        return dict(output=output_path, ratio=info.ratio, width=info.out_cols, height=info.out_rows,
                    bands=len(info.ms_bands), seconds=time.perf_counter() - t_start,
                    device=executor.label if executor is not None else str(self.device), method=m.id)


class _guard:
    """Turn torch/GDAL runtime failures inside a method into user errors."""

    def __init__(self, method):
        self.method = method

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is None or issubclass(kind, PansharpenError):
            return False
        if issubclass(kind, MemoryError):
            raise PansharpenError("Out of memory: lower TILE_SIZE and run again.") from exc
        if issubclass(kind, RuntimeError):
            raise PansharpenError(f"{self.method.name} failed: {exc}") from exc
        return False


@user_errors
def pansharpen(pan_path: str, ms_path: str, output_path: str, method: str = "mtf_glp_fs", *, sensor: int = 0,
               ms_bands=None, device="auto", tile_size: int = 1024, float32: bool = False,
               progress: Optional[Callable] = None, is_cancelled: Optional[Callable] = None,
               log: Optional[Callable] = None, scheduler: Optional[str] = None) -> dict:
    """Fuse ``pan_path`` and ``ms_path`` with a classical method into the GeoTIFF ``output_path``;
    ``scheduler``: the address of a Dask scheduler whose workers fuse the tiles (empty: this process)."""
    try:
        with cluster.connect(scheduler, log, (pan_path, ms_path)) as executor:
            job = FusionJob(pan_path, ms_path, method, sensor=sensor, ms_bands=ms_bands, device=device, log=log)
            return job.write(output_path, float32=float32, tile_size=tile_size, progress=progress,
                             is_cancelled=is_cancelled, executor=executor)
    finally:
        wait_for_preload()  # an early error must not leave torch half-imported on a thread (device.py)
