"""PAN/MS pairs with GDAL: open, check, align on the PAN-derived grid, read windows with a halo, write.

The processing grid is the MS-resolution grid implied by the PAN: pixel = ``ratio`` PAN pixels, origin on a
PAN pixel corner, restricted to whole MS pixels inside both footprints. The output is the PAN grid over
that area. An MS whose grid already coincides with it (same CRS, same pixel size, origin offset by whole
MS pixels) is read directly; any other MS (another CRS, a sub-pixel shift, a ratio that is not quite an
integer) is warped onto it on the fly through a GDAL warped VRT, so memory never depends on raster size.
"""
import atexit
import math
import os
import secrets
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .errors import PansharpenError, user_errors

RATIO_TOLERANCE = 0.03  # relative distance to the nearest integer accepted as that integer (then warped)


def _gdal():
    from osgeo import gdal, osr
    gdal.UseExceptions()
    return gdal, osr


@contextmanager
def limited_gdal_cache(max_bytes: int = 256 * 2**20):
    """Cap GDAL's block cache (default: 5 % of the RAM) while a streaming loop runs, then restore it.

    Tiles are read once; a large cache only makes the resident memory grow with the raster size.
    """
    gdal, _ = _gdal()
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(min(previous, max_bytes))
    try:
        yield
    finally:
        gdal.SetCacheMax(previous)


def open_raster(path: str, role: str):
    gdal, _ = _gdal()
    if not path:
        raise PansharpenError(f"No {role} raster was given.")
    if not os.path.exists(path) and not path.startswith("/vsi"):
        raise PansharpenError(f"The {role} raster '{path}' does not exist.")
    try:
        ds = gdal.Open(path, gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise PansharpenError(f"The {role} raster '{path}' could not be read by GDAL: {exc}") from exc
    if ds is None or ds.RasterCount == 0:
        raise PansharpenError(f"The {role} raster '{path}' could not be read by GDAL.")
    return ds


def _srs(ds, role, path):
    _, osr = _gdal()
    wkt = ds.GetProjection()
    if not wkt:
        raise PansharpenError(f"The {role} raster '{path}' has no coordinate reference system (CRS); "
                              "assign one (Raster > Projections > Assign Projection) and run again.")
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _geotransform(ds, role, path):
    gt = ds.GetGeoTransform(can_return_null=True)
    if gt is None:
        raise PansharpenError(f"The {role} raster '{path}' has no georeference (geotransform).")
    if gt[2] != 0 or gt[4] != 0:
        raise PansharpenError(f"The {role} raster '{path}' has a rotated geotransform; warp it to a "
                              "north-up grid first.")
    return gt


def _nodata(ds, bands):
    values = [ds.GetRasterBand(b).GetNoDataValue() for b in bands]
    values = [v for v in values if v is not None]
    return values[0] if values else None


@dataclass
class PairInfo:
    pan_path: str
    ms_path: str
    ratio: int
    ms_bands: List[int]
    band_descriptions: List[str]
    ms_dtype: int                    # GDAL data type of the MS
    pan_nodata: Optional[float]
    ms_nodata: Optional[float]
    crs_wkt: str
    rows: int                        # processing grid (MS resolution), rows x cols
    cols: int
    pan_row0: int                    # PAN pixel of the grid origin
    pan_col0: int
    ms_row0: int                     # MS pixel of the grid origin (0 when warped)
    ms_col0: int
    warped: bool
    out_geotransform: tuple
    notes: List[str] = field(default_factory=list)
    pan_bands: int = 1               # bands of the high-resolution image (> 1: an MSI guiding an HSI)
    pan_dtype: int = 0               # GDAL data type of the PAN (0: unknown)

    @property
    def out_rows(self):
        return self.rows * self.ratio

    @property
    def out_cols(self):
        return self.cols * self.ratio


def crs_name(srs) -> str:
    """'EPSG:4326 (WGS 84)', or the CRS's name when it has no authority code."""
    name = srs.GetName() or "unnamed CRS"
    for key in (None, "PROJCS", "GEOGCS"):
        authority, code = srs.GetAuthorityName(key), srs.GetAuthorityCode(key)
        if authority and code:
            return f"{authority}:{code} ({name})"
    return name


def _local_pixel_size(ms, mgt, transform):
    """(width, height) of an MS pixel at the centre of the MS, measured in the PAN's CRS: the edges of a
    block of pixels there, transformed, divided by its size (None where the transformation fails)."""
    n = max(1, min(ms.RasterXSize, ms.RasterYSize) // 4)
    c0, r0 = (ms.RasterXSize - n) / 2, (ms.RasterYSize - n) / 2

    def at(c, r):
        return transform.TransformPoint(mgt[0] + c * mgt[1], mgt[3] + r * mgt[5])[:2]

    try:
        (x0, y0), (x1, y1), (x2, y2) = at(c0, r0), at(c0 + n, r0), at(c0, r0 + n)
    except RuntimeError:
        return None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1, x2, y2)):
        return None
    return math.hypot(x1 - x0, y1 - y0) / n, math.hypot(x2 - x0, y2 - y0) / n


