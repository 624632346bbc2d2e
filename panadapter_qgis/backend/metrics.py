"""Quality indices of the standard pansharpening toolbox (Vivone et al., GRSM 2021; DLPan-Toolbox), in numpy.

Reduced resolution (Wald protocol, METHODS.md §3.2, ``indexes_evaluation.m``): :func:`sam`, :func:`ergas`,
:func:`q_avg` (Q), :func:`q2n`, :func:`scc`, :func:`psnr`, after :func:`cut_border`.
Full resolution (METHODS.md §3.3, ``indexes_evaluation_FS.m``): :func:`d_lambda_khan`, :func:`d_s`,
:func:`hqnr`, and QNR's band-pair :func:`d_lambda_qnr`.

Conventions:

* images are ``(C, H, W)`` arrays, bands first; single bands ``(H, W)``; any dtype, computed in float64;
* the reference (ground truth, or the upsampled MS at full resolution) is the first argument, as in the
  toolbox, where it matters: ERGAS normalises by its band means, Q2n normalises each block by its statistics;
* the resampling steps (upsampled MS, low-passed PAN) are the caller's: pass them in, so that this module
  depends on no interpolator. D_lambda (Khan) needs the sensor MTF filter: by default the one of
  :mod:`.mtf`, or any ``mtf_filter`` callable.

Large rasters: :class:`RunningIndices` accumulates the reduced-resolution indices over row strips of any
height with bounded memory, and gives the same numbers as the whole-image functions.
"""
from functools import lru_cache
from math import ceil, log2

import numpy as np

from .errors import PansharpenError

EPS = float(np.finfo(np.float64).eps)  # MATLAB's eps, used by the toolbox for zero standard deviations
UINT16_MAX = 65535.0


def _as_image(x, name: str) -> np.ndarray:
    """(C, H, W) float64 view or copy of ``x``; a 2-D array is one band."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise PansharpenError(f"{name} must be an image of shape (bands, rows, columns), not {a.shape}.")
    return a


def _pair(reference, fused):
    ref = _as_image(reference, "The reference")
    fus = _as_image(fused, "The fused image")
    if ref.shape != fus.shape:
        raise PansharpenError(f"The reference {ref.shape} and the fused image {fus.shape} must have the "
                              "same shape (bands, rows, columns).")
    return ref, fus


# ----------------------------------------------------------------------------------------------------------
# Border cut and the toolbox's uint16 cast

def border_cut_window(height: int, width: int, dim_cut: int = 21):
    """Rows and columns kept by the toolbox's cut ``I(dim_cut:end-dim_cut, dim_cut:end-dim_cut, :)``.

    MATLAB's 1-based ``dim_cut .. end-dim_cut`` is 0-based ``dim_cut-1 .. H-dim_cut-1``: the python slice
    ``[dim_cut-1 : H-dim_cut]``. The cut is asymmetric: dim_cut-1 = 20 pixels go at the top and left, 21 at
    the bottom and right (a 256x256 image keeps 215x215). ``dim_cut <= 0`` keeps everything
    (``flag_cut_bounds = 0``). Returns ``(row_slice, col_slice)``, e.g. for reading a window of a raster.
    """
    if dim_cut <= 0:
        return slice(0, height), slice(0, width)
    if height - 2 * dim_cut + 1 <= 0 or width - 2 * dim_cut + 1 <= 0:
        raise PansharpenError(f"The image ({height}x{width}) is too small for a border cut of {dim_cut} pixels.")
    return slice(dim_cut - 1, height - dim_cut), slice(dim_cut - 1, width - dim_cut)


def cut_border(x, dim_cut: int = 21) -> np.ndarray:
    """``x[..., dim_cut-1:H-dim_cut, dim_cut-1:W-dim_cut]``: the toolbox's border cut (see border_cut_window).

    ``x``: (..., H, W) -> (..., H - 2*dim_cut + 1, W - 2*dim_cut + 1).
    """
    x = np.asarray(x)
    rows, cols = border_cut_window(x.shape[-2], x.shape[-1], dim_cut)
    return x[..., rows, cols]


def to_uint16_matlab(x) -> np.ndarray:
    """MATLAB's ``uint16(x)`` as float64 values: round half away from zero, saturate to [0, 65535], NaN -> 0."""
    a = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
    a = np.clip(a, 0.0, UINT16_MAX)
    floor = np.floor(a)
    return floor + (a - floor >= 0.5)  # a - floor is exact for a >= 0


# ----------------------------------------------------------------------------------------------------------
# SAM, ERGAS, PSNR

def _sam_sums(ref: np.ndarray, fus: np.ndarray):
    """Sum of the spectral angles (radians) and number of pixels with non-zero norms (SAM.m)."""
    dot = np.einsum("chw,chw->hw", ref, fus)
    norm = np.sqrt(np.einsum("chw,chw->hw", ref, ref) * np.einsum("chw,chw->hw", fus, fus))
    valid = norm != 0  # SAM.m drops the pixels where either vector is zero
    # MATLAB takes real(acos(.)) of ratios a rounding error beyond +-1: the same as clipping
    angles = np.arccos(np.clip(dot[valid] / norm[valid], -1.0, 1.0))
    return float(angles.sum()), int(valid.sum())


def sam(reference, fused) -> float:
    """Spectral Angle Mapper in degrees (``SAM.m``).

    ``reference``, ``fused``: (C, H, W). Mean over the pixels of ``arccos(<r, f> / (|r| |f|))``; pixels where
    either vector has zero norm are excluded. NaN when no pixel is left.
    """
    ref, fus = _pair(reference, fused)
    total, count = _sam_sums(ref, fus)
    return float(np.degrees(total / count)) if count else float("nan")


def _ergas_from_sums(sse, ref_sum, count, ratio) -> float:
    mse = np.asarray(sse) / count
    mean = np.asarray(ref_sum) / count
    return float((100.0 / ratio) * np.sqrt(np.mean(mse / mean ** 2)))


def ergas(reference, fused, ratio: float = 4) -> float:
    """ERGAS (``ERGAS.m``): ``(100/ratio) * sqrt(mean_b(mean((ref_b - f_b)^2) / mean(ref_b)^2))``.

    ``reference``, ``fused``: (C, H, W). The band means that normalise the errors are the reference's.
    ``ratio``: PAN/MS scale ratio (4 in the standard protocol).
    """
    ref, fus = _pair(reference, fused)
    count = ref.shape[1] * ref.shape[2]
    sse = ((ref - fus) ** 2).sum(axis=(1, 2))
    return _ergas_from_sums(sse, ref.sum(axis=(1, 2)), count, ratio)


