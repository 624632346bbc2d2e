"""INFN: implicit neural feature fusion of a low-resolution HSI and a high-resolution MSI (METHODS.md §1c).

The paper (Wu et al., IEEE TCI 2024) gives the design but not its equations, sizes or code; what follows is
this project's reading of it, each inferred part marked [INFERRED]:

* two encoders (EDSR-style ResBlocks): a spatial one on the MSI concatenated with the upsampled HSI (the
  HR guide features ``g``, on the MSI grid) and a spectral one on the LR-HSI (latents ``z``, on its grid);
* **DHFF** (Dual High-Frequency Fusion) [INFERRED]: high frequencies taken twice, from the guide features
  (``g`` minus its block average over the ratio, re-expanded) and from the HSI latents (``z`` minus its 3 x 3
  mean), both concatenated with the relative coordinate of the query to each neighbour before the MLP;
* **INR-CS** [INFERRED]: a LIIF-style local ensemble over the 4 LR neighbours of each HR query; the MLP
  predicts one HSI residual per neighbour, and the neighbours are weighted by a softmax of the cosine
  similarity between the query's guide feature and the neighbour's latent, which has no parameters (both
  are ``feats`` wide);
* the MSI's own high frequencies (``detail``: the MSI minus its generalised-Laplacian-pyramid low-pass,
  i.e. the MSI degraded to the HSI grid with the HSI's MTF and interpolated back, what the LR-HSI lacks)
  also enter the residual through a 1 x 1 convolution, ``inject`` [this project's addition: a learnable
  detail injection, the linear path an MLP behind ReLUs learns slowly from the few pixels a zero-shot
  adaptation has]; ``set_injection`` starts it at a classical hypersharpening solution (an L x M matrix:
  each HSI band from a least-squares combination of the MSI bands, or from its best-correlated MSI band),
  which the adaptation then corrects;
* output = upsampled HSI + the weighted residual; the last layers start at zero, so an untrained network
  returns the upsampled HSI.

Interface of the project's deep models: ``forward(ms, lms, pan, ratio)`` with ``ms`` = LR-HSI (B, L, h, w),
``lms`` = its upsampling (B, L, r h, r w) and ``pan`` = the MSI (B, M, r h, r w).
"""
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class INFConfig:
    feats: int = 32
    blocks: int = 3
    hidden: int = 64

    def to_dict(self):
        return asdict(self)


PRESETS = {
    "small": INFConfig(),
    # OTIAS-sized encoders (4 ResBlocks of 128 channels, METHODS.md §1c), the closest published template
    "paper": INFConfig(feats=128, blocks=4, hidden=256),
}


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(True), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


def encoder(cin, feats, blocks):
    return nn.Sequential(nn.Conv2d(cin, feats, 3, padding=1), *[ResBlock(feats) for _ in range(blocks)])


def neighbours(size, ratio, device):
    """For each HR row (or column) index: the two LR neighbour indices (clamped) and the signed distances
    (in LR pixels) from the query to them; LR pixel centres sit at (i + 0.5) r - 0.5 on the HR grid."""
    u = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / ratio - 0.5
    i0 = torch.floor(u)
    lr = size // ratio
    idx = [i0.clamp(0, lr - 1).long(), (i0 + 1).clamp(0, lr - 1).long()]
    rel = [u - i0, u - i0 - 1]
    return idx, rel