CRS_RATIO_TOLERANCE = 0.10  # MS in another CRS (warped anyway): relative distance of its mean pixel size


@user_errors
def inspect_pair(pan_path: str, ms_path: str, ms_bands=None, min_bands: int = 1,
                 guide_bands: bool = False, roles=None) -> PairInfo:
    """Check a PAN/MS pair and derive the processing grid. Raises PansharpenError naming the problem.

    ``guide_bands``: the high-resolution image may have several bands (hyperspectral-multispectral fusion:
    the MSI plays the PAN's part, the HSI the MS's). ``roles``: the names the messages give the two images,
    by default ("PAN", "MS"), or ("MSI", "HSI") with ``guide_bands`` (the parameters of that fusion)."""
    gdal, osr = _gdal()
    pan_role, ms_role = roles or (("MSI", "HSI") if guide_bands else ("PAN", "MS"))
    pan = open_raster(pan_path, pan_role)
    ms = open_raster(ms_path, ms_role)
    if pan.RasterCount != 1 and not guide_bands:
        raise PansharpenError(f"The PAN raster must have one band; '{pan_path}' has {pan.RasterCount}. "
                              "Choose the panchromatic image (or extract its band first).")
    if ms_bands:
        ms_bands = [int(b) for b in ms_bands]
        repeated = sorted({b for b in ms_bands if ms_bands.count(b) > 1})
        if repeated:
            listed = ", ".join(str(b) for b in ms_bands)
            raise PansharpenError(f"The {ms_role} band list ({listed}) repeats band{'s' if len(repeated) > 1 else ''} "
                                  f"{', '.join(str(b) for b in repeated)}: give each band once.")
        bad = [b for b in ms_bands if not 1 <= b <= ms.RasterCount]
        if bad:
            raise PansharpenError(f"{ms_role} band{'s' if len(bad) > 1 else ''} {', '.join(str(b) for b in bad)} "
                                  f"{'do' if len(bad) > 1 else 'does'} not exist: the {ms_role} raster has "
                                  f"{ms.RasterCount} bands (numbered from 1).")
    else:
        ms_bands = list(range(1, ms.RasterCount + 1))
    if len(ms_bands) < min_bands:
        raise PansharpenError(f"This method needs an {ms_role} raster with at least {min_bands} bands; "
                              f"{len(ms_bands)} selected.")
    pan_srs, ms_srs = _srs(pan, pan_role, pan_path), _srs(ms, ms_role, ms_path)
    pgt, mgt = _geotransform(pan, pan_role, pan_path), _geotransform(ms, ms_role, ms_path)
    notes = []

    # MS footprint and pixel size in the PAN CRS
    same_crs = bool(pan_srs.IsSame(ms_srs))
    mx0, my0 = mgt[0], mgt[3]
    mx1, my1 = mgt[0] + mgt[1] * ms.RasterXSize, mgt[3] + mgt[5] * ms.RasterYSize
    local = None
    if not same_crs:
        crs_pair = (f"The {ms_role} is in {crs_name(ms_srs)} and the {pan_role} in {crs_name(pan_srs)}")
        tr = osr.CoordinateTransformation(ms_srs, pan_srs)
        xs, ys = [], []
        for fx in np.linspace(0, 1, 11):
            for fy in np.linspace(0, 1, 11):
                try:
                    x, y, _ = tr.TransformPoint(mx0 + fx * (mx1 - mx0), my0 + fy * (my1 - my0))
                except RuntimeError:
                    continue
                if math.isfinite(x) and math.isfinite(y):
                    xs.append(x)
                    ys.append(y)
        local = _local_pixel_size(ms, mgt, tr)
        if not xs or local is None:
            raise PansharpenError(f"{crs_pair}, and the {ms_role} footprint cannot be transformed into the "
                                  f"{pan_role}'s CRS. Reproject the {ms_role} to {crs_name(pan_srs)} first.")
        mx0, mx1, my0, my1 = min(xs), max(xs), max(ys), min(ys)
    if local is None:
        ms_px = abs(mx1 - mx0) / ms.RasterXSize
        ms_py = abs(my0 - my1) / ms.RasterYSize
        rx, ry = ms_px / abs(pgt[1]), ms_py / abs(pgt[5])
        tolerance, mean = RATIO_TOLERANCE, (rx + ry) / 2
    else:
        # Warped onto the PAN grid whatever the ratio: an MS pixel measured there (a geographic CRS has
        # pixels of unequal width and height in metres), its mean size (that of a square of equal area)
        # giving the ratio.
        ms_px, ms_py = local
        rx, ry = ms_px / abs(pgt[1]), ms_py / abs(pgt[5])
        tolerance, mean = CRS_RATIO_TOLERANCE, math.sqrt(rx * ry)
    if (min(rx, ry) if local is None else mean) < 1 - tolerance:
        raise PansharpenError(f"The {ms_role} pixels ({ms_px:g} x {ms_py:g}) are smaller than the {pan_role} "
                              f"pixels ({abs(pgt[1]):g} x {abs(pgt[5]):g}): resolution ratio {min(rx, ry):.3g} is "
                              f"below 1. Are the {pan_role} and {ms_role} inputs swapped?")
    ratio = int(round(mean))
    if local is None:
        if abs(rx - ratio) > tolerance * ratio or abs(ry - ratio) > tolerance * ratio:
            raise PansharpenError(f"The {pan_role}/{ms_role} resolution ratio is {rx:.3f} x {ry:.3f}, not close to "
                                  f"an integer. Resample the {ms_role} to a whole multiple of the {pan_role} pixel "
                                  "size first.")
    elif ratio < 1 or abs(mean - ratio) > tolerance * ratio:
        raise PansharpenError(f"{crs_pair}. Measured in the {pan_role}'s CRS, an {ms_role} pixel covers "
                              f"{rx:.3f} x {ry:.3f} {pan_role} pixels ({mean:.3f} on average), not close to a "
                              f"whole resolution ratio, so it cannot be warped onto the {pan_role} grid without "
                              f"changing its resolution. Reproject the {ms_role} to {crs_name(pan_srs)} with a "
                              f"pixel size that is a whole multiple of the {pan_role}'s first.")
    else:
        notes.append(f"{crs_pair}: the {ms_role} is warped onto the {pan_role} grid (cubic) at resolution ratio "
                     f"{ratio}; measured in the {pan_role}'s CRS, its pixels cover {rx:.3f} x {ry:.3f} "
                     f"{pan_role} pixels.")
    if ratio < 2:
        raise PansharpenError(f"The {ms_role} has the same resolution as the {pan_role} (ratio 1): there is "
                              f"nothing to sharpen. Check that the {ms_role} input is the "
                              f"{'hyperspectral' if guide_bands else 'multispectral'} image.")

    # processing grid: origin on a PAN corner, whole MS pixels inside both footprints
    px, py = pgt[1], pgt[5]  # py < 0 for north-up
    gx, gy = px * ratio, py * ratio
    eps = 1e-6
    ms_left, ms_right = min(mx0, mx1), max(mx0, mx1)
    ms_top, ms_bottom = max(my0, my1), min(my0, my1)
    col0 = max(0, math.ceil((ms_left - pgt[0]) / px - eps))
    row0 = max(0, math.ceil((pgt[3] - ms_top) / -py - eps)) if py < 0 else \
        max(0, math.ceil((ms_bottom - pgt[3]) / py - eps))
    x_start, y_start = pgt[0] + col0 * px, pgt[3] + row0 * py
    pan_right, pan_bottom = pgt[0] + px * pan.RasterXSize, pgt[3] + py * pan.RasterYSize
    cols = math.floor((min(ms_right, pan_right) - x_start) / gx + eps)
    if py < 0:
        rows = math.floor((y_start - max(ms_bottom, pan_bottom)) / -gy + eps)
    else:
        rows = math.floor((min(ms_top, pan_bottom) - y_start) / gy + eps)
    if rows <= 0 or cols <= 0:
        raise PansharpenError(f"The {pan_role} and {ms_role} rasters do not overlap (or overlap by less than one "
                              f"{ms_role} pixel).")
    out_gt = (x_start, px, 0.0, y_start, 0.0, py)

    # direct read when the MS grid coincides with the processing grid
    warped = True
    ms_row0 = ms_col0 = 0
    if same_crs and mgt[2] == 0 and mgt[4] == 0:
        size_err = max(abs(mgt[1] - gx) / abs(gx), abs(mgt[5] - gy) / abs(gy)) * max(rows, cols)
        fc, fr = (x_start - mgt[0]) / mgt[1], (y_start - mgt[3]) / mgt[5]
        if size_err < 0.01 and abs(fc - round(fc)) < 0.01 and abs(fr - round(fr)) < 0.01:
            warped = False
            ms_col0, ms_row0 = int(round(fc)), int(round(fr))
    if warped and same_crs:
        notes.append(f"The {ms_role} grid is not aligned with the {pan_role} grid (sub-pixel offset or a ratio of "
                     f"{rx:.4f} x {ry:.4f}): it is resampled (cubic) onto the grid implied by the {pan_role}.")

    descriptions = []
    for b in ms_bands:
        d = ms.GetRasterBand(b).GetDescription()
        descriptions.append(d if d else f"MS band {b}")
    return PairInfo(
        pan_path=pan_path, ms_path=ms_path, ratio=ratio, ms_bands=ms_bands, band_descriptions=descriptions,
        ms_dtype=ms.GetRasterBand(ms_bands[0]).DataType, pan_nodata=_nodata(pan, [1]),
        ms_nodata=_nodata(ms, ms_bands), crs_wkt=pan.GetProjection(), rows=rows, cols=cols,
        pan_row0=row0, pan_col0=col0, ms_row0=ms_row0, ms_col0=ms_col0, warped=warped,
        out_geotransform=out_gt, notes=notes, pan_bands=pan.RasterCount,
        pan_dtype=pan.GetRasterBand(1).DataType)


