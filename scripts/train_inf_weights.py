#!/usr/bin/env python3
"""``make weights`` (third part): the bundled INF trunk, pre-trained on the hyperspectral scenes.

Training pairs are simulated from the real HSIs of ``../shared/data/hyperspectral`` (AVIRIS Jasper Ridge,
its 198-band selection; EO-1 Hyperion Paris, 128 bands): the MSI through the spectral responses there
(Landsat TM5: 6 bands; IKONOS: its 4 multispectral bands), the LR-HSI by Wald's degradation (ratio 4).
Each pair has its own band layers around one shared trunk (``backend/training/inf.py``); the file keeps the
trunk, which ``panadapter:inf_fusion`` loads for any band counts before adapting to the user's pair.

    .venv/bin/python scripts/train_inf_weights.py [--iters 600] [--scenes jasper,paris] [--out DIR]

Writes ``inf_small.pt`` and its card ``inf_small.json``; resumable (``build/weights/inf.main.pt``).
Both scenes are training data here: the quality bench scores INF from scratch on them, and its
leave-one-out rows (``bench_hyperspectral.py --loo-iterations``) pre-train on the other scene only.
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

from bench.bench_hyperspectral import DATA, SCENES, simulated_pairs  # noqa: E402
from panadapter_qgis.backend.device import select_device  # noqa: E402
from panadapter_qgis.backend.models.inf import PRESETS  # noqa: E402
from panadapter_qgis.backend.training.inf import pretrain_inf  # noqa: E402
from train_weights import arguments  # noqa: E402


def main(argv=None):
    ap = arguments(__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--scenes", default=",".join(SCENES), help=f"comma-separated, from {', '.join(SCENES)}")
    args = ap.parse_args(argv)
    if not os.path.isdir(DATA):
        print(f"The shared data is not here: {DATA}", file=sys.stderr)
        return 2
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    dev = select_device(args.device)
    scenes = [s for s in args.scenes.split(",") if s]
    pairs = simulated_pairs(scenes)
    t0 = time.time()
    trunk, res, seconds, l1 = pretrain_inf(pairs, args.iters, batch=args.batch, device=dev, log=print,
                                       checkpoint=os.path.join(args.work, "inf.main.pt"), resume=True)
    card = dict(
        model="INF trunk (encoders' ResBlocks and the MLP's hidden layers), small preset",
        preset=PRESETS["small"].to_dict(), ratio=4,
        data=[f"{p.name} ({p.bands} HSI bands, {p.guide_bands} MSI bands)" for p in pairs],
        simulation="MSI = spectral responses x HSI; LR-HSI = HSI degraded by 4 (Gaussian MTF, gain 0.3)",
        iterations=res.iterations, first_loss=res.first_loss, last_loss=res.last_loss, lr=1e-3,
        training_pairs_l1={name: dict(start=round(b, 6), trained=round(a, 6)) for name, (b, a) in l1.items()},
        patch=32, batch=args.batch, seconds=round(time.time() - t0), device=str(dev), torch=str(torch.__version__),
        parameters=int(sum(v.numel() for v in trunk.values())),
        note="Band layers are not kept: each pair gets its own, the detail injection at its regression "
             "solution, so with no adaptation INF gives the regression detail injection.")
    path = os.path.join(args.out, "inf_small.pt")
    torch.save({"format": "panadapter-qgis-inf", "model": "inf", "preset": "small", "trunk": trunk,
                "card": card}, path)
    with open(os.path.join(args.out, "inf_small.json"), "w") as f:
        json.dump(card, f, indent=1)
    print(json.dumps(card, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
