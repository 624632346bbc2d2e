"""Stage 1 of PanAdapter: EDSR-style CNN backbones with Local Prior Extraction (SSPEN + LPE, METHODS.md §1a.2).

Module names follow EDSR's (``body.{i}.body.{0,2}`` ResBlocks, ``body.{n}`` closing conv) so that the
official ``edsr_baseline_x2`` body loads by key and shape (``weights.load_official``).
"""
import torch
from torch import nn


def conv(cin, cout, k, bias=True):
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class ResBlock(nn.Module):
    """conv - ReLU - conv + identity (EDSR, res_scale 1). (B, F, H, W) -> (B, F, H, W)."""

    def __init__(self, feats, k=3):
        super().__init__()
        self.body = nn.Sequential(conv(feats, feats, k), nn.ReLU(True), conv(feats, feats, k))

    def forward(self, x):
        return x + self.body(x)


class EDSRBody(nn.Module):
    """``n`` ResBlocks and a closing conv; returns every ResBlock output (the "tokens" of the LPE)."""

    def __init__(self, feats, n):
        super().__init__()
        self.body = nn.Sequential(*[ResBlock(feats) for _ in range(n)], conv(feats, feats, 3))

    def forward(self, x):
        outs = []
        h = x
        for block in self.body[:-1]:
            h = block(h)
            outs.append(h)
        return outs, self.body[-1](h) + x


class InputHead(nn.Module):
    """Band-count-specific head (PanAdapter's ``MS_encoder``): conv3x3 -> 2 ResBlocks (k5) -> conv1x1."""

    def __init__(self, cin, feats, kernel=5):
        super().__init__()
        self.net = nn.Sequential(conv(cin, feats, 3), ResBlock(feats, kernel), ResBlock(feats, kernel),
                                 conv(feats, feats, 1))

    def forward(self, x):
        return self.net(x)


class SetConv(nn.Module):
    """A first convolution that takes any band count (issue 27): the same ``conv`` over each band's own
    channels (``per_band`` of them: the band, plus shared guides such as the PAN and the band mean), then the
    mean over bands. (B, C * per_band, H, W) given as (B, C, per_band, H, W) -> (B, F, H, W)."""

    def __init__(self, per_band, feats, k=3):
        super().__init__()
        self.conv = conv(per_band, feats, k)

    def forward(self, x):
        # the convolution is linear: the mean over bands of its outputs is its output on the mean over bands of
        # its inputs (bias included), which costs 1/C of the convolution of every band
        return self.conv(x.mean(1))


def band_inputs(x, *shared):
    """(B, C, k, H, W): each band of ``x`` (B, C, H, W) with the band mean and the ``shared`` (B, 1, H, W)
    guides beside it: what a ``SetConv`` reads."""
    b, c, h, w = x.shape
    guides = [x.mean(1, keepdim=True)] + list(shared)
    return torch.cat([x[:, :, None]] + [g[:, None].expand(b, c, 1, h, w) for g in guides], 2)


class UniversalHead(nn.Module):
    """``InputHead`` for any band count: ``SetConv`` -> 2 ResBlocks -> conv1x1 (``per_band`` inputs a band)."""

    def __init__(self, per_band, feats, kernel=5):
        super().__init__()
        self.set = SetConv(per_band, feats, 3)
        self.net = nn.Sequential(ResBlock(feats, kernel), ResBlock(feats, kernel), conv(feats, feats, 1))

    def forward(self, x):
        return self.net(self.set(x))


class LPE(nn.Module):
    """Local Prior Extraction: Conv1x1 (F -> d') -> GELU -> depthwise Conv3x3 (d')."""

    def __init__(self, feats, reduced):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(feats, reduced, 1), nn.GELU(),
                                 nn.Conv2d(reduced, reduced, 3, padding=1, groups=reduced))

    def forward(self, x):
        return self.net(x)


class PriorBranch(nn.Module):
    """Head + EDSR body + one LPE per ResBlock, concatenated and projected to ``prior`` channels."""

    def __init__(self, cin, feats, n_blocks, lpe_dim, prior, head_kernel=5, universal=False):
        super().__init__()
        self.head = UniversalHead(cin, feats, head_kernel) if universal else InputHead(cin, feats, head_kernel)
        self.cnn = EDSRBody(feats, n_blocks)
        self.lpe = nn.ModuleList(LPE(feats, lpe_dim) for _ in range(n_blocks))
        self.project = nn.Conv2d(lpe_dim * n_blocks, prior, 1)

    def forward(self, x):
        tokens, _ = self.cnn(self.head(x))
        return self.project(torch.cat([lpe(t) for lpe, t in zip(self.lpe, tokens)], 1))


class SSPEN(nn.Module):
    """Spatial-spectral prior extraction: A (spectral prior, MS scale) and B (spatial prior, PAN scale).

    ``ms``: (B, C, h, w); ``lms``: (B, C, rh, rw); ``pan``: (B, 1, rh, rw) -> A (B, m, h, w), B (B, m, rh, rw).
    ``universal``: heads for any band count (``UniversalHead``); the spatial branch then reads the classical
    ``base`` of each band beside its interpolated MS and the PAN.
    """

    def __init__(self, bands, feats, n_blocks, lpe_dim, prior, head_kernel=5, universal=False):
        super().__init__()
        self.universal = universal
        spectral_in, spatial_in = (2, 4) if universal else (bands, bands + 1)
        self.spectral = PriorBranch(spectral_in, feats, n_blocks, lpe_dim, prior, head_kernel, universal)
        self.spatial = PriorBranch(spatial_in, feats, n_blocks, lpe_dim, prior, head_kernel, universal)

    def forward(self, ms, lms, pan, base=None):
        if self.universal:
            base = lms if base is None else base
            spatial = torch.cat([band_inputs(lms, pan), base[:, :, None]], 2)
            return self.spectral(band_inputs(ms)), self.spatial(spatial)
        return self.spectral(ms), self.spatial(torch.cat([lms, pan], 1))
