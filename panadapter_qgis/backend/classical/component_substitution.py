"""Component substitution: BT-H, GIHS, GS, GSA and PCA (toolbox definitions, METHODS.md §3.4).

Every global quantity (regression weights, means, standard deviations, injection gains) comes from the
image-wide moments in ``stats``; ``apply`` is a per-pixel formula.
"""
import numpy as np

from .. import mtf
from .base import ClassicalMethod, as_tensor, safe_divide


def _ms(c):
    return [("ms_up", b) for b in range(c)]


class Brovey(ClassicalMethod):
    id = "brovey"
    name = "Brovey with haze correction (BT-H)"
    help = ("Brovey transform with haze correction and regression-based intensity (BT-H, Lolli et al. 2017; "
            "BroveyRegHazeMin in the standard toolbox). A haze value is removed from each band (for 4-band "
            "data a fraction of its 1st percentile, otherwise its minimum), the intensity is a least-squares "
            "combination of the bands fitted to the low-passed PAN, and each band is multiplied by the ratio "
            "of the equalised PAN to that intensity.")
    min_bands = 1
    pan_stats = ("ms_up", "pan_lp_gauss")
    apply_keys = ("ms_up", "pan")  # apply interpolates the MS itself (ms_padded), with ms_up's halo
    needs_band_summary = True
    HAZE_FRACTIONS_4 = (0.95, 0.45, 0.40, 0.05)  # B, G, R, NIR of the 1st percentile

    def needs_percentile(self, bands):
        return bands == 4

    def fit(self, stats, bands):
        m = stats.pan
        haze = (np.array(self.HAZE_FRACTIONS_4) * stats.band_p1 if bands == 4 else stats.band_min)
        w, _ = m.regress(("pan_lp_gauss", 0), _ms(bands))
        mean_i = float(w @ (np.array([m.mean(n) for n in _ms(bands)]) - haze))
        std_i = float(np.sqrt(max(w @ m.cov_matrix(_ms(bands)) @ w, 0.0)))
        std_lp = m.std(("pan_lp_gauss", 0))
        gain = std_i / std_lp if std_lp > 0 else 1.0
        return dict(haze=haze, w=w, gain=gain, offset=mean_i - gain * m.mean(("pan_lp_gauss", 0)))

    def apply(self, ctx, p):
        import torch
        # The interpolator is linear and each of its phases sums to one, so the haze and the intensity are
        # taken at MS scale and interpolated with the bands (one pass, no PAN-scale band arithmetic):
        # interp(MS_b - L_b) = interp(MS_b) - L_b and interp(sum_b w_b (MS_b - L_b)) = the PAN-scale sum.
        ms = ctx.ms_padded
        haze = as_tensor(p["haze"], ms)
        dehazed = ms - haze
        intensity = torch.einsum("nchw,c->nhw", dehazed, as_tensor(p["w"], ms).flatten()).unsqueeze(1)
        up = mtf.upsample(torch.cat([dehazed, intensity], 1), ctx.r, ctx.halo)
        bands = ms.shape[1]
        ratio = safe_divide(ctx["pan"] * p["gain"] + p["offset"], up[:, bands:])
        return up[:, :bands].clamp_(min=0).mul_(ratio).add_(haze)


class GIHS(ClassicalMethod):
    id = "ihs"
    name = "Generalised IHS (GIHS)"
    help = ("Generalised Intensity-Hue-Saturation (Tu et al. 2001): the intensity is the mean of the MS bands; "
            "the PAN, equalised to the intensity's mean and standard deviation, replaces it, i.e. the "
            "difference PAN - intensity is added to every band.")
    min_bands = 2
    pan_stats = ("ms_up", "pan")
    apply_keys = ("ms_up", "pan")

    def fit(self, stats, bands):
        m = stats.pan
        w = np.full(bands, 1.0 / bands)
        mean_i = float(w @ np.array([m.mean(n) for n in _ms(bands)]))
        std_i = float(np.sqrt(max(w @ m.cov_matrix(_ms(bands)) @ w, 0.0)))
        std_p = m.std(("pan", 0))
        gain = std_i / std_p if std_p > 0 else 1.0
        return dict(gain=gain, offset=mean_i - gain * m.mean(("pan", 0)))

    def apply(self, ctx, p):
        ms = ctx["ms_up"]
        intensity = ms.mean(1, keepdim=True)
        return ms + (ctx["pan"] * p["gain"] + p["offset"] - intensity)


