"""Hyperspectral-multispectral fusion (``panadapter:inf_fusion``): INF with scene-adaptive training, its
classical baselines, and spectral response functions for simulating an MSI from an HSI.

The HSI plays the part of the MS and the MSI the part of the PAN in the pair machinery (``raster``,
``training.datasets.SceneCrops``, ``deep.DeepJob``), with ``guide_bands=True``: the same checks, grid, warp,
tiles with a halo, writer. Scene adaptation is zero-shot: both images are degraded by the ratio (Wald's
protocol), INF learns to rebuild the HSI from the degraded pair, then fuses the original pair.
"""
import csv
import os
import time
from typing import Callable, Dict, Optional

import numpy as np

from . import mtf, raster
from .device import import_torch, select_device
from .errors import PansharpenError, user_errors
from .models.inf.net import GUIDE_GAIN, lowpass

# --------------------------------------------------------------------------------------------------------
# Spectral response functions


def load_srf(path) -> Dict[str, tuple]:
    """A spectral response CSV -> {band name: (wavelengths nm, responses)}. Two layouts are read: long
    (``band,wavelength_nm,response``) and wide (``wavelength_nm,<band>,<band>,...``)."""
    if not os.path.isfile(str(path)):
        raise PansharpenError(f"The spectral response file '{path}' does not exist.")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise PansharpenError(f"The spectral response file '{path}' is empty.")
    cols = list(rows[0])
    bands: Dict[str, list] = {}
    try:
        if {"band", "wavelength_nm", "response"} <= set(cols):
            for row in rows:
                bands.setdefault(row["band"], []).append((float(row["wavelength_nm"]), float(row["response"])))
        elif cols[0].lower().startswith("wavelength"):
            for name in cols[1:]:
                bands[name] = [(float(row[cols[0]]), float(row[name])) for row in rows]
        else:
            raise PansharpenError(f"'{path}': expected columns band,wavelength_nm,response or "
                                  "wavelength_nm,<band>,... ")
    except ValueError as exc:
        raise PansharpenError(f"'{path}' holds a value that is not a number: {exc}") from exc
    out = {}
    for name, pairs in bands.items():
        pairs.sort()
        out[name] = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    return out


def srf_matrix(srf: Dict[str, tuple], wavelengths, min_weight: float = 1e-6) -> tuple:
    """(names, M x L weights): each MSI band as a normalised combination of the HSI bands at
    ``wavelengths`` (nm), its response interpolated there. Bands the HSI does not cover are left out."""
    wl = np.asarray(wavelengths, dtype=np.float64)
    names, rows = [], []
    for name, (w, r) in srf.items():
        resp = np.interp(wl, w, r, left=0.0, right=0.0)
        if resp.sum() > min_weight:
            names.append(name)
            rows.append(resp / resp.sum())
    if not rows:
        raise PansharpenError("No band of the spectral response file overlaps the HSI wavelengths.")
    return names, np.array(rows)


