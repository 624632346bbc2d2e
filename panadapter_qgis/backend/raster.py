"""PAN/MS pairs with GDAL: open, check, align on the PAN-derived grid, read windows with a halo, write.

The processing grid is the MS-resolution grid implied by the PAN: pixel = ``ratio`` PAN pixels, origin on a
PAN pixel corner, restricted to whole MS pixels inside both footprints. The output is the PAN grid over
that area. An MS whose grid already coincides with it (same CRS, same pixel size, origin offset by whole
MS pixels) is read directly; any other MS (another CRS, a sub-pixel shift, a ratio that is not quite an
integer) is warped onto it on the fly through a GDAL warped VRT, so memory never depends on raster size.
"""
import math
import os
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

    @property
    def out_rows(self):
        return self.rows * self.ratio

    @property
    def out_cols(self):
        return self.cols * self.ratio


@user_errors
def inspect_pair(pan_path: str, ms_path: str, ms_bands=None, min_bands: int = 1,
                 guide_bands: bool = False) -> PairInfo:
    """Check a PAN/MS pair and derive the processing grid. Raises PansharpenError naming the problem.

    ``guide_bands``: the high-resolution image may have several bands (hyperspectral-multispectral fusion:
    the MSI plays the PAN's part, the HSI the MS's)."""
    gdal, osr = _gdal()
    pan = open_raster(pan_path, "PAN")
    ms = open_raster(ms_path, "MS")
    if pan.RasterCount != 1 and not guide_bands:
        raise PansharpenError(f"The PAN raster must have one band; '{pan_path}' has {pan.RasterCount}. "
                              "Choose the panchromatic image (or extract its band first).")
    if ms_bands:
        bad = [b for b in ms_bands if not 1 <= int(b) <= ms.RasterCount]
        if bad:
            raise PansharpenError(f"MS band(s) {bad} do not exist: the MS raster has {ms.RasterCount} bands.")
        ms_bands = [int(b) for b in ms_bands]
    else:
        ms_bands = list(range(1, ms.RasterCount + 1))
    if len(ms_bands) < min_bands:
        raise PansharpenError(f"This method needs an MS raster with at least {min_bands} bands; "
                              f"{len(ms_bands)} selected.")
    pan_srs, ms_srs = _srs(pan, "PAN", pan_path), _srs(ms, "MS", ms_path)
    pgt, mgt = _geotransform(pan, "PAN", pan_path), _geotransform(ms, "MS", ms_path)
    notes = []

    # MS footprint and pixel size in the PAN CRS
    same_crs = bool(pan_srs.IsSame(ms_srs))
    mx0, my0 = mgt[0], mgt[3]
    mx1, my1 = mgt[0] + mgt[1] * ms.RasterXSize, mgt[3] + mgt[5] * ms.RasterYSize
    if not same_crs:
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
        if not xs:
            raise PansharpenError("The MS footprint cannot be transformed into the PAN's CRS.")
        mx0, mx1, my0, my1 = min(xs), max(xs), max(ys), min(ys)
        notes.append("The MS is in another CRS than the PAN: it is warped onto the PAN grid (cubic).")
    ms_px = abs(mx1 - mx0) / ms.RasterXSize
    ms_py = abs(my0 - my1) / ms.RasterYSize
    rx, ry = ms_px / abs(pgt[1]), ms_py / abs(pgt[5])
    if min(rx, ry) < 1 - RATIO_TOLERANCE:
        raise PansharpenError(f"The MS pixels ({ms_px:g} x {ms_py:g}) are smaller than the PAN pixels "
                              f"({abs(pgt[1]):g} x {abs(pgt[5]):g}): resolution ratio {min(rx, ry):.3g} is "
                              "below 1. Are the PAN and MS inputs swapped?")
    ratio = int(round((rx + ry) / 2))
    if abs(rx - ratio) > RATIO_TOLERANCE * ratio or abs(ry - ratio) > RATIO_TOLERANCE * ratio:
        raise PansharpenError(f"The PAN/MS resolution ratio is {rx:.3f} x {ry:.3f}, not close to an integer. "
                              "Resample the MS to a whole multiple of the PAN pixel size first.")
    if ratio < 2:
        raise PansharpenError("The MS has the same resolution as the PAN (ratio 1): there is nothing to "
                              "sharpen. Check that the MS input is the multispectral image.")

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
        raise PansharpenError("The PAN and MS rasters do not overlap (or overlap by less than one MS pixel).")
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
        notes.append("The MS grid is not aligned with the PAN grid (sub-pixel offset or a ratio of "
                     f"{rx:.4f} x {ry:.4f}): it is resampled (cubic) onto the grid implied by the PAN.")

    descriptions = []
    for b in ms_bands:
        d = ms.GetRasterBand(b).GetDescription()
        descriptions.append(d if d else f"MS band {b}")
    return PairInfo(
        pan_path=pan_path, ms_path=ms_path, ratio=ratio, ms_bands=ms_bands, band_descriptions=descriptions,
        ms_dtype=ms.GetRasterBand(ms_bands[0]).DataType, pan_nodata=_nodata(pan, [1]),
        ms_nodata=_nodata(ms, ms_bands), crs_wkt=pan.GetProjection(), rows=rows, cols=cols,
        pan_row0=row0, pan_col0=col0, ms_row0=ms_row0, ms_col0=ms_col0, warped=warped,
        out_geotransform=out_gt, notes=notes, pan_bands=pan.RasterCount)


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


