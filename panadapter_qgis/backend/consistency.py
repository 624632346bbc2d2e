"""Spectral-consistency projection of a fused image: a diagnostic of the evaluation protocol, not a product step.

Wald's consistency property says that a fused image, degraded by the sensor MTF and decimated by the ratio,
should give back the MS it was made from. Call that degradation ``D`` (the operator of ``wald.degrade``,
``mtf.degrade_image``: per-band MTF-matched Gaussian, replicate borders, samples at the block centres).
The images ``F`` with ``D F = MS`` form an affine set, and the reduced-resolution reference of Wald's
protocol lies in it by construction. The orthogonal projection of a fused image onto that set,

    P(F) = F + D^T (D D^T)^{-1} (MS - D F),

is therefore never farther from that reference, band by band, in the L2 norm: at reduced resolution it can
only lower every band's error, whatever method made ``F``. At full resolution the real MS is not the
nominal-MTF degradation of the scene, and forcing it raises D_s (measured on the real scenes: README,
``bench/bench_projection.py``), which is why no algorithm of the plugin applies it: it shows how much of a
reduced-resolution gain the protocol's own degradation model can explain.

``D`` is separable (``D F = D_r F D_c^T`` with one small matrix per axis and band), so ``D D^T = (D_r D_r^T)
(x) (D_c D_c^T)`` is solved exactly through the eigen-decomposition of each axis. Large images are projected
in blocks of ``BLOCK`` MS pixels, each with ``HALO`` MS pixels of context on every side (cut at the image
edges): the inverse decays by about 2.5x per MS pixel, so a block's interior gets the pixels of the
whole-image projection to within float rounding. ``project_raster`` projects a fused raster block by block.
"""
from functools import lru_cache
from typing import Callable, Optional

import numpy as np

from . import mtf

BLOCK = 64   # MS pixels per block side
HALO = 24    # MS pixels of context around a block


def _kernel(ratio: int, gain: float) -> np.ndarray:
    """The decimation kernel of a band (``wald.degrade``'s: the MTF Gaussian with the ratio's parity)."""
    return mtf.decimation_kernel(mtf.mtf_kernel_1d(float(gain), int(ratio)), int(ratio))


@lru_cache(maxsize=256)
def axis_matrices(n: int, ratio: int, gain: float):
    """``D`` (n x ratio*n) of one axis, replicate borders, and the eigen-decomposition ``(values, vectors)``
    of ``D D^T`` (n x n), float64.

    Row ``i`` of ``D`` holds the kernel taps at PAN positions ``ratio*i + off + t`` (``mtf.decimate``'s
    phase), a position beyond the axis counting as its edge pixel (replicate padding).
    """
    r = int(ratio)
    k = _kernel(r, gain)
    off = (r - len(k)) // 2
    d = np.zeros((n, r * n))
    for i in range(n):
        q = np.clip(r * i + off + np.arange(len(k)), 0, r * n - 1)
        np.add.at(d[i], q, k)
    values, vectors = np.linalg.eigh(d @ d.T)
    return d, values, vectors


