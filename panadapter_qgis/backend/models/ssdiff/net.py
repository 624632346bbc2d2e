"""SSNet, the denoiser of SSDiff (Zhong et al., NeurIPS 2024; METHODS.md §1b.2-1b.5). ``nn.Module``s only.

Two U-shaped branches on the PAN grid, three widths (dim, 2 dim, 4 dim) over five levels:

* the **spatial branch** sees the noisy residual ``x_t`` concatenated with the PAN and runs a ResBlock (with
  the time embedding) at each level;
* the **spectral branch** sees ``x_t`` concatenated with the LMS and runs one APFM (Alternating Projection
  Fusion Module) at each level, whose spatial input is the spatial branch's feature filtered by FMIM;
* the down/up modules are the *same instances* for both branches (shared weights, as in the released code).

APFM, per head, with x the spectral tokens and y the spatial tokens after a shared LayerNorm::

    A_spa = softmax(y1 y2^T / sqrt(d))          out1 = A_spa x1     (T^spa: spatial attention, spectral values)
    A_spe = softmax(x1^T x2 sqrt(d) / HW)       out2 = y1 A_spe     (T^spe: channel attention, spatial values)
    out   = x + W_o (out1 * out2);  out = out + FFN(out)

L-BAF (§1b.5) is the ``lbaf`` attribute: ``"spectral"`` detaches T^spa, ``"spatial"`` detaches T^spe, so the
frozen branch's term passes no gradient; ``BRANCHES`` names the parameters each step trains.

Deviations, all forced by "any band count and ratio": the MS skip of the output is a zero-initialised 3 x 3
convolution of the LMS (the released code applies a ratio-4 PixelShuffle to a convolution of the MS), and the
output convolution is zero-initialised, so an untrained network predicts a zero residual (the LMS).
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import set_trainable as _set_trainable


@dataclass(frozen=True)
class SSDiffConfig:
    dim: int = 16              # channels of the first level (32 in the paper)
    dim_head: int = 16         # heads = channels / dim_head
    time_dim: int = 64         # sinusoidal embedding size (the MLP makes it 2x wider)
    mlp_ratio: float = 0.5     # FFN hidden size of the APFM, relative to its width (se_ratio_mlp)
    fourier_s: tuple = (0.9, 0.6, 0.3)   # FMIM low-frequency scales at widths dim, 2 dim, 4 dim
    spectral_b: tuple = (1.2, 1.4, 1.6)  # FMIM gains of the first half of the spectral channels

    def to_dict(self):
        return asdict(self)


PRESETS = {
    "small": SSDiffConfig(),
    "paper": SSDiffConfig(dim=32, time_dim=128),
}


def timestep_embedding(t, dim):
    """Sinusoidal embedding of (B,) timesteps (as in improved-diffusion)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], 1)


def fourier_filter(x, scale, threshold=1):
    """FMIM's Fourier mask (the released ``Fourier_filter``): the centred (2 threshold)^2 low frequencies of
    the shifted spectrum are multiplied by ``scale``. Runs in float32 (cuFFT in half precision needs powers
    of two)."""
    dtype = x.dtype
    h, w = x.shape[-2:]
    spec = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    mask = torch.ones(h, w, device=x.device)
    cr, cc = h // 2, w // 2
    mask[max(0, cr - threshold):cr + threshold, max(0, cc - threshold):cc + threshold] = scale
    spec = torch.fft.ifftshift(spec * mask, dim=(-2, -1))
    return torch.fft.ifftn(spec, dim=(-2, -1)).real.to(dtype)


class ResBlock(nn.Module):
    """conv3x3 - LeakyReLU - (+ time embedding) - conv3x3 (zero-initialised) + skip."""

    def __init__(self, channels, emb_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, emb):
        h = F.leaky_relu(self.conv1(x), 0.2) + self.emb(emb)[:, :, None, None]
        return x + self.conv2(F.leaky_relu(h, 0.2))