def _psnr_from_sums(sse, count, data_range) -> float:
    mse = np.asarray(sse) / count
    with np.errstate(divide="ignore"):
        return float(np.mean(10.0 * np.log10(data_range ** 2 / mse)))


def psnr(reference, fused, data_range: float) -> float:
    """Mean over bands of ``10*log10(data_range^2 / mse_b)`` (PanCollection's ``analysis_accu``), in dB.

    ``reference``, ``fused``: (C, H, W). ``data_range``: the peak value (2047 for 11-bit WV3/QB data, 1023 for
    GF2, 1 for data scaled to [0, 1]). A band with no error gives ``inf``.
    """
    ref, fus = _pair(reference, fused)
    count = ref.shape[1] * ref.shape[2]
    return _psnr_from_sums(((ref - fus) ** 2).sum(axis=(1, 2)), count, float(data_range))


# ----------------------------------------------------------------------------------------------------------
# SCC

def _sobel_magnitude(z: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude ``sqrt(Gx^2 + Gy^2)`` at the pixels with all 8 neighbours: (C, h, w) -> (C, h-2, w-2).

    ``fspecial('sobel')`` is ``[1 2 1; 0 0 0; -1 -2 -1]`` (Gy) and its transpose (Gx); the sign (correlation
    or convolution) does not change the magnitude.
    """
    top = z[:, :-2, :-2] + 2.0 * z[:, :-2, 1:-1] + z[:, :-2, 2:]
    bottom = z[:, 2:, :-2] + 2.0 * z[:, 2:, 1:-1] + z[:, 2:, 2:]
    left = z[:, :-2, :-2] + 2.0 * z[:, 1:-1, :-2] + z[:, 2:, :-2]
    right = z[:, :-2, 2:] + 2.0 * z[:, 1:-1, 2:] + z[:, 2:, 2:]
    return np.sqrt((top - bottom) ** 2 + (left - right) ** 2)


def _scc_sums(ref_rows: np.ndarray, fus_rows: np.ndarray):
    """(sum gF*gR, sum gF^2, sum gR^2) over the centre rows of (C, h, W) arrays whose borders are zeroed."""
    g_ref = _sobel_magnitude(ref_rows)
    g_fus = _sobel_magnitude(fus_rows)
    return np.array([(g_fus * g_ref).sum(), (g_fus ** 2).sum(), (g_ref ** 2).sum()])


def _zero_border_columns(a: np.ndarray) -> np.ndarray:
    a[:, :, 0] = 0.0
    a[:, :, -1] = 0.0
    return a


def _scc_from_sums(sums) -> float:
    cross, fus_sq, ref_sq = sums
    return float(cross / np.sqrt(fus_sq) / np.sqrt(ref_sq))


def scc(reference, fused) -> float:
    """Spatial correlation coefficient (``SCC.m``).

    ``reference``, ``fused``: (C, H, W), H, W >= 3. Each band is cropped to its interior ``(2:end-1)``, filtered
    with the Sobel pair with MATLAB ``imfilter``'s default zero padding, and the gradient magnitudes are
    compared by an uncentred normalised correlation over all pixels and bands:
    ``sum(gF*gR) / (|gF| |gR|)``. Cropping then zero padding is the same as zeroing the image's outer ring
    and keeping the pixels with all neighbours, which is what is computed here.
    """
    ref, fus = _pair(reference, fused)
    if ref.shape[1] < 3 or ref.shape[2] < 3:
        raise PansharpenError("SCC needs images of at least 3x3 pixels.")
    z_ref = ref.copy()
    z_fus = fus.copy()
    for z in (z_ref, z_fus):
        z[:, 0] = 0.0
        z[:, -1] = 0.0
        _zero_border_columns(z)
    return _scc_from_sums(_scc_sums(z_ref, z_fus))


# ----------------------------------------------------------------------------------------------------------
# Q (Wang-Bovik UIQI), sliding window (img_qi.m) and distinct blocks (D_s.m / D_lambda.m)

_IDENTITY = {np.add: 0.0, np.maximum: -np.inf, np.minimum: np.inf}


def _window_reduce(a: np.ndarray, w: int, axis: int, offset: int, ufunc=np.add) -> np.ndarray:
    """Reduce every run ``[i, i+w)`` along ``axis`` ('valid': n - w + 1 outputs) with ``ufunc`` (add, maximum, minimum).

    van Herk / Gil-Werman: the axis is cut into blocks of ``w`` aligned on multiples of ``w`` counted from
    ``offset`` (the absolute index of ``a``'s first element along ``axis``); a run is the suffix of one block
    combined with the prefix of the next. Each output costs O(1), a sum adds at most 2w - 1 numbers (no long
    cumulative sums), and the operations for a run do not depend on where the array starts, so row strips of
    an image give bitwise the same values as the whole image.
    """
    axis = axis % a.ndim
    if axis == a.ndim - 1 and a.ndim > 1:  # slices along the last axis are strided: work on the transpose
        return np.swapaxes(_window_reduce(np.swapaxes(a, -1, -2), w, -2, offset, ufunc), -1, -2)
    n = a.shape[axis]
    m = n - w + 1
    if m <= 0:
        shape = list(a.shape)
        shape[axis] = 0
        return np.empty(shape)
    pre = offset % w
    length = -(-(pre + n) // w) * w
    shape = list(a.shape)
    shape[axis] = length
    padded = np.zeros(shape)  # the padding never enters a valid run
    index = [slice(None)] * a.ndim
    index[axis] = slice(pre, pre + n)
    padded[tuple(index)] = a
    blocks = padded.reshape(shape[:axis] + [length // w, w] + shape[axis + 1:])
    prefix = np.empty_like(blocks)
    suffix = np.empty_like(blocks)

    def at(k):
        position = [slice(None)] * blocks.ndim
        position[axis + 1] = k
        return tuple(position)

    # sequential in-block accumulation, slice by slice (faster than ufunc.accumulate on a middle axis)
    prefix[at(0)] = blocks[at(0)]
    suffix[at(w - 1)] = blocks[at(w - 1)]
    for k in range(1, w):
        ufunc(prefix[at(k - 1)], blocks[at(k)], out=prefix[at(k)])
        ufunc(blocks[at(w - 1 - k)], suffix[at(w - k)], out=suffix[at(w - 1 - k)])
    # a run starting on a block boundary is that block alone (its suffix): neutralise the prefix it would add
    prefix[at(w - 1)] = _IDENTITY[ufunc]
    index[axis] = slice(pre, pre + m)
    suffix = suffix.reshape(shape)[tuple(index)]
    index[axis] = slice(pre + w - 1, pre + w - 1 + m)
    return ufunc(suffix, prefix.reshape(shape)[tuple(index)])


def _window_sums_2d(a: np.ndarray, w: int, row_offset: int, ufunc=np.add) -> np.ndarray:
    """(..., h, W) -> (..., h-w+1, W-w+1): reduction over every w x w window (rows first, then columns)."""
    return _window_reduce(_window_reduce(a, w, -2, row_offset, ufunc), w, -1, 0, ufunc)


def _qi_map(x: np.ndarray, y: np.ndarray, block: int, row_offset: int = 0) -> np.ndarray:
    """Wang-Bovik quality of every ``block`` x ``block`` window (``img_qi.m``): (C, h, W) -> (C, h-b+1, W-b+1).

    ``row_offset``: absolute row of ``x[:, 0]`` in the image (aligns the window sums, see _window_reduce).
    """
    n = float(block * block)
    s1 = _window_sums_2d(x, block, row_offset)
    s2 = _window_sums_2d(y, block, row_offset)
    s11 = _window_sums_2d(x * x, block, row_offset)
    s22 = _window_sums_2d(y * y, block, row_offset)
    s12 = _window_sums_2d(x * y, block, row_offset)
    mul = s1 * s2
    sq_mul = s1 * s1 + s2 * s2
    numerator = 4.0 * (n * s12 - mul) * mul
    denominator1 = n * (s11 + s22) - sq_mul
    # img_qi.m tests denominator1 == 0, i.e. both windows constant. In floating point the cancellation
    # leaves rounding noise for non-integer constants, so the windows where denominator1 is that small are
    # tested exactly for constancy (window max == min).
    constant = np.abs(denominator1) <= 1e-9 * n * (s11 + s22)
    if constant.any():
        for z in (x, y):
            constant &= (_window_sums_2d(z, block, row_offset, np.maximum)
                         == _window_sums_2d(z, block, row_offset, np.minimum))
        denominator1 = np.where(constant, 0.0, denominator1)
    denominator = denominator1 * sq_mul
    quality = np.ones(s1.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        both_flat = constant & (sq_mul != 0)
        quality = np.where(both_flat, 2.0 * mul / sq_mul, quality)
        quality = np.where(denominator != 0, numerator / denominator, quality)
    return quality


def q_index(x, y, block: int = 32) -> float:
    """Universal image quality index of two bands (``img_qi.m``, Wang & Bovik 2002).

    ``x``, ``y``: (H, W). Mean over every ``block`` x ``block`` sliding window ('valid': (H-b+1)(W-b+1)
    windows) of ``4 cov mx my / ((vx + vy)(mx^2 + my^2))``; a window where both bands are constant scores
    ``2 mx my / (mx^2 + my^2)`` (1 when both are zero). Symmetric in ``x`` and ``y``. NaN if the bands are
    smaller than one window.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise PansharpenError("q_index needs two bands of the same shape (rows, columns), "
                              f"not {a.shape} and {b.shape}.")
    return q_avg(a[None], b[None], block)


def q_avg(reference, fused, block: int = 32) -> float:
    """Q index averaged over the bands (``Q.m``): mean over bands of :func:`q_index`. (C, H, W) inputs."""
    ref, fus = _pair(reference, fused)
    quality = _qi_map(ref, fus, block)
    if quality.shape[1] == 0 or quality.shape[2] == 0:
        return float("nan")
    return float(np.mean(quality.mean(axis=(1, 2))))


def q_block_map(x, y, block: int = 32) -> np.ndarray:
    """UIQI of every distinct ``block`` x ``block`` block (the ``uqi`` + ``blockproc`` of ``D_s.m``).

    ``x``, ``y``: (..., H, W), broadcastable, with H and W multiples of ``block``.
    Returns (..., H/block, W/block) of ``4 cov mx my / (vx + vy) / (mx^2 + my^2)`` with MATLAB ``cov``
    (the n-1 normalisation cancels). As in the toolbox, a block where both bands are constant gives NaN.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    a, b = np.broadcast_arrays(a, b)
    h, w = a.shape[-2:]
    if h % block or w % block:
        raise PansharpenError(f"The image ({h}x{w}) must have rows and columns that are multiples of the "
                              f"block size {block}: crop it first.")
    shape = a.shape[:-2] + (h // block, block, w // block, block)
    a = np.swapaxes(a.reshape(shape), -3, -2)
    b = np.swapaxes(b.reshape(shape), -3, -2)
    ma = a.mean(axis=(-2, -1), keepdims=True)
    mb = b.mean(axis=(-2, -1), keepdims=True)
    da = a - ma
    db = b - mb
    cov = (da * db).sum(axis=(-2, -1))
    var_sum = (da * da).sum(axis=(-2, -1)) + (db * db).sum(axis=(-2, -1))
    ma = ma[..., 0, 0]
    mb = mb[..., 0, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 4.0 * cov * ma * mb / var_sum / (ma ** 2 + mb ** 2)


# ----------------------------------------------------------------------------------------------------------
# Q2n: hypercomplex quality (Garzelli & Nencini 2009; q2n.m, onions_quality.m)

@lru_cache(maxsize=8)
def hypercomplex_table(n: int) -> np.ndarray:
    """Multiplication table ``T`` (n, n, n) of the toolbox's hypercomplex product: ``(x y)_k = sum_ij x_i y_j T_ijk``.

    ``n`` a power of two: reals (1), complex numbers (2), quaternions (4), octonions (8), sedenions (16)...
    Built by the Cayley-Dickson doubling exactly as ``onion_mult.m`` recurses: writing ``x = (a, b)`` and
    ``y = (c, d)`` as halves and ``z*`` for the conjugate (all but the first component negated),
    ``x y = (a c - d* b, a* d* + c b*)``. The second half is the conjugate of the textbook one
    (``d a + b c*``), so (1, 0, ...) is not a unit of this product; its norm is still multiplicative up to
    the octonions (the tests check it). What matters here is to multiply as the toolbox does.
    """
    if n < 1 or n & (n - 1):
        raise ValueError(f"hypercomplex dimension must be a power of two, not {n}")
    if n == 1:
        return np.ones((1, 1, 1))
    h = n // 2
    t = hypercomplex_table(h)
    t_swapped = t.transpose(1, 0, 2)  # [p, q, k] = T[q, p, k]: the product with the factors swapped
    j = np.ones(h)
    j[1:] = -1.0  # conjugation signs
    table = np.zeros((n, n, n))
    table[:h, :h, :h] = t                                            # a c
    table[h:, h:, :h] = -t_swapped * j[None, :, None]                # - d* b
    table[:h, h:, h:] = t * j[:, None, None] * j[None, :, None]      # a* d*
    table[h:, :h, h:] = t_swapped * j[:, None, None]                 # c b*
    table.flags.writeable = False  # cached and shared
    return table


def hypercomplex_product(x, y) -> np.ndarray:
    """Toolbox hypercomplex product over the last axis: x, y (..., n) broadcastable -> (..., n)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return np.einsum("...i,...j,ijk->...k", x, y, hypercomplex_table(x.shape[-1]))


def _next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 2 ** int(ceil(log2(n)))


def _onion_block_norms(ref: np.ndarray, fus: np.ndarray) -> np.ndarray:
    """|q| of ``onions_quality.m`` for a batch of blocks: ref, fus (nb, n, P) with n a power of two -> (nb,).

    Per block and band, both images are normalised with the reference's mean ``s`` and standard deviation
    ``t`` (``norm_blocco.m``): ``(v - s)/t + 1``. Then, with x the normalised reference and y the conjugate of
    the normalised fused vectors, ``q = 4 |cov| |mx| |my| / ((vx + vy)(|mx|^2 + |my|^2))`` in hypercomplex
    form, cov being the mean hypercomplex product of the mean-removed x and y (unbiased, n-1).
    """
    nb, n_bands, npix = ref.shape
    flat_ref = ref.max(axis=-1) == ref.min(axis=-1)
    flat_fus = fus.max(axis=-1) == fus.min(axis=-1)
    # a constant band's mean is its value: exact, so its normalised reference is exactly 1
    s = np.where(flat_ref, ref[..., 0], ref.mean(axis=-1))
    # norm_blocco.m: a zero standard deviation becomes eps (the fused band is then divided by eps)
    t = np.where(flat_ref, EPS, ref.std(axis=-1, ddof=1))
    x = np.where(flat_ref[..., None], 1.0, (ref - s[..., None]) / t[..., None] + 1.0)
    # onions_quality.m: a band whose reference mean is 0 (an all-zero uint16 band, such as the bands added
    # to reach a power of two) is only shifted by 1, not divided by its (eps) standard deviation
    y = np.where((s == 0)[..., None], fus + 1.0, (fus - s[..., None]) / t[..., None] + 1.0)
    conj = np.ones(n_bands)
    conj[1:] = -1.0
    y = y * conj[None, :, None]
    mx = x.mean(axis=-1)
    my = y.mean(axis=-1)
    xc = x - mx[..., None]
    yc = y - my[..., None]
    var_sum = ((xc * xc).sum(axis=(1, 2)) + (yc * yc).sum(axis=(1, 2))) / (npix - 1)
    cross = np.matmul(xc, np.swapaxes(yc, 1, 2)) / (npix - 1)  # (nb, n, n): mean of x_i y_j
    cov = np.einsum("bij,ijk->bk", cross, hypercomplex_table(n_bands))
    norm_mx2 = (mx * mx).sum(axis=1)
    norm_my2 = (my * my).sum(axis=1)
    mean_bias = 2.0 * np.sqrt(norm_mx2) * np.sqrt(norm_my2) / (norm_mx2 + norm_my2)
    # onions_quality.m: when vx + vy == 0 (every band of both blocks constant) q is set to the mean term
    # alone. Tested exactly on the data (not on the rounded variance sum) so that identical constant blocks,
    # such as no-data areas, score 1 whatever the summation order.
    degenerate = np.all(flat_ref & flat_fus, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        q_norm = mean_bias * 2.0 * np.linalg.norm(cov, axis=1) / var_sum
    return np.where(degenerate, np.abs(mean_bias), q_norm)


def _q2n_block_row(ref_rows: np.ndarray, fus_rows: np.ndarray, block: int, shift: int) -> np.ndarray:
    """|q| of the blocks of one block row: (C, block, Wp) arrays already padded (columns and bands) -> (nbx,)."""
    c = ref_rows.shape[0]
    starts = np.arange(0, ref_rows.shape[2] - block + 1, shift)

    def blocks(a):
        windows = np.lib.stride_tricks.sliding_window_view(a, block, axis=2)[:, :, starts]  # (C, b, nbx, b)
        return windows.transpose(2, 0, 1, 3).reshape(len(starts), c, block * block)

    return _onion_block_norms(blocks(ref_rows), blocks(fus_rows))


def _pad_bands_and_columns(a: np.ndarray, n_bands: int, est_cols: int) -> np.ndarray:
    """Mirror-pad the columns (q2n.m: ``ia(:, N2+1:N2+est2) = ia(:, N2:-1:N2-est2+1)``, edge repeated) and
    append zero bands up to ``n_bands`` (q2n.m pads to a power of two)."""
    if est_cols:
        a = np.pad(a, ((0, 0), (0, 0), (0, est_cols)), mode="symmetric")
    if n_bands > a.shape[0]:
        a = np.concatenate([a, np.zeros((n_bands - a.shape[0],) + a.shape[1:])], axis=0)
    return a


def q2n(reference, fused, block: int = 32, shift: int = 32, cast_uint16: bool = True, return_map: bool = False):
    """Q2n, the hypercomplex quality index (``q2n.m``; Garzelli & Nencini 2009). 1 for identical images.

    ``reference``, ``fused``: (C, H, W). The image is mirror-padded (edge pixel repeated) at the bottom and
    right so that blocks of ``block`` x ``block`` every ``shift`` pixels cover it; the bands are zero-padded
    to the next power of two (quaternions for 3-4 bands, octonions for 5-8); each block gives a hypercomplex
    q (see _onion_block_norms) and Q2n is the mean over blocks of |q|.

    ``cast_uint16``: the toolbox casts both images to uint16 first (round, clip to [0, 65535]); keep it
    (default) for numbers comparable with published tables of 11-bit data; set it False for data that are
    not integer counts (reflectances in [0, 1] would be rounded to 0 and 1).
    ``return_map``: also return the (rows of blocks, columns of blocks) map of |q|.
    """
    ref, fus = _pair(reference, fused)
    if not 1 <= shift <= block:
        raise PansharpenError(f"The Q2n block shift must be between 1 and the block size {block}, not {shift}.")
    if cast_uint16:
        ref = to_uint16_matlab(ref)
        fus = to_uint16_matlab(fus)
    c, h, w = ref.shape
    est_rows = (ceil(h / shift) - 1) * shift + block - h
    est_cols = (ceil(w / shift) - 1) * shift + block - w
    n_bands = _next_power_of_two(c)
    if est_rows:
        ref = np.pad(ref, ((0, 0), (0, est_rows), (0, 0)), mode="symmetric")
        fus = np.pad(fus, ((0, 0), (0, est_rows), (0, 0)), mode="symmetric")
    rows = []
    for top in range(0, h + est_rows - block + 1, shift):
        ref_rows = _pad_bands_and_columns(ref[:, top:top + block], n_bands, est_cols)
        fus_rows = _pad_bands_and_columns(fus[:, top:top + block], n_bands, est_cols)
        rows.append(_q2n_block_row(ref_rows, fus_rows, block, shift))
    q_map = np.stack(rows)
    value = float(sum(r.sum() for r in rows) / q_map.size)
    return (value, q_map) if return_map else value


# ----------------------------------------------------------------------------------------------------------
# Full resolution: D_lambda (Khan), D_s, HQNR, QNR

def _check_multiple(shape, block, what):
    h, w = shape[-2:]
    if h % block or w % block:
        raise PansharpenError(f"{what} needs rows and columns that are multiples of the block size {block}; "
                              f"the image is {h}x{w}: crop it first.")


def mtf_lowpass_filter(sensor_ms_gains, ratio: int):
    """The sensor MTF filter of :mod:`.mtf` as a callable (C, H, W) ndarray -> (C, H, W) ndarray (needs torch)."""
    gains = [float(g) for g in sensor_ms_gains]

    def apply(x: np.ndarray) -> np.ndarray:
        import torch

        from .mtf import lowpass_mtf
        if len(gains) != x.shape[0]:
            raise PansharpenError(f"{len(gains)} MTF gains were given for an image of {x.shape[0]} bands.")
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[None]
        return lowpass_mtf(tensor, gains, int(ratio))[0].numpy()

    return apply


def d_lambda_khan(fused, ms_up, sensor_ms_gains=None, ratio: int = 4, mtf_filter=None, block: int = 32,
                  cast_uint16: bool = True) -> float:
    """Spectral distortion of HQNR (``D_lambda_K.m``, Khan et al. 2009): ``1 - Q2n(ms_up, MTF(fused))``.

    ``fused``: (C, H, W) pansharpened image; ``ms_up``: (C, H, W) MS upsampled to the PAN grid (the
    reference of Q2n). The fused image is low-passed with the sensor's MTF-matched filters at the PAN scale,
    without decimation, then compared with ``ms_up`` on ``block`` x ``block`` blocks. H and W must be
    multiples of ``block`` (the toolbox refuses other sizes).
    ``mtf_filter``: callable (C, H, W) -> (C, H, W); default: :func:`mtf_lowpass_filter` of
    ``sensor_ms_gains`` (one MTF Nyquist gain per band) and ``ratio``.
    """
    fus, ms = _pair(ms_up, fused)[::-1]
    _check_multiple(fus.shape, block, "D_lambda")
    if mtf_filter is None:
        if sensor_ms_gains is None:
            raise PansharpenError("D_lambda needs the sensor's MTF gains or an MTF filter.")
        mtf_filter = mtf_lowpass_filter(sensor_ms_gains, ratio)
    fused_lowpass = np.asarray(mtf_filter(fus), dtype=np.float64)
    return 1.0 - q2n(ms, fused_lowpass, block, block, cast_uint16=cast_uint16)


def _as_band(x, name):
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise PansharpenError(f"{name} must be one band (rows, columns), not {a.shape}.")
    return a


def d_s(fused, ms_up, pan, pan_lowres_up, block: int = 32, q: float = 1) -> float:
    """Spatial distortion (``D_s.m``, "Toolbox 1.0" option): ``(mean_b |Q(F_b, P) - Q(MS_b, P_LP)|^q)^(1/q)``.

    ``fused``, ``ms_up``: (C, H, W); ``pan``, ``pan_lowres_up``: (H, W) or (1, H, W). ``pan_lowres_up`` is the
    PAN reduced to the MS scale and interpolated back (toolbox: ``interp23tap(imresize(P, 1/ratio), ratio)``).
    Q is the UIQI on distinct ``block`` x ``block`` blocks, averaged (:func:`q_block_map`); H and W must be
    multiples of ``block``.
    """
    fus, ms = _pair(ms_up, fused)[::-1]
    p = _as_band(pan, "The PAN")
    p_lp = _as_band(pan_lowres_up, "The low-passed PAN")
    if p.shape != fus.shape[1:] or p_lp.shape != fus.shape[1:]:
        raise PansharpenError("The PAN, the low-passed PAN and the fused image must have the same rows and columns.")
    _check_multiple(fus.shape, block, "D_s")
    q_high = q_block_map(fus, p[None], block).mean(axis=(1, 2))
    q_low = q_block_map(ms, p_lp[None], block).mean(axis=(1, 2))
    return float(np.mean(np.abs(q_high - q_low) ** q) ** (1.0 / q))


def d_lambda_qnr(fused, ms_up, block: int = 32, p: float = 1) -> float:
    """Spectral distortion of QNR (``D_lambda.m``, "Toolbox 1.0" option).

    ``(mean over band pairs i<j of |Q(F_i, F_j) - Q(MS_i, MS_j)|^p)^(1/p)``, Q on distinct blocks
    (:func:`q_block_map`). ``fused``, ``ms_up``: (C, H, W), C >= 2, H and W multiples of ``block``.
    """
    fus, ms = _pair(ms_up, fused)[::-1]
    _check_multiple(fus.shape, block, "D_lambda")
    c = fus.shape[0]
    if c < 2:
        raise PansharpenError("QNR's D_lambda needs at least two bands.")
    i, j = np.triu_indices(c, k=1)
    q_fused = q_block_map(fus[i], fus[j], block).mean(axis=(1, 2))
    q_ms = q_block_map(ms[i], ms[j], block).mean(axis=(1, 2))
    return float(np.mean(np.abs(q_fused - q_ms) ** p) ** (1.0 / p))


def hqnr(d_lambda: float, d_s: float) -> float:
    """``(1 - D_lambda) * (1 - D_s)`` (HQNR with Khan's D_lambda; QNR with the band-pair one)."""
    return (1.0 - d_lambda) * (1.0 - d_s)


def qnr(d_lambda: float, d_s: float, alpha: float = 1.0, beta: float = 1.0) -> float:
    """``(1 - D_lambda)^alpha * (1 - D_s)^beta`` (``QNR.m``; alpha = beta = 1 in the toolbox)."""
    return (1.0 - d_lambda) ** alpha * (1.0 - d_s) ** beta


# ----------------------------------------------------------------------------------------------------------
# Whole-image conveniences

def reduced_resolution_indices(reference, fused, ratio: int = 4, data_range=None, dim_cut: int = 21,
                               block: int = 32, cast_uint16: bool = True) -> dict:
    """All reduced-resolution indices (``indexes_evaluation.m``) after the border cut.

    ``reference`` (ground truth), ``fused``: (C, H, W). ``dim_cut``: 21 in the standard protocol, 0 for no
    cut (Efficient-MIF's scripts). ``data_range``: peak value for PSNR (omitted when None).
    Returns ``{"q2n", "q_avg", "sam", "ergas", "scc", "psnr"}``.
    """
    ref, fus = _pair(reference, fused)
    ref = cut_border(ref, dim_cut)
    fus = cut_border(fus, dim_cut)
    out = {
        "q2n": q2n(ref, fus, block, block, cast_uint16=cast_uint16),
        "q_avg": q_avg(ref, fus, block),
        "sam": sam(ref, fus),
        "ergas": ergas(ref, fus, ratio),
        "scc": scc(ref, fus),
    }
    if data_range is not None:
        out["psnr"] = psnr(ref, fus, data_range)
    return out


def full_resolution_indices(fused, ms_up, pan, pan_lowres_up, sensor_ms_gains=None, ratio: int = 4,
                            block: int = 32, mtf_filter=None, cast_uint16: bool = True) -> dict:
    """HQNR and its parts (``indexes_evaluation_FS.m`` with ``flagQNR = 0``): ``{"d_lambda", "d_s", "hqnr"}``.

    Shapes and arguments as in :func:`d_lambda_khan` and :func:`d_s`.
    """
    dl = d_lambda_khan(fused, ms_up, sensor_ms_gains, ratio, mtf_filter=mtf_filter, block=block,
                       cast_uint16=cast_uint16)
    ds = d_s(fused, ms_up, pan, pan_lowres_up, block=block)
    return {"d_lambda": dl, "d_s": ds, "hqnr": hqnr(dl, ds)}


# ----------------------------------------------------------------------------------------------------------
# Row-strip accumulation for large rasters

class RunningIndices:
    """Reduced-resolution indices accumulated over row strips, with memory bounded by one strip.

    Feed consecutive, non-overlapping row strips ``(C, h, W)`` of the reference and the fused image, top to
    bottom, of any heights (h >= 1); :meth:`result` then gives the same numbers as :func:`sam`,
    :func:`ergas`, :func:`psnr`, :func:`scc`, :func:`q_avg` and :func:`q2n` (``shift = block``) on the whole
    image, up to the order of the final sums. Apply the border cut by reading only the window of
    :func:`border_cut_window`.

    What is kept between strips:

    * SAM: sum of angles and pixel count; ERGAS and PSNR: per-band squared error, reference sum, count;
    * SCC: three sums of gradient products, plus the last 3 rows, because the Sobel filter needs the rows
      above and below and the image's last row is zeroed (MATLAB's zero padding) when it is known to be last,
      in :meth:`result`;
    * Q (sliding windows): per-band sums of window qualities, plus the last ``block - 1`` rows;
    * Q2n: sum of block norms and count over complete block rows (blocks aligned on the image grid), plus the
      rows of the unfinished block row and the last ``block`` rows for the mirror padding of the last one.
    """

    def __init__(self, ratio: int = 4, data_range=None, block: int = 32, cast_uint16: bool = True):
        self.ratio = ratio
        self.data_range = data_range
        self.block = block
        self.cast_uint16 = cast_uint16
        self.rows = 0
        self._excluded = 0  # no-data pixels (``update``'s ``invalid``)
        self._shape = None
        self._sam = [0.0, 0]
        self._sse = None
        self._ref_sum = None
        self._scc = np.zeros(3)
        self._scc_next = 1  # next Sobel centre row (absolute) not yet accumulated
        self._scc_tail = None  # (ref, fus) last <= 3 rows
        self._qi_sum = None
        self._qi_count = 0
        self._qi_tail = None  # (ref, fus) last <= block - 1 rows
        self._q2n_sum = 0.0
        self._q2n_count = 0
        self._q2n_pending = None  # (ref, fus) rows of the unfinished block row, cast
        self._q2n_recent = None  # (ref, fus) last <= block rows, cast

    # -- strips computed apart (a cluster's workers) -----------------------------------------------------
    SEED_ROWS = 32  # rows above a strip that ``resume`` needs: max(block, the Sobel's 3, Q's block - 1)

    @classmethod
    def resume(cls, start_row: int, seed_reference, seed_fused, seed_invalid=None, **options) -> "RunningIndices":
        """A running state for the strip that starts at ``start_row``, as if the rows above had been fed, but
        with every sum at zero: ``seed_*`` are the ``min(start_row, max(block, SEED_ROWS))`` rows just above
        it. Feed it that one strip and give it to :meth:`absorb` of the state that holds the rows above:
        the result is bit-identical to feeding the strip there."""
        state = cls(**options)
        if start_row == 0:
            return state
        ref, fus = _pair(seed_reference, seed_fused)
        b = state.block
        need = min(start_row, max(b, cls.SEED_ROWS))
        if ref.shape[1] != need:
            raise PansharpenError(f"resume at row {start_row} needs the {need} rows above it; got {ref.shape[1]}.")
        if seed_invalid is not None and seed_invalid.any():
            ref, fus = ref.copy(), fus.copy()
            ref[:, seed_invalid] = 0.0
            fus[:, seed_invalid] = 0.0
        c, w = ref.shape[0], ref.shape[2]
        state._shape = (c, w)
        state.rows = start_row
        state._sse, state._ref_sum, state._qi_sum = np.zeros(c), np.zeros(c), np.zeros(c)
        state._scc_tail = (ref[:, -3:], fus[:, -3:])
        state._scc_next = start_row - 2 if start_row >= 4 else 1
        kept = min(ref.shape[1], b - 1)
        state._qi_tail = (ref[:, ref.shape[1] - kept:], fus[:, fus.shape[1] - kept:])
        if state.cast_uint16:
            ref, fus = to_uint16_matlab(ref), to_uint16_matlab(fus)
        pending = start_row % b
        state._q2n_pending = (ref[:, ref.shape[1] - pending:], fus[:, fus.shape[1] - pending:])
        state._q2n_recent = (ref[:, -b:], fus[:, -b:])
        return state

    def absorb(self, later: "RunningIndices") -> None:
        """Take in ``later``: a :meth:`resume` state started where this one ends, fed one strip."""
        if later.rows == self.rows:
            return
        if self._shape is None:  # ``later`` started at row 0: it is the whole state so far
            self.__dict__.update(later.__dict__)
            return
        self._excluded += later._excluded
        self.rows = later.rows
        self._sam[0] += later._sam[0]
        self._sam[1] += later._sam[1]
        self._sse += later._sse
        self._ref_sum += later._ref_sum
        self._scc += later._scc
        self._scc_next, self._scc_tail = later._scc_next, later._scc_tail
        self._qi_sum += later._qi_sum
        self._qi_count += later._qi_count
        self._qi_tail = later._qi_tail
        self._q2n_sum += later._q2n_sum
        self._q2n_count += later._q2n_count
        self._q2n_pending, self._q2n_recent = later._q2n_pending, later._q2n_recent

    def drop_tails(self) -> None:
        """Forget the rows kept for the next strip (a strip computed apart that is not the image's last: the
        state that absorbs it needs its sums only, and :meth:`result` the tails of the last strip)."""
        self._scc_tail = self._qi_tail = self._q2n_pending = self._q2n_recent = None

    # -- feeding -----------------------------------------------------------------------------------------
    def update(self, reference_rows, fused_rows, invalid=None) -> None:
        """Add the next strip: ``reference_rows``, ``fused_rows`` (C, h, W) (a 2-D (h, W) array is one band).

        ``invalid``: (h, W) mask of no-data pixels. SAM, ERGAS and PSNR skip them; the window indices (SCC, Q,
        Q2n) see them as 0 in both images.
        """
        ref, fus = _pair(reference_rows, fused_rows)
        if invalid is not None and invalid.any():
            ref, fus = ref.copy(), fus.copy()
            ref[:, invalid] = 0.0
            fus[:, invalid] = 0.0
            self._excluded += int(invalid.sum())
        if self._shape is None:
            self._shape = (ref.shape[0], ref.shape[2])
            c = ref.shape[0]
            self._sse = np.zeros(c)
            self._ref_sum = np.zeros(c)
            self._qi_sum = np.zeros(c)
            empty = np.zeros((c, 0, ref.shape[2]))
            self._scc_tail = (empty, empty)
            self._qi_tail = (empty, empty)
            self._q2n_pending = (empty, empty)
            self._q2n_recent = (empty, empty)
        elif (ref.shape[0], ref.shape[2]) != self._shape:
            raise PansharpenError(f"Every strip must have {self._shape[0]} bands and {self._shape[1]} columns; "
                                  f"got {ref.shape}.")
        if ref.shape[1] == 0:
            return
        start = self.rows
        self.rows += ref.shape[1]

        total, count = _sam_sums(ref, fus)
        self._sam[0] += total
        self._sam[1] += count
        self._sse += ((ref - fus) ** 2).sum(axis=(1, 2))
        self._ref_sum += ref.sum(axis=(1, 2))
        self._update_scc(ref, fus)
        self._update_qi(ref, fus, start)
        self._update_q2n(ref, fus)

    def _update_scc(self, ref, fus):
        buf_ref = np.concatenate([self._scc_tail[0], ref], axis=1)
        buf_fus = np.concatenate([self._scc_tail[1], fus], axis=1)
        first_row = self.rows - buf_ref.shape[1]  # absolute row of buf[:, 0]
        last_centre = self.rows - 3  # the row below it is known not to be the image's last
        if last_centre >= self._scc_next:
            self._scc += self._scc_centres(buf_ref, buf_fus, first_row, self._scc_next, last_centre, False)
            self._scc_next = last_centre + 1
        self._scc_tail = (buf_ref[:, -3:], buf_fus[:, -3:])

    def _scc_centres(self, buf_ref, buf_fus, first_row, c0, c1, last_row_is_end):
        """SCC sums of the Sobel centres c0..c1 (absolute rows) from buffers starting at ``first_row``."""
        lo = c0 - 1 - first_row
        hi = c1 + 2 - first_row
        z = []
        for buf in (buf_ref, buf_fus):
            rows = _zero_border_columns(buf[:, lo:hi].copy())
            if c0 - 1 == 0:
                rows[:, 0] = 0.0  # the image's first row
            if last_row_is_end:
                rows[:, -1] = 0.0  # the image's last row
            z.append(rows)
        return _scc_sums(z[0], z[1])

    def _update_qi(self, ref, fus, start):
        b = self.block
        buf_ref = np.concatenate([self._qi_tail[0], ref], axis=1)
        buf_fus = np.concatenate([self._qi_tail[1], fus], axis=1)
        if buf_ref.shape[1] >= b:
            first_row = start - self._qi_tail[0].shape[1]
            quality = _qi_map(buf_ref, buf_fus, b, row_offset=first_row)
            self._qi_sum += quality.sum(axis=(1, 2))
            self._qi_count += quality.shape[1] * quality.shape[2]
        start_kept = max(0, buf_ref.shape[1] - (b - 1))  # a negative start would count from the end
        self._qi_tail = (buf_ref[:, start_kept:], buf_fus[:, start_kept:])

    def _update_q2n(self, ref, fus):
        b = self.block
        if self.cast_uint16:
            ref = to_uint16_matlab(ref)
            fus = to_uint16_matlab(fus)
        buf_ref = np.concatenate([self._q2n_pending[0], ref], axis=1)
        buf_fus = np.concatenate([self._q2n_pending[1], fus], axis=1)
        full = buf_ref.shape[1] // b
        strip_sum = 0.0  # one addition per strip to the running sum: a strip computed elsewhere (``absorb``) adds
        for k in range(full):  # exactly what it adds here
            norms = self._q2n_row(buf_ref[:, k * b:(k + 1) * b], buf_fus[:, k * b:(k + 1) * b])
            strip_sum += norms.sum()
            self._q2n_count += norms.size
        self._q2n_sum += strip_sum
        self._q2n_pending = (buf_ref[:, full * b:], buf_fus[:, full * b:])
        recent_ref = np.concatenate([self._q2n_recent[0], ref], axis=1)
        recent_fus = np.concatenate([self._q2n_recent[1], fus], axis=1)
        self._q2n_recent = (recent_ref[:, -b:], recent_fus[:, -b:])

    def _q2n_row(self, ref_rows, fus_rows):
        b = self.block
        w = ref_rows.shape[2]
        est_cols = ceil(w / b) * b - w
        n_bands = _next_power_of_two(ref_rows.shape[0])
        return _q2n_block_row(_pad_bands_and_columns(ref_rows, n_bands, est_cols),
                              _pad_bands_and_columns(fus_rows, n_bands, est_cols), b, b)

    # -- results -----------------------------------------------------------------------------------------
    def result(self) -> dict:
        """``{"sam", "ergas", "scc", "q_avg", "q2n"}`` and ``"psnr"`` when ``data_range`` was given.

        Does not change the state: more strips may follow.
        """
        if not self.rows:
            raise PansharpenError("No rows were given to the quality indices.")
        count = self.rows * self._shape[1] - self._excluded
        out = {
            "sam": float(np.degrees(self._sam[0] / self._sam[1])) if self._sam[1] else float("nan"),
            "ergas": _ergas_from_sums(self._sse, self._ref_sum, count, self.ratio) if count else float("nan"),
        }
        if self.data_range is not None:
            out["psnr"] = _psnr_from_sums(self._sse, count, float(self.data_range)) if count else float("nan")

        scc_sums = self._scc.copy()
        last_centre = self.rows - 2
        if last_centre >= max(self._scc_next, 1):
            tail_ref, tail_fus = self._scc_tail
            scc_sums += self._scc_centres(tail_ref, tail_fus, self.rows - tail_ref.shape[1],
                                          last_centre, last_centre, True)
        out["scc"] = _scc_from_sums(scc_sums) if self.rows >= 3 and self._shape[1] >= 3 else float("nan")

        out["q_avg"] = float(np.mean(self._qi_sum / self._qi_count)) if self._qi_count else float("nan")

        q_sum, q_count = self._q2n_sum, self._q2n_count
        pending = self._q2n_pending[0].shape[1]
        if pending:
            b = self.block
            est = b - pending
            last_rows = []
            for recent in self._q2n_recent:
                padded = np.pad(recent, ((0, 0), (0, est), (0, 0)), mode="symmetric")
                last_rows.append(padded[:, padded.shape[1] - b:])
            norms = self._q2n_row(*last_rows)
            q_sum += norms.sum()
            q_count += norms.size
        out["q2n"] = float(q_sum / q_count)
        return out


def _gauss_valid(a: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of (..., H, W) by ``taps`` along both image axes (shifted sums)."""
    n = len(taps)
    h, w = a.shape[-2:]
    rows = sum(t * a[..., i:h - n + 1 + i, :] for i, t in enumerate(taps))
    return sum(t * rows[..., :, i:w - n + 1 + i] for i, t in enumerate(taps))


SSIM_WINDOW = 11


def ssim_map(x: np.ndarray, y: np.ndarray, data_range: float, sigma: float = 1.5,
             size: int = SSIM_WINDOW) -> np.ndarray:
    """SSIM map (Wang et al. 2004: Gaussian window 11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03) of two
    (C, H, W) float64 arrays, valid windows only: (C, H - 10, W - 10)."""
    taps = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
    taps /= taps.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _gauss_valid(x, taps), _gauss_valid(y, taps)
    sxx = _gauss_valid(x * x, taps) - mx * mx
    syy = _gauss_valid(y * y, taps) - my * my
    sxy = _gauss_valid(x * y, taps) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(reference, fused, data_range: float, sigma: float = 1.5, size: int = SSIM_WINDOW) -> float:
    """Mean SSIM over the bands of (C, H, W) images, in the valid part of the window (no padding)."""
    x, y = _pair(reference, fused)
    return float(ssim_map(x, y, data_range, sigma, size).mean())


class RunningSSIM:
    """Mean SSIM of an image given in consecutive strips of rows, equal to :func:`ssim` on the whole image:
    the last ``window - 1`` rows of each strip are kept and prepended to the next one."""

    def __init__(self, data_range: float, size: int = SSIM_WINDOW):
        self.data_range, self.size = float(data_range), size
        self.tail = None
        self.total, self.count = 0.0, 0

    def update(self, reference: np.ndarray, fused: np.ndarray):
        x, y = np.asarray(reference, np.float64), np.asarray(fused, np.float64)
        if self.tail is not None:
            x, y = np.concatenate([self.tail[0], x], 1), np.concatenate([self.tail[1], y], 1)
        keep = self.size - 1
        if x.shape[1] >= self.size and x.shape[2] >= self.size:
            m = ssim_map(x, y, self.data_range, size=self.size)
            self.total += float(m.sum())
            self.count += m.size
        self.tail = (x[:, -keep:], y[:, -keep:])

    def result(self) -> float:
        return self.total / self.count if self.count else float("nan")

    @classmethod
    def resume(cls, seed_reference, seed_fused, data_range: float, size: int = SSIM_WINDOW) -> "RunningSSIM":
        """The state for a strip whose ``size - 1`` rows above are ``seed_*`` (None at the image's top), sums
        at zero (see ``RunningIndices.resume``)."""
        state = cls(data_range, size)
        if seed_reference is not None:
            state.tail = (np.asarray(seed_reference, np.float64)[:, -(size - 1):],
                          np.asarray(seed_fused, np.float64)[:, -(size - 1):])
        return state

    def absorb(self, later: "RunningSSIM") -> None:
        self.total += later.total
        self.count += later.count
        self.tail = later.tail
