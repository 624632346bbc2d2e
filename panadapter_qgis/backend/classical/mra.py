"""Multiresolution analysis: the MTF-GLP family and AWLP (toolbox definitions, METHODS.md §3.4).

The PAN low-pass of the MTF-GLP family is ``interp23(decimate(MTF_b(PAN)))`` per band, with the sensor's
MTF-matched Gaussian of that band (``TileContext.pan_lp_mtf``).
"""
import numpy as np

from .base import ClassicalMethod, as_tensor, safe_divide

HPM_FLOOR = 0.1  # fraction of the band mean below which the HPM denominator is clamped


def _equalisation_gains(m, bands):
    """PAN equalised to each band: P_b = a_b (P - mean P) + mean MS_b, a_b = std(MS_b) / std(LPfilterGauss(P))."""
    std_lp = m.std(("pan_lp_gauss", 0))
    a = np.array([m.std(("ms_up", b)) for b in range(bands)]) / (std_lp if std_lp > 0 else 1.0)
    means = np.array([m.mean(("ms_up", b)) for b in range(bands)])
    return a, means, m.mean(("pan", 0))


class MTFGLP(ClassicalMethod):
    id = "mtf_glp"
    name = "MTF-GLP (additive)"
    help = ("Generalised Laplacian Pyramid with MTF-matched filters (Aiazzi et al. 2006), additive injection: "
            "each band receives the PAN detail P_b - P_LP,b, where P_b is the PAN equalised to the band and "
            "P_LP,b its low-pass by the band's sensor MTF, decimation and 23-tap interpolation.")
    pan_stats = ("ms_up", "pan", "pan_lp_gauss")
    apply_keys = ("ms_up", "pan", "pan_lp_mtf")

    def fit(self, stats, bands):
        a, _, _ = _equalisation_gains(stats.pan, bands)
        return dict(a=a)

    def apply(self, ctx, p):
        ms = ctx["ms_up"]
        return ms + as_tensor(p["a"], ms) * (ctx["pan"] - ctx["pan_lp_mtf"])


class MTFGLPHPM(ClassicalMethod):
    id = "mtf_glp_hpm"
    name = "MTF-GLP with High-Pass Modulation (MTF-GLP-HPM)"
    help = ("MTF-GLP with multiplicative injection (High-Pass Modulation, Vivone et al. 2018): each band is "
            "multiplied by P_b / P_LP,b, the ratio of the equalised PAN to its MTF low-pass.")
    pan_stats = ("ms_up", "pan", "pan_lp_gauss")
    apply_keys = ("ms_up", "pan", "pan_lp_mtf")

    def fit(self, stats, bands):
        a, means, mean_p = _equalisation_gains(stats.pan, bands)
        return dict(a=a, means=means, mean_p=mean_p)

    def apply(self, ctx, p):
        import torch
        ms = ctx["ms_up"]
        a, means = as_tensor(p["a"], ms), as_tensor(p["means"], ms)
        pan_b = a * (ctx["pan"] - p["mean_p"]) + means
        pan_lp_b = a * (ctx["pan_lp_mtf"] - p["mean_p"]) + means
        # Guard (not in the toolbox, which divides by P_LP + eps): where the equalised PAN low-pass falls
        # near zero (dark pixels of a band whose mean is small against its spread) the ratio explodes.
        # Both sides are floored alike, so a dark pixel (water in a NIR-heavy PAN) keeps a ratio near one
        # instead of being zeroed.
        floor = HPM_FLOOR * means
        return ms * torch.maximum(pan_b, floor) / torch.maximum(pan_lp_b, floor)


class MTFGLPFS(ClassicalMethod):
    id = "mtf_glp_fs"
    name = "MTF-GLP with full-scale regression (MTF-GLP-FS)"
    help = ("MTF-GLP with injection gains estimated at full scale (Vivone et al. 2018): "
            "g_b = cov(MS_b, P) / cov(P_LP,b, P), F_b = MS_b + g_b (P - P_LP,b). No PAN equalisation is "
            "needed. One of the strongest classical methods of the toolbox.")
    pan_stats = ("ms_up", "pan", "pan_lp_mtf")
    apply_keys = ("ms_up", "pan", "pan_lp_mtf")

    def fit(self, stats, bands):
        m = stats.pan
        g = []
        for b in range(bands):
            den = m.cov(("pan_lp_mtf", b), ("pan", 0))
            g.append(m.cov(("ms_up", b), ("pan", 0)) / den if abs(den) > 1e-12 else 0.0)
        return dict(g=np.array(g))

    def apply(self, ctx, p):
        ms = ctx["ms_up"]
        return ms + as_tensor(p["g"], ms) * (ctx["pan"] - ctx["pan_lp_mtf"])


class AWLP(ClassicalMethod):
    id = "awlp"
    name = "Additive Wavelet Luminance Proportional (AWLP)"
    help = ("AWLP (Otazu et al. 2005): PAN details from the a-trous wavelet transform (B3 spline, log2(ratio) "
            "levels) of the PAN equalised to each band, injected proportionally to the band's share of the "
            "mean MS value.")
    min_bands = 2
    pan_stats = ("ms_up", "pan", "pan_lp_gauss")
    apply_keys = ("ms_up", "pan", "pan_atwt_lp")

    def fit(self, stats, bands):
        a, _, _ = _equalisation_gains(stats.pan, bands)
        return dict(a=a)

    def apply(self, ctx, p):
        ms = ctx["ms_up"]
        detail = ctx["pan"] - ctx["pan_atwt_lp"]
        share = safe_divide(ms, ms.mean(1, keepdim=True))
        return ms + as_tensor(p["a"], ms) * detail * share
