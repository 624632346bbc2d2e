"""The map preview: which part of the output grid the map canvas shows, at which decimation, and the RGB
composite that displays it. Pure Python (numpy, GDAL, the pipeline); never imports qgis.

How a canvas becomes a preview (``plan_preview``; the dock's help text says the same in the user's words):

* ``zoom`` is the size of a canvas pixel in PAN pixels. When ``zoom <= 1`` (zoomed in, or at the PAN's native
  resolution) the preview is the window of the output grid that covers the canvas extent, fused at full
  resolution by ``FusionJob.fuse_window``: the very pixels a whole-scene run writes (the method's statistics
  are the whole image's), never more of them than the canvas has pixels (plus one partly visible row and
  column at unaligned edges).
* When zoomed out, the preview grid is ``k`` times coarser than the PAN (``k`` the smallest integer >=
  ``zoom`` that keeps the preview within the canvas's pixel count) and aligned on multiples of ``k``, so
  panning does not shift it. If ``k`` is below the resolution ratio and the covering window holds at most
  ``MAX_FUSED_PIXELS`` PAN pixels, the window is fused at full resolution in strips and each k x k block is
  averaged: the block average of the whole-scene result.
* Otherwise (a screen pixel covers a whole MS pixel or more, so sharpening cannot be seen, or the window is too
  large to fuse quickly) the preview is the MS itself averaged onto a grid ``k`` PAN pixels wide, ``k`` a
  multiple of the ratio: no sharpening, marked "multispectral only".

Partial blocks at the edge of the output grid are averaged over the pixels they hold.

The deep pansharpening models (PanAdapter, SSDiff; with the adapter file of ``panadapter:finetune`` or their
pre-trained weights) preview the same way through ``DeepJob.fuse_window``: the tiles of the whole-scene run
that reach the window are fused, so the preview has the pixels of ``panadapter:panadapter`` and
``panadapter:ssdiff`` with their default tile sizes. Being far slower per pixel, they fuse at most
``DEEP_MAX_FUSED_PIXELS`` zoomed out.
"""
import math
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import PansharpenError

MAX_FUSED_PIXELS = 4 * 2**20   # PAN pixels fused for one zoomed-out preview (a few seconds on a CPU)
# the same for the deep models, 50-1000 times slower per pixel on a CPU (PanAdapter about 0.05 MP/s on two
# cores, SSDiff with 10 DDIM steps about 0.007 MP/s): a few seconds to half a minute zoomed out
DEEP_MAX_FUSED_PIXELS = 2**18
STRIP_PIXELS = 2**20           # PAN pixels per fuse_window call: bounds memory and the cancel delay
ALIGN_EPS = 1e-3               # fraction of a pixel under which an extent edge counts as on the grid
STRETCH_PERCENTILES = (2.0, 98.0)
MAX_STRETCH_SAMPLES = 2**20    # pixels per band sampled for the stretch

FUSED = "fused"
MULTISPECTRAL = "multispectral"


# --------------------------------------------------------------------------------------------------------
# Which window, at which decimation

@dataclass(frozen=True)
class PreviewPlan:
    """A window of the output grid (PAN pixels, rows row0..row1-1, cols col0..col1-1) shown at 1/``factor``.

    ``mode`` is ``FUSED`` (sharpened) or ``MULTISPECTRAL`` (the MS averaged, no sharpening); ``rows`` x
    ``cols`` is the size of the preview raster and ``geotransform`` its georeference (PAN CRS).
    """
    row0: int
    row1: int
    col0: int
    col1: int
    factor: int
    mode: str
    rows: int
    cols: int
    geotransform: Tuple[float, ...]
    zoom: float  # canvas pixel size in PAN pixels

    @property
    def fused_pixels(self) -> int:
        """PAN pixels that go through the fusion (0 in multispectral mode)."""
        return (self.row1 - self.row0) * (self.col1 - self.col0) if self.mode == FUSED else 0