class APFM(nn.Module):
    """Alternating Projection Fusion Module (Fusformer-style block with the paper's two attentions)."""

    def __init__(self, channels, dim_head=16, mlp_ratio=0.5):
        super().__init__()
        self.heads = max(1, channels // dim_head)
        self.norm = nn.LayerNorm(channels)
        self.sa1 = nn.Linear(channels, channels, bias=False)   # T_a (spatial)
        self.sa2 = nn.Linear(channels, channels, bias=False)   # T_b (spatial)
        self.se1 = nn.Linear(channels, channels, bias=False)   # T_c (spectral)
        self.se2 = nn.Linear(channels, channels, bias=False)   # T_d (spectral)
        self.out = nn.Linear(channels, channels)
        hidden = max(1, int(channels * mlp_ratio))
        self.ffn_norm = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, channels))
        self.lbaf = None  # None, "spatial" or "spectral": set by the network for L-BAF

    def _heads(self, t):
        b, n, c = t.shape
        return t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)   # (B, h, N, d)

    def forward(self, x, y):
        """x: spectral tokens, y: spatial tokens, both (B, N, C); returns the fused spectral tokens."""
        b, n, c = x.shape
        xn, yn = self.norm(x), self.norm(y)
        y1, y2 = self._heads(self.sa1(yn)), self._heads(self.sa2(yn))
        x1, x2 = self._heads(self.se1(xn)), self._heads(self.se2(xn))
        d = y1.shape[-1]
        out1 = F.scaled_dot_product_attention(y1, y2, x1)                       # A_spa x1: (B, h, N, d)
        a_spe = torch.softmax(x1.transpose(-1, -2) @ x2 * (math.sqrt(d) / n), -1)  # (B, h, d, d)
        out2 = y1 @ a_spe                                                       # (B, h, N, d)
        if self.lbaf == "spectral":
            out1 = out1.detach()
        elif self.lbaf == "spatial":
            out2 = out2.detach()
        fused = (out1 * out2).transpose(1, 2).reshape(b, n, c)
        x = x + self.out(fused)
        return x + self.ffn(self.ffn_norm(x))


