"""Quality assessment of fused rasters: the toolbox's indices (METHODS.md §3.2-3.3) on GeoTIFF files.

Two entry points, both streaming with bounded memory and returning plain dicts (``rows``: one per fused
raster, in the order given):

* :func:`assess_reduced` (Wald's protocol): each fused raster is compared with a reference (the original
  MS of a pair degraded with ``wald.degrade``) on their overlap: SAM (degrees), ERGAS, Q2n, Q-avg, SCC and
  PSNR, after the toolbox's 21-pixel border cut (``dim_cut``). Row strips of the overlap are read one after
  the other and fed to ``metrics.RunningIndices``, which keeps only what the next strip needs and gives the
  whole-image numbers.
* :func:`assess_full` (no reference): D_lambda (Khan), D_s, HQNR and QNR against the PAN and MS the
  raster was fused from. Every full-resolution index is a mean over distinct 32 x 32 blocks of quantities
  that depend only on the block, once the three filtered images are known (the fused image low-passed by the
  sensor MTF, the MS interpolated to the PAN grid, the PAN reduced by bicubic decimation and interpolated
  back). Those filters are local, so the window is processed in tiles whose sides are multiples of 32,
  aligned on the block grid, each read with the halo its filters need; the block sums then add up to the
  whole-image means exactly. No index needs the whole image in memory.

Alignment: a fused raster must have the pixel size and CRS of the grid it is compared with (the reference,
or the PAN grid), on the same pixel lattice; only the overlap is assessed. Bands are matched one to one, or,
when the fused raster has fewer bands than the reference (or MS), by their descriptions.

:func:`write_html_report` writes the table (best value of each column highlighted) with a small error map
per fused raster and band group, embedded as PNG; :func:`write_csv` the same numbers as CSV.
"""
import base64
import csv
import functools
import html
import json
import math
import os
import re
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

from . import cluster, metrics, mtf, raster
from .device import import_torch
from .errors import Cancelled, PansharpenError, user_errors
from .sensors import sensor_by_index

BLOCK = 32                      # Q2n / Q / D_s block size (Qblocks_size = 32, S = 32 in the toolbox)
STRIP_VALUES = 4 * 2**20        # values per band-stack strip in reduced mode (memory ~ 10x this in float64)
FULL_TILE = 512                 # PAN pixels per tile side in full-resolution mode (multiple of 32)
MAP_SIDE = 160                  # longest side of an error map, pixels
MAP_DISPLAY = 240               # longest side of an error map in the report, screen pixels
PIXEL_TOLERANCE = 0.01          # pixel-size drift over the raster, and sub-pixel offset, accepted as aligned

# key -> (column label, higher is better, Processing output name)
INDICES = {
    "q2n": ("Q2n", True, "Q2N"),
    "q_avg": ("Q-avg", True, "Q_AVG"),
    "sam": ("SAM (deg)", False, "SAM"),
    "ergas": ("ERGAS", False, "ERGAS"),
    "scc": ("SCC", True, "SCC"),
    "psnr": ("PSNR (dB)", True, "PSNR"),
    "ssim": ("SSIM", True, "SSIM"),
    "d_lambda": ("D_lambda (Khan)", False, "D_LAMBDA"),
    "d_s": ("D_s", False, "D_S"),
    "hqnr": ("HQNR", True, "HQNR"),
    "d_lambda_qnr": ("D_lambda (QNR)", False, None),
    "qnr": ("QNR", True, "QNR"),
}
REDUCED_KEYS = ("q2n", "q_avg", "sam", "ergas", "scc", "psnr", "ssim")
FULL_KEYS = ("d_lambda", "d_s", "hqnr", "d_lambda_qnr", "qnr")


# ----------------------------------------------------------------------------------------------------------
# Rasters, grids and alignment

@dataclass
class _Grid:
    """What alignment needs of a raster (or of the PAN-derived processing grid)."""
    path: str
    role: str
    geotransform: tuple
    crs_wkt: str
    cols: int
    rows: int
    descriptions: List[str] = field(default_factory=list)
    nodata: Optional[float] = None
    ds: object = None


def _open_grid(path: str, role: str) -> _Grid:
    ds = raster.open_raster(path, role)
    gt = ds.GetGeoTransform(can_return_null=True)
    if gt is None:
        raise PansharpenError(f"The {role} raster '{path}' has no georeference (geotransform): it cannot be "
                              "aligned with the other rasters.")
    if gt[2] != 0 or gt[4] != 0:
        raise PansharpenError(f"The {role} raster '{path}' has a rotated geotransform; warp it to a north-up "
                              "grid first.")
    descriptions = [ds.GetRasterBand(b + 1).GetDescription().strip() for b in range(ds.RasterCount)]
    return _Grid(path, role, gt, ds.GetProjection(), ds.RasterXSize, ds.RasterYSize, descriptions,
                 ds.GetRasterBand(1).GetNoDataValue(), ds)


def _same_crs(a: _Grid, b: _Grid) -> bool:
    from osgeo import osr
    if not a.crs_wkt and not b.crs_wkt:
        return True
    if not a.crs_wkt or not b.crs_wkt:
        return False
    sa, sb = osr.SpatialReference(), osr.SpatialReference()
    sa.ImportFromWkt(a.crs_wkt)
    sb.ImportFromWkt(b.crs_wkt)
    return bool(sa.IsSame(sb))


@dataclass(frozen=True)
class _Overlap:
    """The overlap of two aligned grids: ``rows`` x ``cols`` pixels at (row, col) in each."""
    a_row: int
    a_col: int
    b_row: int
    b_col: int
    rows: int
    cols: int


def _overlap(fused: _Grid, other: _Grid) -> _Overlap:
    """Pixel window shared by ``fused`` and ``other``; PansharpenError when they cannot be compared."""
    name = os.path.basename(fused.path)
    if not _same_crs(fused, other):
        raise PansharpenError(f"The fused raster '{name}' is in another coordinate reference system than the "
                              f"{other.role}: warp it onto the {other.role} grid first.")
    fg, og = fused.geotransform, other.geotransform
    size = max(fused.cols, fused.rows, other.cols, other.rows)
    for k, axis in ((1, "x"), (5, "y")):
        if abs(fg[k] - og[k]) * size > PIXEL_TOLERANCE * abs(og[k]):
            raise PansharpenError(
                f"The fused raster '{name}' has pixels of {abs(fg[1]):g} x {abs(fg[5]):g} and the {other.role} "
                f"of {abs(og[1]):g} x {abs(og[5]):g} (they differ along {axis}): the indices compare the two "
                f"pixel by pixel, so both must be on the same grid. Resample the fused raster onto the "
                f"{other.role} grid, or give the {other.role} it was made for.")
    dc = (fg[0] - og[0]) / og[1]
    dr = (fg[3] - og[3]) / og[5]
    if abs(dc - round(dc)) > PIXEL_TOLERANCE or abs(dr - round(dr)) > PIXEL_TOLERANCE:
        raise PansharpenError(f"The fused raster '{name}' is shifted by a fraction of a pixel ({dc % 1:.2f}, "
                              f"{dr % 1:.2f}) from the {other.role} grid: the two grids are not aligned. "
                              f"Resample it onto the {other.role} grid first.")
    dc, dr = int(round(dc)), int(round(dr))  # position of the fused origin in `other` pixels
    c0, r0 = max(0, dc), max(0, dr)
    c1, r1 = min(other.cols, dc + fused.cols), min(other.rows, dr + fused.rows)
    if c1 <= c0 or r1 <= r0:
        raise PansharpenError(f"The fused raster '{name}' and the {other.role} do not overlap.")
    return _Overlap(r0 - dr, c0 - dc, r0, c0, r1 - r0, c1 - c0)