def invalid_mask(values: np.ndarray, nodata) -> np.ndarray:
    """(H, W) mask of the pixels of (C, H, W) ``values`` that hold the declared nodata value (any value, NaN
    included) or a non-finite value (undeclared NaN, +-inf) in any band."""
    bad = ~np.isfinite(values).all(0)
    if nodata is not None and not math.isnan(nodata):
        bad |= (values == np.float32(nodata)).any(0)
    return bad


def dilate(mask: np.ndarray, k: int) -> np.ndarray:
    """``mask`` grown by ``k`` pixels (a square), separably: running maxima along each axis."""
    out = mask
    for axis in (0, 1):
        n = out.shape[axis]
        cum = np.concatenate([np.zeros_like(np.take(out, [0], axis), dtype=np.int32),
                              np.cumsum(out, axis=axis, dtype=np.int32)], axis)
        hi = np.minimum(np.arange(n) + k + 1, n)
        lo = np.maximum(np.arange(n) - k, 0)
        out = (np.take(cum, hi, axis) - np.take(cum, lo, axis)) > 0
    return out


class Filler:
    """Replaces a pair's nodata of every kind (the declared value, NaN, +-inf) by the image's per-band means
    of valid pixels, taken once on a regular sample of about a million pixels (so the fill never depends on
    the tiling), before any filter sees the pixels."""

    def __init__(self, reader: "PairReader"):
        self.reader, self.info = reader, reader.info
        self._means = {}
        self._lock = threading.Lock()

    def ms(self, values):
        """(filled copy or ``values`` itself, mask of the filled pixels or None) of an MS window."""
        return self._fill(values, "ms", self.info.ms_nodata)

    def pan(self, values):
        return self._fill(values, "pan", self.info.pan_nodata)

    def _fill(self, values, which, nodata):
        bad = invalid_mask(values, nodata)
        if not bad.any():
            return values, None
        means = self._mean(which, nodata)
        return np.where(bad[None], means[:, None, None], values).astype(np.float32), bad

    def _mean(self, which, nodata):
        with self._lock:
            if which not in self._means:
                info = self.info
                read, rows, cols = ((self.reader.read_ms, info.rows, info.cols) if which == "ms" else
                                    (self.reader.read_pan, info.out_rows, info.out_cols))
                step = max(1, int(math.ceil(math.sqrt(rows * cols / 2**20))))
                values = np.concatenate([read(a, a + 1, 0, cols)[:, 0, ::step] for a in range(0, rows, step)], 1)
                ok = ~invalid_mask(values[:, None], nodata)[0]
                means = values[:, ok].astype(np.float64).mean(1) if ok.any() else np.ones(len(values))
                self._means[which] = means.astype(np.float32)
            return self._means[which]


