#!/usr/bin/env python3
"""``make weights`` (second part): the bundled SSDiff weights, trained from scratch on real scenes.

1. Main training: every parameter of SSNet, the diffusion loss (residual x0-prediction, L1, t uniform over
   the 1000-step cosine schedule), Adam with cosine decay, EMA of the weights.
2. L-BAF (METHODS.md §1b.5): alternate fine-tuning of the spectral and spatial branches (the other frozen,
   its cross term detached) at a tenth of the learning rate, as the paper does after convergence.

Data: Wald-protocol crops of the same training scenes as PanAdapter (``train_weights.training_scenes``:
the Landsat-7 FuseBox scenes whose number is not a multiple of 5); the scenes that the benchmarks and tests
score are never read. Writes ``ssdiff_small.pt`` and its card ``ssdiff_small.json``; resumable
(``build/weights/ssdiff.*``).
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from panadapter_qgis.backend.adapt import save_weights  # noqa: E402
from panadapter_qgis.backend.models.ssdiff import PRESETS, create_model  # noqa: E402
from panadapter_qgis.backend.training.datasets import SceneCrops  # noqa: E402
from panadapter_qgis.backend.training.ssdiff import train_ssdiff  # noqa: E402
from train_weights import LANDSAT, arguments, mixed_crops, prepare  # noqa: E402


def main():
    ap = arguments(__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=5000, help="main training iterations")
    ap.add_argument("--lbaf-iters", type=int, default=500, help="L-BAF iterations after the main training")
    ap.add_argument("--lbaf-switch", type=int, default=50)
    ap.add_argument("--patch", type=int, default=32)
    args = ap.parse_args()
    scenes, dev = prepare(args)
    t0 = time.time()
    crops = [SceneCrops(str(s / "pan.tif"), str(s / "ms.tif"), sensor=LANDSAT, patch=args.patch, budget=2**18)
             for s in scenes]
    torch.manual_seed(0)
    net = create_model(crops[0].bands, "small").to(dev)
    main_res, _, _ = train_ssdiff(net, mixed_crops(crops, args.batch), args.iters, lr=1e-3, device=dev, log=print,
                                  checkpoint=os.path.join(args.work, "ssdiff.main.pt"), resume=True)
    t1 = time.time()
    lbaf_res, _, phases = train_ssdiff(net, mixed_crops(crops, args.batch), args.lbaf_iters,
                                       lbaf_switch=args.lbaf_switch, lr=1e-4, device=dev, seed=1, log=print,
                                       checkpoint=os.path.join(args.work, "ssdiff.lbaf.pt"), resume=True)
    t2 = time.time()
    card = dict(
        model="SSDiff, small preset", preset=PRESETS["small"].to_dict(), bands=net.bands, ratio=2,
        sensor="Landsat-7 ETM+ (FuseBox)", data=[s.name for s in scenes],
        held_out="FuseBox scenes 05, 10, ..., 30 and every other scene of ../shared/data (never seen in training)",
        diffusion="x0 = HRMS - LMS, 1000-step cosine schedule, L1 loss; EMA 0.999 (with warm-up)",
        main=dict(iterations=main_res.iterations, first_loss=main_res.first_loss, last_loss=main_res.last_loss,
                  lr=1e-3, seconds=round(t1 - t0)),
        lbaf=dict(iterations=lbaf_res.iterations, switch=args.lbaf_switch, phases=len(phases), lr=1e-4,
                  first_loss=lbaf_res.first_loss, last_loss=lbaf_res.last_loss, seconds=round(t2 - t1)),
        seconds=round(t2 - t0), device=str(dev), torch=str(torch.__version__), patch=args.patch, batch=args.batch,
        parameters=int(sum(p.numel() for p in net.parameters())))
    save_weights(os.path.join(args.out, "ssdiff_small.pt"), net, preset="small", ratio=2, stage=None, card=card)
    with open(os.path.join(args.out, "ssdiff_small.json"), "w") as f:
        json.dump(card, f, indent=1)
    print(json.dumps(card, indent=1))


if __name__ == "__main__":
    main()
