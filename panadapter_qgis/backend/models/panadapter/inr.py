"""Implicit-neural-representation tails (SIREN-like 1x1-conv MLPs) decoding priors at PAN pixels."""
import math

import torch
import torch.nn.functional as F
from torch import nn


def relative_coords(low, high_size, ratio):
    """(B, 2, H, W): offset of each PAN pixel centre from its MS pixel centre, in MS pixels (-0.5..0.5).

    ``low``: a tensor on the MS grid (its batch size and device are used); ``high_size`` = (H, W).
    """
    H, W = high_size
    def axis(n):
        p = (torch.arange(n, device=low.device, dtype=low.dtype) + 0.5) / ratio
        return p - torch.floor(p) - 0.5
    yy, xx = torch.meshgrid(axis(H), axis(W), indexing="ij")
    return torch.stack([yy, xx]).unsqueeze(0).expand(low.shape[0], -1, -1, -1)


def to_grid(x, size):
    """Bilinear resampling between corner-aligned grids (pixel centres map to pixel centres)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


CHUNK = 2 ** 19   # activations (floats) of a per-pixel tail evaluated at once in inference: 2 MB, in the cache


def by_rows(fn, per_row, *tensors):
    """``fn(*tensors)`` on chunks of rows (the last-but-one axis) of ``per_row`` activations each, when no
    gradient is recorded: a per-pixel function gives the same pixels, 2-5x faster on a CPU than on a whole
    batch of tiles, whose activations (tiles x bands x hidden x pixels) do not fit in the cache."""
    rows = tensors[0].shape[-2]
    step = max(1, CHUNK // max(1, per_row))
    if torch.is_grad_enabled() or step >= rows:
        return fn(*tensors)
    return torch.cat([fn(*(t[..., i:i + step, :] for t in tensors)) for i in range(0, rows, step)], -2)


class Sine(nn.Module):
    def __init__(self, w0=1.0):
        super().__init__()
        self.w0 = w0

    def forward(self, x):
        return torch.sin(self.w0 * x)


class SirenTail(nn.Module):
    """Conv1x1(cin -> hidden) -> sin -> Conv1x1(hidden -> hidden) -> sin -> Conv1x1(hidden -> bands)."""

    def __init__(self, cin, hidden, bands, w0=1.0):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(cin, hidden, 1), Sine(w0), nn.Conv2d(hidden, hidden, 1), Sine(w0),
                                 nn.Conv2d(hidden, bands, 1))
        with torch.no_grad():  # SIREN initialisation (Sitzmann et al. 2020)
            for i, layer in enumerate(self.net):
                if isinstance(layer, nn.Conv2d):
                    fan_in = layer.weight.shape[1]
                    bound = 1 / fan_in if i == 0 else math.sqrt(6 / fan_in) / w0
                    layer.weight.uniform_(-bound, bound)
            # the residual starts at exactly zero: an untrained tail returns the interpolated MS
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()

    def forward(self, x):
        return by_rows(self.net, x.shape[0] * x.shape[-1] * self.net[0].out_channels, x)


class BandTail(nn.Module):
    """``SirenTail`` for any band count: the shared features (B, cin, H, W) and each band's own (B, C, k, H, W)
    through one MLP per pixel and band, one output each: (B, C, H, W). The first layer's shared part is
    computed once for all bands. The last layer starts at zero (an untrained tail adds nothing)."""

    def __init__(self, cin, per_band, hidden, w0=1.0):
        super().__init__()
        self.shared = nn.Conv2d(cin, hidden, 1)
        self.own = nn.Conv2d(per_band, hidden, 1, bias=False)
        self.net = nn.Sequential(Sine(w0), nn.Conv2d(hidden, hidden, 1), Sine(w0), nn.Conv2d(hidden, 1, 1))
        with torch.no_grad():
            bound = 1 / (cin + per_band)
            self.shared.weight.uniform_(-bound, bound)
            self.own.weight.uniform_(-bound, bound)
            fan_in = hidden
            self.net[1].weight.uniform_(-math.sqrt(6 / fan_in) / w0, math.sqrt(6 / fan_in) / w0)
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()

    def forward(self, shared, own):
        b, c = own.shape[:2]
        return by_rows(self._forward, b * c * own.shape[-1] * self.own.out_channels, shared, own)

    def _forward(self, shared, own):
        b, c, k, h, w = own.shape
        x = self.own(own.reshape(b * c, k, h, w)).reshape(b, c, -1, h, w) + self.shared(shared)[:, None]
        return self.net(x.reshape(b * c, -1, h, w)).reshape(b, c, h, w)