class PairReader:
    """Reads aligned PAN/MS windows of the processing grid, padded by edge replication beyond it.

    Not thread-safe: use one reader per thread.
    """

    def __init__(self, info: PairInfo):
        gdal, _ = _gdal()
        self.info = info
        self.pan = open_raster(info.pan_path, "PAN")
        ms = open_raster(info.ms_path, "MS")
        if info.warped:
            gt = info.out_geotransform
            r = info.ratio
            bounds = (gt[0], gt[3] + gt[5] * r * info.rows, gt[0] + gt[1] * r * info.cols, gt[3])
            kwargs = dict(format="VRT", dstSRS=info.crs_wkt, outputBounds=bounds, width=info.cols,
                          height=info.rows, resampleAlg="cubic", multithread=False)
            if info.ms_nodata is not None:
                kwargs.update(srcNodata=info.ms_nodata, dstNodata=info.ms_nodata)
            elif info.ms_dtype in (gdal.GDT_Float32, gdal.GDT_Float64):
                # undeclared NaN: the warper must skip it, not spread it over the cubic kernel
                kwargs.update(srcNodata="nan", dstNodata="nan")
            try:
                ms = gdal.Warp("", ms, **kwargs)
            except RuntimeError as exc:
                raise PansharpenError(f"The MS raster could not be warped onto the PAN grid: {exc}") from exc
        self.ms = ms

    @staticmethod
    def _clip(start, stop, size):
        a, b = max(start, 0), min(stop, size)
        return a, b, a - start, stop - b

    def read_ms(self, r0, r1, c0, c1):
        """MS window rows r0..r1-1, cols c0..c1-1 of the grid (may exceed it): (C, r1-r0, c1-c0) float32."""
        info = self.info
        a, b, pt, pb = self._clip(r0, r1, info.rows)
        c, d, pl, pr = self._clip(c0, c1, info.cols)
        arr = self.ms.ReadAsArray(info.ms_col0 + c, info.ms_row0 + a, d - c, b - a,
                                  band_list=info.ms_bands)
        arr = np.asarray(arr, dtype=np.float32).reshape(len(info.ms_bands), b - a, d - c)
        if pt or pb or pl or pr:
            arr = np.pad(arr, ((0, 0), (pt, pb), (pl, pr)), mode="edge")
        return arr

    def read_pan(self, r0, r1, c0, c1):
        """PAN window in output-grid PAN pixels (may exceed the grid): (bands, r1-r0, c1-c0) float32, one
        band for a PAN."""
        info = self.info
        a, b, pt, pb = self._clip(r0, r1, info.out_rows)
        c, d, pl, pr = self._clip(c0, c1, info.out_cols)
        if info.pan_bands == 1:
            arr = self.pan.GetRasterBand(1).ReadAsArray(info.pan_col0 + c, info.pan_row0 + a, d - c, b - a)
        else:
            arr = self.pan.ReadAsArray(info.pan_col0 + c, info.pan_row0 + a, d - c, b - a)
        arr = np.asarray(arr, dtype=np.float32).reshape(info.pan_bands, b - a, d - c)
        if pt or pb or pl or pr:
            arr = np.pad(arr, ((0, 0), (pt, pb), (pl, pr)), mode="edge")
        return arr


