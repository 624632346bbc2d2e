"""Pre-training of INF's trunk on hyperspectral scenes (``make weights``; the leave-one-out rows of
``bench/bench_hyperspectral.py``).

Each training pair is simulated from one real HSI, the reference: the MSI through a spectral response matrix
(``hyperspectral.srf_matrix``), the LR-HSI by Wald's degradation (the HSI's MTF, gain ``HSI_GAIN``, and
decimation by the ratio). Pairs have their own band counts, so each gets its own band layers (first
convolutions, last MLP layer, detail injection started at the pair's regression solution) around one shared
trunk; the trunk is what the bundled file keeps (``models.inf.net.trunk_state``).
"""
import time
from typing import List, Optional

import numpy as np
import torch

from .. import mtf
from ..models.inf.net import HSI_GAIN, create_model, detail, share_trunk, trunk_state
from .datasets import augment, robust_scale
from .trainer import train


class SimulatedPair:
    """(LR-HSI, MSI) simulated from an HSI (L, H, W) and a spectral response matrix (M, L), normalised by the
    HSI's robust scale; random patches of ``patch`` HR pixels with ``context`` LR pixels around them."""

    def __init__(self, hsi: np.ndarray, matrix: np.ndarray, ratio: int = 4, name: str = ""):
        r = self.ratio = int(ratio)
        rows, cols = hsi.shape[1] // r * r, hsi.shape[2] // r * r
        gt = torch.from_numpy(np.ascontiguousarray(hsi[:, :rows, :cols], dtype=np.float32))
        self.scale = robust_scale(gt.numpy())
        self.name = name
        gt = gt / self.scale
        with torch.no_grad():
            msi = torch.einsum("ml,lhw->mhw", torch.as_tensor(matrix, dtype=torch.float32), gt)[None]
            lr = mtf.degrade_image(gt[None], mtf.mtf_kernel_1d(HSI_GAIN, r), r)
            self.data = dict(gt=gt, pan=msi[0], lms=mtf.upsample_image(lr, r)[0], detail=detail(msi, r)[0])
            self.ms = lr[0]
            msi_lr = mtf.degrade_image(msi, mtf.mtf_kernel_1d(HSI_GAIN, r), r)[0]
        self.bands, self.guide_bands = gt.shape[0], msi.shape[1]
        from ..hyperspectral import injection_matrices

        self.regression = injection_matrices(self.ms.reshape(self.bands, -1).numpy(),
                                             msi_lr.reshape(self.guide_bands, -1).numpy())["regression"]

    def batch(self, size, rng, patch=32, context=2):
        r = self.ratio
        p = patch + 2 * context * r
        h, w = self.data["gt"].shape[1:]
        if p > min(h, w):
            raise ValueError(f"{self.name}: a {p}-pixel sample does not fit the {w} x {h} scene")
        out = {k: [] for k in (*self.data, "ms")}
        for _ in range(size):
            r0 = int(rng.integers(0, (h - p) // r + 1)) * r
            c0 = int(rng.integers(0, (w - p) // r + 1)) * r
            for k, v in self.data.items():
                out[k].append(v[:, r0:r0 + p, c0:c0 + p])
            out["ms"].append(self.ms[:, r0 // r:(r0 + p) // r, c0 // r:(c0 + p) // r])
        return augment({k: torch.stack(v) for k, v in out.items()}, rng)


def pretrain_inf(pairs: List[SimulatedPair], iterations: int, *, preset="small", batch=8, patch=32, context=2,
                 lr=1e-3, device=None, seed=0, minutes: Optional[float] = None, log=None, checkpoint=None,
                 resume=False):
    """Train INF on ``pairs`` (one pair per step, in turn) with a shared trunk. Returns (trunk state dict,
    TrainResult, seconds, {pair name: (L1 before, L1 after)} on the same fixed batches)."""
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    nets = [create_model(p.bands, p.guide_bands, preset) for p in pairs]
    for net, pair in zip(nets, pairs):
        net.set_injection(pair.regression)
    share_trunk(nets)
    model = torch.nn.ModuleList(nets).to(device)
    m = context * pairs[0].ratio
    turn = {"i": 0}

    def batches(rng):
        i = turn["i"] % len(pairs)
        turn["i"] += 1
        return dict(pairs[i].batch(batch, rng, patch, context), pair=torch.tensor(i))

    def step(model, b):
        net = model[int(b["pair"])]
        out = net(b["ms"], b["lms"], b["pan"], pairs[0].ratio, pan_detail=b["detail"])
        return torch.nn.functional.l1_loss(out[..., m:-m, m:-m], b["gt"][..., m:-m, m:-m])

    def evaluate():
        out = []
        with torch.no_grad():
            for i, pair in enumerate(pairs):
                rng = np.random.default_rng(1000 + i)
                out.append(float(np.mean([float(step(model, {k: v.to(device) for k, v in dict(
                    pair.batch(batch, rng, patch, context), pair=torch.tensor(i)).items()})) for _ in range(4)])))
        return out

    before = evaluate()
    t0 = time.perf_counter()
    res = train(model, batches, step, list(model.parameters()), iterations=iterations, lr=lr, minutes=minutes,
                device=device, seed=seed, log=log, checkpoint=checkpoint, resume=resume)
    seconds = time.perf_counter() - t0
    after = evaluate()
    return trunk_state(nets[0]), res, seconds, {p.name: (b, a) for p, b, a in zip(pairs, before, after)}
