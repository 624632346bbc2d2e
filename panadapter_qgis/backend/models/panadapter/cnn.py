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

    def __init__(self, cin, feats, n_blocks, lpe_dim, prior, head_kernel=5):
        super().__init__()
        self.head = InputHead(cin, feats, head_kernel)
        self.cnn = EDSRBody(feats, n_blocks)
        self.lpe = nn.ModuleList(LPE(feats, lpe_dim) for _ in range(n_blocks))
        self.project = nn.Conv2d(lpe_dim * n_blocks, prior, 1)

    def forward(self, x):
        tokens, _ = self.cnn(self.head(x))
        return self.project(torch.cat([lpe(t) for lpe, t in zip(self.lpe, tokens)], 1))


class SSPEN(nn.Module):
    """Spatial-spectral prior extraction: A (spectral prior, MS scale) and B (spatial prior, PAN scale).

    ``ms``: (B, C, h, w); ``lms``: (B, C, rh, rw); ``pan``: (B, 1, rh, rw) -> A (B, m, h, w), B (B, m, rh, rw).
    """

    def __init__(self, bands, feats, n_blocks, lpe_dim, prior, head_kernel=5):
        super().__init__()
        self.spectral = PriorBranch(bands, feats, n_blocks, lpe_dim, prior, head_kernel)
        self.spatial = PriorBranch(bands + 1, feats, n_blocks, lpe_dim, prior, head_kernel)

    def forward(self, ms, lms, pan):
        return self.spectral(ms), self.spatial(torch.cat([lms, pan], 1))