# --------------------------------------------------------------------------------------------------------
# Output

_INT_RANGES = {}


def dtype_range(gdal_type):
    gdal, _ = _gdal()
    from osgeo import gdal_array
    np_type = gdal_array.GDALTypeCodeToNumericTypeCode(gdal_type)
    if np_type is None:
        raise PansharpenError(f"The MS data type {gdal.GetDataTypeName(gdal_type)} is not supported.")
    if np.issubdtype(np_type, np.integer):
        ii = np.iinfo(np_type)
        return np_type, float(ii.min), float(ii.max)
    return np_type, None, None


# --------------------------------------------------------------------------------------------------------
# Partial files: removed on error, cancel and Ctrl-C (``abort``), and on SIGTERM and SIGHUP (``_on_signal``)

TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_partial_files = set()           # temporary files being written, removed when the process is told to stop
_partial_lock = threading.RLock()
_previous_handlers = {}          # signal -> the handler ours replaced while partial files exist


def partial_path(path: str) -> str:
    """A temporary name beside ``path``, hidden and short: ``.<start of the name>.<pid>-<random>.part.tif``.

    Never longer than a few tens of characters, so that any output name the file system allows also works
    while it is written (a suffix added to a 252-character name would exceed the 255 of most file systems);
    in the output folder, so that ``os.replace`` moves it into place in one step."""
    folder, name = os.path.split(os.path.abspath(path))
    start = name[:24].lstrip(".")
    return os.path.join(folder, f".{start}.{os.getpid()}-{secrets.token_hex(4)}.part.tif")