def _match_bands(fused: _Grid, other: _Grid, other_count: Optional[int] = None):
    """(fused band numbers, other band numbers, note) pairing the bands, 1-based."""
    name = os.path.basename(fused.path)
    n_f = len(fused.descriptions)
    n_o = other_count if other_count is not None else len(other.descriptions)
    if n_f == n_o:
        return list(range(1, n_f + 1)), list(range(1, n_o + 1)), None
    if n_f < n_o:
        picked = []
        for d in fused.descriptions:
            hits = [i + 1 for i, od in enumerate(other.descriptions) if d and od == d]
            if len(hits) != 1:
                picked = None
                break
            picked.append(hits[0])
        if picked and len(set(picked)) == len(picked):
            return list(range(1, n_f + 1)), picked, (
                f"{name}: {n_f} of the {n_o} {other.role} bands, matched by their descriptions "
                f"(bands {', '.join(map(str, picked))}).")
    raise PansharpenError(f"The fused raster '{name}' has {n_f} bands and the {other.role} {n_o}: the bands "
                          "must correspond one to one (or, for a subset, carry the same band descriptions).")


def _read(ds, bands: Sequence[int], col: int, row: int, cols: int, rows: int) -> np.ndarray:
    """(C, rows, cols) float64 window."""
    arr = ds.ReadAsArray(col, row, cols, rows, band_list=list(bands))
    return np.asarray(arr, dtype=np.float64).reshape(len(bands), rows, cols)


def _invalid(values: np.ndarray, nodata) -> np.ndarray:
    bad = ~np.isfinite(values).all(0)
    if nodata is not None and not math.isnan(nodata):
        bad |= (values == nodata).any(0)
    return bad


def _finite(values: np.ndarray) -> np.ndarray:
    """NaN and infinities (nodata of some tools) as 0, as the toolbox sees a no-data fill."""
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0, copy=False)


