"""PanAdapter (Wu et al., AAAI 2025; METHODS.md §1a): stage-1 priors from two CNNs with LPE, stage-2 cascaded
adapters into a frozen ViT, INR tails. Only ``nn.Module``s here; training lives in ``backend/training``.

Inputs are normalised images: ``ms`` (B, C, h, w), ``lms`` (B, C, r*h, r*w) (the 23-tap interpolated MS),
``pan`` (B, 1, r*h, r*w); the output is ``lms + residual`` (B, C, r*h, r*w). The PAN-grid size must be a
multiple of ``token_stride``.

Where this deviates from the released code (which does not run, §1a.4), it follows METHODS.md §5.3: the
stage-1 Tail1 is implemented and the EDSR bodies receive gradients in stage 1; the ViT head is trainable in
stage 2; the head works at ``cnn_feats`` channels and reaches the ViT width in its 4x4 stride-4 convolution.
"""
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import set_trainable as _set_trainable

from .adapter import PanAdapterLayer
from .cnn import SSPEN, ResBlock, UniversalHead, band_inputs, conv
from .inr import BandTail, SirenTail, relative_coords, to_grid
from .vit import VisionTransformer


@dataclass(frozen=True)
class PanAdapterConfig:
    cnn_feats: int = 32
    cnn_blocks: int = 4
    lpe_dim: int = 8
    prior: int = 32
    vit_dim: int = 96
    vit_heads: int = 4
    vit_layers: int = 2        # encoder layers = decoder layers
    vit_hidden: int = 192
    token_stride: int = 4
    grid: int = 16             # token grid of the learned positions (a 64 x 64 training patch)
    adapter_k: int = 32
    adapter_heads: int = 4
    adapter_every: int = 1     # one adapter after every ``adapter_every`` ViT blocks
    tail_hidden: int = 64
    head_kernel: int = 3       # the paper's heads use 5 x 5 ResBlocks; 3 x 3 keeps the small preset fast
    # Stage-2 output. False: ``lms + Tail2`` (the paper). True: ``stage-1 output + Tail2``; with Tail2's zero
    # initialisation stage 2 then starts from the stage-1 result and can only refine it, which is what a
    # short CPU budget needs (measured on a degraded Landsat-7 scene, from random weights: 400 iterations
    # of the whole stage-2 path gained 4 % ERGAS over MTF-GLP-FS, 600 iterations of stage 1 gained 27 %).
    cascade: bool = True
    # Any band count (issue 27): band-set heads (``cnn.SetConv``: one convolution over each band with the band
    # mean and the guides, averaged over bands) and per-band tails (``inr.BandTail``); the output is the
    # classical ``base`` (``classical_base``) plus the residual, which starts at zero.
    universal: bool = False

    def to_dict(self):
        return asdict(self)


PRESETS = {
    # runs a 2048 x 2048 PAN on a 2-core CPU in minutes; the bundled weights use it
    "small": PanAdapterConfig(),
    # the paper's sizes: EDSR-baseline (16 x 64) and IPT (d 576, 12 heads, 12 + 12 layers), k = 96, t = 4
    "paper": PanAdapterConfig(cnn_feats=64, cnn_blocks=16, lpe_dim=16, prior=64, vit_dim=576, vit_heads=12,
                              vit_layers=12, vit_hidden=2304, adapter_k=96, adapter_every=4, tail_hidden=576,
                              head_kernel=5, cascade=False),
    # the bundled multi-sensor weights: the small sizes with band-set heads, any band count, over a classical base
    "universal": PanAdapterConfig(universal=True),
    # the universal model at a size for CPUs (issue 29): half the widths, two ResBlocks, one encoder and one
    # decoder layer, 8 x 8-pixel tokens (a 64-pixel training patch is an 8 x 8 token grid): 13x faster per tile
    # untrained, 4-6x the throughput of "universal" on a whole scene, on a 2-core CPU (docs/BENCHMARKS.md)
    "fast": PanAdapterConfig(universal=True, cnn_feats=16, cnn_blocks=2, prior=16, vit_dim=48, vit_heads=2,
                             vit_layers=1, vit_hidden=96, token_stride=8, grid=8, adapter_k=16, adapter_heads=2,
                             tail_hidden=16),
}