def _remove_quietly(path):
    for p in (path, path + ".aux.xml"):
        try:
            os.remove(p)
        except OSError:
            pass


def _on_signal(signum, frame):
    """SIGTERM or SIGHUP while partial files are being written: remove them, then do what the signal did
    before (by default: end the process, killed by that signal, as without this handler)."""
    with _partial_lock:
        _remove_all_partials()
        previous = _restore_handlers()
    handler = previous.get(signum, signal.SIG_DFL)
    if callable(handler):
        handler(signum, frame)
    elif handler != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_handlers():
    """Our handler for SIGTERM and SIGHUP (only the main thread may set one; a signal its process ignores,
    as under nohup, stays ignored)."""
    if _previous_handlers or threading.current_thread() is not threading.main_thread():
        return
    for signum in TERMINATING_SIGNALS:
        try:
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN or previous is None:
                continue
            signal.signal(signum, _on_signal)
        except (ValueError, OSError):
            continue
        _previous_handlers[signum] = previous


def _restore_handlers():
    previous = dict(_previous_handlers)
    for signum, handler in previous.items():
        try:
            if signal.getsignal(signum) is _on_signal:
                signal.signal(signum, handler)
        except (ValueError, OSError):
            continue
    _previous_handlers.clear()
    return previous


def _remove_all_partials():
    """At interpreter exit (an uncaught KeyboardInterrupt included): no partial file outlives its process."""
    with _partial_lock:
        for path in list(_partial_files):
            _remove_quietly(path)
        _partial_files.clear()