def _gs_injection(m, bands, w, w0):
    """Gram-Schmidt injection for the intensity I = w.ms + w0: PAN equalisation and gains cov(I, MS_b)/var(I)."""
    c = m.cov_matrix(_ms(bands))
    var_i = float(max(w @ c @ w, 1e-12))
    mean_i = float(w @ np.array([m.mean(n) for n in _ms(bands)]) + w0)
    std_p = m.std(("pan", 0))
    gain = np.sqrt(var_i) / std_p if std_p > 0 else 1.0
    return dict(w=w, w0=w0, g=(c @ w) / var_i, pan_gain=gain, pan_offset=mean_i - gain * m.mean(("pan", 0)))


def _gs_apply(ctx, p):
    ms = ctx["ms_up"]
    intensity = (ms * as_tensor(p["w"], ms)).sum(1, keepdim=True) + p["w0"]
    detail = ctx["pan"] * p["pan_gain"] + p["pan_offset"] - intensity
    return ms + as_tensor(p["g"], ms) * detail


class GS(ClassicalMethod):
    id = "gs"
    name = "Gram-Schmidt (GS)"
    help = ("Gram-Schmidt spectral sharpening (Laben and Brower, mode 1 of ENVI): the synthetic intensity is "
            "the mean of the MS bands; the PAN, equalised to it, is injected into each band with the gain "
            "cov(intensity, band) / var(intensity).")
    min_bands = 2
    pan_stats = ("ms_up", "pan")
    apply_keys = ("ms_up", "pan")

    def fit(self, stats, bands):
        return _gs_injection(stats.pan, bands, np.full(bands, 1.0 / bands), 0.0)

    def apply(self, ctx, p):
        return _gs_apply(ctx, p)


class GSA(ClassicalMethod):
    id = "gsa"
    name = "Gram-Schmidt Adaptive (GSA)"
    help = ("Adaptive Gram-Schmidt (Aiazzi et al. 2007): the intensity is the least-squares combination of the "
            "MS bands that best matches the PAN degraded to the MS resolution (sensor PAN MTF, then "
            "decimation); the equalised PAN is then injected with Gram-Schmidt gains.")
    min_bands = 2
    pan_stats = ("ms_up", "pan")
    lr_stats = ("ms_lr", "pan_dec_mtf")
    apply_keys = ("ms_up", "pan")

    def fit(self, stats, bands):
        w, w0 = stats.lr.regress(("pan_dec_mtf", 0), [("ms_lr", b) for b in range(bands)])
        return _gs_injection(stats.pan, bands, w, w0)

    def apply(self, ctx, p):
        return _gs_apply(ctx, p)


class PCA(ClassicalMethod):
    id = "pca"
    name = "Principal Component Analysis (PCA)"
    help = ("Principal component substitution: the first principal component of the MS bands is replaced by "
            "the PAN equalised to its mean and standard deviation, then the transform is inverted.")
    min_bands = 2
    pan_stats = ("ms_up", "pan")
    apply_keys = ("ms_up", "pan")

    def fit(self, stats, bands):
        m = stats.pan
        c = m.cov_matrix(_ms(bands))
        vals, vecs = np.linalg.eigh(c)
        v = vecs[:, -1]
        v = v * (1.0 if v.sum() >= 0 else -1.0)
        means = np.array([m.mean(n) for n in _ms(bands)])
        std_pc = float(np.sqrt(max(vals[-1], 0.0)))
        std_p = m.std(("pan", 0))
        gain = std_pc / std_p if std_p > 0 else 1.0
        return dict(v=v, means=means, pan_gain=gain, pan_offset=-gain * m.mean(("pan", 0)))

    def apply(self, ctx, p):
        ms = ctx["ms_up"]
        v = as_tensor(p["v"], ms)
        pc1 = ((ms - as_tensor(p["means"], ms)) * v).sum(1, keepdim=True)
        return ms + v * (ctx["pan"] * p["pan_gain"] + p["pan_offset"] - pc1)