class SELayer(nn.Module):
    def __init__(self, channels, reduction=2):
        super().__init__()
        mid = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, mid), nn.ReLU(True), nn.Linear(mid, channels), nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class PanAdapter(nn.Module):
    def __init__(self, bands: int, config: PanAdapterConfig = PRESETS["small"]):
        super().__init__()
        c = config
        self.bands, self.config = bands, c
        self.universal = self.needs_base = c.universal
        self.accepts_crop = True   # forward(..., crop=): DeepJob drops a tile's context before the tails
        self.sspen = SSPEN(bands, c.cnn_feats, c.cnn_blocks, c.lpe_dim, c.prior, c.head_kernel, c.universal)
        if c.universal:
            self.tail1 = BandTail(2 * c.prior + 2, 3, c.tail_hidden)
            self.vit_head = UniversalHead(3, c.cnn_feats, c.head_kernel)
        else:
            self.tail1 = SirenTail(2 * c.prior + 2, c.tail_hidden, bands)
            self.vit_head = nn.Sequential(SELayer(bands + 1), conv(bands + 1, c.cnn_feats, 3),
                                          ResBlock(c.cnn_feats, c.head_kernel), ResBlock(c.cnn_feats, c.head_kernel))
        s = c.token_stride
        self.head_down = nn.Conv2d(c.cnn_feats, c.vit_dim, s, stride=s)
        self.vit = VisionTransformer(c.vit_dim, c.vit_heads, c.vit_layers, c.vit_hidden, c.grid)
        self.a_proj = nn.Linear(c.prior, c.adapter_k)
        self.b_proj = nn.Linear(c.prior * s * s, c.adapter_k)
        n_adapters = self.vit.blocks // c.adapter_every
        self.adapters = nn.ModuleList(PanAdapterLayer(c.vit_dim, c.adapter_k, c.adapter_heads,
                                                      inject=i < n_adapters - 1) for i in range(n_adapters))
        self.tail2 = (BandTail(2 * c.adapter_k + 2, 3, c.tail_hidden) if c.universal
                      else SirenTail(2 * c.adapter_k + 2, c.tail_hidden, bands))
        self.stage = 2

    # -- parameter groups of the two-stage scheme and of scene adaptation
    BAND_DEPENDENT = ("sspen.spectral.head.", "sspen.spatial.head.", "tail1.", "vit_head.", "tail2.")
    STAGE1 = ("sspen.", "tail1.")
    STAGE2 = ("vit_head.", "head_down.", "a_proj.", "b_proj.", "adapters.", "tail2.")
    # scene adaptation from pre-trained weights: the pre-trained EDSR bodies and the ViT stay frozen
    ADAPT_STAGE1 = ("sspen.spectral.head.", "sspen.spatial.head.", "sspen.spectral.lpe.", "sspen.spatial.lpe.",
                    "sspen.spectral.project.", "sspen.spatial.project.", "tail1.")
    ADAPT = ("vit_head.", "a_proj.", "b_proj.", "adapters.", "tail2.")

    def set_trainable(self, prefixes):
        """requires_grad only for parameters whose name starts with one of ``prefixes``; returns them."""
        return _set_trainable(self, prefixes)

    def _tail(self, tail, shared, own):
        return tail(shared, own) if self.universal else tail(shared)

    def forward(self, ms, lms, pan, ratio: int, stage: int = None, base=None, crop: int = 0):
        """``base``: the classical result on the PAN grid (B, C, rH, rW) that the residual is added to (the
        ``universal`` preset; default, and always for the other presets: ``lms``). ``crop``: PAN pixels dropped
        on every side of the output; the per-pixel tails then run on the kept pixels only (a tile's context
        is needed by the encoders and the ViT, not by the tails): the same pixels as cropping afterwards."""
        stage = self.stage if stage is None else stage
        size = tuple(pan.shape[-2:])

        def cut(x):
            return x[..., crop:x.shape[-2] - crop, crop:x.shape[-1] - crop] if crop else x
        start0 = lms if base is None or not self.universal else base
        spectral, spatial = self.sspen(ms, lms, pan, start0) if self.universal else self.sspen(ms, lms, pan)
        coords = cut(relative_coords(ms, size, ratio))
        own = None
        if self.universal:
            b, c, h, w = start0.shape
            own = cut(torch.cat([start0[:, :, None], lms[:, :, None], pan[:, None].expand(b, c, 1, h, w)], 2))
        if stage == 1 or self.config.cascade:
            out1 = cut(start0) + self._tail(self.tail1, torch.cat([cut(to_grid(spectral, size)), cut(spatial), coords],
                                                                  1), own)
            if stage == 1:
                return out1
        s = self.config.token_stride
        grid = (size[0] // s, size[1] // s)
        head_in = band_inputs(start0, pan) if self.universal else torch.cat([lms, pan], 1)
        tokens = self.head_down(self.vit_head(head_in)).flatten(2).transpose(1, 2)
        spe = self.a_proj(to_grid(spectral, grid).flatten(2).transpose(1, 2))
        spa = self.b_proj(F.unfold(spatial, s, stride=s).transpose(1, 2))
        state = {"spa": spa, "spe": spe}

        def inject(vit_tokens, i):
            vit_tokens, state["spa"], state["spe"] = self.adapters[i](vit_tokens, state["spa"], state["spe"])
            return vit_tokens

        self.vit(tokens, grid, inject, self.config.adapter_every)
        k = self.config.adapter_k
        spa_map = state["spa"].transpose(1, 2).reshape(-1, k, *grid)
        spe_map = state["spe"].transpose(1, 2).reshape(-1, k, *grid)
        start = out1 if self.config.cascade else cut(start0)
        return start + self._tail(self.tail2, torch.cat([cut(to_grid(spa_map, size)), cut(to_grid(spe_map, size)),
                                                         coords], 1), own)


def create_model(bands: int, preset: str = "small") -> PanAdapter:
    if preset not in PRESETS:
        raise ValueError(f"unknown PanAdapter preset {preset!r}; choose from {sorted(PRESETS)}")
    return PanAdapter(bands, PRESETS[preset])