atexit.register(_remove_all_partials)


def register_partial(path: str):
    """``path`` is being written: remove it if the process receives SIGTERM or SIGHUP before
    ``unregister_partial``, or if the interpreter exits before then."""
    with _partial_lock:
        _partial_files.add(path)
        _install_handlers()


def unregister_partial(path: str):
    with _partial_lock:
        _partial_files.discard(path)
        if not _partial_files and threading.current_thread() is threading.main_thread():
            _restore_handlers()


class TiledGeoTiff:
    """A tiled, compressed GeoTIFF written to a hidden temporary file beside ``path`` (``partial_path``) and
    renamed into place by ``commit``; ``abort`` removes it, so a failed or cancelled run leaves nothing
    behind, and so does SIGTERM or SIGHUP (``register_partial``)."""

    def __init__(self, path, cols, rows, bands, gdal_type, geotransform, crs_wkt, descriptions, metadata=None,
                 nodata=None):
        gdal, _ = _gdal()
        self.path = path
        self.ds = None
        out_dir = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(out_dir):
            raise PansharpenError(f"The output folder '{out_dir}' does not exist.")
        self.tmp = partial_path(path)
        self.gdal_type = gdal_type
        self.np_type, self.vmin, self.vmax = dtype_range(gdal_type)
        self.nodata = nodata
        is_int = self.vmin is not None
        # DEFLATE level 1 compressed by all CPUs: 2-4x faster to write than the default level 6, files within
        # a few percent of its size, and readable everywhere (unlike ZSTD). 512-pixel blocks (as COGs have)
        # compress 20-25 % faster than 256-pixel ones, the same size; small rasters keep 256. The floating-
        # point predictor for Float32; none for integers: the horizontal one saved 3.5 % of a uint16 file's
        # size for 13 % more compression time, and compression is most of a classical run's CPU time
        # (docs/BENCHMARKS.md, issue 29)
        self.block = 512 if min(rows, cols) >= 512 else 256
        options = ["TILED=YES", f"BLOCKXSIZE={self.block}", f"BLOCKYSIZE={self.block}", "COMPRESS=DEFLATE",
                   "ZLEVEL=1", "NUM_THREADS=ALL_CPUS", f"PREDICTOR={1 if is_int else 3}", "BIGTIFF=IF_SAFER",
                   "INTERLEAVE=BAND"]
        self.rows, self.cols = rows, cols
        register_partial(self.tmp)
        try:
            self.ds = gdal.GetDriverByName("GTiff").Create(self.tmp, cols, rows, bands, gdal_type, options)
        except RuntimeError as exc:
            self.abort()
            raise PansharpenError(f"The output '{path}' cannot be created: {exc}") from exc
        try:  # an interruption (Ctrl+C) before the caller holds this writer must not leave the file behind
            self.ds.SetGeoTransform(geotransform)
            self.ds.SetProjection(crs_wkt)
            for key, value in (metadata or {}).items():
                self.ds.SetMetadataItem(key, str(value))
            for i, desc in enumerate(descriptions):
                band = self.ds.GetRasterBand(i + 1)
                band.SetDescription(desc)
                if nodata is not None:
                    band.SetNoDataValue(nodata)
        except BaseException:
            self.abort()
            raise

    def write(self, data: np.ndarray, row: int, col: int):
        self.ds.WriteArray(data, xoff=col, yoff=row, band_list=list(range(1, data.shape[0] + 1)))
        if self._whole_blocks(row, data.shape[1], self.rows) and self._whole_blocks(col, data.shape[2], self.cols):
            # compress this window's blocks now, on the writer's thread while the next tile is computed, rather
            # than leave them in GDAL's cache for ``commit`` (a quarter of a run's time went there); only whole
            # blocks, which no later window rewrites
            self.ds.FlushCache()

    def _whole_blocks(self, start, size, total):
        return start % self.block == 0 and ((start + size) % self.block == 0 or start + size == total)

    def commit(self):
        self.ds.FlushCache()
        self.ds = None
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise PansharpenError(f"The output '{self.path}' cannot be written: {exc}") from exc
        aux = self.tmp + ".aux.xml"
        if os.path.exists(aux):
            os.remove(aux)
        unregister_partial(self.tmp)

    def abort(self):
        self.ds = None
        _remove_quietly(self.tmp)
        unregister_partial(self.tmp)


