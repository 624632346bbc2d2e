"""Sensor MTF filters, the 23-tap interpolator and Wald degradation, in torch (CPU or CUDA).

Geometry convention (GeoTIFF, corner-aligned grids): MS pixel ``i`` covers PAN pixels ``r*i .. r*i + r - 1``,
so its centre lies at PAN coordinate ``r*i + (r - 1)/2``, half a PAN pixel off a PAN pixel centre when the
ratio is even. The standard toolbox (METHODS.md §3.1) assumes co-centred pixels and shifts the image by
``(r - 1)/2`` PAN pixels; here every filter is placed at the true block centre instead:

* interpolation (``upsample``): the toolbox's 23-tap half-band filter cascaded to ``2r`` and read at the
  odd phases, which is exactly the toolbox interpolator sampled at the block centres;
* decimation (``decimate``): for even ratios the low-pass kernel is convolved with ``[1/2, 1/2]`` so that its
  centre falls between pixels, then sampled every ``r`` pixels.

A degradation followed by an interpolation is therefore shift-free, and real GeoTIFF pairs are fused in
register with their georeference (the peers of ``make bench`` see the same geometry).

All image tensors are ``(B, C, H, W)``. Filters are applied "valid": callers pass arrays with a halo
(see ``tiling``), so that a tile gives exactly the same numbers as the whole image.
"""
from functools import lru_cache
from math import log, sqrt

import numpy as np

N_TAPS = 41  # genMTF.m / MTF_PAN.m filter size

# interp23tap.m: half of the symmetric 23-tap CDF half-band filter (centre first), times 2.
_CDF23_HALF = 2.0 * np.array([0.5, 0.305334091185, 0.0, -0.072698593239, 0.0, 0.021809577942, 0.0,
                              -0.005192756653, 0.0, 0.000807762146, 0.0, -0.000060081482])


def cdf23_kernel() -> np.ndarray:
    """The 23-tap interpolation filter of ``interp23tap.m`` (sums to 2: a x2 zero-insertion filter)."""
    return np.concatenate([_CDF23_HALF[:0:-1], _CDF23_HALF])


# ----------------------------------------------------------------------------------------------------------
# MTF-matched Gaussian filters (genMTF.m, MTF_PAN.m, LPfilterGauss.m)

def _fspecial_gaussian(n: int, sigma: float) -> np.ndarray:
    t = np.arange(n) - (n - 1) / 2.0
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def _kaiser2d(n: int, beta: float) -> np.ndarray:
    """Radially symmetric Kaiser window (the Python port's ``kaiser2d``), zero outside the circle."""
    t = np.arange(-(n - 1) / 2.0, (n + 1) / 2.0) / (n - 1)
    t1, t2 = np.meshgrid(t, t)
    radius = np.sqrt(t1 ** 2 + t2 ** 2)
    w1 = np.kaiser(n, beta)
    w = np.interp(radius, t, w1)
    w[radius > t[-1]] = 0.0
    return w