class TiledGeoTiff:
    """A tiled, compressed GeoTIFF written to ``path + '.part.tif'`` and renamed into place by ``commit``;
    ``abort`` removes it, so a failed or cancelled run leaves nothing behind."""

    def __init__(self, path, cols, rows, bands, gdal_type, geotransform, crs_wkt, descriptions, metadata=None,
                 nodata=None):
        gdal, _ = _gdal()
        self.path = path
        self.tmp = path + ".part.tif"
        out_dir = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(out_dir):
            raise PansharpenError(f"The output folder '{out_dir}' does not exist.")
        self.gdal_type = gdal_type
        self.np_type, self.vmin, self.vmax = dtype_range(gdal_type)
        self.nodata = nodata
        is_int = self.vmin is not None
        # DEFLATE level 1 compressed by all CPUs: 2-4x faster to write than the default level 6, files within
        # a few percent of its size, and readable everywhere (unlike ZSTD).
        options = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "ZLEVEL=1",
                   "NUM_THREADS=ALL_CPUS", f"PREDICTOR={2 if is_int else 3}", "BIGTIFF=IF_SAFER",
                   "INTERLEAVE=BAND"]
        try:
            self.ds = gdal.GetDriverByName("GTiff").Create(self.tmp, cols, rows, bands, gdal_type, options)
        except RuntimeError as exc:
            raise PansharpenError(f"The output '{path}' cannot be created: {exc}") from exc
        self.ds.SetGeoTransform(geotransform)
        self.ds.SetProjection(crs_wkt)
        for key, value in (metadata or {}).items():
            self.ds.SetMetadataItem(key, str(value))
        for i, desc in enumerate(descriptions):
            band = self.ds.GetRasterBand(i + 1)
            band.SetDescription(desc)
            if nodata is not None:
                band.SetNoDataValue(nodata)

    def write(self, data: np.ndarray, row: int, col: int):
        self.ds.WriteArray(data, xoff=col, yoff=row, band_list=list(range(1, data.shape[0] + 1)))

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

    def abort(self):
        self.ds = None
        for p in (self.tmp, self.tmp + ".aux.xml"):
            if os.path.exists(p):
                os.remove(p)


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
        for value in (info.ms_nodata, info.pan_nodata):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if value is not None and self.vmin is None:
                    return float("nan")
                continue
            if self.vmin is None or (self.vmin <= value <= self.vmax and float(value).is_integer()):
                return value
        if info.ms_nodata is not None or info.pan_nodata is not None:
            return 0.0  # the inputs' nodata value does not fit the output type
        return None

    def to_output(self, fused: np.ndarray, valid: Optional[np.ndarray]) -> np.ndarray:
        """(C, H, W) float -> output type: rounded and clipped, nodata where invalid."""
        out = fused
        if self.vmin is not None:
            out = np.clip(np.rint(out), self.vmin, self.vmax)
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
