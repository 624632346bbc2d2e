#!/usr/bin/env python3
"""The Landsat-7-only PanAdapter weights (``small`` preset, 6 bands), bundled until 2026-12-06; ``make weights`` now
trains the multi-sensor ``universal`` preset (``train_multisensor.py``, which reuses this file's restoration
network and options). Kept to reproduce the old weights (CPU or GPU).

1. Restoration pre-training of the small preset's backbones (the project cannot download EDSR/IPT): one
   single-band restoration network (EDSR body + ViT, the very modules PanAdapter uses) learns x2 and x4
   super-resolution and denoising on the multispectral bands of the training scenes.
2. PanAdapter stage 1 (prior extractors + Tail1, EDSR bodies initialised from step 1) and stage 2
   (adapters, projections, ViT head, Tail2; the ViT from step 1 frozen) on Wald-protocol crops of the same
   scenes.

Training scenes: the Landsat-7 FuseBox scenes whose number is not a multiple of 5. The scenes that the
quality benchmark and tests score (FuseBox 05, 10, ..., 30, Istanbul, WorldView-3, Sentinel-2) are never
used. Writes ``panadapter_small.pt`` and its card ``panadapter_small.json``.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panadapter_qgis.backend import raster  # noqa: E402
from panadapter_qgis.backend.adapt import save_weights, two_stages  # noqa: E402
from panadapter_qgis.backend.device import select_device  # noqa: E402
from panadapter_qgis.backend.models.panadapter import PRESETS, create_model  # noqa: E402
from panadapter_qgis.backend.models.panadapter.cnn import EDSRBody, conv  # noqa: E402
from panadapter_qgis.backend.models.panadapter.vit import VisionTransformer  # noqa: E402
from panadapter_qgis.backend.training.datasets import SceneCrops, augment  # noqa: E402
from panadapter_qgis.backend.training.trainer import train  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pansharpening" / "landsat7_fusebox"
LANDSAT = 8  # sensor index (backend.sensors)


def training_scenes():
    return [DATA / f"scene_{i:02d}" for i in range(1, 31) if i % 5 and (DATA / f"scene_{i:02d}").is_dir()]


class Restorer(nn.Module):
    """Single-band restoration network built from PanAdapter's own modules (keys ``cnn.*`` and ``vit.*``)."""

    def __init__(self, c):
        super().__init__()
        self.head = conv(1, c.cnn_feats, 3)
        self.cnn = EDSRBody(c.cnn_feats, c.cnn_blocks)
        s = self.stride = c.token_stride
        self.down = nn.Conv2d(c.cnn_feats, c.vit_dim, s, stride=s)
        self.vit = VisionTransformer(c.vit_dim, c.vit_heads, c.vit_layers, c.vit_hidden, c.grid)
        self.up = nn.Sequential(nn.Conv2d(c.vit_dim, c.cnn_feats * s * s, 1), nn.PixelShuffle(s))
        self.tail = conv(c.cnn_feats, 1, 3)

    def forward(self, x):
        _, f = self.cnn(self.head(x))
        t = self.down(f)
        b, d, h, w = t.shape
        t = self.vit(t.flatten(2).transpose(1, 2), (h, w)).transpose(1, 2).reshape(b, d, h, w)
        return x + self.tail(f + self.up(t))


class BandPatches:
    """Random single-band patches of the training scenes' MS, degraded by blur + decimation or noise."""

    def __init__(self, scenes, patch=64):
        self.bands = []
        for scene in scenes:
            ds = raster.open_raster(str(scene / "ms.tif"), "MS")
            arr = ds.ReadAsArray().astype(np.float32)
            scale = np.percentile(arr, 99.9) or 1.0
            self.bands += [torch.from_numpy(b / scale) for b in arr]
        self.patch = patch

    FACTORS = (2, 4)   # the super-resolution tasks; one more task is denoising

    def batch(self, n, rng):
        p = self.patch
        clean = []
        for _ in range(n):
            band = self.bands[int(rng.integers(len(self.bands)))]
            r0, c0 = (int(rng.integers(0, s - p + 1)) for s in band.shape)
            clean.append(band[r0:r0 + p, c0:c0 + p])
        clean = torch.stack(clean)[:, None]
        task = int(rng.integers(len(self.FACTORS) + 1))
        if task < len(self.FACTORS):  # super-resolution: area decimation, bicubic back to the grid
            f = self.FACTORS[task]
            degraded = F.interpolate(F.avg_pool2d(clean, f), size=(p, p), mode="bicubic", align_corners=False)
        else:  # denoising
            degraded = clean + float(rng.uniform(0.005, 0.05)) * torch.randn_like(clean)
        return augment({"x": degraded, "y": clean}, rng)