class GeoTiffWriter(TiledGeoTiff):
    """The fused output of a pair: the PAN grid, the MS band descriptions and type (or Float32), nodata."""

    def __init__(self, path: str, info: PairInfo, float32: bool, method_name: str):
        gdal, _ = _gdal()
        gdal_type = gdal.GDT_Float32 if float32 else info.ms_dtype
        self.np_type, self.vmin, self.vmax = dtype_range(gdal_type)
        super().__init__(path, info.out_cols, info.out_rows, len(info.ms_bands), gdal_type,
                         info.out_geotransform, info.crs_wkt, info.band_descriptions,
                         {"PANSHARPENING_METHOD": method_name, "PANSHARPENING_RATIO": info.ratio},
                         self._choose_nodata(info))

    def _choose_nodata(self, info):
        gdal, _ = _gdal()
        for value in (info.ms_nodata, info.pan_nodata):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if value is not None and self.vmin is None:
                    return float("nan")
                continue
            if self.vmin is None or (self.vmin <= value <= self.vmax and float(value).is_integer()):
                return value
        if info.ms_nodata is not None or info.pan_nodata is not None:
            return 0.0  # the inputs' nodata value does not fit the output type
        if self.vmin is None:
            return float("nan")  # undeclared NaN or inf in a floating-point input: NaN marks them
        if any(t in (gdal.GDT_Float32, gdal.GDT_Float64) for t in (info.ms_dtype, info.pan_dtype)):
            return 0.0  # a floating-point input may hold NaN or inf: the integer output needs a nodata value
        return None

    def to_output(self, fused: np.ndarray, valid: Optional[np.ndarray], consume: bool = False) -> np.ndarray:
        """(C, H, W) float -> output type: rounded and clipped, nodata where invalid. ``consume``: ``fused`` is
        the caller's own scratch array and may be rounded in place (no new array)."""
        out = fused
        if self.vmin is not None:
            out = np.rint(out, out=out if consume and out.dtype.kind == "f" else None)
            np.clip(out, self.vmin, self.vmax, out=out)   # in place: a third faster than np.clip's copy
        out = out.astype(self.np_type, copy=False)
        if self.nodata is not None:
            nd = self.nodata
            if isinstance(nd, float) and math.isnan(nd):
                pass
            elif self.vmin is not None:
                # a valid pixel that rounds to the nodata value is nudged by one count
                bump = 1 if nd < self.vmax else -1
                out[out == nd] = nd + bump
            else:
                out[out == nd] = np.nextafter(np.float32(nd), np.float32(np.inf))
            if valid is not None:
                out[:, ~valid] = nd
        return out