def _is_integer_valued(ds, bands: Sequence[int]) -> bool:
    """Whether the bands hold integer counts (integer type, or float values that are all whole numbers
    on a regular sample of at most 512 x 512 pixels)."""
    from osgeo import gdal
    if all(gdal.GetDataTypeName(ds.GetRasterBand(b).DataType).lower().startswith(("byte", "int", "uint"))
           for b in bands):
        return True
    w, h = min(ds.RasterXSize, 512), min(ds.RasterYSize, 512)
    sample = ds.ReadAsArray(0, 0, ds.RasterXSize, ds.RasterYSize, buf_xsize=w, buf_ysize=h,
                            band_list=list(bands), resample_alg=gdal.GRIORA_NearestNeighbour)
    sample = np.asarray(sample, dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    return bool(sample.size) and bool(np.all(sample == np.rint(sample)))


def _cast_note(cast: bool, role: str) -> Optional[str]:
    if cast:
        return None
    return (f"Q2n is computed without the toolbox's uint16 cast: the {role} does not hold integer counts "
            "(the cast would quantise it).")


def _display_names(paths: Sequence[str]) -> List[str]:
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    names = []
    for p, s in zip(paths, stems):
        if stems.count(s) > 1:
            s = f"{os.path.basename(os.path.dirname(os.path.abspath(p)))}/{s}"
        names.append(s)
    seen = {}
    for i, n in enumerate(names):  # still equal (same file given twice): number them
        seen[n] = seen.get(n, 0) + 1
        if names.count(n) > 1:
            names[i] = f"{n} ({seen[n]})"
    return names


def _bounded_gdal_cache(function):
    """Run ``function`` with GDAL's block cache capped (``raster.limited_gdal_cache``)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with raster.limited_gdal_cache():
            return function(*args, **kwargs)

    return wrapper


def _fused_list(fused_paths) -> List[str]:
    if isinstance(fused_paths, (str, os.PathLike)):
        fused_paths = [fused_paths]
    paths = [os.fspath(p) for p in fused_paths or []]
    if not paths:
        raise PansharpenError("No fused raster was given to assess.")
    return paths


# ----------------------------------------------------------------------------------------------------------
# Band groups and error maps

_VISIBLE = re.compile(r"\b(blue|green|red)\b", re.IGNORECASE)
_EDGE = re.compile(r"red[\s_-]*edge|rededge", re.IGNORECASE)


def band_groups(descriptions: Sequence[str]) -> List[tuple]:
    """[(label, [0-based band indices])]: the visible bands (by description, else a sensor guess) and the rest.

    Descriptions naming blue, green or red (not red-edge) pick the visible group; otherwise 8 bands are
    taken as WorldView order (red, green, blue = bands 5, 3, 2) and other counts as bands 1-3 visible.
    Three bands or fewer make one group.
    """
    n = len(descriptions)
    if n <= 3:
        return [(f"bands {', '.join(str(i + 1) for i in range(n))}", list(range(n)))]
    visible = [i for i, d in enumerate(descriptions) if _VISIBLE.search(d or "") and not _EDGE.search(d or "")]
    if not visible:
        visible = [4, 2, 1] if n == 8 else [0, 1, 2]
    rest = [i for i in range(n) if i not in visible]
    groups = [(f"visible (bands {', '.join(str(i + 1) for i in visible)})", visible)]
    if rest:
        groups.append((f"other bands ({', '.join(str(i + 1) for i in rest)})", rest))
    return groups


class _ErrorMap:
    """RMS of a difference image per band group, averaged over cells of ``f`` x ``f`` pixels."""

    def __init__(self, rows: int, cols: int, groups):
        self.f = max(1, math.ceil(max(rows, cols) / MAP_SIDE))
        self.shape = (math.ceil(rows / self.f), math.ceil(cols / self.f))
        self.groups = groups
        size = self.shape[0] * self.shape[1]
        self.counts = np.zeros(size)
        self.sums = [np.zeros(size) for _ in groups]

    def add(self, diff: np.ndarray, row0: int, col0: int):
        """``diff``: (C, h, w) at pixel (row0, col0) of the assessed window."""
        h, w = diff.shape[1:]
        cell_r = (row0 + np.arange(h)) // self.f
        cell_c = (col0 + np.arange(w)) // self.f
        cells = (cell_r[:, None] * self.shape[1] + cell_c[None, :]).ravel()
        size = self.counts.size
        self.counts += np.bincount(cells, minlength=size)
        for k, (_, bands) in enumerate(self.groups):
            sq = (diff[bands] ** 2).mean(axis=0).ravel()
            self.sums[k] += np.bincount(cells, weights=sq, minlength=size)

    def part(self, row0: int, rows: int):
        """What the pixel rows row0..row0+rows-1 added: (lo, hi, counts, sums) over the flat cells lo..hi-1 (a
        cluster worker's share, for :meth:`merge`)."""
        lo = row0 // self.f * self.shape[1]
        hi = min(self.counts.size, ((row0 + rows - 1) // self.f + 1) * self.shape[1])
        return lo, hi, self.counts[lo:hi], [s[lo:hi] for s in self.sums]

    def merge(self, part):
        """Add a :meth:`part` of another map: the same numbers as adding its pixels here."""
        lo, hi, counts, sums = part
        self.counts[lo:hi] += counts
        for mine, theirs in zip(self.sums, sums):
            mine[lo:hi] += theirs

    def maps(self) -> dict:
        out = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for (label, _), s in zip(self.groups, self.sums):
                out[label] = np.sqrt(s / self.counts).reshape(self.shape)
        return out


# anchors of a perceptually ordered dark-to-bright colour scale (close to matplotlib's "inferno")
_COLOURS = np.array([(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66),
                     (245, 125, 21), (250, 193, 39), (252, 255, 164)], dtype=np.float64)


def colourise(values: np.ndarray, vmax: float) -> np.ndarray:
    """(H, W) values in [0, vmax] -> (H, W, 3) uint8 colours; NaN is grey."""
    t = np.clip(np.nan_to_num(values / vmax if vmax > 0 else values * 0.0, nan=0.0), 0.0, 1.0)
    pos = t * (len(_COLOURS) - 1)
    i = np.minimum(pos.astype(int), len(_COLOURS) - 2)
    frac = (pos - i)[..., None]
    rgb = _COLOURS[i] * (1 - frac) + _COLOURS[i + 1] * frac
    rgb[np.isnan(values)] = 128
    return np.rint(rgb).astype(np.uint8)


def png_bytes(rgb: np.ndarray, scale: int = 1) -> bytes:
    """(H, W, 3) uint8 -> PNG file bytes (8-bit RGB, no filter, zlib), each pixel repeated ``scale`` times."""
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    h, w = rgb.shape[:2]
    raw = b"".join(b"\x00" + np.ascontiguousarray(row).tobytes() for row in rgb)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------------------------------------
# Reduced resolution

def _bit_depth_range(ds):
    """(peak value, source text) from a BIT_DEPTH metadata item such as '11' or '16 (L1 product DN...)'."""
    value = ds.GetMetadataItem("BIT_DEPTH") or ds.GetMetadataItem("BIT_DEPTH", "IMAGE_STRUCTURE") or \
        ds.GetRasterBand(1).GetMetadataItem("NBITS", "IMAGE_STRUCTURE")
    match = re.match(r"\s*(\d+)", value or "")
    if not match or not 1 <= int(match.group(1)) <= 32:
        return None
    bits = int(match.group(1))
    return float(2 ** bits - 1), f"BIT_DEPTH metadata of the reference: {bits} bits, peak {2 ** bits - 1}"


def _data_range(ref: _Grid, bands, data_range):
    if data_range is not None:
        return float(data_range), f"given: {float(data_range):g}"
    from_bits = _bit_depth_range(ref.ds)
    if from_bits:
        return from_bits
    peak = max(ref.ds.GetRasterBand(b).ComputeRasterMinMax(False)[1] for b in bands)
    return float(peak), f"maximum of the reference (no BIT_DEPTH metadata): {peak:g}"


def _ratio(ratio, fused_grids, ref: _Grid, notes):
    if ratio:
        return int(ratio), "given"
    found = []
    for g in fused_grids:
        value = g.ds.GetMetadataItem("PANSHARPENING_RATIO")
        if value and value.strip().isdigit():
            found.append(int(value))
    if found:
        if len(set(found)) > 1:
            notes.append(f"The fused rasters carry different ratios {sorted(set(found))}; ERGAS uses {found[0]}.")
        return found[0], "PANSHARPENING_RATIO metadata of the fused raster"
    value = ref.ds.GetMetadataItem("RATIO")
    match = re.match(r"\s*(\d+)", value or "")
    if match and int(match.group(1)) >= 1:
        return int(match.group(1)), "RATIO metadata of the reference"
    raise PansharpenError("The resolution ratio (needed by ERGAS) is not in the rasters' metadata: give it "
                          "(4 for WorldView, QuickBird, Pleiades; 2 for Landsat and Sentinel-2).")


def _strip_geometry(plans):
    """Where each fused raster's assessed window lies, in its own pixels and the reference's (picklable)."""
    return [dict(path=g.path, f_bands=f_bands, r_bands=r_bands,
                 fused_at=(ov.a_col + cols_cut.start, ov.a_row + rows_cut.start),
                 reference_at=(ov.b_col + cols_cut.start, ov.b_row + rows_cut.start),
                 rows=rows_cut.stop - rows_cut.start, cols=cols_cut.stop - cols_cut.start)
            for g, ov, f_bands, r_bands, rows_cut, cols_cut in plans]


def _read_strip(fused: _Grid, ref: _Grid, geometry: dict, top: int, rows: int):
    """Rows top..top+rows-1 of the assessed window: (fused, reference, no-data mask), non-finite values zeroed."""
    (fc, fr0), (rc, rr0) = geometry["fused_at"], geometry["reference_at"]
    fr = _read(fused.ds, geometry["f_bands"], fc, fr0 + top, geometry["cols"], rows)
    rr = _read(ref.ds, geometry["r_bands"], rc, rr0 + top, geometry["cols"], rows)
    bad = _invalid(fr, fused.nodata) | _invalid(rr, ref.nodata)
    return _finite(fr), _finite(rr), bad


class ReducedStrips:
    """``assess_reduced``'s strips on a Dask cluster's workers (``cluster.Cluster.run_tiles``). A strip is
    read with the rows above it that the running indices keep between strips
    (``metrics.RunningIndices.resume``) and comes back as its sums (and, for a raster's last strip, the rows
    the final result needs), which this machine absorbs in order: the numbers are those of an in-process run,
    bit for bit. Each worker thread opens the rasters once."""

    def __init__(self, reference_path, geometry, groups, options):
        self.reference = reference_path
        self.geometry, self.groups, self.options = geometry, groups, options

    def setup(self):
        return _open_grid(self.reference, "reference"), {}

    def __call__(self, job, item):
        ref, fused = job
        k, top, n, last = item
        geometry = self.geometry[k]
        if k not in fused:
            fused[k] = _open_grid(geometry["path"], "fused")
        seed = min(top, max(BLOCK, metrics.RunningIndices.SEED_ROWS))
        fr, rr, bad = _read_strip(fused[k], ref, geometry, top - seed, seed + n)
        running = metrics.RunningIndices.resume(top, rr[:, :seed], fr[:, :seed], bad[:seed], **self.options)
        structure = metrics.RunningSSIM.resume(rr[:, :seed] if seed else None, fr[:, :seed],
                                               self.options["data_range"])
        fr, rr, bad = fr[:, seed:], rr[:, seed:], bad[seed:]
        running.update(rr, fr, bad)
        structure.update(rr, fr)
        errors = _ErrorMap(geometry["rows"], geometry["cols"], self.groups[k])
        errors.add(fr - rr, top, 0)
        if not last:
            running.drop_tails()
            structure.tail = None
        return running, structure, errors.part(top, n), int(bad.sum())


@user_errors
@_bounded_gdal_cache
def assess_reduced(fused_paths, reference_path: str, ratio: Optional[int] = None, dim_cut: int = 21,
                   sensor: int = 0, *, data_range: Optional[float] = None, cast_uint16: Optional[bool] = None,
                   strip_rows: Optional[int] = None, progress: Optional[Callable] = None,
                   is_cancelled: Optional[Callable] = None, log: Optional[Callable] = None,
                   scheduler: Optional[str] = None) -> dict:
    """Reduced-resolution indices of each fused raster against the reference (METHODS.md §3.2).

    ``fused_paths``: one path or a list; ``reference_path``: the ground truth (the original MS of a pair
    degraded by Wald's protocol), on the fused grid. ``ratio``: PAN/MS scale ratio of ERGAS (default: the
    fused raster's PANSHARPENING_RATIO metadata, else the reference's RATIO). ``dim_cut``: border cut
    (21 in the toolbox; 0 for none). ``data_range``: PSNR peak (default: BIT_DEPTH metadata of the
    reference, else its maximum). ``cast_uint16``: the toolbox's uint16 cast before Q2n (default: when the
    reference holds integer counts). ``strip_rows``: rows per strip (default from :data:`STRIP_VALUES`).
    ``scheduler``: the address of a Dask scheduler whose workers read and assess the strips (the same
    numbers, bit for bit: :class:`ReducedStrips`); empty: this process.

    Returns ``dict(mode='reduced', reference, ratio, ratio_source, dim_cut, data_range, data_range_source,
    q2n_uint16_cast, sensor, notes, groups, rows=[{name, path, bands, reference_bands, window,
    nodata_fraction, seconds, q2n, q_avg, sam, ergas, scc, psnr, ssim}], error_maps=[{group label: (h, w) array}],
    error_map_label)``; ``window`` is (col, row, cols, rows) in the fused raster's pixels.
    """
    log = log or (lambda message: None)
    paths = _fused_list(fused_paths)
    ref = _open_grid(reference_path, "reference")
    sens = sensor_by_index(sensor)
    fused = [_open_grid(p, "fused") for p in paths]
    notes = []
    plans = []
    for g in fused:
        ov = _overlap(g, ref)
        f_bands, r_bands, note = _match_bands(g, ref)
        if note:
            notes.append(note)
        rows_cut, cols_cut = metrics.border_cut_window(ov.rows, ov.cols, dim_cut)
        plans.append((g, ov, f_bands, r_bands, rows_cut, cols_cut))
    ratio, ratio_source = _ratio(ratio, fused, ref, notes)
    all_ref_bands = sorted({b for plan in plans for b in plan[3]})
    peak, peak_source = _data_range(ref, all_ref_bands, data_range)
    if cast_uint16 is None:
        cast_uint16 = _is_integer_valued(ref.ds, all_ref_bands)
        note = _cast_note(cast_uint16, "reference")
        if note:
            notes.append(note)
    names = _display_names(paths)
    total_rows = sum(p[4].stop - p[4].start for p in plans)
    done = 0
    rows_out, maps_out, groups_out = [], [], []
    geometry = _strip_geometry(plans)
    strips = []  # per raster: (running indices, running SSIM, error map, rows per strip)
    for (g, _, f_bands, _, _, _), geo in zip(plans, geometry):
        h, w = geo["rows"], geo["cols"]
        groups = band_groups([g.descriptions[b - 1] for b in f_bands])
        strips.append((metrics.RunningIndices(ratio=ratio, data_range=peak, block=BLOCK, cast_uint16=cast_uint16),
                       metrics.RunningSSIM(peak), _ErrorMap(h, w, groups),
                       strip_rows or max(BLOCK, min(2048, STRIP_VALUES // max(1, w * len(f_bands)) // BLOCK * BLOCK))))
    bad_pixels = [0] * len(plans)
    seconds = [0.0] * len(plans)
    with cluster.connect(scheduler, log, paths + [reference_path]) as executor:
        if executor is None:
            for k, (plan, geo) in enumerate(zip(plans, geometry)):
                t0 = time.perf_counter()
                running, structure, errors, strip = strips[k]
                for top in range(0, geo["rows"], strip):
                    if is_cancelled is not None and is_cancelled():
                        raise Cancelled("The assessment was cancelled.")
                    n = min(strip, geo["rows"] - top)
                    fr, rr, bad = _read_strip(plan[0], ref, geo, top, n)
                    bad_pixels[k] += int(bad.sum())
                    running.update(rr, fr, bad)
                    structure.update(rr, fr)
                    errors.add(fr - rr, top, 0)
                    done += n
                    if progress is not None:
                        progress(done / total_rows)
                seconds[k] = time.perf_counter() - t0
        else:
            task = ReducedStrips(reference_path, geometry, [s[2].groups for s in strips],
                                 dict(ratio=ratio, data_range=peak, block=BLOCK, cast_uint16=cast_uint16))
            items = [(k, top, min(strip, geo["rows"] - top), top + strip >= geo["rows"])
                     for k, (geo, (_, _, _, strip)) in enumerate(zip(geometry, strips))
                     for top in range(0, geo["rows"], strip)]
            log(f"Assessing {len(items)} strips on {executor.label}.")
            start = [time.perf_counter()]

            def absorb(item, part):
                k, last = item[0], item[3]
                running, structure, errors, _ = strips[k]
                running.absorb(part[0])
                structure.absorb(part[1])
                errors.merge(part[2])
                bad_pixels[k] += part[3]
                if last:
                    seconds[k] = time.perf_counter() - start[0]
                    start[0] = time.perf_counter()

            executor.run_tiles(items, task, absorb, progress, is_cancelled)
    for k, (name, (g, _, f_bands, r_bands, _, _), geo) in enumerate(zip(names, plans, geometry)):
        running, structure, errors, _ = strips[k]
        h, w = geo["rows"], geo["cols"]
        row = dict(name=name, path=g.path, bands=len(f_bands), reference_bands=r_bands,
                   window=(*geo["fused_at"], w, h), nodata_fraction=bad_pixels[k] / float(h * w),
                   seconds=seconds[k])
        row.update(running.result())
        row["ssim"] = structure.result()
        log(f"{name}: " + ", ".join(f"{INDICES[key][0]} {row[key]:.4f}" for key in REDUCED_KEYS))
        rows_out.append(row)
        maps_out.append(errors.maps())
        groups_out.append([label for label, _ in errors.groups])
    if any(r["nodata_fraction"] > 0 for r in rows_out):
        notes.append("Some pixels are no-data (NaN, infinite, or the raster's nodata value) in a fused raster or "
                     "the reference: SAM, ERGAS and PSNR skip them; the window indices (Q, Q2n, SCC, SSIM) see "
                     "them as 0 in both images; see the no-data column.")
    for r in rows_out:
        undefined = [INDICES[k][0] for k in REDUCED_KEYS if not math.isfinite(r[k])]
        if r["nodata_fraction"] >= 1.0:
            notes.append(f"{r['name']} has no valid pixel where the reference has one: its indices are undefined.")
        elif undefined:
            notes.append(f"{r['name']}: {', '.join(undefined)} undefined (NaN): the compared window "
                         f"({r['window'][2]} x {r['window'][3]} pixels after the border cut) is smaller than the "
                         f"index's window of {BLOCK} pixels, or its pixels have no variance.")
    return dict(mode="reduced", reference=reference_path, ratio=ratio, ratio_source=ratio_source,
                dim_cut=int(dim_cut), block=BLOCK, data_range=peak, data_range_source=peak_source,
                q2n_uint16_cast=bool(cast_uint16), sensor=sens.key, notes=notes, rows=rows_out,
                groups=groups_out, error_maps=maps_out,
                error_map_label="RMS over the group's bands of (fused - reference), data units")


# ----------------------------------------------------------------------------------------------------------
# Full resolution

def separable_filter_valid(x: np.ndarray, kernels) -> np.ndarray:
    """Per-band separable correlation, 'valid': (C, H, W) float64 and C kernels of length L -> (C, H-L+1, W-L+1).

    The same operation as ``mtf.filter_valid``, in numpy: a matrix product over sliding windows is an order
    of magnitude faster on the CPU than torch's depthwise float64 convolution.
    """
    out = []
    for band, kernel in zip(x, kernels):
        kernel = np.asarray(kernel, dtype=np.float64)
        rows = np.lib.stride_tricks.sliding_window_view(band, len(kernel), axis=0) @ kernel
        out.append(np.lib.stride_tricks.sliding_window_view(rows, len(kernel), axis=1) @ kernel)
    return np.stack(out)


def _upsample_axis(x: np.ndarray, ratio: int, halo: int, axis: int) -> np.ndarray:
    """``mtf.upsample`` along one axis, in numpy (polyphase): (..., n + 2 halo, ...) -> (..., ratio * n, ...).

    Output pixel ``r*m + phase`` of the interior is ``sum_d x[halo + m - d] * K[r*d + phase - m_min]`` over
    the taps of the toolbox interpolator ``K`` (``mtf.interp_kernel``): one small correlation per phase.
    """
    kernel, m_min = mtf.interp_kernel(ratio)
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1] - 2 * halo
    out = np.empty(x.shape[:-1] + (ratio * n,))
    for phase in range(ratio):
        offset = phase - m_min
        d_min = -(offset // ratio)                     # ceil(-offset / r)
        d_max = (len(kernel) - 1 - offset) // ratio
        taps = np.array([kernel[ratio * d + offset] for d in range(d_max, d_min - 1, -1)])
        windows = np.lib.stride_tricks.sliding_window_view(x, len(taps), axis=-1)
        out[..., phase::ratio] = windows[..., halo - d_max:halo - d_max + n, :] @ taps
    return np.moveaxis(out, -1, axis)


def upsample_valid(x: np.ndarray, ratio: int, halo: int) -> np.ndarray:
    """The toolbox interpolation of ``mtf.upsample`` in numpy: (C, h + 2 halo, w + 2 halo) -> (C, r h, r w).

    float64 throughout; several times faster on the CPU than torch's float64 transposed convolution.
    """
    if ratio == 1:
        return x[:, halo:x.shape[1] - halo, halo:x.shape[2] - halo]
    rows = _upsample_axis(np.asarray(x, dtype=np.float64), ratio, halo, axis=1)
    return _upsample_axis(rows, ratio, halo, axis=2)


class _FullResolutionTiles:
    """The reference images of the full-resolution indices, for any tile of the PAN output grid of ``info``.

    The MS and the reduced PAN are interpolated with replicated borders at the processing grid's edges, as
    ``mtf.upsample_image`` does on the whole grid.
    """

    def __init__(self, info: raster.PairInfo):
        self.torch = import_torch()
        self.info = info
        self.r = info.ratio
        self.reader = raster.PairReader(info)
        self.interp_halo = mtf.interp_halo(self.r)
        self.pan_kernel = mtf.decimation_kernel(mtf.bicubic_decimation_kernel_1d(self.r), self.r)
        self.pan_pad = self.r * (len(self.pan_kernel) // self.r + 1)

    def _tensor(self, array):
        return self.torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))[None]

    def _ms_range(self, p0, p1):
        return p0 // self.r - self.interp_halo, -(-p1 // self.r) + self.interp_halo

    def _upsampled(self, lowres, p0, p1, q0, q1, m0, n0):
        up = upsample_valid(lowres, self.r, self.interp_halo)
        top, left = p0 - self.r * (m0 + self.interp_halo), q0 - self.r * (n0 + self.interp_halo)
        return up[:, top:top + p1 - p0, left:left + q1 - q0]

    def ms_up(self, p0, p1, q0, q1):
        """MS interpolated onto PAN rows p0..p1-1, cols q0..q1-1 of the output grid: (C, h, w)."""
        m0, m1 = self._ms_range(p0, p1)
        n0, n1 = self._ms_range(q0, q1)
        return self._upsampled(self.reader.read_ms(m0, m1, n0, n1), p0, p1, q0, q1, m0, n0)

    def pan(self, p0, p1, q0, q1):
        return self.reader.read_pan(p0, p1, q0, q1)[0].astype(np.float64)

    def pan_lowres_up(self, p0, p1, q0, q1):
        """``interp23tap(imresize(P, 1/ratio))`` on the tile: (h, w)."""
        r, pad = self.r, self.pan_pad
        m0, m1 = self._ms_range(p0, p1)
        n0, n1 = self._ms_range(q0, q1)
        a, b = max(m0, 0), min(m1, self.info.rows)
        c, d = max(n0, 0), min(n1, self.info.cols)
        pan = self.reader.read_pan(r * a - pad, r * b + pad, r * c - pad, r * d + pad)
        pan_lr = mtf.decimate(self._tensor(pan), self.pan_kernel, r, pad, (b - a, d - c))[0].numpy()
        # beyond the processing grid the reduced PAN is replicated (upsample_image's replicate padding)
        pan_lr = np.pad(pan_lr, ((0, 0), (a - m0, m1 - b), (c - n0, n1 - d)), mode="edge")
        return self._upsampled(pan_lr, p0, p1, q0, q1, m0, n0)[0]


def _centred_block_window(rows, cols, block, name):
    h, w = rows // block * block, cols // block * block
    if not h or not w:
        raise PansharpenError(f"The fused raster '{name}' overlaps the PAN/MS pair by {rows} x {cols} pixels, "
                              f"less than one {block} x {block} block of the full-resolution indices.")
    return (rows - h) // 2, (cols - w) // 2, h, w


class _FullResolutionSums:
    """Block sums of one fused raster over the tiles of its window (the whole-window means at the end)."""

    def __init__(self, plan, gains, h, w, n_bands):
        self.plan = plan
        self.kernels = [mtf.mtf_kernel_1d(float(g), plan["info"].ratio) for g in gains]
        self.halo = (len(self.kernels[0]) - 1) // 2
        self.groups = band_groups([plan["grid"].descriptions[b - 1] for b in plan["fused_bands"]])
        self.errors = _ErrorMap(h, w, self.groups)
        pairs = len(np.triu_indices(n_bands, k=1)[0])
        self.q2n = 0.0
        self.q2n_blocks = 0
        self.q_high = np.zeros(n_bands)
        self.q_fused_pairs = np.zeros(pairs)
        self.bad_pixels = 0
        self.nan_blocks = 0  # blocks where both images are constant: Q is NaN (0/0), as in the toolbox
        self.seconds = 0.0

    def fused_tile(self, t0, t1, u0, u1, h, w):
        """The fused tile (C, t1-t0, u1-u0) and its MTF low-pass at the PAN scale (borders of the window
        replicated, as the toolbox filters the whole image it is given)."""
        g, ov, (dr, dc) = self.plan["grid"], self.plan["overlap"], self.plan["offset"]
        fh = self.halo
        a, b = max(t0 - fh, 0), min(t1 + fh, h)
        c, d = max(u0 - fh, 0), min(u1 + fh, w)
        raw = _read(g.ds, self.plan["fused_bands"], ov.a_col + dc + c, ov.a_row + dr + a, d - c, b - a)
        inner = raw[:, t0 - a:t1 - a, u0 - c:u1 - c]
        self.bad_pixels += int(_invalid(inner, g.nodata).sum())
        raw = _finite(raw)
        padded = np.pad(raw, ((0, 0), (fh - (t0 - a), fh - (b - t1)), (fh - (u0 - c), fh - (d - u1))), mode="edge")
        return raw[:, t0 - a:t1 - a, u0 - c:u1 - c], separable_filter_valid(padded, self.kernels)

    def absorb(self, tile: "_FullResolutionSums"):
        """Add a tile's sums computed apart (``FullResolutionTiles``; its ``errors`` an ``_ErrorMap.part``)."""
        self.q2n += tile.q2n
        self.q2n_blocks += tile.q2n_blocks
        self.q_high += tile.q_high
        self.q_fused_pairs += tile.q_fused_pairs
        self.bad_pixels += tile.bad_pixels
        self.nan_blocks += tile.nan_blocks
        self.seconds += tile.seconds
        self.errors.merge(tile.errors)


def _full_resolution_tile(src, members, tile, row0, col0, h, w, cast_uint16):
    """The block sums of one tile (t0, t1, u0, u1) of a window: added to each member's
    ``_FullResolutionSums``; returned, those of the MS and PAN that all members share (``_add_shared``)."""
    t0, t1, u0, u1 = tile
    start = time.perf_counter()
    p0, p1, q0, q1 = row0 + t0, row0 + t1, col0 + u0, col0 + u1
    ms_up = src.ms_up(p0, p1, q0, q1)
    n_bands = ms_up.shape[0]
    i, j = np.triu_indices(n_bands, k=1)
    pan = src.pan(p0, p1, q0, q1)
    q_map = metrics.q_block_map(ms_up, src.pan_lowres_up(p0, p1, q0, q1)[None], BLOCK)
    shared = dict(q_low=q_map.sum(axis=(1, 2)), q_ms_pairs=None,
                  blocks=(t1 - t0) // BLOCK * ((u1 - u0) // BLOCK))
    nan_blocks = int(np.isnan(q_map).sum())
    if n_bands > 1:
        q_map = metrics.q_block_map(ms_up[i], ms_up[j], BLOCK)
        shared["q_ms_pairs"] = q_map.sum(axis=(1, 2))
        nan_blocks += int(np.isnan(q_map).sum())
    seconds = (time.perf_counter() - start) / len(members)
    for s in members:
        start = time.perf_counter()
        fused, fused_lp = s.fused_tile(t0, t1, u0, u1, h, w)
        _, q_map = metrics.q2n(ms_up, fused_lp, BLOCK, BLOCK, cast_uint16=cast_uint16, return_map=True)
        s.q2n += float(q_map.sum())
        s.q2n_blocks += q_map.size
        q_map = metrics.q_block_map(fused, pan[None], BLOCK)
        s.q_high += q_map.sum(axis=(1, 2))
        s.nan_blocks += nan_blocks + int(np.isnan(q_map).sum())
        if n_bands > 1:
            q_map = metrics.q_block_map(fused[i], fused[j], BLOCK)
            s.q_fused_pairs += q_map.sum(axis=(1, 2))
            s.nan_blocks += int(np.isnan(q_map).sum())
        s.errors.add(fused_lp - ms_up, t0, u0)
        s.seconds += seconds + time.perf_counter() - start
    return shared


def _add_shared(total, tile):
    total["q_low"] += tile["q_low"]
    if tile["q_ms_pairs"] is not None:
        total["q_ms_pairs"] += tile["q_ms_pairs"]
    total["blocks"] += tile["blocks"]


class FullResolutionTiles:
    """``assess_full``'s tiles of one window on a Dask cluster's workers (``cluster.Cluster.run_tiles``):
    a tile comes back as its block sums (each raster's, in a fresh ``_FullResolutionSums``, and the shared
    ones), which this machine adds in tile order: the numbers of an in-process run, bit for bit. Each worker
    thread opens the pair and the rasters once."""

    def __init__(self, plans, gains, window, cast_uint16):
        self.plans = [{key: value for key, value in plan.items() if key != "grid"} | dict(path=plan["grid"].path)
                      for plan in plans]
        self.gains, self.window, self.cast_uint16 = list(gains), window, cast_uint16

    def setup(self):
        plans = [dict(plan, grid=_open_grid(plan["path"], "fused")) for plan in self.plans]
        return _FullResolutionTiles(plans[0]["info"]), plans

    def __call__(self, job, tile):
        src, plans = job
        row0, col0, h, w = self.window
        n_bands = len(plans[0]["ms_bands"])
        members = [_FullResolutionSums(plan, self.gains, h, w, n_bands) for plan in plans]
        shared = _full_resolution_tile(src, members, tile, row0, col0, h, w, self.cast_uint16)
        for s in members:
            s.errors = s.errors.part(tile[0], tile[1] - tile[0])
            s.plan = s.kernels = None  # what travels back: the sums
        return shared, members


def _finish_full_rows(members, plans, sums, shared, ms_bands, h, w, rows_out, maps_out, groups_out, notes, log):
    """The rows of a window's rasters from their block sums."""
    q_low, q_ms_pairs, blocks = shared["q_low"], shared["q_ms_pairs"], shared["blocks"]
    n_bands = len(ms_bands)
    for k in members:
        s, plan = sums[k], plans[k]
        d_lambda = 1.0 - s.q2n / s.q2n_blocks
        d_s = float(np.mean(np.abs(s.q_high / blocks - q_low / blocks)))
        d_lambda_qnr = float(np.mean(np.abs(s.q_fused_pairs - q_ms_pairs) / blocks)) if n_bands > 1 \
            else float("nan")
        ov, (dr, dc) = plan["overlap"], plan["offset"]
        row = dict(name=plan["name"], path=plan["grid"].path, bands=n_bands, ms_bands=list(ms_bands),
                   window=(ov.a_col + dc, ov.a_row + dr, w, h), nodata_fraction=s.bad_pixels / float(h * w),
                   d_lambda=float(d_lambda), d_s=d_s, hqnr=metrics.hqnr(d_lambda, d_s),
                   d_lambda_qnr=d_lambda_qnr, qnr=metrics.qnr(d_lambda_qnr, d_s), seconds=s.seconds)
        log(f"{plan['name']}: " + ", ".join(f"{INDICES[key][0]} {row[key]:.4f}" for key in FULL_KEYS))
        if s.nan_blocks:
            notes.append(f"{plan['name']}: in {s.nan_blocks} block comparisons both images are constant, "
                         "so Q is undefined (0/0) and the index that uses it is NaN, as in the toolbox.")
        rows_out[k] = row
        maps_out[k] = s.errors.maps()
        groups_out[k] = [label for label, _ in s.groups]


@user_errors
@_bounded_gdal_cache
def assess_full(fused_paths, pan_path: str, ms_path: str, sensor: int = 0, *, cast_uint16: Optional[bool] = None,
                tile_size: int = FULL_TILE, progress: Optional[Callable] = None,
                is_cancelled: Optional[Callable] = None, log: Optional[Callable] = None,
                scheduler: Optional[str] = None) -> dict:
    """Full-resolution indices of each fused raster against the PAN and MS it was made from (METHODS.md §3.3).

    ``D_lambda`` (Khan) = 1 - Q2n(MS_up, MTF(F)); ``D_s`` = mean_b |Q(F_b, P) - Q(MS_up_b, P_LP)| with
    ``P_LP = interp23(bicubic decimation of P)``; ``HQNR`` = (1 - D_lambda)(1 - D_s); QNR's band-pair
    ``d_lambda_qnr`` and ``qnr``. MS_up is the provider's 23-tap interpolation of the MS onto the PAN grid
    (the ``upsample`` method); MTF is the sensor's (``sensor``: index into SENSORS). Q and Q2n on distinct
    32 x 32 blocks: the assessed window is the overlap of the fused raster with the PAN/MS processing grid,
    cut to a multiple of 32 pixels around its centre. ``cast_uint16``: the toolbox's uint16 cast before
    Q2n (default: when the MS holds integer counts). ``tile_size``: PAN pixels per tile side (rounded to a
    multiple of 32); memory is a few times ``bands * tile_size^2`` values per raster assessed together.
    Rasters with the same window and bands are assessed together, tile by tile, so that the interpolated MS
    and PAN of a tile are computed once for all of them. ``scheduler``: the address of a Dask scheduler
    whose workers compute the tiles (the same numbers, bit for bit: :class:`FullResolutionTiles`); empty:
    this process.

    Returns ``dict(mode='full', pan, ms, ratio, sensor, notes, groups, rows=[{name, path, bands, ms_bands,
    window, nodata_fraction, seconds, d_lambda, d_s, hqnr, d_lambda_qnr, qnr}], error_maps, error_map_label)``.
    """
    log = log or (lambda message: None)
    paths = _fused_list(fused_paths)
    sens = sensor_by_index(sensor)
    ms_grid = _open_grid(ms_path, "MS")
    ms_count = len(ms_grid.descriptions)
    names = _display_names(paths)
    notes = []
    plans = []
    infos = {}
    for name, path in zip(names, paths):
        g = _open_grid(path, "fused")
        f_bands, ms_bands, note = _match_bands(g, ms_grid)
        if note:
            notes.append(note)
        key = tuple(ms_bands)
        if key not in infos:
            infos[key] = raster.inspect_pair(pan_path, ms_path, list(ms_bands))
            notes.extend(n for n in infos[key].notes if n not in notes)
        info = infos[key]
        pan_grid = _Grid("PAN/MS processing grid", "PAN grid", info.out_geotransform, info.crs_wkt,
                         info.out_cols, info.out_rows)
        ov = _overlap(g, pan_grid)
        dr, dc, h, w = _centred_block_window(ov.rows, ov.cols, BLOCK, name)
        plans.append(dict(name=name, grid=g, info=info, fused_bands=f_bands, ms_bands=list(ms_bands), overlap=ov,
                          offset=(dr, dc), window=(ov.b_row + dr, ov.b_col + dc, h, w)))
    if cast_uint16 is None:
        cast_uint16 = _is_integer_valued(ms_grid.ds, sorted({b for p in plans for b in p["ms_bands"]}))
        note = _cast_note(cast_uint16, "MS")
        if note:
            notes.append(note)
    tile = max(BLOCK, int(tile_size) // BLOCK * BLOCK)
    groups = {}
    for index, plan in enumerate(plans):
        groups.setdefault((tuple(plan["ms_bands"]), plan["window"]), []).append(index)
    total = sum(p["window"][2] * p["window"][3] for p in plans)
    done = 0
    rows_out = [None] * len(plans)
    maps_out = [None] * len(plans)
    groups_out = [None] * len(plans)
    with cluster.connect(scheduler, log, paths + [pan_path, ms_path]) as executor:
        for (ms_bands, (row0, col0, h, w)), members in groups.items():
            n_bands = len(ms_bands)
            gains = sens.gains_for(list(ms_bands), band_count=ms_count)
            sums = {k: _FullResolutionSums(plans[k], gains, h, w, n_bands) for k in members}
            shared = dict(q_low=np.zeros(n_bands), q_ms_pairs=np.zeros(len(np.triu_indices(n_bands, k=1)[0])),
                          blocks=0)
            tiles = [(t0, min(t0 + tile, h), u0, min(u0 + tile, w))
                     for t0 in range(0, h, tile) for u0 in range(0, w, tile)]
            if executor is None:
                src = _FullResolutionTiles(plans[members[0]]["info"])
                for t in tiles:
                    if is_cancelled is not None and is_cancelled():
                        raise Cancelled("The assessment was cancelled.")
                    _add_shared(shared, _full_resolution_tile(src, [sums[k] for k in members], t, row0, col0,
                                                              h, w, cast_uint16))
                    done += (t[1] - t[0]) * (t[3] - t[2]) * len(members)
                    if progress is not None:
                        progress(done / total)
            else:
                task = FullResolutionTiles([plans[k] for k in members], gains, (row0, col0, h, w), cast_uint16)
                log(f"Assessing {len(tiles)} tiles of {len(members)} raster(s) on {executor.label}.")
                group_done = done

                def merge(t, part):
                    nonlocal done
                    _add_shared(shared, part[0])
                    for k, theirs in zip(members, part[1]):
                        sums[k].absorb(theirs)
                    done += (t[1] - t[0]) * (t[3] - t[2]) * len(members)

                executor.run_tiles(tiles, task, merge, progress and (
                    lambda fraction: progress((group_done + fraction * h * w * len(members)) / total)),
                    is_cancelled)
            _finish_full_rows(members, plans, sums, shared, ms_bands, h, w, rows_out, maps_out, groups_out,
                              notes, log)
    if any(r["nodata_fraction"] > 0 for r in rows_out):
        notes.append("Some pixels of a fused raster are no-data (NaN, or its nodata value): they count as 0, "
                     "as in the toolbox; see the no-data column.")
    ratio = next(iter(infos.values())).ratio
    return dict(mode="full", pan=pan_path, ms=ms_path, ratio=ratio, sensor=sens.key, block=BLOCK,
                q2n_uint16_cast=bool(cast_uint16), notes=notes, rows=rows_out, groups=groups_out,
                error_maps=maps_out,
                error_map_label="RMS over the group's bands of (MTF-filtered fused - interpolated MS), "
                                "data units: the spectral distortion D_lambda measures")


# ----------------------------------------------------------------------------------------------------------
# Reports

def index_keys(results: dict) -> tuple:
    return REDUCED_KEYS if results.get("mode") == "reduced" else FULL_KEYS


def to_json(results: dict) -> str:
    """The results without the error-map arrays, as JSON (NaN and infinities as null)."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value
    return json.dumps(clean({k: v for k, v in results.items() if k != "error_maps"}))


def _best(rows, key):
    values = [r.get(key) for r in rows]
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(finite) < 2:
        return None
    higher = INDICES[key][1]
    return max(finite) if higher else min(finite)


def _format(value, key=None):
    if not isinstance(value, (int, float)):
        return str(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}" if key == "psnr" else f"{value:.4f}"


def _colour_scale(results):
    """Per group label: the colour scale maximum (99th percentile of every map's cells)."""
    pooled = {}
    for maps in results.get("error_maps") or []:
        for label, values in maps.items():
            pooled.setdefault(label, []).append(values[np.isfinite(values)])
    return {label: float(np.percentile(np.concatenate(v), 99)) if sum(a.size for a in v) else 1.0
            for label, v in pooled.items()}


def write_html_report(results: dict, path: str, error_maps: bool = True, title: Optional[str] = None) -> str:
    """Write the results as an HTML page: context, the table (one row per fused raster, the best value
    of each column in bold on green), notes, and with ``error_maps`` a PNG error map per fused raster and
    band group, all on one colour scale per group. Returns ``path``."""
    keys = index_keys(results)
    rows = results["rows"]
    mode = results["mode"]
    title = title or ("Pansharpening quality, reduced resolution (Wald's protocol)" if mode == "reduced"
                      else "Pansharpening quality, full resolution (no reference)")
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}td.name,th.name{text-align:left}"
             "td.best{background:#c8f0c8;font-weight:bold}.maps td{text-align:center;vertical-align:top}"
             "img{image-rendering:pixelated}.small{color:#555;font-size:90%}</style></head><body>",
             f"<h1>{esc(title)}</h1><ul>"]
    if mode == "reduced":
        parts.append(f"<li>Reference: {esc(str(results['reference']))}</li>")
        parts.append(f"<li>Ratio {results['ratio']} ({esc(results['ratio_source'])}); border cut "
                     f"{results['dim_cut']} pixels; Q2n and Q on {results['block']} x {results['block']} blocks"
                     "</li>")
        parts.append(f"<li>PSNR peak value {results['data_range']:g}: {esc(results['data_range_source'])}</li>")
    else:
        parts.append(f"<li>PAN: {esc(str(results['pan']))}</li><li>MS: {esc(str(results['ms']))}</li>")
        parts.append(f"<li>Ratio {results['ratio']}; sensor MTF: {esc(results['sensor'])}; blocks of "
                     f"{results['block']} x {results['block']} pixels; every index computed tile by tile on "
                     "the whole assessed window (no subsampling)</li>")
    parts.append(f"<li>Q2n uint16 cast (toolbox): {'yes' if results['q2n_uint16_cast'] else 'no'}</li></ul>")
    arrows = "".join(f"<th>{esc(INDICES[k][0])} {'&uarr;' if INDICES[k][1] else '&darr;'}</th>" for k in keys)
    parts.append(f"<table><tr><th class='name'>Fused raster</th>{arrows}<th>No-data</th>"
                 "<th>Window (col, row, cols, rows)</th><th>Seconds</th></tr>")
    best = {k: _best(rows, k) for k in keys}
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            cls = " class='best'" if best[k] is not None and v == best[k] else ""
            cells.append(f"<td{cls}>{_format(v, k)}</td>")
        parts.append(f"<tr><td class='name' title='{esc(str(r['path']))}'>{esc(r['name'])}</td>{''.join(cells)}"
                     f"<td>{100 * r['nodata_fraction']:.2f} %</td><td>{esc(str(tuple(r['window'])))}</td>"
                     f"<td>{r['seconds']:.2f}</td></tr>")
    parts.append("</table><p class='small'>&uarr; higher is better, &darr; lower is better; the best value of "
                 "each column is highlighted.</p>")
    if results.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in results["notes"]) + "</ul>")
    if error_maps and results.get("error_maps"):
        scale = _colour_scale(results)
        labels = []
        for group_labels in results["groups"]:
            labels += [g for g in group_labels if g not in labels]
        parts.append(f"<h2>Error maps</h2><p class='small'>{esc(results['error_map_label'])}; dark = small, "
                     "bright = large, one colour scale per band group for every raster.</p>")
        parts.append("<table class='maps'><tr><th class='name'>Fused raster</th>"
                     + "".join(f"<th>{esc(label)}<br><span class='small'>0 to {scale[label]:.4g}</span></th>"
                               for label in labels) + "</tr>")
        for r, maps in zip(rows, results["error_maps"]):
            cells = []
            for label in labels:
                if label not in maps:
                    cells.append("<td>-</td>")
                    continue
                values = maps[label]
                data = base64.b64encode(png_bytes(colourise(values, scale[label]))).decode("ascii")
                zoom = MAP_DISPLAY / max(values.shape)  # shown larger, pixels kept square and sharp
                cells.append(f"<td><img alt='error map {esc(label)}' width='{round(values.shape[1] * zoom)}' "
                             f"height='{round(values.shape[0] * zoom)}' src='data:image/png;base64,{data}'></td>")
            parts.append(f"<tr><td class='name'>{esc(r['name'])}</td>{''.join(cells)}</tr>")
        bar = colourise(np.tile(np.linspace(0, 1, 160), (12, 1)), 1.0)
        parts.append("</table><p class='small'>Scale: <img alt='colour scale' src='data:image/png;base64,"
                     f"{base64.b64encode(png_bytes(bar)).decode('ascii')}'> 0 to the value under each "
                     "group's name (99th percentile of all maps).</p>")
    parts.append("</body></html>")
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise PansharpenError(f"The report folder '{out_dir}' does not exist.")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path


def write_csv(results: dict, path: str) -> str:
    """One line per fused raster: name, path, mode, the indices of the mode, no-data fraction, window,
    seconds. Returns ``path``."""
    keys = index_keys(results)
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise PansharpenError(f"The CSV folder '{out_dir}' does not exist.")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "path", "mode", *keys, "nodata_fraction", "window_col", "window_row",
                         "window_cols", "window_rows", "seconds"])
        for r in results["rows"]:
            writer.writerow([r["name"], r["path"], results["mode"],
                             *[repr(float(r[k])) if r.get(k) is not None else "" for k in keys],
                             repr(float(r["nodata_fraction"])), *r["window"], f"{r['seconds']:.3f}"])
    return path


def format_table(results: dict) -> str:
    """The indices as a plain-text table (logs, feedback)."""
    keys = index_keys(results)
    width = max([len("Fused raster")] + [len(r["name"]) for r in results["rows"]])
    lines = ["  ".join(["Fused raster".ljust(width)] + [INDICES[k][0].rjust(15) for k in keys])]
    for r in results["rows"]:
        lines.append("  ".join([r["name"].ljust(width)] + [_format(r.get(k), k).rjust(15) for k in keys]))
    return "\n".join(lines)