class INFN(nn.Module):
    MULTIPLE = 1

    def __init__(self, bands: int, guide_bands: int, config: INFConfig = PRESETS["small"]):
        super().__init__()
        c = self.config = config
        self.bands, self.guide_bands = bands, guide_bands
        self.spatial = encoder(guide_bands + bands, c.feats, c.blocks)
        self.spectral = encoder(bands, c.feats, c.blocks)
        self.mlp = nn.Sequential(nn.Linear(4 * c.feats + 2, c.hidden), nn.ReLU(True),
                                 nn.Linear(c.hidden, c.hidden), nn.ReLU(True), nn.Linear(c.hidden, bands))
        self.inject = nn.Conv2d(guide_bands, bands, 1)
        for layer in (self.mlp[-1], self.inject):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, ms, lms, pan, ratio: int, pan_detail=None):
        """``pan_detail``: ``detail(pan, ratio)`` when the caller has it from a larger extent than ``pan``."""
        b, _, hh, ww = lms.shape
        r = int(ratio)
        g = self.spatial(torch.cat([pan, lms], 1))                      # (B, F, H, W)
        z = self.spectral(ms)                                            # (B, F, h, w)
        # DHFF: high frequencies of the guide (HR) and of the HSI latents (LR)
        g_hf = g - F.interpolate(F.avg_pool2d(g, r, ceil_mode=True), scale_factor=r, mode="nearest")[..., :hh, :ww]
        z_hf = z - F.avg_pool2d(F.pad(z, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        lat = torch.cat([z, z_hf], 1)                                    # (B, 2F, h, w)
        query = torch.cat([g, g_hf], 1).permute(0, 2, 3, 1)              # (B, H, W, 2F)
        (ry, dy), (rx, dx) = neighbours(hh, r, lms.device), neighbours(ww, r, lms.device)
        preds, sims = [], []
        gq = F.normalize(g.permute(0, 2, 3, 1), dim=-1)
        for iy, ddy in zip(ry, dy):
            for ix, ddx in zip(rx, dx):
                nb = lat[:, :, iy][:, :, :, ix].permute(0, 2, 3, 1)      # (B, H, W, 2F) latents of the neighbour
                coord = torch.stack([ddy[:, None].expand(hh, ww), ddx[None, :].expand(hh, ww)], -1)
                inp = torch.cat([nb, query, coord.expand(b, hh, ww, 2)], -1)
                preds.append(self.mlp(inp))
                zq = F.normalize(nb[..., :self.config.feats], dim=-1)
                sims.append((gq * zq).sum(-1))                            # cosine similarity, parameter-free
        w = torch.softmax(torch.stack(sims, -1), -1)                    # (B, H, W, 4)
        residual = (torch.stack(preds, -1) * w[..., None, :]).sum(-1)    # (B, H, W, L)
        return lms + residual.permute(0, 3, 1, 2) + self.inject(detail(pan, r) if pan_detail is None else pan_detail)

    @torch.no_grad()
    def set_injection(self, matrix):
        """``inject`` = HSI band l takes sum_k matrix[l, k] times the details of MSI band k."""
        w = torch.as_tensor(matrix, dtype=self.inject.weight.dtype)
        if tuple(w.shape) != (self.bands, self.guide_bands):
            raise ValueError(f"injection matrix {tuple(w.shape)}, expected {(self.bands, self.guide_bands)}")
        self.inject.weight.copy_(w[:, :, None, None])
        self.inject.bias.zero_()


# Tensors whose shapes depend on the band counts (the HSI's L, the MSI's M); the rest is the trunk, which
# bundled weights carry from one sensor pair to another.
BAND_LAYERS = ("spatial.0.", "spectral.0.", "mlp.4.", "inject.")


def trunk_state(net: INFN) -> dict:
    """The band-independent tensors of ``net`` (encoders' ResBlocks, the MLP's hidden layers)."""
    return {k: v.detach().clone() for k, v in net.state_dict().items() if not k.startswith(BAND_LAYERS)}


def load_trunk(net: INFN, state: dict) -> INFN:
    """Load trunk tensors into ``net`` (any band counts, same preset); the band layers keep their values."""
    own = net.state_dict()
    missing = [k for k in own if not k.startswith(BAND_LAYERS) and k not in state]
    wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if missing or wrong:
        raise ValueError(f"the INF trunk does not fit this preset (missing {missing[:3]}, mismatched {wrong[:3]})")
    net.load_state_dict(state, strict=False)
    return net


def share_trunk(nets):
    """Make every network of ``nets`` use the first one's trunk modules (multi-sensor training)."""
    first = nets[0]
    for net in nets[1:]:
        for i in range(1, len(first.spatial)):
            net.spatial[i] = first.spatial[i]
            net.spectral[i] = first.spectral[i]
        for i in range(len(first.mlp) - 1):
            net.mlp[i] = first.mlp[i]
    return nets


HSI_GAIN = 0.3   # MTF Nyquist gain assumed for the HSI (the toolbox's default for a multispectral sensor)


def lowpass(x, ratio, gain=HSI_GAIN):
    """Generalised-Laplacian-pyramid low-pass of (B, C, H, W), H and W multiples of the ratio: MTF-Gaussian
    filter and decimation to the LR grid, then the 23-tap interpolation back (replicate borders)."""
    from ... import mtf

    r = int(ratio)
    return mtf.upsample_image(mtf.degrade_image(x, mtf.mtf_kernel_1d(gain, r), r), r)


def detail(x, ratio, gain=HSI_GAIN):
    """What the LR-HSI lacks of the MSI: x minus its pyramid low-pass."""
    return x - lowpass(x, ratio, gain)


def create_model(bands: int, guide_bands: int, preset: str = "small") -> INFN:
    if preset not in PRESETS:
        raise ValueError(f"unknown INF preset {preset!r}; choose from {sorted(PRESETS)}")
    return INFN(bands, guide_bands, PRESETS[preset])