def _covering_window(extent, geotransform, grid_rows, grid_cols):
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    gt = geotransform
    c_a, c_b = sorted(((xmin - gt[0]) / gt[1], (xmax - gt[0]) / gt[1]))
    r_a, r_b = sorted(((ymin - gt[3]) / gt[5], (ymax - gt[3]) / gt[5]))
    col0 = max(0, math.floor(c_a + ALIGN_EPS))
    col1 = min(grid_cols, math.ceil(c_b - ALIGN_EPS))
    row0 = max(0, math.floor(r_a + ALIGN_EPS))
    row1 = min(grid_rows, math.ceil(r_b - ALIGN_EPS))
    return row0, row1, col0, col1


def _aligned_plan(window, factor, mode, geotransform, grid_rows, grid_cols, zoom):
    row0, row1, col0, col1 = window
    k = factor
    row0, col0 = row0 // k * k, col0 // k * k
    row1, col1 = min(grid_rows, -(-row1 // k) * k), min(grid_cols, -(-col1 // k) * k)
    rows, cols = -(-(row1 - row0) // k), -(-(col1 - col0) // k)
    gt = geotransform
    out_gt = (gt[0] + col0 * gt[1], gt[1] * k, 0.0, gt[3] + row0 * gt[5], 0.0, gt[5] * k)
    return PreviewPlan(row0, row1, col0, col1, k, mode, rows, cols, out_gt, zoom)


def plan_preview(extent: Sequence[float], width_px: int, height_px: int, geotransform: Sequence[float],
                 grid_rows: int, grid_cols: int, ratio: int,
                 max_fused_pixels: int = MAX_FUSED_PIXELS) -> PreviewPlan:
    """The preview of a canvas showing ``extent`` = (xmin, ymin, xmax, ymax) in the PAN CRS on
    ``width_px`` x ``height_px`` screen pixels, for an output grid (``geotransform``, ``grid_rows`` x
    ``grid_cols`` PAN pixels, resolution ratio ``ratio``). See the module docstring for the rules.
    """
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    width_px, height_px = int(width_px), int(height_px)
    if width_px < 1 or height_px < 1 or not (xmax > xmin and ymax > ymin):
        raise PansharpenError("The map canvas has no size or an empty extent.")
    gt = tuple(float(v) for v in geotransform)
    zoom = max((xmax - xmin) / width_px / abs(gt[1]), (ymax - ymin) / height_px / abs(gt[5]))
    window = _covering_window((xmin, ymin, xmax, ymax), gt, grid_rows, grid_cols)
    if window[1] <= window[0] or window[3] <= window[2]:
        raise PansharpenError("The map shows no part of the PAN/MS overlap: pan or zoom to the images.")
    grid = (gt, grid_rows, grid_cols, zoom)
    if zoom <= 1 + ALIGN_EPS:
        return _aligned_plan(window, 1, FUSED, *grid)

    def fitting(k, step):
        plan = _aligned_plan(window, k, FUSED, *grid)
        while plan.rows > height_px or plan.cols > width_px:
            k += step
            plan = _aligned_plan(window, k, FUSED, *grid)
        return plan

    plan = fitting(max(2, math.ceil(zoom - ALIGN_EPS)), 1)
    if plan.factor < ratio and plan.fused_pixels <= max_fused_pixels:
        return plan
    plan = fitting(ratio * math.ceil(plan.factor / ratio), ratio)
    return _aligned_plan((plan.row0, plan.row1, plan.col0, plan.col1), plan.factor, MULTISPECTRAL, *grid)


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """(C, H, W) -> (C, ceil(H/k), ceil(W/k)): mean of each k x k block, ignoring NaN; a block with no valid
    pixel is NaN, partial blocks at the bottom and right average what they hold."""
    k = int(factor)
    if k == 1:
        return array
    c, h, w = array.shape
    rows, cols = -(-h // k), -(-w // k)
    padded = np.full((c, rows * k, cols * k), np.nan, dtype=np.float32)
    padded[:, :h, :w] = array
    blocks = padded.reshape(c, rows, k, cols, k)
    valid = np.isfinite(blocks)
    count = valid.sum(axis=(2, 4))
    total = np.where(valid, blocks, 0).sum(axis=(2, 4), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# True-colour composite

_COLOUR_WORDS = ("red", "green", "blue")

# Sensor index (DESIGN.md enum) -> (MS band count the table is for, or 0 for any; 1-based red, green, blue).
SENSOR_RGB = {
    1: (8, (5, 3, 2)),  # WorldView-2: coastal, blue, green, yellow, red, red edge, NIR1, NIR2
    2: (8, (5, 3, 2)),  # WorldView-3, same eight VNIR bands
    3: (4, (3, 2, 1)),  # QuickBird: blue, green, red, NIR
    4: (4, (3, 2, 1)),  # IKONOS
    5: (4, (3, 2, 1)),  # GeoEye-1
    6: (4, (3, 2, 1)),  # Pleiades
    7: (4, (3, 2, 1)),  # GaoFen-2
    8: (0, (1, 2, 3)),  # Landsat as the FuseBox scenes order it: red, green, blue, NIR, SWIR1, SWIR2
}


def _colour_band(descriptions, word):
    """Index of the one description naming ``word`` as a word ("red", not "infrared" nor "red edge")."""
    hits = [i for i, text in enumerate(descriptions)
            if re.search(rf"\b{word}\b", text.lower())
            and not re.search(r"\bred[\s_-]*edge\b|\brededge\b", text.lower())]
    return hits[0] if len(hits) == 1 else None


def rgb_bands(descriptions: Sequence[str], sensor: int = 0, source_bands: Optional[Sequence[int]] = None,
              source_count: Optional[int] = None) -> Tuple[int, int, int]:
    """1-based (red, green, blue) bands of a fused raster for a true-colour composite.

    ``descriptions`` are its bands' descriptions; ``source_bands`` the MS band numbers they come from
    (default 1..n) and ``source_count`` the MS band count. In this order: the bands whose descriptions name
    red, green and blue; the sensor's usual order (WorldView 5,3,2; four-band B,G,R,NIR sensors 3,2,1;
    Landsat as in FuseBox 1,2,3); by band count (8 -> 5,3,2, 4 -> 3,2,1); else 1,2,3, or grey.
    """
    descriptions = [d or "" for d in descriptions]
    n = len(descriptions)
    if n == 0:
        raise PansharpenError("The raster has no band to display.")
    found = [_colour_band(descriptions, word) for word in _COLOUR_WORDS]
    if None not in found and len(set(found)) == 3:
        return tuple(i + 1 for i in found)
    source_bands = list(source_bands) if source_bands else list(range(1, n + 1))
    count = source_count or max(source_bands)
    candidates = []
    table = SENSOR_RGB.get(int(sensor or 0))
    if table and (table[0] == 0 or table[0] == count):
        candidates.append(table[1])
    candidates.append({8: (5, 3, 2), 4: (3, 2, 1)}.get(count, (1, 2, 3)))
    for wanted in candidates:
        if all(b in source_bands for b in wanted):
            return tuple(source_bands.index(b) + 1 for b in wanted)
    if n >= 3:
        return 1, 2, 3
    return (1, 1, 1) if n == 1 else (1, 2, 2)


def stretch_limits(array: np.ndarray, low: float = STRETCH_PERCENTILES[0], high: float = STRETCH_PERCENTILES[1],
                   max_samples: int = MAX_STRETCH_SAMPLES) -> List[Tuple[float, float]]:
    """Per band of a (C, H, W) array, the ``low``..``high`` percentiles of its finite pixels (a cumulative
    count cut); (0, 1) for a band without any. A regular sample of at most ``max_samples`` pixels is used."""
    limits = []
    for band in np.asarray(array):
        values = band.ravel()
        step = max(1, values.size // max_samples)
        values = values[::step]
        values = values[np.isfinite(values)]
        if values.size == 0:
            limits.append((0.0, 1.0))
            continue
        lo, hi = (float(v) for v in np.percentile(values, [low, high]))
        if not hi > lo:
            hi = lo + max(1e-6, abs(lo) * 1e-6)
        limits.append((lo, hi))
    return limits


def file_stretch_limits(path: str, bands: Sequence[int], max_side: int = 1024, low: float = STRETCH_PERCENTILES[0],
                        high: float = STRETCH_PERCENTILES[1]) -> List[Tuple[float, float]]:
    """``stretch_limits`` of some bands of a raster file, from a read decimated to at most ``max_side``
    pixels a side (nodata excluded)."""
    from osgeo import gdal
    gdal.UseExceptions()
    ds = gdal.Open(path)
    scale = min(1.0, max_side / max(ds.RasterXSize, ds.RasterYSize))
    width, height = max(1, round(ds.RasterXSize * scale)), max(1, round(ds.RasterYSize * scale))
    planes = []
    for number in bands:
        band = ds.GetRasterBand(int(number))
        values = band.ReadAsArray(buf_xsize=width, buf_ysize=height).astype(np.float32)
        nodata = band.GetNoDataValue()
        if nodata is not None and not math.isnan(nodata):
            values[values == np.float32(nodata)] = np.nan
        planes.append(values)
    return stretch_limits(np.stack(planes), low, high)


# --------------------------------------------------------------------------------------------------------
# Fusion jobs kept between previews, and one preview

DEEP_METHODS = ("panadapter", "ssdiff")   # the deep models with a map preview (backend.adapt.deep_job)


def previewable(method: str) -> bool:
    """Whether the preview can fuse ``method`` window by window (the classical methods and the deep
    pansharpening models can)."""
    from .classical import METHODS
    return method in METHODS or method in DEEP_METHODS


@dataclass(frozen=True)
class PreviewRequest:
    """What to fuse: the same values as the Processing parameters (``ms_bands`` None = all). The deep
    models also take ``adapter`` (a file of ``panadapter:finetune``; None: the pre-trained weights) and
    SSDiff ``steps`` and ``seed``."""
    pan_path: str
    ms_path: str
    method: str = "mtf_glp_fs"
    sensor: int = 0
    ms_bands: Optional[Tuple[int, ...]] = None
    device: str = "auto"
    adapter: Optional[str] = None
    steps: int = 10
    seed: int = 0

    @property
    def deep(self) -> bool:
        return self.method in DEEP_METHODS


class CachedJob:
    """A FusionJob (statistics computed once, on first use) and what previews need beside it."""

    def __init__(self, job):
        self.job = job
        self.lock = threading.Lock()  # one preview at a time uses a job: its GDAL readers are not thread-safe
        self._reader = None

    @property
    def reader(self):
        """A PAN/MS reader of the job's pair (for the MS-only preview)."""
        if self._reader is None:
            from . import raster
            self._reader = raster.PairReader(self.job.info)
        return self._reader

    @property
    def ms_count(self) -> int:
        """Band count of the MS raster (the RGB choice depends on it)."""
        return self.reader.ms.RasterCount


class JobCache:
    """FusionJobs by request, so the statistics of a pair and a method are computed once per session."""

    def __init__(self, size: int = 4):
        self.size = size
        self._jobs = OrderedDict()
        self._lock = threading.Lock()

    def get(self, request: PreviewRequest, log: Optional[Callable] = None) -> CachedJob:
        with self._lock:
            entry = self._jobs.pop(request, None)
            if entry is None:
                if not previewable(request.method):
                    raise PansharpenError(f"The '{request.method}' method has no map preview yet; use "
                                          "'Run on whole scene'.")
                bands = list(request.ms_bands) if request.ms_bands else None
                if request.deep:   # the model is loaded (and its adapter checked) once per request
                    from .adapt import deep_job
                    job = deep_job(request.method, request.pan_path, request.ms_path, adapter=request.adapter,
                                   sensor=request.sensor, ms_bands=bands, device=request.device,
                                   steps=request.steps, seed=request.seed, log=log)
                else:
                    from .pipeline import FusionJob
                    job = FusionJob(request.pan_path, request.ms_path, request.method, sensor=request.sensor,
                                    ms_bands=bands, device=request.device, log=log)
                entry = CachedJob(job)
            self._jobs[request] = entry
            while len(self._jobs) > self.size:
                self._jobs.popitem(last=False)
            return entry

    def clear(self):
        with self._lock:
            self._jobs.clear()

    def __len__(self):
        return len(self._jobs)


@dataclass
class PreviewResult:
    path: str
    plan: PreviewPlan
    rgb: Tuple[int, int, int]
    limits: List[Tuple[float, float]]   # per band of the preview raster
    band_descriptions: List[str]
    crs_wkt: str
    method: str
    seconds: float
    device: str
    notes: List[str] = field(default_factory=list)


def _fuse_plan(entry: CachedJob, plan: PreviewPlan, progress, is_cancelled):
    job, k = entry.job, plan.factor
    cols = plan.col1 - plan.col0
    strip = max(k, (max(1, STRIP_PIXELS // cols) // k) * k)
    # a DeepJob has no statistics and reports progress and cancel by tile: one call, so that no tile is
    # fused twice for two strips
    deep = not hasattr(job, "fit")
    if deep:
        strip = plan.row1 - plan.row0
    starts = list(range(plan.row0, plan.row1, strip))
    done = 0.0
    if not deep and job.params is None:  # first preview of this job: the whole image's statistics
        done = 0.6 if job.has_stats else 0.0
        job.fit(progress=lambda f: progress(done * f), is_cancelled=is_cancelled)
    out = np.empty((len(job.info.ms_bands), plan.rows, plan.cols), np.float32)
    for i, r0 in enumerate(starts):
        if is_cancelled():
            from .errors import Cancelled
            raise Cancelled("The preview was cancelled.")
        r1 = min(plan.row1, r0 + strip)
        extra = {}
        if deep:
            extra["progress"] = lambda f, i=i: progress(done + (1 - done) * (i + f) / len(starts))
        fused, _ = job.fuse_window(r0, r1, plan.col0, plan.col1, is_cancelled=is_cancelled, **extra)
        out[:, (r0 - plan.row0) // k:(r0 - plan.row0) // k + -(-(r1 - r0) // k)] = block_mean(fused, k)
        progress(done + (1 - done) * (i + 1) / len(starts))
    return out


def _multispectral_plan(entry: CachedJob, plan: PreviewPlan):
    """The MS (on the processing grid) averaged over blocks of ``plan.factor / ratio`` MS pixels, NaN where
    nodata. Whole blocks are averaged by GDAL while reading (memory of the preview's size, overviews used when
    the file has them); the partial blocks at the grid's bottom and right edges are read at full resolution."""
    from osgeo import gdal
    info, ms = entry.job.info, entry.reader.ms
    m = plan.factor // info.ratio
    r0, c0 = plan.row0 // info.ratio, plan.col0 // info.ratio
    r1, c1 = -(-plan.row1 // info.ratio), -(-plan.col1 // info.ratio)
    full_rows, full_cols = (r1 - r0) // m, (c1 - c0) // m
    bands = len(info.ms_bands)

    def read(row, col, rows, cols, out_rows, out_cols):
        data = ms.ReadAsArray(info.ms_col0 + col, info.ms_row0 + row, cols, rows, buf_xsize=out_cols,
                              buf_ysize=out_rows, band_list=info.ms_bands, resample_alg=gdal.GRIORA_Average)
        data = np.asarray(data, np.float32).reshape(bands, out_rows, out_cols)
        if info.ms_nodata is not None and not math.isnan(info.ms_nodata):
            data[data == np.float32(info.ms_nodata)] = np.nan
        return data

    out = np.full((bands, plan.rows, plan.cols), np.nan, np.float32)
    if full_rows and full_cols:
        out[:, :full_rows, :full_cols] = read(r0, c0, full_rows * m, full_cols * m, full_rows, full_cols)
    if full_rows < plan.rows:   # bottom strip, corner included
        strip = read(r0 + full_rows * m, c0, r1 - r0 - full_rows * m, c1 - c0, r1 - r0 - full_rows * m, c1 - c0)
        out[:, full_rows:] = block_mean(strip, m)
    if full_cols < plan.cols and full_rows:   # right strip
        strip = read(r0, c0 + full_cols * m, full_rows * m, c1 - c0 - full_cols * m, full_rows * m,
                     c1 - c0 - full_cols * m)
        out[:, :full_rows, full_cols:] = block_mean(strip, m)
    return out


def write_preview(path: str, array: np.ndarray, geotransform, crs_wkt: str, descriptions: Sequence[str],
                  metadata: Optional[dict] = None):
    """A small Float32 GeoTIFF (NaN = nodata) of a (C, H, W) array."""
    from osgeo import gdal
    gdal.UseExceptions()
    c, h, w = array.shape
    ds = gdal.GetDriverByName("GTiff").Create(path, w, h, c, gdal.GDT_Float32, ["INTERLEAVE=PIXEL"])
    ds.SetGeoTransform(tuple(geotransform))
    ds.SetProjection(crs_wkt)
    for key, value in (metadata or {}).items():
        ds.SetMetadataItem(key, str(value))
    for i in range(c):
        band = ds.GetRasterBand(i + 1)
        band.SetNoDataValue(float("nan"))
        band.SetDescription(descriptions[i] if i < len(descriptions) else f"Band {i + 1}")
        band.WriteArray(array[i])
    ds.FlushCache()
    ds = None


def render_preview(cache: JobCache, request: PreviewRequest, extent: Sequence[float], width_px: int,
                   height_px: int, out_path: str, progress: Optional[Callable] = None,
                   is_cancelled: Optional[Callable] = None, log: Optional[Callable] = None) -> PreviewResult:
    """Fuse what a canvas shows (``extent`` in the PAN CRS on ``width_px`` x ``height_px`` pixels) and write it
    to the GeoTIFF ``out_path``. Runs off the GUI thread; raises PansharpenError (Cancelled included)."""
    t_start = time.perf_counter()
    progress = progress or (lambda fraction: None)
    is_cancelled = is_cancelled or (lambda: False)
    entry = cache.get(request, log)
    with entry.lock:
        info = entry.job.info
        plan = plan_preview(extent, width_px, height_px, info.out_geotransform, info.out_rows, info.out_cols,
                            info.ratio, DEEP_MAX_FUSED_PIXELS if request.deep else MAX_FUSED_PIXELS)
        if plan.mode == FUSED:
            data = _fuse_plan(entry, plan, progress, is_cancelled)
        else:
            data = _multispectral_plan(entry, plan)
        ms_count = entry.ms_count
    if is_cancelled():
        from .errors import Cancelled
        raise Cancelled("The preview was cancelled.")
    descriptions = list(info.band_descriptions)
    write_preview(out_path, data, plan.geotransform, info.crs_wkt, descriptions,
                  {"PANSHARPENING_METHOD": request.method, "PREVIEW_MODE": plan.mode,
                   "PREVIEW_FACTOR": plan.factor})
    rgb = rgb_bands(descriptions, request.sensor, info.ms_bands, ms_count)
    progress(1.0)
    return PreviewResult(path=out_path, plan=plan, rgb=rgb, limits=stretch_limits(data),
                         band_descriptions=descriptions, crs_wkt=info.crs_wkt, method=request.method,
                         seconds=time.perf_counter() - t_start, device=str(entry.job.device),
                         notes=list(info.notes))


def remove_raster(path: str):
    """Delete a preview GeoTIFF and its sidecar files (QGIS may write an .aux.xml)."""
    for candidate in (path, path + ".aux.xml", os.path.splitext(path)[0] + ".ovr", path + ".ovr"):
        try:
            os.remove(candidate)
        except FileNotFoundError:
            pass
