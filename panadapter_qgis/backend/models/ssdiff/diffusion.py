"""SSDiff's diffusion (METHODS.md §1b.1): residual x0-prediction, 1000-step cosine schedule, L1 loss, DDIM.

* Target x0 = HRMS - LMS; ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``; the network predicts x0 from
  ``x_t``, t and the conditions (MS, LMS, PAN); loss ``|x0 - net(x_t, t, ...)|_1``, t uniform.
* DDIM with eta = 0 over ``steps`` timesteps spread evenly from 999 to 0 (``linspace``; the toolbox's
  ``ddim10`` stride would start at 900 and cannot take one step); each x0 estimate is clipped so that
  ``LMS + x0`` stays in [0, 2 x the tile's LMS maximum] (the toolbox clamps to [0, 1] of its fixed scale; ours
  is a scene percentile, so bright targets may exceed 1).
* The starting noise is a function of the seed, the band and the *scene* pixel coordinates (a counter-based
  hash, the same on CPU and CUDA): a pixel gets the same noise whichever tile or batch it is computed in, so
  the same seed gives the same output and overlapping tiles agree.
"""
import math

import torch
from torch import nn

from ...training.trainer import spectral_angle

T = 1000


def cosine_alphas_cumprod(steps=T, s=0.008, max_beta=0.999):
    """abar_t of Nichol & Dhariwal's cosine schedule (float64)."""
    def f(i):
        return math.cos((i / steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(steps)], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


ALPHAS_CUMPROD = cosine_alphas_cumprod()


def ddim_timesteps(steps):
    if not 1 <= int(steps) <= T:
        raise ValueError(f"the number of sampling steps must be in 1..{T}")
    return sorted({int(round(v)) for v in torch.linspace(T - 1, 0, int(steps)).tolist()}, reverse=True)


def q_sample(x0, t, noise):
    ab = ALPHAS_CUMPROD.to(x0.device)[t].float()[:, None, None, None]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def diffusion_loss(net, batch, generator=None, sam_weight=0.0):
    """L1 x0-prediction loss of SSNet on a training batch (``gt, ms, lms, pan``), plus ``sam_weight`` times
    the mean spectral angle (radians) of ``LMS + x0`` when given."""
    x0 = batch["gt"] - batch["lms"]
    b = x0.shape[0]
    t = torch.randint(0, T, (b,), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator)
    pred = net(q_sample(x0, t, noise), t, batch["ms"], batch["lms"], batch["pan"])
    loss = torch.nn.functional.l1_loss(pred, x0)
    if sam_weight:
        loss = loss + sam_weight * spectral_angle(batch["lms"] + pred, batch["gt"])
    return loss


def _mix(h):
    """murmur3's 32-bit finaliser on int64 tensors holding values < 2**32."""
    m = 0xFFFFFFFF
    h = h & m
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & m
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


def noise_field(seed, bands, row0, col0, rows, cols, device="cpu"):
    """Standard normal noise (bands, rows, cols) at scene pixels [row0, row0+rows) x [col0, col0+cols)."""
    b = torch.arange(bands, device=device, dtype=torch.int64)[:, None, None]
    r = torch.arange(row0, row0 + rows, device=device, dtype=torch.int64)[None, :, None]
    c = torch.arange(col0, col0 + cols, device=device, dtype=torch.int64)[None, None, :]
    key = _mix(_mix(_mix(int(seed) * 2 + 0x9E3779B9 + b) + (r & 0xFFFFFFFF)) + (c & 0xFFFFFFFF))
    u1 = (_mix(key ^ 0x68E31DA4).double() + 0.5) / 2**32
    u2 = (_mix(key ^ 0xB5297A4D).double() + 0.5) / 2**32
    return (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)).float()


@torch.no_grad()
def ddim_sample(net, ms, lms, pan, noise, steps=10):
    """DDIM (eta = 0) from ``noise`` (B, C, H, W); returns the HRMS estimate ``LMS + x0``."""
    ab_all = ALPHAS_CUMPROD.to(lms.device)
    high = 2 * lms.detach().amax((2, 3), keepdim=True).clamp_min(1e-6)
    x = noise
    times = ddim_timesteps(steps)
    x0 = torch.zeros_like(lms)
    for i, t in enumerate(times):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x0 = net(x, tt, ms, lms, pan).float()
        x0 = torch.minimum(torch.maximum(x0 + lms, torch.zeros_like(lms)), high) - lms
        if i + 1 == len(times):
            break
        ab, ab_prev = ab_all[t].float(), ab_all[times[i + 1]].float()
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
    return lms + x0


class SSDiffSampler(nn.Module):
    """SSDiff as a pansharpening model ``f(ms, lms, pan, ratio, origin) -> hrms`` for ``backend.deep.DeepJob``:
    DDIM from the scene-anchored noise of ``seed`` (``origin``: scene PAN-grid (row, col) of each tile)."""

    needs_origin = True

    def __init__(self, net, steps=10, seed=0):
        super().__init__()
        self.net, self.steps, self.seed = net, int(steps), int(seed)
        ddim_timesteps(self.steps)   # validates
        self.bands = net.bands

    def forward(self, ms, lms, pan, ratio=None, origin=None):
        b, c, h, w = lms.shape
        origin = origin or [(0, 0)] * b
        noise = torch.stack([noise_field(self.seed, c, r0, c0, h, w, lms.device) for r0, c0 in origin])
        return ddim_sample(self.net, ms, lms, pan, noise.to(lms.dtype), self.steps)