def _fir_filter_wind(hd: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Frequency-sampling design with a window (``fwind1``), normalised to unit DC gain."""
    hd = np.rot90(np.fft.fftshift(np.rot90(hd, 2)), 2)
    h = np.fft.fftshift(np.fft.ifft2(hd))
    h = np.rot90(h, 2).real * window
    return h / h.sum()


def _gaussian_design(alpha: float, n: int) -> np.ndarray:
    h = _fspecial_gaussian(n, alpha)
    return _fir_filter_wind(h / h.max(), _kaiser2d(n, 0.5))


@lru_cache(maxsize=64)
def mtf_kernel_2d(gnyq: float, ratio: int, n: int = N_TAPS) -> np.ndarray:
    """The (n, n) MTF-matched Gaussian of ``genMTF.m``: amplitude ``gnyq`` at the MS Nyquist frequency."""
    fcut = 1.0 / ratio
    alpha = sqrt(((n - 1) * (fcut / 2.0)) ** 2 / (-2.0 * log(gnyq)))
    return _gaussian_design(alpha, n)


@lru_cache(maxsize=16)
def lpfilter_gauss_kernel_2d(ratio: int, n: int = N_TAPS) -> np.ndarray:
    """``LPfilterGauss.m`` (GNyq 0.3; its alpha uses n, not n - 1), used by BT-H and the PAN equalisation."""
    fcut = 1.0 / ratio
    alpha = sqrt((n * (fcut / 2.0)) ** 2 / (-2.0 * log(0.3)))
    return _gaussian_design(alpha, n)


def separable_factor(kernel_2d: np.ndarray):
    """Rank-1 factor ``k`` with ``outer(k, k) ~= kernel_2d`` and the relative max error of that product.

    The toolbox filters are Gaussians in frequency, windowed by a radial Kaiser window that is almost flat
    (beta 0.5) where the kernel is not negligible: the rank-1 residual is below 1e-3 of the peak
    (``tests/test_mtf.py`` checks it), while filtering separably costs 2n instead of n^2 operations.
    """
    u, s, vt = np.linalg.svd(kernel_2d)
    k = u[:, 0] * sqrt(s[0])
    k = k * np.sign(k.sum())
    k = k / k.sum()
    err = np.abs(np.outer(k, k) - kernel_2d).max() / np.abs(kernel_2d).max()
    return k, float(err)


@lru_cache(maxsize=64)
def mtf_kernel_1d(gnyq: float, ratio: int) -> np.ndarray:
    return separable_factor(mtf_kernel_2d(float(gnyq), int(ratio)))[0]


@lru_cache(maxsize=16)
def lpfilter_gauss_kernel_1d(ratio: int) -> np.ndarray:
    return separable_factor(lpfilter_gauss_kernel_2d(int(ratio)))[0]


@lru_cache(maxsize=16)
def atrous_lowpass_kernel_1d(ratio: int) -> np.ndarray:
    """Approximation (low-pass) kernel of the a-trous B3-spline transform after log2(ratio) levels (AWLP)."""
    levels = max(1, int(round(np.log2(ratio))))
    b3 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    kernel = np.array([1.0])
    for level in range(levels):
        dilated = np.zeros(4 * 2 ** level + 1)
        dilated[:: 2 ** level] = b3
        kernel = np.convolve(kernel, dilated)
    return kernel


@lru_cache(maxsize=16)
def bicubic_decimation_kernel_1d(ratio: int) -> np.ndarray:
    """MATLAB ``imresize(x, 1/ratio)`` (bicubic, antialiased): Keys a=-0.5 stretched by the ratio.

    Centred on the block centre; its length has the parity of the ratio, as ``decimate`` requires.
    """
    length = 4 * ratio if ratio % 2 == 0 else 4 * ratio + 1
    t = (np.arange(length) - (length - 1) / 2.0) / ratio
    a = np.abs(t)
    w = np.where(a <= 1, 1.5 * a ** 3 - 2.5 * a ** 2 + 1,
                 np.where(a < 2, -0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2, 0.0))
    return w / w.sum()


# ----------------------------------------------------------------------------------------------------------
# Interpolator

def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@lru_cache(maxsize=16)
def interp_kernel(ratio: int):
    """Polyphase interpolation kernel ``K`` and its first offset ``m_min``.

    ``out[p] = sum_i ms[i] * K[p - r*i - m_min]``: the weight of MS pixel ``i`` at PAN pixel ``p``.
    For ratios that are powers of two this is the toolbox 23-tap interpolator (x2 stages cascaded up to
    ``2r``, read at the block centres). Other ratios use the toolbox's general design, a Hamming-windowed
    sinc with cut-off ``1/r`` (``interp23tapGeneral``: ``r * fir1(44, 1/r)``), evaluated at the block centres.
    Each polyphase component sums to one, so a constant image stays constant.
    """
    r = int(ratio)
    if r == 1:
        return np.array([1.0]), 0
    if _is_power_of_two(r):
        h = cdf23_kernel()
        g = np.array([1.0])
        stages = int(np.log2(2 * r))
        for s in range(stages):  # g = h * h(z^2) * h(z^4) ...: zero insertion by 2**stages then filtering
            dilated = np.zeros((len(h) - 1) * 2 ** s + 1)
            dilated[:: 2 ** s] = h
            g = np.convolve(g, dilated)
        g = g / (2 ** stages)  # each stage has gain 2
        centre = (len(g) - 1) // 2
        # K(m) = g_c(2m + 1 - r), g_c centred: keep the offsets m whose index falls inside g
        m_min = int(np.ceil((-centre + r - 1) / 2.0))
        m_max = int(np.floor((centre + r - 1) / 2.0))
        k = np.array([g[centre + 2 * m + 1 - r] for m in range(m_min, m_max + 1)]) * r
    else:
        half = 22.0  # fir1(44, ...) spans 45 taps on the PAN grid
        shift = (r - 1) / 2.0
        m_min = int(np.ceil(-half + shift))
        m_max = int(np.floor(half + shift))
        x = np.arange(m_min, m_max + 1) - shift
        hamming = 0.54 + 0.46 * np.cos(np.pi * x / (half + 1))
        k = np.sinc(x / r) * hamming
    # normalise each phase to unit gain
    k = k.copy()
    for phase in range(r):
        idx = [t for t in range(len(k)) if (t + m_min) % r == phase]
        k[idx] /= k[idx].sum()
    return k, m_min


def interp_halo(ratio: int) -> int:
    """MS pixels of halo ``upsample`` needs on each side."""
    k, m_min = interp_kernel(ratio)
    m_max = m_min + len(k) - 1
    return int(np.ceil(max(m_max, -m_min) / ratio)) + 1


# ----------------------------------------------------------------------------------------------------------
# torch operations

def _torch():
    import torch
    return torch


def _kernel_tensor(kernels, channels, like):
    """(C, L) float tensor from one 1-D kernel or a list of C kernels of equal length."""
    torch = _torch()
    arr = np.asarray(kernels, dtype=np.float64)
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (channels, arr.shape[0]))
    return torch.as_tensor(np.array(arr, copy=True), dtype=like.dtype, device=like.device)


FILTER_BLOCK = 64  # output pixels per block of the matrix-product filters


def _banded_last_axis(x, a, step: int, n_out: int):
    """Banded filtering of the last axis as matrix products, block by block.

    ``x``: (K or 1, M, n) and ``a``: (K, block, win), the rows of one block of outputs; block ``j`` reads
    inputs ``j*step .. j*step + win - 1``. Returns (K, M, n_out). Direct convolutions with one or a few
    channels run far below the CPU's arithmetic speed; one small matrix product per block (the zero weights
    of the band included) runs near it, on CUDA as well.
    """
    torch = _torch()
    block, win = a.shape[1], a.shape[2]
    n_blocks = -(-n_out // block)
    need = (n_blocks - 1) * step + win
    if x.shape[2] < need:  # only outputs past n_out read the zeros
        x = torch.nn.functional.pad(x, (0, need - x.shape[2]))
    windows = x[:, :, :need].unfold(2, win, step)                 # (K|1, M, n_blocks, win), a view
    out = torch.matmul(windows.reshape(x.shape[0], -1, win), a.transpose(1, 2))
    return out.view(out.shape[0], x.shape[1], -1)[:, :, :n_out]


@lru_cache(maxsize=256)
def _filter_blocks(kernels: tuple, block: int) -> np.ndarray:
    """(K, block, block + L - 1) block matrices of the 1-D correlations ``kernels`` (K x L)."""
    k = np.asarray(kernels, dtype=np.float64)
    length = k.shape[1]
    a = np.zeros((k.shape[0], block, block + length - 1))
    for j in range(block):
        a[:, j, j:j + length] = k
    return a


def _filter_conv(x, kernels, stride: int, offset: int):
    """``filter_valid`` as two strided convolutions: decimating filters, which keep one output in ``stride``
    on each axis (a block of matrix products would multiply the skipped outputs' zeros)."""
    torch = _torch()
    c = x.shape[1]
    n_kernels = np.asarray(kernels).shape[0] if np.asarray(kernels).ndim == 2 else c
    k = _kernel_tensor(kernels, n_kernels, x)
    length = k.shape[1]
    x = x[:, :, offset:, offset:]
    if c == 1 and n_kernels > 1:
        # one channel, several kernels (the PAN low-passed by each band's MTF): the first pass reads the
        # input once and writes every output channel, the second is depthwise on the smaller result
        x = torch.nn.functional.conv2d(x, k.view(n_kernels, 1, length, 1), stride=(stride, 1))
    else:
        x = torch.nn.functional.conv2d(x, k.view(c, 1, length, 1), stride=(stride, 1), groups=c)
    return torch.nn.functional.conv2d(x, k.view(n_kernels, 1, 1, length), stride=(1, stride), groups=n_kernels)


def filter_valid(x, kernels, stride: int = 1, offset: int = 0):
    """Separable depthwise correlation, 'valid' (no padding). ``x``: (B, C, H, W); kernels: (L,) or C x (L,).

    A one-channel ``x`` with K kernels gives K output channels.

    With ``stride`` > 1 the output samples start at input index ``offset`` on both axes.
    """
    torch = _torch()
    arr = np.asarray(kernels, dtype=np.float64)
    b, c = x.shape[:2]
    if arr.ndim == 1:
        arr = arr[None]
    elif c > 1 and np.all(arr == arr[:1]):
        arr = arr[:1]  # one kernel for all channels
    n_kernels = arr.shape[0] if arr.shape[0] > 1 else c
    if stride > 1:
        return _filter_conv(x, arr if arr.shape[0] > 1 else arr[0], stride, offset)
    a = torch.as_tensor(_filter_blocks(tuple(map(tuple, arr)), FILTER_BLOCK), dtype=x.dtype, device=x.device)
    length = arr.shape[1]
    x = x[:, :, offset:, offset:]
    h_out, w_out = x.shape[2] - length + 1, x.shape[3] - length + 1
    if h_out < 1 or w_out < 1:
        raise ValueError("filter_valid: input smaller than the kernel")
    # kernels on the leading axis: one per channel, or one shared by every row
    lead = c if a.shape[0] > 1 else 1
    t = x.permute(1, 0, 3, 2).reshape(lead, -1, x.shape[2])              # (lead, C/lead*B*W, H), a copy
    y = _banded_last_axis(t, a, FILTER_BLOCK, h_out)                      # along H: (K|1, C/lead*B*W, h_out)
    y = y.unflatten(1, (-1, x.shape[3])).transpose(2, 3).reshape(y.shape[0], -1, x.shape[3])
    z = _banded_last_axis(y, a, FILTER_BLOCK, w_out)                      # along W
    out = z.reshape(n_kernels, b, h_out, w_out).transpose(0, 1)
    return out if b == 1 else out.contiguous()


def filter_same(x, kernels):
    """Separable depthwise filtering with replicate borders (``imfilter(..., 'replicate')``)."""
    torch = _torch()
    length = _kernel_tensor(kernels, x.shape[1], x).shape[1]
    p = (length - 1) // 2
    x = torch.nn.functional.pad(x, (p, p, p, p), mode="replicate")
    return filter_valid(x, kernels)


def decimation_kernel(kernel_1d: np.ndarray, ratio: int) -> np.ndarray:
    """Give an odd low-pass kernel the parity of the ratio (centre on the block centre for even ratios)."""
    kernel_1d = np.asarray(kernel_1d, dtype=np.float64)
    if (len(kernel_1d) - ratio) % 2:
        kernel_1d = np.convolve(kernel_1d, [0.5, 0.5])
    return kernel_1d


def decimate(x, kernels, ratio: int, pad: int, n_out: int, first: int = 0):
    """Low-pass and sample at the MS block centres.

    ``x``: (B, C, H, W) on the PAN grid, where input index ``q`` holds PAN coordinate ``q - pad``.
    Returns (B, C, n_out, n_out_w) for MS pixels ``first .. first + n_out - 1`` (both axes use ``first``;
    ``n_out`` may be a pair (rows, cols)). ``kernels`` must already have the parity of the ratio
    (``decimation_kernel``).
    """
    k = np.asarray(kernels, dtype=np.float64)
    length = k.shape[-1]
    start = ratio * first + pad + (ratio - length) // 2
    if start < 0:
        raise ValueError("decimate: halo too small")
    rows, cols = (n_out, n_out) if np.isscalar(n_out) else n_out
    stop_r = start + ratio * (rows - 1) + length
    stop_c = start + ratio * (cols - 1) + length
    if stop_r > x.shape[2] or stop_c > x.shape[3]:
        raise ValueError("decimate: halo too small")
    return filter_valid(x[:, :, :stop_r, :stop_c], kernels, stride=ratio, offset=start)


@lru_cache(maxsize=16)
def interp_block_matrix(ratio: int, block: int):
    """The interpolator as a dense block: ``A`` (block*r, win) and the first input offset ``i0``.

    Output rows ``r*j0 .. r*(j0 + block) - 1`` (PAN pixels, ``j0`` a multiple of ``block``) are
    ``A @ ms[j0 + i0 : j0 + i0 + win]``: row ``r*j + ph`` holds the weights ``K[r*(j - i) + ph - m_min]``
    of ``interp_kernel``. One small matrix product per block does the zero insertion and the filtering of
    all ``r`` phases, skipping the inserted zeros that a stride-r transposed convolution multiplies.
    """
    r = int(ratio)
    k, m_min = interp_kernel(r)
    n = len(k)
    i0 = -((m_min + n - 1) // r)                 # smallest i with r*(0 - i) + 0 - m_min <= n - 1
    i1 = (r * block - 1 - m_min) // r            # largest i with r*(block-1 - i) + r-1 - m_min >= 0
    a = np.zeros((block * r, i1 - i0 + 1))
    for j in range(block):
        for ph in range(r):
            for i in range(i0, i1 + 1):
                t = r * (j - i) + ph - m_min
                if 0 <= t < n:
                    a[r * j + ph, i - i0] = k[t]
    return a, i0


def _interp_block(ratio: int) -> int:
    return max(8, 64 // int(ratio))  # about 64 output pixels per block: small GEMMs that BLAS runs well


def upsample(x, ratio: int, halo: int):
    """Toolbox interpolation of an MS array with ``halo`` MS pixels on each side to the PAN grid.

    ``x``: (B, C, h + 2*halo, w + 2*halo) -> (B, C, r*h, r*w), the interior only.
    Separable: both axes go through ``interp_block_matrix`` as matrix products (the same sums as the
    polyphase definition, in another order).
    """
    torch = _torch()
    r = int(ratio)
    if r == 1:
        return x[:, :, halo:x.shape[2] - halo, halo:x.shape[3] - halo]
    block = _interp_block(r)
    a_np, i0 = interp_block_matrix(r, block)
    a = torch.as_tensor(a_np[None], dtype=x.dtype, device=x.device)
    b, c = x.shape[:2]
    h_in, w_in = x.shape[2] - 2 * halo, x.shape[3] - 2 * halo
    s = halo + i0
    if s < 0:
        # a halo narrower than ``interp_halo``: the missing MS pixels count as zeros (as in a transposed
        # convolution; the callers that do this crop the outputs those pixels reach)
        x = torch.nn.functional.pad(x, (-s, 0, -s, 0))
        s = 0
    xs = x[:, :, s:, s:]
    hs, ws = xs.shape[2], xs.shape[3]
    t = xs.transpose(2, 3).reshape(1, b * c * ws, hs)                       # rows last (a copy)
    y = _banded_last_axis(t, a, block, r * h_in)[0].unflatten(0, (b * c, ws))  # (N, w', r*h)
    y = y.transpose(1, 2).reshape(1, b * c * r * h_in, ws)                  # columns last (a copy)
    y = _banded_last_axis(y, a, block, r * w_in)[0]                           # (N*r*h, r*w)
    return y.unflatten(0, (b, c, r * h_in))


# ----------------------------------------------------------------------------------------------------------
# Whole-array conveniences (tests, the degrade algorithm, metrics): replicate borders

def upsample_image(ms, ratio: int):
    """(B, C, h, w) -> (B, C, r*h, r*w) with replicate borders."""
    torch = _torch()
    halo = interp_halo(ratio)
    return upsample(torch.nn.functional.pad(ms, (halo,) * 4, mode="replicate"), ratio, halo)


def degrade_image(x, kernels, ratio: int):
    """Low-pass with per-channel kernels and sample at block centres: (B, C, H, W) -> (B, C, H//r, W//r)."""
    torch = _torch()
    kernels = np.asarray(kernels, dtype=np.float64)
    if kernels.ndim == 1:
        kernels = decimation_kernel(kernels, ratio)
    else:
        kernels = np.stack([decimation_kernel(k, ratio) for k in kernels])
    pad = ratio * (kernels.shape[-1] // ratio + 1)
    xp = torch.nn.functional.pad(x, (pad,) * 4, mode="replicate")
    return decimate(xp, kernels, ratio, pad, (x.shape[2] // ratio, x.shape[3] // ratio))


def lowpass_mtf(x, gnyqs, ratio: int):
    """Each channel filtered with its sensor MTF Gaussian at the same scale (replicate borders)."""
    return filter_same(x, [mtf_kernel_1d(float(g), int(ratio)) for g in gnyqs])


def wald_degrade(pan, ms, ratio: int, ms_gains, pan_gain: float, pan_mode: str = "mtf"):
    """Wald's protocol: (B,1,H,W), (B,C,h,w) -> reduced-resolution PAN (B,1,H/r,W/r) and MS (B,C,h/r,w/r).

    MS: sensor MTF-matched Gaussian then decimation (``resize_images.m``). PAN: its MTF then decimation
    (``pan_mode='mtf'``, PanCollection's ``mtf_resize``) or antialiased bicubic (``'bicubic'``, the MATLAB
    ``imresize`` of ``resize_images.m``).
    """
    ms_lr = degrade_image(ms, [mtf_kernel_1d(float(g), ratio) for g in ms_gains], ratio)
    if pan_mode == "mtf":
        pan_lr = degrade_image(pan, mtf_kernel_1d(float(pan_gain), ratio), ratio)
    elif pan_mode == "bicubic":
        pan_lr = degrade_image(pan, bicubic_decimation_kernel_1d(ratio), ratio)
    else:
        raise ValueError(f"pan_mode must be 'mtf' or 'bicubic', not {pan_mode!r}")
    return pan_lr, ms_lr