def restoration_step(model, b):
    return F.l1_loss(model(b["x"]), b["y"])


def load_restorer(net, restorer):
    """Copy the restoration network's EDSR body (into both prior branches) and ViT into ``net``; returns how
    many tensors were copied."""
    own, loaded = net.state_dict(), 0
    with torch.no_grad():
        for key, value in restorer.state_dict().items():
            for target in ([f"sspen.spectral.{key}", f"sspen.spatial.{key}"] if key.startswith("cnn.")
                           else [key] if key.startswith("vit.") else []):
                if target in own and own[target].shape == value.shape:
                    own[target].copy_(value)
                    loaded += 1
    return loaded


def mixed_crops(crops, batch):
    def make(rng):
        c = crops[int(rng.integers(len(crops)))]
        return c.batch(batch, rng)
    return make


def arguments(description):
    """The options every weights script takes (output folder, batch, device, resumable work folder)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=str(ROOT / "panadapter_qgis" / "backend" / "weights"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", default=str(ROOT / "build" / "weights"))
    return ap


def prepare(args):
    """(training scenes, device) of a weights script; exits when the shared data is not there."""
    scenes = training_scenes()
    if not scenes:
        sys.exit(f"No training scenes under {DATA}.")
    os.makedirs(args.work, exist_ok=True)
    return scenes, select_device(args.device)


def main():
    ap = arguments(__doc__.splitlines()[0])
    ap.add_argument("--restore-iters", type=int, default=1500)
    ap.add_argument("--iters", type=int, default=1600, help="PanAdapter iterations (stage 1 + stage 2)")
    ap.add_argument("--stage2-share", type=float, default=0.35)
    args = ap.parse_args()
    scenes, dev = prepare(args)
    cfg = PRESETS["small"]
    log = print
    t0 = time.time()

    # 1. restoration pre-training of the backbones
    torch.manual_seed(0)
    restorer = Restorer(cfg).to(dev)
    patches = BandPatches(scenes)
    res = train(restorer, lambda rng: patches.batch(args.batch, rng), restoration_step, list(restorer.parameters()),
                iterations=args.restore_iters, lr=1e-3, device=dev, log=log,
                checkpoint=os.path.join(args.work, "restorer.pt"), resume=True)
    t1 = time.time()

    # 2. PanAdapter's two stages on Wald-protocol crops, backbones from step 1
    crops = [SceneCrops(str(s / "pan.tif"), str(s / "ms.tif"), sensor=LANDSAT, patch=64, budget=2**18)
             for s in scenes]
    net = create_model(crops[0].bands, "small").to(dev)
    log(f"{load_restorer(net, restorer)} tensors from the restoration network.")
    results, _, stage = two_stages(net, mixed_crops(crops, args.batch), (net.STAGE1, net.STAGE2), args.iters,
                                   args.stage2_share, lr=1e-3, device=dev, log=log,
                                   checkpoint=os.path.join(args.work, "panadapter"), resume=True)
    t2 = time.time()
    card = dict(
        model="PanAdapter, small preset", bands=net.bands, ratio=2, sensor="Landsat-7 ETM+ (FuseBox)",
        data=[s.name for s in scenes], held_out="FuseBox scenes 05, 10, ..., 30 and every other scene of "
        "../shared/data (never seen in training)",
        restoration=dict(task="x2/x4 super-resolution and denoising of single MS bands", iterations=res.iterations,
                         first_loss=res.first_loss, last_loss=res.last_loss, seconds=round(t1 - t0)),
        stages=[dict(stage=i + 1, iterations=r.iterations, first_loss=r.first_loss, last_loss=r.last_loss)
                for i, r in enumerate(results)],
        seconds=round(t2 - t0), device=str(dev), torch=str(torch.__version__), patch=64, batch=args.batch,
        parameters=int(sum(p.numel() for p in net.parameters())))
    path = os.path.join(args.out, "panadapter_small.pt")
    save_weights(path, net, preset="small", ratio=2, stage=stage, card=card)
    with open(os.path.join(args.out, "panadapter_small.json"), "w") as f:
        json.dump(card, f, indent=1)
    log(json.dumps(card, indent=1))


if __name__ == "__main__":
    main()
