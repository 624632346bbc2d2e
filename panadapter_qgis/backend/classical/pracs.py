"""PRACS: Partial Replacement Adaptive Component Substitution (Choi, Yu, Kim 2011; METHODS.md §3.4).

Steps, each a global linear quantity from the image moments of [MS, PAN, PAN_L]:
1. MS_b histogram-matched to the PAN: MSm_b.
2. I_l: regression of the low-passed PAN (bicubic down, interpolation up: ``imresize`` twice) on the MS.
3. P': the PAN matched to I_l; cc_b = corr(P, MS_b).
4. I_h,b = cc_b P' + (1 - cc_b) MSm_b (partial replacement).
5. I'_l,b: regression of the low-pass of I_h,b on the MS. [INFERRED] The low-pass of MSm_b is taken as
   MSm_b itself (the interpolated MS has no detail above the MS Nyquist frequency), which turns this
   regression into the closed form cc_b a w + (1 - cc_b) MSm_b.
6. delta_b = I_h,b (matched to I'_l,b) - I'_l,b; gain w_b = beta corr(I'_l,b, MSm_b) std(MS_b) / mean std;
   local factor L_b = 1 - |1 - corr(I'_l,b, MSm_b) MSm_b / I'_l,b|.
7. MSm_b + w_b L_b delta_b matched back to the MS band's statistics.
"""
import numpy as np

from .base import ClassicalMethod, as_tensor, safe_divide

BETA = 0.95  # toolbox value for 11-bit data


class PRACS(ClassicalMethod):
    id = "pracs"
    name = "Partial Replacement Adaptive CS (PRACS)"
    help = ("Partial Replacement Adaptive Component Substitution (Choi et al. 2011): per band, a "
            "high-resolution component that mixes the PAN and the band in proportion to their correlation, "
            "with detail gains and a local factor that limit spectral distortion.")
    min_bands = 2
    pan_stats = ("ms_up", "pan", "pan_lp_bicubic")
    apply_keys = ("ms_up", "pan")

    def fit(self, stats, bands):
        m = stats.pan
        ms = [("ms_up", b) for b in range(bands)]
        names = ms + [("pan", 0)]
        cov = m.cov_matrix(names)
        mean = np.array([m.mean(n) for n in names])
        std = np.sqrt(np.maximum(np.diag(cov), 1e-12))
        std_ms, std_p, mean_ms, mean_p = std[:bands], std[bands], mean[:bands], mean[bands]

        def moments(coef, const=0.0):
            return float(coef @ mean + const), float(np.sqrt(max(coef @ cov @ coef, 1e-12)))

        s = std_p / std_ms                                   # MSm_b = s_b MS_b + t_b
        t = mean_p - s * mean_ms
        w, w0 = m.regress(("pan_lp_bicubic", 0), ms)         # I_l = w.MS + w0
        mu_il, sd_il = moments(np.append(w, 0.0), w0)
        a_p = sd_il / std_p                                  # P' = a_p P + b_p
        b_p = mu_il - a_p * mean_p
        cc = cov[:bands, bands] / (std_ms * std_p)
        ih_coef = np.zeros((bands, bands + 1))               # I_h,b over [MS, PAN] + ih_const
        ih_coef[np.arange(bands), np.arange(bands)] = (1 - cc) * s
        ih_coef[:, bands] = cc * a_p
        ih_const = cc * b_p + (1 - cc) * t
        il_coef = cc[:, None] * a_p * w[None, :]             # I'_l,b over [MS] + il_const
        il_coef[np.arange(bands), np.arange(bands)] += (1 - cc) * s
        il_const = cc * (a_p * w0 + b_p) + (1 - cc) * t
        mu_h, sd_h, mu_l, sd_l, corr = [np.zeros(bands) for _ in range(5)]
        for b in range(bands):
            mu_h[b], sd_h[b] = moments(ih_coef[b], ih_const[b])
            coef_l = np.append(il_coef[b], 0.0)
            mu_l[b], sd_l[b] = moments(coef_l, il_const[b])
            e = np.zeros(bands + 1)
            e[b] = 1.0
            corr[b] = (coef_l @ cov @ e) / (sd_l[b] * std_ms[b])
        gain = BETA * corr * std_ms / std_ms.mean()
        return dict(s=s, t=t, ih_p=ih_coef[:, bands], ih_ms=np.diag(ih_coef[:, :bands]), ih_const=ih_const,
                    il_coef=il_coef, il_const=il_const, mu_h=mu_h, sd_h=sd_h, mu_l=mu_l, sd_l=sd_l, corr=corr,
                    out_gain=gain / s)

    def apply(self, ctx, p):
        import torch
        ms, pan = ctx["ms_up"], ctx["pan"]
        T = lambda k: as_tensor(p[k], ms)  # noqa: E731
        ih = T("ih_p") * pan + T("ih_ms") * ms + T("ih_const")
        il_coef = torch.as_tensor(p["il_coef"], dtype=ms.dtype, device=ms.device)
        il = torch.einsum("bk,nkhw->nbhw", il_coef, ms) + T("il_const")
        ih_matched = (ih - T("mu_h")) * (T("sd_l") / T("sd_h")) + T("mu_l")
        delta = ih_matched - il
        msm = T("s") * ms + T("t")
        local = 1 - torch.abs(1 - T("corr") * safe_divide(msm, il))
        return ms + T("out_gain") * local * delta