class Down(nn.Module):
    """conv 2x2 stride 2 - LeakyReLU - 1x1 - depthwise 3x3 - LeakyReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 2, stride=2), nn.LeakyReLU(0.2), nn.Conv2d(cout, cout, 1),
                                  nn.Conv2d(cout, cout, 3, padding=1, groups=cout), nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.body(x)


class Up(nn.Module):
    """ConvTranspose 2x2 - LeakyReLU, plus the skip connection, then conv3x3."""

    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x, skip):
        return self.conv(F.leaky_relu(self.up(x), 0.2) + skip)


class SSNet(nn.Module):
    """x0-predictor ``net(x_t, t, ms, lms, pan) -> residual`` (HRMS - LMS) on the PAN grid (size % 4 == 0)."""

    MULTIPLE = 4
    # L-BAF: what each alternating step trains. The shared down/up modules and the time MLP stay frozen.
    BRANCHES = {
        "spatial": ("spa_in.", "spa_blocks.") + tuple(f"apfm.{i}.sa" for i in range(5)),
        "spectral": ("spe_in.", "to_hrms.", "ms_skip.") + tuple(f"apfm.{i}.{part}" for i in range(5)
                                                               for part in ("se", "out", "ffn", "norm")),
    }
    BAND_DEPENDENT = ("spa_in.", "spe_in.", "to_hrms.", "ms_skip.")

    def __init__(self, bands: int, config: SSDiffConfig = PRESETS["small"]):
        super().__init__()
        c = self.config = config
        self.bands = bands
        d = c.dim
        widths = (d, 2 * d, 4 * d, 2 * d, d)
        emb = 2 * c.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(c.time_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.spa_in = nn.Conv2d(bands + 1, d, 3, padding=1)
        self.spe_in = nn.Conv2d(2 * bands, d, 3, padding=1)
        self.in_emb = nn.Linear(emb, d)
        self.spa_blocks = nn.ModuleList(ResBlock(w, emb) for w in widths)
        self.apfm = nn.ModuleList(APFM(w, c.dim_head, c.mlp_ratio) for w in widths)
        self.down = nn.ModuleList([Down(d, 2 * d), Down(2 * d, 4 * d)])   # shared by both branches
        self.up = nn.ModuleList([Up(4 * d, 2 * d), Up(2 * d, d)])
        self.to_hrms = nn.Conv2d(d, bands, 3, padding=1)
        self.ms_skip = nn.Conv2d(bands, bands, 3, padding=1)
        for layer in (self.to_hrms, self.ms_skip):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.level = (0, 1, 2, 1, 0)   # which FMIM constants each of the five levels uses

    @torch.no_grad()
    def init_bands_from(self, state):
        """Band-dependent layers from weights trained for another band count (``state``: their state dict):
        every band starts as the mean band of the trained ones (input weights rescaled to keep the sum over
        bands, output rows averaged, the MS skip split into its diagonal and off-diagonal means), so the
        network sharpens any sensor from the first iteration, all bands alike, and adaptation specialises
        them. Returns how many tensors were set this way."""
        c = self.bands
        done = 0

        def spread(w, c0, parts):   # input channels: ``parts`` groups of c0 band channels, then the rest
            groups = [w[:, k * c0:(k + 1) * c0].mean(1, keepdim=True).repeat(1, c, 1, 1) * (c0 / c)
                      for k in range(parts)]
            return torch.cat(groups + [w[:, parts * c0:]], 1)

        for key, own in self.state_dict().items():
            if key not in state or tuple(state[key].shape) == tuple(own.shape):
                continue
            w = state[key].to(own.dtype)
            if key == "spa_in.weight":
                new = spread(w, w.shape[1] - 1, 1)
            elif key == "spe_in.weight":
                new = spread(w, w.shape[1] // 2, 2)
            elif key in ("to_hrms.weight", "to_hrms.bias", "ms_skip.bias"):
                new = w.mean(0, keepdim=True).repeat(c, *([1] * (w.dim() - 1)))
            elif key == "ms_skip.weight":
                c0 = w.shape[0]
                eye = torch.eye(c0, dtype=torch.bool)
                diag = w[eye].mean(0)
                off = w[~eye].mean(0) * (c0 - 1) / max(1, c - 1) if c0 > 1 else torch.zeros_like(diag)
                new = off.expand(c, c, *w.shape[2:]).clone()
                new[torch.eye(c, dtype=torch.bool)] = diag
            else:
                continue
            own.copy_(new)
            done += 1
        return done

    def set_lbaf(self, mode):
        for block in self.apfm:
            block.lbaf = mode

    def set_trainable(self, prefixes):
        """requires_grad only for parameters whose name starts with one of ``prefixes``; returns them."""
        return _set_trainable(self, prefixes)

    def _fuse(self, i, spa, spe, emb):
        """Level i: the spatial ResBlock, FMIM, then the APFM; returns (spatial, spectral) features."""
        c = self.config
        spa = self.spa_blocks[i](spa, emb)
        lv = self.level[i]
        y = fourier_filter(spa, c.fourier_s[lv])
        half = spe.shape[1] // 2
        spe = torch.cat([spe[:, :half] * c.spectral_b[lv], spe[:, half:]], 1)
        b, ch, h, w = spe.shape
        tokens = self.apfm[i](spe.flatten(2).transpose(1, 2), y.flatten(2).transpose(1, 2))
        return spa, tokens.transpose(1, 2).reshape(b, ch, h, w)

    def forward(self, x_t, t, ms, lms, pan):
        emb = self.time_mlp(timestep_embedding(t, self.config.time_dim))
        e0 = self.in_emb(emb)[:, :, None, None]
        spa = self.spa_in(torch.cat([x_t, pan], 1)) + e0
        spe = self.spe_in(torch.cat([x_t, lms], 1)) + e0
        spa0, spe0 = self._fuse(0, spa, spe, emb)
        spa1, spe1 = self._fuse(1, self.down[0](spa0), self.down[0](spe0), emb)
        spa2, spe2 = self._fuse(2, self.down[1](spa1), self.down[1](spe1), emb)
        spa3, spe3 = self._fuse(3, self.up[0](spa2, spa1), self.up[0](spe2, spe1), emb)
        _, spe4 = self._fuse(4, self.up[1](spa3, spa0), self.up[1](spe3, spe0), emb)
        return self.to_hrms(spe4) + self.ms_skip(lms)


def create_model(bands: int, preset: str = "small") -> SSNet:
    if preset not in PRESETS:
        raise ValueError(f"unknown SSDiff preset {preset!r}; choose from {sorted(PRESETS)}")
    return SSNet(bands, PRESETS[preset])
