"""BDSD-PC: band-dependent spatial detail with physical constraints (Vivone 2019; METHODS.md §3.4).

At the MS scale the MS is the reference; its MTF low-pass plays the MS and the MTF-degraded PAN plays the PAN.
Per band, ``gamma`` minimises ``|[PAN_LR, MS_LR_LP] gamma - (MS_LR_b - MS_LR_LP_b)|`` with the PAN gain
``gamma_0 >= 0`` and the MS coefficients ``gamma_k <= 0`` (the toolbox's ``lsqlin``), then
``F_b = MS_b + [PAN, MS] gamma``. The least-squares problems only need the Gram matrix of the MS-scale
features, accumulated over the whole image.
"""
import numpy as np

from .base import ClassicalMethod


def nnls_gram(gram: np.ndarray, rhs: np.ndarray, max_iter: int = 200) -> np.ndarray:
    """min |A z - y|^2 s.t. z >= 0 given gram = A^T A and rhs = A^T y (Lawson-Hanson active set)."""
    n = len(rhs)
    z = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    tol = 1e-10 * max(1.0, np.abs(rhs).max())
    for _ in range(max_iter):
        grad = rhs - gram @ z
        candidates = ~passive & (grad > tol)
        if not candidates.any():
            break
        passive[np.argmax(np.where(candidates, grad, -np.inf))] = True
        while True:
            s = np.zeros(n)
            idx = np.where(passive)[0]
            s[idx] = np.linalg.lstsq(gram[np.ix_(idx, idx)], rhs[idx], rcond=None)[0]
            if (s[idx] > 0).all():
                z = s
                break
            neg = passive & (s <= 0)
            alpha = np.min(z[neg] / (z[neg] - s[neg] + 1e-300))
            z = z + alpha * (s - z)
            passive &= z > 1e-14
            z[~passive] = 0.0
    return z


class BDSDPC(ClassicalMethod):
    id = "bdsd_pc"
    name = "BDSD with physical constraints (BDSD-PC)"
    help = ("Band-Dependent Spatial-Detail with Physical Constraints (Vivone 2019): per band, a constrained "
            "least-squares fit at the MS scale of how much PAN (non-negative gain) and how much of each MS "
            "band (non-positive coefficients) to add; the same coefficients are applied at full resolution.")
    min_bands = 1
    lr_stats = ("pan_dec_mtf", "ms_lr_lp", "ms_lr")
    apply_keys = ("ms_up", "pan")

    def fit(self, stats, bands):
        m = stats.lr
        design = [("pan_dec_mtf", 0)] + [("ms_lr_lp", k) for k in range(bands)]
        gram = m.raw(design, design)
        sign = np.array([1.0] + [-1.0] * bands)  # z = sign * gamma >= 0
        gram_z = gram * np.outer(sign, sign)
        gammas = []
        for b in range(bands):
            # A^T y with y = ms_lr_b - ms_lr_lp_b
            rhs = (m.raw(design, [("ms_lr", b)]) - m.raw(design, [("ms_lr_lp", b)]))[:, 0]
            z = nnls_gram(gram_z, sign * rhs)
            gammas.append(sign * z)
        return dict(gamma=np.array(gammas))  # (bands, 1 + bands)

    def apply(self, ctx, p):
        import torch
        ms, pan = ctx["ms_up"], ctx["pan"]
        gamma = torch.as_tensor(p["gamma"], dtype=ms.dtype, device=ms.device)
        detail = torch.einsum("bk,nkhw->nbhw", gamma[:, 1:], ms) + gamma[:, :1].view(1, -1, 1, 1) * pan
        return ms + detail