def degrade(fused: np.ndarray, ratio: int, gains) -> np.ndarray:
    """``D F``: Wald's degradation of (C, r*h, r*w) with the per-band MTF ``gains`` (float64)."""
    r = int(ratio)
    c, hh, ww = fused.shape
    return np.stack([axis_matrices(hh // r, r, float(g))[0] @ np.asarray(fused[b], np.float64)
                     @ axis_matrices(ww // r, r, float(g))[0].T for b, g in enumerate(gains)])


def project(fused: np.ndarray, ms: np.ndarray, ratio: int, gains, ms_valid: Optional[np.ndarray] = None,
            strength: float = 0.0):
    """The projection of ``fused`` (C, r*h, r*w) onto the images whose Wald degradation with the per-band MTF
    ``gains`` is ``ms`` (C, h, w), computed on the whole array. ``ms_valid`` (h, w): where the MS is nodata
    its pixel sets no constraint (the residual there is taken as zero). ``strength`` > 0 regularises it:
    ``(D D^T + lambda I)^{-1}`` with ``lambda`` = ``strength`` times the largest eigenvalue of ``D D^T``
    (its zero frequency), so that the frequencies the MTF attenuates most are corrected least (0: the exact
    projection). Returns float64 (C, r*h, r*w)."""
    r = int(ratio)
    c, h, w = ms.shape
    if fused.shape != (c, r * h, r * w):
        raise ValueError(f"fused {fused.shape} does not match the MS {ms.shape} at ratio {r}")
    out = np.empty(fused.shape, np.float64)
    for b in range(c):
        dr, er, vr = axis_matrices(h, r, float(gains[b]))
        dc, ec, vc = axis_matrices(w, r, float(gains[b]))
        f = np.asarray(fused[b], np.float64)
        res = np.asarray(ms[b], np.float64) - dr @ f @ dc.T
        if ms_valid is not None:
            res = np.where(ms_valid, res, 0.0)
        spectrum = np.outer(er, ec)
        lam = float(strength) * spectrum.max()
        z = vr @ ((vr.T @ res @ vc) / (spectrum + lam)) @ vc.T
        out[b] = f + dr.T @ z @ dc
    return out


def _blocks(n: int, block: int = BLOCK):
    return [(s, min(s + block, n)) for s in range(0, n, block)]


def project_region(fused, ms, ratio, gains, row0, col0, rows, cols, ms_valid=None, strength=0.0):
    """Blocks of the global block grid inside the region, each projected with its halo.

    ``fused`` (C, r*H, r*W) and ``ms`` (C, H, W) cover MS rows ``row0 .. row0+H`` and columns
    ``col0 .. col0+W`` of an image of ``rows x cols`` MS pixels. Returns (projected array over the region,
    MS rows (a, b) and columns (c, d) of the grid that it holds the final pixels of): the blocks whose halo
    (clipped at the image edges) the region contains."""
    r = int(ratio)
    h, w = ms.shape[1:]
    out = np.asarray(fused, np.float64).copy()
    done_r = [blk for blk in _blocks(rows) if max(0, blk[0] - HALO) >= row0 and min(rows, blk[1] + HALO) <= row0 + h]
    done_c = [blk for blk in _blocks(cols) if max(0, blk[0] - HALO) >= col0 and min(cols, blk[1] + HALO) <= col0 + w]
    for a, b in done_r:
        ra, rb = max(0, a - HALO) - row0, min(rows, b + HALO) - row0
        for c, d in done_c:
            ca, cb = max(0, c - HALO) - col0, min(cols, d + HALO) - col0
            valid = None if ms_valid is None else ms_valid[ra:rb, ca:cb]
            p = project(fused[:, r * ra:r * rb, r * ca:r * cb], ms[:, ra:rb, ca:cb], r, gains, valid, strength)
            ia, ic = a - row0 - ra, c - col0 - ca
            out[:, r * (a - row0):r * (b - row0), r * (c - col0):r * (d - col0)] = \
                p[:, r * ia:r * (ia + b - a), r * ic:r * (ic + d - c)]
    span_r = (done_r[0][0], done_r[-1][1]) if done_r else (row0, row0)
    span_c = (done_c[0][0], done_c[-1][1]) if done_c else (col0, col0)
    return out, span_r, span_c


def ms_valid_mask(ms, nodata):
    ok = np.isfinite(ms).all(0)
    if nodata is not None and not np.isnan(nodata):
        ok &= ~(ms == np.float32(nodata)).any(0)
    return None if ok.all() else ok


def project_raster(fused_path, pan_path, ms_path, output_path, *, sensor=0, ms_bands=None, float32=True,
                   strength=0.0, progress: Optional[Callable] = None, is_cancelled: Optional[Callable] = None) -> dict:
    """Project a fused raster of the pair (on its PAN grid, one band per selected MS band) and write the
    result to ``output_path`` (renamed into place only on success): for any method's output. ``strength``:
    see :func:`project`."""
    from . import raster
    from .errors import Cancelled, PansharpenError
    from .sensors import sensor_by_index

    info = raster.inspect_pair(pan_path, ms_path, ms_bands)
    fused = raster.open_raster(fused_path, "fused image")
    bands = len(info.ms_bands)
    if (fused.RasterXSize, fused.RasterYSize, fused.RasterCount) != (info.out_cols, info.out_rows, bands):
        raise PansharpenError(f"The fused image is {fused.RasterXSize} x {fused.RasterYSize} x "
                              f"{fused.RasterCount}; the pair's PAN grid is {info.out_cols} x {info.out_rows} "
                              f"with {bands} MS bands.")
    gains = sensor_by_index(sensor).gains_for(info.ms_bands, band_count=raster.open_raster(ms_path, "MS").RasterCount)
    writer = raster.GeoTiffWriter(output_path, info, float32, fused.GetMetadataItem("PANSHARPENING_METHOD") or "")
    r, reader = info.ratio, raster.PairReader(info)
    try:
        for a, b in _blocks(info.rows):   # block rows of the image width, each read with its halo
            if is_cancelled is not None and is_cancelled():
                raise Cancelled()
            lo, hi = max(0, a - HALO), min(info.rows, b + HALO)
            data = fused.ReadAsArray(0, r * lo, info.out_cols, r * (hi - lo)).astype(np.float32)
            ms = reader.read_ms(lo, hi, 0, info.cols)
            p, _, _ = project_region(data.reshape(bands, r * (hi - lo), info.out_cols), ms, r, gains, lo, 0,
                                     info.rows, info.cols, ms_valid_mask(ms, info.ms_nodata), strength)
            writer.write(writer.to_output(p[:, r * (a - lo):r * (b - lo)], None), r * a, 0)
            if progress is not None:
                progress(b / info.rows)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return dict(output=output_path, width=info.out_cols, height=info.out_rows, bands=bands)
