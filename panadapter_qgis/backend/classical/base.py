"""What every classical method shares: the per-tile context of derived images, global statistics, the API.

A method is two functions. ``fit(stats)`` turns global statistics into a few coefficients, once per image;
``apply(ctx, params)`` fuses one tile. The statistics are moments (sums of products) of named per-pixel
features accumulated over the whole image (or a fixed, tile-size-independent subset of blocks for very
large images), so regressions, covariances and gains never depend on the tile size (DESIGN.md).
"""
from dataclasses import dataclass
from math import ceil
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .. import mtf

# Feature keys a method may ask for. PAN-scale keys are (1, C or 1, H, W) tensors over the tile interior,
# MS-scale keys are (1, C or 1, h, w).
PAN_SCALE = ("pan", "ms_up", "pan_lp_gauss", "pan_lp_mtf", "pan_atwt_lp", "pan_lp_bicubic")
MS_SCALE = ("ms_lr", "ms_lr_lp", "pan_dec_mtf")


def context_halo(keys: Sequence[str], ratio: int) -> int:
    """MS pixels of halo the given context keys need around a tile."""
    r = ratio
    ih = mtf.interp_halo(r)
    lp = (mtf.N_TAPS + 1) // 2 + 1          # radius of the 41-tap filters, plus the decimation half tap
    need = {
        "pan": 0, "ms_lr": 0,
        "ms_up": ih,
        "pan_lp_gauss": ceil(lp / r),
        "pan_atwt_lp": ceil((len(mtf.atrous_lowpass_kernel_1d(r)) // 2) / r),
        "pan_lp_mtf": ih + ceil((lp + r) / r),
        "pan_lp_bicubic": ih + ceil((2 * r + 1 + r) / r),
        "pan_dec_mtf": ceil((lp + r) / r),
        "ms_lr_lp": lp,
    }
    return max([need[k] for k in keys] + [1])


class TileContext:
    """Derived images of one tile, computed lazily and cached. All tensors are float32 on one device.

    ``pan``: (1, 1, r*(h+2H), r*(w+2H)) and ``ms``: (1, C, h+2H, w+2H) with a halo of H MS pixels.
    """

    def __init__(self, pan_padded, ms_padded, halo: int, ratio: int, ms_gains, pan_gain):
        self.r = ratio
        self.halo = halo
        self._pan = pan_padded
        self._ms = ms_padded
        self.ms_gains = list(ms_gains)
        self.pan_gain = pan_gain
        self.h = ms_padded.shape[2] - 2 * halo
        self.w = ms_padded.shape[3] - 2 * halo
        self._cache: Dict[str, object] = {}

    def __getitem__(self, key):
        if key not in self._cache:
            self._cache[key] = getattr(self, "_make_" + key)()
        return self._cache[key]

    @property
    def ms_padded(self):
        """The MS tile with its halo (read only)."""
        return self._ms

    # -- helpers
    def _interior_pan(self, x, pad):
        hp = self.r * self.halo - pad
        return x[:, :, hp:hp + self.r * self.h, hp:hp + self.r * self.w]

    def _interior_ms(self, x):
        H = self.halo
        return x[:, :, H:H + self.h, H:H + self.w]

    def _decimated_pan(self, kernels, extra: int):
        """PAN low-passed with ``kernels`` and sampled at MS pixels -extra .. h+extra (w+extra)."""
        pad = self.r * self.halo
        n = (self.h + 2 * extra, self.w + 2 * extra)
        return mtf.decimate(self._pan, kernels, self.r, pad, n, first=-extra)

    # -- features
    def _make_pan(self):
        return self._interior_pan(self._pan, 0)

    def _make_ms_lr(self):
        return self._interior_ms(self._ms)

    def _make_ms_up(self):
        return mtf.upsample(self._ms, self.r, self.halo)

    def _make_pan_lp_gauss(self):
        k = mtf.lpfilter_gauss_kernel_1d(self.r)
        pad = (len(k) - 1) // 2
        hp = self.r * self.halo - pad
        x = self._pan[:, :, hp:hp + self.r * self.h + 2 * pad, hp:hp + self.r * self.w + 2 * pad]
        return mtf.filter_valid(x, k)

    def _make_pan_atwt_lp(self):
        k = mtf.atrous_lowpass_kernel_1d(self.r)
        pad = (len(k) - 1) // 2
        hp = self.r * self.halo - pad
        x = self._pan[:, :, hp:hp + self.r * self.h + 2 * pad, hp:hp + self.r * self.w + 2 * pad]
        return mtf.filter_valid(x, k)

    def _pan_lp_via_ms_grid(self, kernels):
        ih = mtf.interp_halo(self.r)
        dec = self._decimated_pan(kernels, ih)
        return mtf.upsample(dec, self.r, ih)

    def _make_pan_lp_mtf(self):
        """Per band: interp(decimate(MTF_b(PAN))), the PAN low-pass of the MTF-GLP family."""
        kernels = np.stack([mtf.decimation_kernel(mtf.mtf_kernel_1d(g, self.r), self.r)
                            for g in self.ms_gains])
        if np.allclose(kernels, kernels[0]):
            return self._pan_lp_via_ms_grid(kernels[0]).expand(-1, len(self.ms_gains), -1, -1)
        return self._pan_lp_via_ms_grid(kernels)

    def _make_pan_lp_bicubic(self):
        k = mtf.bicubic_decimation_kernel_1d(self.r)
        return self._pan_lp_via_ms_grid(k)

    def _make_pan_dec_mtf(self):
        k = mtf.decimation_kernel(mtf.mtf_kernel_1d(self.pan_gain, self.r), self.r)
        return self._decimated_pan(k, 0)

    def _make_ms_lr_lp(self):
        kernels = [mtf.mtf_kernel_1d(g, self.r) for g in self.ms_gains]
        pad = (len(kernels[0]) - 1) // 2
        H = self.halo
        x = self._ms[:, :, H - pad:H + self.h + pad, H - pad:H + self.w + pad]
        return mtf.filter_valid(x, kernels)


class Moments:
    """Accumulates the Gram matrix of named features (plus a constant) over valid pixels, in float64."""
    CHUNK = 16384

    def __init__(self, names: List[Tuple[str, int]]):
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        k = len(self.names) + 1
        self.gram = np.zeros((k, k))

    def add(self, features, valid=None):
        """features: (K, N) tensor in the order of ``names``; valid: (N,) bool tensor or None."""
        import torch
        x = features if valid is None else features[:, valid]
        x = x.to(torch.float64)
        k, n = x.shape
        # one (K, N) x (N, K) product has a single long reduction that BLAS runs on one core, slowly;
        # a batch of products over column chunks, summed, is the same Gram matrix and runs ~5x faster
        whole = n - n % self.CHUNK
        gram = torch.zeros(k, k, dtype=torch.float64, device=x.device)
        if whole:
            chunks = x[:, :whole].reshape(k, -1, self.CHUNK).transpose(0, 1)
            gram += torch.bmm(chunks, chunks.transpose(1, 2)).sum(0)
        if whole < n:
            rest = x[:, whole:]
            gram += rest @ rest.T
        self.gram[:k, :k] += gram.cpu().numpy()
        sums = x.sum(1).cpu().numpy()
        self.gram[:k, k] += sums
        self.gram[k, :k] += sums
        self.gram[k, k] += x.shape[1]

    @property
    def count(self):
        return self.gram[-1, -1]

    def _i(self, name):
        return self.index[name]

    def mean(self, name):
        return self.gram[self._i(name), -1] / self.count

    def cov(self, a, b):
        n = self.count
        return self.gram[self._i(a), self._i(b)] / n - self.mean(a) * self.mean(b)

    def cov_matrix(self, names):
        idx = [self._i(n) for n in names]
        n = self.count
        m = self.gram[idx, -1] / n
        return self.gram[np.ix_(idx, idx)] / n - np.outer(m, m)

    def raw(self, names_a, names_b):
        """Uncentred mean products E[a b^T]."""
        ia, ib = [self._i(n) for n in names_a], [self._i(n) for n in names_b]
        return self.gram[np.ix_(ia, ib)] / self.count

    def std(self, name):
        return float(np.sqrt(max(self.cov(name, name), 0.0)))

    def regress(self, target, predictors):
        """Least squares ``target ~ sum(w * predictors) + w0``: returns (w, w0)."""
        c = self.cov_matrix(predictors)
        t = np.array([self.cov(p, target) for p in predictors])
        w = np.linalg.lstsq(c, t, rcond=None)[0]
        w0 = self.mean(target) - w @ np.array([self.mean(p) for p in predictors])
        return w, float(w0)


@dataclass
class Stats:
    pan: Moments = None          # PAN-scale moments
    lr: Moments = None           # MS-scale moments
    band_min: np.ndarray = None  # exact per-band minima of the valid MS pixels
    band_p1: np.ndarray = None   # 1st percentile per band (decimated sample)


def feature_names(keys: Sequence[str], bands: int) -> List[Tuple[str, int]]:
    names = []
    for key in keys:
        n = 1 if key in ("pan", "pan_lp_gauss", "pan_atwt_lp", "pan_lp_bicubic", "pan_dec_mtf") else bands
        names += [(key, b) for b in range(n)]
    return names


def stack_features(ctx: TileContext, keys: Sequence[str]):
    """(K, N) float64 matrix of the features, one row per (key, band), as ``feature_names`` orders them."""
    import torch
    rows = [ctx[key][0] for key in keys]
    n = rows[0].shape[1] * rows[0].shape[2]
    out = torch.empty(sum(r.shape[0] for r in rows), n, dtype=torch.float64, device=rows[0].device)
    i = 0
    for r in rows:
        out[i:i + r.shape[0]] = r.reshape(r.shape[0], -1)
        i += r.shape[0]
    return out


class ClassicalMethod:
    """Base class: subclasses set the class attributes and implement ``fit`` and ``apply``."""
    id = ""
    name = ""
    group = "Classical pansharpening"
    min_bands = 1
    help = ""
    pan_stats: Tuple[str, ...] = ()   # PAN-scale features whose moments ``fit`` needs
    lr_stats: Tuple[str, ...] = ()    # MS-scale features whose moments ``fit`` needs
    apply_keys: Tuple[str, ...] = ()  # features ``apply`` reads
    needs_band_summary = False

    def needs_percentile(self, bands: int) -> bool:
        """Whether ``fit`` reads ``stats.band_p1`` for this band count."""
        return self.needs_band_summary

    def halo(self, ratio):
        return context_halo(tuple(self.pan_stats) + tuple(self.lr_stats) + tuple(self.apply_keys), ratio)

    def fit(self, stats: Stats, bands: int) -> dict:
        return {}

    def apply(self, ctx: TileContext, params: dict):
        raise NotImplementedError


def safe_divide(num, den, eps=1e-6):
    """num / den where |den| > eps, else num / eps with den's sign (no inf, no nan)."""
    import torch
    small = den.abs() < eps
    if bool(small.any()):
        den = torch.where(small, torch.where(den < 0, -eps, eps) * torch.ones_like(den), den)
    return num / den


def as_tensor(values, like):
    import torch
    return torch.as_tensor(np.array(values, dtype=np.float64), dtype=like.dtype,
                           device=like.device).view(1, -1, 1, 1)