def simulate_msi(hsi: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(L, H, W) HSI -> (M, H, W) MSI through the spectral response matrix."""
    return np.tensordot(matrix, hsi, axes=(1, 0)).astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Classical baselines


def _statistics(info, guide_gain=GUIDE_GAIN, max_side=512):
    """Band matching and injection gains of the detail-injection baseline, from one central window of at
    most ``max_side`` LR pixels: the MSI is degraded to the HSI grid (MTF Gaussian + decimation) and each
    HSI band takes the MSI band it correlates best with, with the regression gain cov / var."""
    torch = import_torch()
    r = info.ratio
    h, w = min(info.rows, max_side), min(info.cols, max_side)
    r0, c0 = (info.rows - h) // 2, (info.cols - w) // 2
    reader = raster.PairReader(info)
    hsi = reader.read_ms(r0, r0 + h, c0, c0 + w).reshape(len(info.ms_bands), -1).astype(np.float64)
    msi = torch.from_numpy(reader.read_pan(r * r0, r * (r0 + h), r * c0, r * (c0 + w)))[None]
    msi_lr = mtf.degrade_image(msi, mtf.mtf_kernel_1d(guide_gain, r), r)[0].numpy()
    msi_lr = msi_lr.reshape(msi_lr.shape[0], -1).astype(np.float64)
    hc = hsi - hsi.mean(1, keepdims=True)
    mc = msi_lr - msi_lr.mean(1, keepdims=True)
    cov = hc @ mc.T / hc.shape[1]                                    # (L, M)
    var_m = (mc ** 2).mean(1)
    corr = cov / np.sqrt(np.outer((hc ** 2).mean(1), var_m) + 1e-12)
    match = corr.argmax(1)
    gains = cov[np.arange(len(match)), match] / (var_m[match] + 1e-12)
    return match, gains


class DetailInjection:
    """MTF-GLP-style hypersharpening: HSI_up + g_l (MSI_k(l) - lowpass(MSI_k(l))), k(l) the MSI band best
    correlated with HSI band l (image-wide statistics, never per tile)."""

    def __init__(self, match, gains):
        torch = import_torch()
        self.match = torch.as_tensor(match, dtype=torch.long)
        self.gains = torch.as_tensor(gains, dtype=torch.float32)
        self.bands = len(match)

    def to(self, device):
        self.match, self.gains = self.match.to(device), self.gains.to(device)
        return self

    def eval(self):
        return self

    def __call__(self, ms, lms, pan, ratio):
        detail = (pan - lowpass(pan, ratio))[:, self.match]
        return lms + self.gains[None, :, None, None] * detail


class Upsample:
    """The 23-tap interpolation of the HSI alone (the MSI is not used)."""

    def __init__(self, bands):
        self.bands = bands

    def to(self, device):
        return self

    def eval(self):
        return self

    def __call__(self, ms, lms, pan, ratio):
        return lms


BASELINES = ("upsample", "glp")

# --------------------------------------------------------------------------------------------------------
# INF


def _check(hsi_path, msi_path, output_path):
    from .adapt import _check_output

    _check_output(msi_path, hsi_path, output_path)
    info = raster.inspect_pair(msi_path, hsi_path, guide_bands=True)
    if info.pan_bands < 2 and len(info.ms_bands) < 2:
        raise PansharpenError("Hyperspectral-multispectral fusion needs a multi-band HSI.")
    return info


def _copy_wavelengths(hsi_path, output_path, bands):
    """Band metadata (wavelengths) of the HSI onto the fused bands."""
    gdal, _ = raster._gdal()
    src = raster.open_raster(hsi_path, "HSI")
    dst = gdal.Open(output_path, gdal.GA_Update)
    if dst is None:
        return
    for i, b in enumerate(bands, start=1):
        md = src.GetRasterBand(b).GetMetadata() or {}
        if md:
            dst.GetRasterBand(i).SetMetadata(md)
    dst = None


@user_errors
def fuse_baseline(hsi_path, msi_path, output_path, method="glp", *, device="auto", tile_size=256, batch=4,
                  float32=False, progress=None, is_cancelled=None, log=None) -> dict:
    """A classical baseline of the HSI/MSI fusion: ``upsample`` (23-tap) or ``glp`` (detail injection)."""
    from .deep import DeepJob

    if method not in BASELINES:
        raise PansharpenError(f"Unknown baseline '{method}'; choose from {', '.join(BASELINES)}.")
    info = _check(hsi_path, msi_path, output_path)
    bands = len(info.ms_bands)
    model = Upsample(bands) if method == "upsample" else DetailInjection(*_statistics(info))
    job = DeepJob(msi_path, hsi_path, model, name=f"HSI fusion baseline {method}", device=device, context=8,
                  multiple=1, scale=1.0, guide_bands=True, log=log)
    result = job.write(output_path, float32=float32, tile_size=tile_size, batch=batch, progress=progress,
                       is_cancelled=is_cancelled)
    _copy_wavelengths(hsi_path, output_path, info.ms_bands)
    return result


def adapt_inf(hsi_path, msi_path, iterations, *, info=None, minutes=None, device="auto", preset="small",
              patch=None, batch=8, lr=1e-3, seed=0, progress=None, is_cancelled=None, log=None):
    """INF for the pair, started at the detail-injection solution and trained ``iterations`` zero-shot steps
    or ``minutes`` (both images degraded by the ratio, the HSI as the target). Returns (net, scale or None,
    TrainResult or None, seconds)."""
    from .models.inf import create_model
    from .training.datasets import SceneCrops
    from .training.trainer import train

    torch = import_torch()
    log = log or (lambda msg: None)
    info = info or raster.inspect_pair(msi_path, hsi_path, guide_bands=True)
    if int(iterations) < 0:
        raise PansharpenError("The number of adaptation iterations must be 0 or more.")
    dev = select_device(device)
    r = info.ratio
    torch.manual_seed(seed)
    net = create_model(len(info.ms_bands), info.pan_bands, preset)
    net.set_injection(*_statistics(info))   # start from the detail-injection solution
    net = net.to(dev)
    if int(iterations) == 0:
        log("No adaptation: INF's detail-injection starting point.")
        return net, None, None, 0.0
    step = r * 4 // np.gcd(r, 4)
    patch = patch or max(step, 64 // step * step)
    crops = SceneCrops(msi_path, hsi_path, sensor=0, patch=patch, guide_bands=True, multiple=1, min_patch=8)
    log(f"INF: HSI {len(info.ms_bands)} bands, MSI {info.pan_bands} bands, ratio {r}; adapting on "
        f"{len(crops.windows)} windows of the degraded pair, patches of {crops.patch} pixels.")

    def step_fn(model, b):
        return torch.nn.functional.l1_loss(model(b["ms"], b["lms"], b["pan"], r), b["gt"])
    t0 = time.perf_counter()
    res = train(net, lambda rng: crops.batch(batch, rng), step_fn, list(net.parameters()), iterations=int(iterations),
                lr=lr, minutes=minutes, device=dev, seed=seed, progress=progress, is_cancelled=is_cancelled, log=log)
    seconds = time.perf_counter() - t0
    log(f"Adapted in {seconds:.0f} s: loss {res.first_loss:.4f} -> {res.last_loss:.4f}.")
    return net, crops.scale, res, seconds


@user_errors
def inf_fusion(hsi_path, msi_path, output_path, *, adapt_iterations=300, adapter=None, device="auto",
               preset="small", patch=None, batch=8, lr=1e-3, seed=0, tile_size=128, float32=False,
               progress: Optional[Callable] = None, is_cancelled: Optional[Callable] = None,
               log: Optional[Callable] = None) -> dict:
    """``panadapter:inf_fusion``: INF adapted to the pair (``adapt_iterations`` zero-shot iterations; or the
    adapter file ``adapter`` from ``panadapter:finetune`` MODEL=2), then the fused HSI on the MSI grid."""
    from .adapt import load_adapted
    from .deep import DeepJob

    log = log or (lambda msg: None)
    info = _check(hsi_path, msi_path, output_path)
    res, t_train = None, 0.0
    if adapter:
        net, payload = load_adapted(adapter, bands=len(info.ms_bands), model="inf")
        if payload["ratio"] != info.ratio or payload["guide_bands"] != info.pan_bands:
            raise PansharpenError(f"The adapter was made for an MSI of {payload['guide_bands']} bands at ratio "
                                  f"{payload['ratio']}; this pair has {info.pan_bands} bands at ratio {info.ratio}.")
        scale = payload["scale"]
        log(f"Adapter {os.path.basename(adapter)}: {payload['card'].get('iterations', '?')} iterations.")
    else:
        report = (lambda f: progress(0.7 * f)) if progress else None
        net, scale, res, t_train = adapt_inf(hsi_path, msi_path, adapt_iterations, info=info, device=device,
                                             preset=preset, patch=patch, batch=batch, lr=lr, seed=seed,
                                             progress=report, is_cancelled=is_cancelled, log=log)
    job = DeepJob(msi_path, hsi_path, net, name="INF (scene-adapted)", device=device, context=8, multiple=1,
                  scale=scale, guide_bands=True, log=log)
    start = 0.0 if adapter else 0.7
    result = job.write(output_path, float32=float32, tile_size=tile_size, batch=4,
                       progress=(lambda f: progress(start + (1 - start) * f)) if progress else None,
                       is_cancelled=is_cancelled)
    _copy_wavelengths(hsi_path, output_path, info.ms_bands)
    return dict(result, train_s=t_train, iterations=res.iterations if res else 0,
                first_loss=res.first_loss if res else None, last_loss=res.last_loss if res else None)
