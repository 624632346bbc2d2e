"""Hyperspectral-multispectral fusion (``panadapter:inf_fusion``): INF with scene-adaptive training, its
classical baselines, and spectral response functions for simulating an MSI from an HSI.

The HSI plays the part of the MS and the MSI the part of the PAN in the pair machinery (``raster``,
``training.datasets.SceneCrops``, ``deep.DeepJob``), with ``guide_bands=True``: the same checks, grid, warp,
tiles with a halo, writer. Scene adaptation is zero-shot: both images are degraded by the ratio (Wald's
protocol), INF learns to rebuild the HSI from the degraded pair, then fuses the original pair.
"""
import copy
import csv
import os
import time
from typing import Callable, Dict, Optional

import numpy as np

from . import cluster, mtf, raster
from .device import import_torch, select_device
from .errors import PansharpenError, user_errors
from .models import FixedModel
from .models.inf.net import HSI_GAIN, detail

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


_UNITS = {"nm": 1.0, "nanometers": 1.0, "nanometer": 1.0, "um": 1000.0, "µm": 1000.0, "micrometers": 1000.0,
          "micrometer": 1000.0, "microns": 1000.0, "micron": 1000.0}


def band_wavelengths(path, bands=None) -> Optional[np.ndarray]:
    """Centre wavelengths (nm) of a raster's bands (1-based ``bands``, default all) from GDAL's band metadata:
    ``wavelength`` (+ ``wavelength_units``, as the ENVI driver writes them), ``CENTRAL_WAVELENGTH_UM`` of the
    IMAGERY domain, or a description such as ``"550.0 nm"``. None when a band has none."""
    import re

    ds = raster.open_raster(path, "HSI")
    out = []
    for b in bands or range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(b)
        md = {k.lower(): v for k, v in (band.GetMetadata() or {}).items()}
        imagery = band.GetMetadata("IMAGERY") or {}
        value = None
        try:
            if "wavelength" in md:
                factor = _UNITS.get(md.get("wavelength_units", "nm").strip().lower())
                if factor is None:
                    raise PansharpenError(f"Band {b} of '{path}' gives its wavelength in unknown units "
                                          f"'{md['wavelength_units']}' (nm or micrometers expected).")
                value = float(md["wavelength"]) * factor
            elif "CENTRAL_WAVELENGTH_UM" in imagery:
                value = float(imagery["CENTRAL_WAVELENGTH_UM"]) * 1000.0
            else:
                m = re.search(r"([0-9]+(?:\.[0-9]*)?)\s*(nm|um|µm)\b", band.GetDescription() or "")
                if m:
                    value = float(m.group(1)) * _UNITS[m.group(2)]
        except ValueError:
            value = None
        if value is None:
            return None
        out.append(value)
    return np.array(out)


def srf_for_pair(srf_path, hsi_path, info) -> np.ndarray:
    """(M, L) responses of the MSI bands at the HSI band wavelengths, from a spectral response CSV whose bands
    are the MSI's, in order. Errors name what is missing or inconsistent."""
    srf = load_srf(srf_path)
    wl = band_wavelengths(hsi_path, info.ms_bands)
    if wl is None:
        raise PansharpenError("The spectral response file needs the HSI band wavelengths, and the HSI does not "
                              "give them (band metadata 'wavelength' or a description such as '550 nm').")
    if len(srf) != info.pan_bands:
        raise PansharpenError(f"The spectral response file has {len(srf)} bands ({', '.join(srf)}) and the MSI "
                              f"{info.pan_bands}: give one response per MSI band, in the MSI's band order.")
    return np.array([np.interp(wl, w, r, left=0.0, right=0.0) for w, r in srf.values()])


# --------------------------------------------------------------------------------------------------------
# Classical baselines


def _statistics(info, gain=HSI_GAIN, max_side=512, responses=None):
    """Image-wide statistics of the detail-injection baselines, from one central window of at most
    ``max_side`` LR pixels: the MSI is degraded to the HSI grid (the HSI's MTF Gaussian and decimation) and
    compared with the HSI there. Returns the two L x M injection matrices:

    * ``glp``: each HSI band takes the MSI band it correlates best with (or, given ``responses`` (M, L) from a
      spectral response file, the MSI band most sensitive at its wavelength; by correlation where none is),
      with the regression gain cov / var;
    * ``regression``: each HSI band takes the least-squares combination of all MSI bands that best predicts
      it (the per-band synthetic guide of hypersharpening, Selva et al. 2015), a tiny ridge keeping it
      defined when MSI bands are collinear.
    """
    torch = import_torch()  # the error that says how to install it, before the training modules import torch
    from .training.datasets import read_central_window

    r = info.ratio
    hsi, msi, _ = read_central_window(info, max_side)
    hsi, msi = hsi[0].numpy().astype(np.float64), msi[0].numpy().astype(np.float64)
    # nodata of every kind: the MSI is filled before the filter, and every LR pixel that is nodata in the HSI
    # or that the filter reached from an MSI nodata pixel is left out
    kernel = mtf.mtf_kernel_1d(gain, r)
    msi_bad = raster.invalid_mask(msi, info.pan_nodata)
    bad = raster.invalid_mask(hsi, info.ms_nodata)
    if msi_bad.any():
        fill = np.array([b[~msi_bad].mean() if (~msi_bad).any() else 0.0 for b in msi])
        msi = np.where(msi_bad[None], fill[:, None, None], msi)
        h, w = bad.shape
        blocks = msi_bad[:h * r, :w * r].reshape(h, r, w, r).any(axis=(1, 3))
        bad |= raster.dilate(blocks, len(kernel) // (2 * r) + 1)
    msi_lr = mtf.degrade_image(torch.from_numpy(msi)[None], kernel, r)[0].numpy()
    keep = ~bad.reshape(-1)
    if not keep.any():
        raise PansharpenError("The HSI/MSI overlap has no valid pixel in its central window (check the nodata "
                              "values).")
    hsi = hsi.reshape(hsi.shape[0], -1)[:, keep]
    msi_lr = msi_lr.reshape(msi_lr.shape[0], -1)[:, keep]
    return injection_matrices(hsi, msi_lr, responses)


def injection_matrices(hsi, msi_lr, responses=None) -> dict:
    """``glp`` and ``regression`` L x M matrices (see ``_statistics``) from co-located (L, N) HSI and (M, N)
    degraded MSI samples."""
    valid = np.isfinite(hsi).all(0) & np.isfinite(msi_lr).all(0)
    hsi, msi_lr = hsi[:, valid].astype(np.float64), msi_lr[:, valid].astype(np.float64)
    if hsi.shape[1] < 4:
        raise PansharpenError("The HSI and MSI share too few valid pixels to relate their bands.")
    hc = hsi - hsi.mean(1, keepdims=True)
    mc = msi_lr - msi_lr.mean(1, keepdims=True)
    n, bands, guides = hc.shape[1], hc.shape[0], mc.shape[0]
    cov = hc @ mc.T / n                                              # (L, M)
    var_m = (mc ** 2).mean(1)
    corr = cov / np.sqrt(np.outer((hc ** 2).mean(1), var_m) + 1e-12)
    match = corr.argmax(1)
    if responses is not None:
        covered = responses.max(0) > 0
        match = np.where(covered, responses.argmax(0), match)
    glp = np.zeros((bands, guides))
    glp[np.arange(bands), match] = cov[np.arange(bands), match] / (var_m[match] + 1e-12)
    gram = mc @ mc.T / n
    ridge = 1e-6 * np.trace(gram) / guides + 1e-12
    regression = np.linalg.solve(gram + ridge * np.eye(guides), cov.T).T
    # the other way round: each degraded MSI band as an affine combination of the HSI bands (the MSI's
    # spectral responses as the data see them, no SRF file needed); more HSI bands than pixels is common,
    # so the ridge is a real one (1e-3 of the mean HSI variance)
    gram_h = hc @ hc.T / n
    ridge_h = 1e-3 * np.trace(gram_h) / bands + 1e-12
    response = np.linalg.solve(gram_h + ridge_h * np.eye(bands), cov).T          # (M, L)
    offset = msi_lr.mean(1) - response @ hsi.mean(1)
    return {"glp": glp, "regression": regression, "response": response, "offset": offset}


class DetailInjection:
    """Hypersharpening by detail injection: HSI_up + A (MSI - lowpass(MSI)), the low-pass being the
    generalised Laplacian pyramid with the HSI's MTF (as MTF-GLP), A an L x M matrix of image-wide
    statistics (never per tile): ``glp`` (best-correlated MSI band, regression gain) or ``regression``
    (least-squares combination of all MSI bands)."""

    def __init__(self, matrix):
        torch = import_torch()
        self.matrix = torch.as_tensor(np.asarray(matrix), dtype=torch.float32)
        self.bands = self.matrix.shape[0]

    def to(self, device):
        self.matrix = self.matrix.to(device)
        return self

    def eval(self):
        return self

    def __call__(self, ms, lms, pan, ratio):
        return lms + import_torch().einsum("lm,bmhw->blhw", self.matrix, detail(pan, ratio))


class Upsample(FixedModel):
    """The 23-tap interpolation of the HSI alone (the MSI is not used)."""

    def __call__(self, ms, lms, pan, ratio):
        return lms


BACK_PROJECTION = 3  # iterations of INF's final back-projection onto the LR-HSI (0: none)


def back_project(out, ms, ratio, iterations=BACK_PROJECTION, gain=HSI_GAIN, inside=None):
    """Iterative back-projection (Irani and Peleg 1991) of a fused HSI ``out`` (B, L, r*h, r*w) onto its
    LR-HSI ``ms`` (B, L, h, w): ``iterations`` times, what the LR-HSI and the fused image degraded by the HSI's
    MTF and the ratio disagree on is interpolated back and added, so the result degraded gives back the HSI
    (the spectral consistency that INF's full-resolution term asks for, enforced instead of encouraged).
    Local: each iteration reaches about 7 LR pixels further. ``inside``: per batch element, the (row0, row1,
    col0, col1) of ``out`` that lie in the image; what lies beyond is the image's edge replicated, as the
    reader replicates the LR-HSI's edge, and so is the LR disagreement (else what the replicated fused image
    and the replicated LR-HSI disagree on beyond the edge spreads into the image)."""
    r = int(ratio)
    kernel = mtf.mtf_kernel_1d(gain, r)
    low = None if inside is None else [tuple(-(-v // r) if i % 2 else v // r for i, v in enumerate(box))
                                       for box in inside]
    out = _replicate_outside(out, inside)
    for _ in range(int(iterations)):
        error = _replicate_outside(ms - mtf.degrade_image(out, kernel, r), low)
        out = _replicate_outside(out + mtf.upsample_image(error, r), inside)
    return out


def _replicate_outside(x, inside):
    """``x`` (B, C, H, W) with every pixel outside ``inside[b]`` (row0, row1, col0, col1) replaced by the
    nearest pixel inside (edge replication); ``x`` itself when ``inside`` is None."""
    h, w = x.shape[-2:]
    if inside is None or all(tuple(box) == (0, h, 0, w) for box in inside):   # no tile reaches past the edge
        return x
    torch = import_torch()
    rows = [torch.arange(h, device=x.device).clamp(r0, r1 - 1) for r0, r1, _, _ in inside]
    cols = [torch.arange(w, device=x.device).clamp(c0, c1 - 1) for _, _, c0, c1 in inside]
    return torch.stack([x[b][:, rows[b]][:, :, cols[b]] for b in range(x.shape[0])])


class BackProjected(FixedModel):
    """``model`` followed by ``back_project`` on every tile (``CONTEXT`` LR pixels of halo cover its reach);
    ``size``: (rows, cols) of the output grid, so that what a tile holds beyond it is replicated."""

    needs_origin = True

    def __init__(self, model, size, iterations=BACK_PROJECTION):
        super().__init__(model.bands)
        self.model, self.size, self.iterations = model, tuple(size), int(iterations)

    def to(self, device):
        self.model = self.model.to(device)
        return self

    def eval(self):
        self.model = self.model.eval()
        return self

    def __call__(self, ms, lms, pan, ratio, origin=None, **extra):
        out = self.model(ms, lms, pan, ratio, **extra)
        h, w = out.shape[-2:]
        rows, cols = self.size
        inside = None if origin is None else [
            (min(max(-y, 0), h - 1), max(min(rows - y, h), 1), min(max(-x, 0), w - 1), max(min(cols - x, w), 1))
            for y, x in origin]
        return back_project(out, ms, ratio, self.iterations, inside=inside)


def check_back_projection(info, matrix, iterations=BACK_PROJECTION, max_side=128):
    """Wald's check of the back-projection on the pair degraded once more (both images by the ratio, the HSI's
    MTF; the LR-HSI is the reference): the regression hypersharpening with ``matrix``, with and without the
    back-projection. Returns {"error_start", "error_back_projected", "helps"} (mean absolute errors)."""
    torch = import_torch()
    from .training.datasets import read_central_window

    r = info.ratio
    hsi, msi, (h, w) = read_central_window(info, max_side)
    if h < 2 * r or w < 2 * r:
        return dict(error_start=None, error_back_projected=None, helps=False)
    hsi, msi = hsi[:, :, :h // r * r, :w // r * r], msi[:, :, :h // r * r * r, :w // r * r * r]
    kernel = mtf.mtf_kernel_1d(HSI_GAIN, r)
    with torch.no_grad():
        scale = float(hsi.abs().mean()) or 1.0
        hsi, msi = hsi / scale, msi / scale
        lr_hsi, lr_msi = mtf.degrade_image(hsi, kernel, r), mtf.degrade_image(msi, kernel, r)
        start = DetailInjection(matrix)(lr_hsi, mtf.upsample_image(lr_hsi, r), lr_msi, r)
        projected = back_project(start, lr_hsi, r, iterations)
        valid = torch.isfinite(hsi)
        errors = [float((x - hsi).abs()[valid].mean()) for x in (start, projected)]
    return dict(error_start=errors[0], error_back_projected=errors[1], helps=bool(errors[1] < errors[0]))


CONTEXT = 12         # LR pixels of halo: the pyramid low-pass reaches about 10 of them, the encoders 2 more
TRAIN_CONTEXT = 2    # reduced-pair LR pixels around each training patch: the encoders' reach (the pyramid
                     # detail is computed on whole windows, with CONTEXT)

BASELINES = ("upsample", "glp", "regression")

FULL_CONTEXT = 3     # LR pixels around a full-resolution consistency patch: the encoders' reach and most of the
                     # MTF degradation's


class FullResolution:
    """The pair itself at full resolution, for INF's consistency terms: a central window of at most
    ``max_side`` LR pixels (``training.datasets.read_central_window``) with what a patch needs around it
    (LR-HSI, its interpolation, the MSI and its pyramid detail), normalised by ``scale``; ``batch`` gives
    random patches of ``patch`` LR pixels with ``FULL_CONTEXT`` around them."""

    def __init__(self, info, scale, patch=8, max_side=96):
        torch = import_torch()
        from .training.datasets import read_central_window

        r, k, c = info.ratio, CONTEXT, FULL_CONTEXT
        self.ratio, self.patch = r, min(patch, info.rows, info.cols)
        hsi, msi, (h, w) = read_central_window(info, max_side, k)
        with torch.no_grad():
            lms = mtf.upsample(hsi, r, k - c)
            det = detail(msi, r)
        hr = slice(r * (k - c), r * (k + c) + r * h), slice(r * (k - c), r * (k + c) + r * w)
        self.data = {"ms": hsi[0, :, k - c:k + h + c, k - c:k + w + c] / scale, "lms": lms[0] / scale,
                     "pan": msi[0][:, hr[0], hr[1]] / scale, "detail": det[0][:, hr[0], hr[1]] / scale}

    def batch(self, size, rng):
        from .training.datasets import random_patches

        return random_patches(self.data, self.ratio, self.patch + 2 * FULL_CONTEXT, size, rng)


def consistency_loss(out, batch, ratio, response, offset):
    """INF's full-resolution terms [this project's addition]: the fused HSI degraded by the HSI's MTF and
    the ratio gives back the LR-HSI (spectral consistency), and seen through the MSI's responses (estimated
    from the data, ``response`` M x L and ``offset``, normalised units) gives back the MSI (spatial
    consistency). Both on the patch interior (``FULL_CONTEXT`` LR pixels of image around it)."""
    from .training.datasets import spectral_consistency

    torch = import_torch()
    r, c = int(ratio), FULL_CONTEXT
    m = c * r
    spectral = spectral_consistency(out, batch["ms"], r, HSI_GAIN, margin=c)
    inner = out[..., m:out.shape[-2] - m, m:out.shape[-1] - m]
    seen = torch.einsum("ml,blhw->bmhw", response, inner) + offset[None, :, None, None]
    spatial = torch.nn.functional.l1_loss(seen, batch["pan"][..., m:out.shape[-2] - m, m:out.shape[-1] - m])
    return spectral + spatial

# --------------------------------------------------------------------------------------------------------
# INF


def _check(hsi_path, msi_path, output_path):
    from .adapt import _check_output

    _check_output(msi_path, hsi_path, output_path)
    info = raster.inspect_pair(msi_path, hsi_path, guide_bands=True)
    if len(info.ms_bands) < 2:
        raise PansharpenError("The HSI has a single band: hyperspectral-multispectral fusion needs a multi-band "
                              "HSI (to sharpen one band with a high-resolution image, use a pansharpening method).")
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
def fuse_baseline(hsi_path, msi_path, output_path, method="glp", *, srf=None, device="auto", tile_size=256, batch=4,
                  float32=False, progress=None, is_cancelled=None, log=None, scheduler=None) -> dict:
    """A classical baseline of the HSI/MSI fusion: ``upsample`` (23-tap), ``glp`` (detail injection from the
    best-correlated MSI band, or with ``srf`` (a spectral response CSV of the MSI bands) the band most sensitive
    at the HSI band's wavelength) or ``regression`` (from the least-squares combination of the MSI bands);
    ``scheduler``: the address of a Dask scheduler whose workers fuse the tiles (empty: this process; the
    injection matrix is computed here and sent with the tasks)."""
    from .deep import DeepJob

    if method not in BASELINES:
        raise PansharpenError(f"Unknown baseline '{method}'; choose from {', '.join(BASELINES)}.")
    info = _check(hsi_path, msi_path, output_path)
    bands = len(info.ms_bands)
    responses = srf_for_pair(srf, hsi_path, info) if srf else None
    with cluster.connect(scheduler, log, (hsi_path, msi_path), deep=True) as executor:
        model = Upsample(bands) if method == "upsample" else \
            DetailInjection(_statistics(info, responses=responses)[method])
        job = DeepJob(msi_path, hsi_path, model, name=f"HSI fusion baseline {method}", device=device,
                      context=CONTEXT, multiple=1, scale=1.0, guide_bands=True, log=log)
        result = job.write(output_path, float32=float32, tile_size=tile_size, batch=batch, progress=progress,
                           is_cancelled=is_cancelled, executor=executor)
    _copy_wavelengths(hsi_path, output_path, info.ms_bands)
    return result


def load_trunk_weights(weights="bundled", preset="small", log=None) -> Optional[dict]:
    """INF trunk tensors: from the bundled file (``"bundled"``), a file written by ``make weights``
    (``scripts/train_inf_weights.py``), a state dict, or none (None)."""
    from . import weights as registry

    log = log or (lambda msg: None)
    if weights is None or isinstance(weights, dict):
        return weights
    path = registry.bundled("inf") if weights == "bundled" else weights
    if path is None:
        log("The plugin ships no INF weights: the trunk starts from scratch.")
        return None
    if not os.path.isfile(str(path)):
        raise PansharpenError(f"The INF weights file '{path}' does not exist.")
    torch = import_torch()
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's
        raise PansharpenError(f"'{path}' is not an INF weights file: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("model") != "inf" or "trunk" not in payload:
        raise PansharpenError(f"'{path}' is not an INF weights file (make weights writes inf_small.pt).")
    if payload.get("preset") != preset:
        raise PansharpenError(f"The INF weights are of the '{payload.get('preset')}' preset, not '{preset}'.")
    log(f"INF trunk from {os.path.basename(str(path))}.")
    return payload["trunk"]


def adapt_inf(hsi_path, msi_path, iterations, *, info=None, minutes=None, device="auto", preset="small",
              weights="bundled", patch=None, batch=8, lr=1e-3, seed=0, train_injection=True, consistency=1.0,
              fallback=True, stats=None, progress=None, is_cancelled=None, log=None):
    """INF for the pair: the pre-trained trunk (``weights``: see ``load_trunk_weights``), band layers for this
    pair with the detail injection at the regression solution, trained ``iterations`` zero-shot steps or
    ``minutes`` (both images degraded by the ratio, the HSI as the target), then checked against its start
    (``res.check``); with ``fallback``, an adaptation that does not improve on it gives way to the regression
    hypersharpening itself. ``stats``: the pair's ``_statistics`` when the caller has them. Returns (net, scale or
    None, TrainResult or None, seconds)."""
    from .models.inf.net import load_trunk

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
    trunk = load_trunk_weights(weights, preset, log)
    if trunk is not None:
        load_trunk(net, trunk)
    stats = stats or _statistics(info)
    net.set_injection(stats["regression"])   # start from the regression hypersharpening
    net = net.to(dev)
    if int(iterations) == 0:
        log("No adaptation: INF's detail-injection starting point.")
        return net, None, None, 0.0
    step = r * 4 // np.gcd(r, 4)
    patch = patch or max(step, 64 // step * step)
    c = TRAIN_CONTEXT
    crops = SceneCrops(msi_path, hsi_path, sensor=0, patch=patch, guide_bands=True, multiple=1, min_patch=8,
                       context=CONTEXT, guide_gain=HSI_GAIN)
    crops.derive("detail", lambda pan: detail(pan, r))   # the pyramid's reach, from the whole window
    log(f"INF: HSI {len(info.ms_bands)} bands, MSI {info.pan_bands} bands, ratio {r}; adapting on "
        f"{len(crops.windows)} windows of the degraded pair, patches of {crops.patch} pixels.")
    m = c * r
    full = FullResolution(info, crops.scale) if consistency else None
    response = torch.as_tensor(stats["response"], dtype=torch.float32, device=dev)
    offset = torch.as_tensor(stats["offset"] / crops.scale, dtype=torch.float32, device=dev)

    def batches(rng):
        b = crops.batch(batch, rng, context=c)
        if full is not None:
            b.update({"full_" + k: v for k, v in full.batch(max(1, batch // 4), rng).items()})
        return b

    def losses(model, b):
        """(L1 on the degraded pair, full-resolution consistency or None)."""
        out = model(b["ms"], b["lms"], b["pan"], r, pan_detail=b["detail"])
        loss = torch.nn.functional.l1_loss(out[..., m:out.shape[-2] - m, m:out.shape[-1] - m],
                                           b["gt"][..., m:out.shape[-2] - m, m:out.shape[-1] - m])
        if full is None:
            return loss, None
        f = {k[5:]: v for k, v in b.items() if k.startswith("full_")}
        out_full = model(f["ms"], f["lms"], f["pan"], r, pan_detail=f["detail"])
        return loss, consistency_loss(out_full, f, r, response, offset)

    def step_fn(model, b):
        loss, cons = losses(model, b)
        return loss if cons is None else loss + consistency * cons
    start = copy.deepcopy(net)
    t0 = time.perf_counter()
    # train_injection=False keeps the injection at its least-squares solution; on the bench's scenes that
    # was 0.1-0.3 dB worse than letting it train with the rest (bench/out/hyperspectral.md, 2026-12-01)
    params = [p for n, p in net.named_parameters() if train_injection or not n.startswith("inject.")]
    res = train(net, batches, step_fn, params, iterations=int(iterations),
                lr=lr, minutes=minutes, device=dev, seed=seed, progress=progress, is_cancelled=is_cancelled, log=log)
    seconds = time.perf_counter() - t0
    log(f"Adapted in {seconds:.0f} s: loss {res.first_loss:.4f} -> {res.last_loss:.4f}.")
    res.check = c = _check_against_start(start, net, batches, losses, seed)
    figures = f"degraded-pair L1 {c['l1_start']:.5f} -> {c['l1_adapted']:.5f}"
    if c["consistency_start"] is not None:
        figures += f", full-resolution consistency {c['consistency_start']:.5f} -> {c['consistency_adapted']:.5f}"
    if c["beats_start"]:
        log(f"Check: the adapted INF improves on its regression start ({figures}).")
    elif fallback:
        log(f"Check: the adaptation does not improve on its regression start ({figures}): the output is the "
            "regression hypersharpening (METHOD=3).")
        return DetailInjection(stats["regression"]).to(dev), 1.0, res, seconds
    else:
        log(f"Check: the adaptation does not improve on its regression start ({figures}); recorded in the "
            "adapter, panadapter:inf_fusion will give the regression hypersharpening with it.")
    return net, crops.scale, res, seconds


def _check_against_start(start, net, batches, losses, seed, n=8):
    """The adapted model against its starting point (the regression hypersharpening with the pre-trained trunk)
    on the same ``n`` batches, drawn apart from training's (another seed): the degraded pair's L1 and the
    full-resolution consistency (the pair itself, no reference). The adaptation is kept only when it lowers
    both: the zero-shot pairs are a few pixels wide at the reduced scale, too small to hold a part out, and
    the consistency at full resolution is what tells an adaptation that only fits the degraded pair."""
    torch = import_torch()
    rng = np.random.default_rng(seed + 7919)
    drawn = [batches(rng) for _ in range(n)]
    sums = {}
    for name, model in (("start", start), ("adapted", net)):
        model.eval()
        with torch.no_grad():
            parts = [losses(model, {k: v.to(next(model.parameters()).device) for k, v in b.items()}) for b in drawn]
        model.train()
        sums["l1_" + name] = float(np.mean([float(a) for a, _ in parts]))
        sums["consistency_" + name] = (None if parts[0][1] is None
                                       else float(np.mean([float(c) for _, c in parts])))
    better = sums["l1_adapted"] < sums["l1_start"] and np.isfinite(sums["l1_adapted"])
    if sums["consistency_start"] is not None:
        better = better and sums["consistency_adapted"] <= sums["consistency_start"]
    return dict(sums, beats_start=bool(better))


@user_errors
def inf_fusion(hsi_path, msi_path, output_path, *, adapt_iterations=300, adapter=None, device="auto",
               preset="small", weights="bundled", patch=None, batch=8, lr=1e-3, seed=0, tile_size=128, float32=False,
               back_projection=BACK_PROJECTION, progress: Optional[Callable] = None,
               is_cancelled: Optional[Callable] = None, log: Optional[Callable] = None,
               scheduler: Optional[str] = None) -> dict:
    """``panadapter:inf_fusion``: INF adapted to the pair (``adapt_iterations`` zero-shot iterations; or the
    adapter file ``adapter`` from ``panadapter:finetune`` MODEL=2), then the fused HSI on the MSI grid;
    ``back_projection``: iterations of the final back-projection onto the LR-HSI (``back_project``), applied
    when it lowers the regression's error on the pair degraded once more (0: never);
    ``scheduler``: the address of a Dask scheduler whose workers fuse the tiles (empty: this process). The
    adaptation runs here in either case; the cluster is checked before it, so that a bad address or worker
    fails before minutes of training."""
    from .adapt import load_adapted
    from .deep import DeepJob

    log = log or (lambda msg: None)
    info = _check(hsi_path, msi_path, output_path)
    with cluster.connect(scheduler, log, (hsi_path, msi_path), deep=True) as executor:
        res, t_train, stats = None, 0.0, None   # stats: the image-wide statistics, read once when needed
        if adapter:
            net, payload = load_adapted(adapter, bands=len(info.ms_bands), model="inf")
            if payload["ratio"] != info.ratio or payload["guide_bands"] != info.pan_bands:
                raise PansharpenError(f"The adapter was made for an MSI of {payload['guide_bands']} bands at "
                                      f"ratio {payload['ratio']}; this pair has {info.pan_bands} bands at ratio "
                                      f"{info.ratio}.")
            scale = payload["scale"]
            log(f"Adapter {os.path.basename(adapter)}: {payload['card'].get('iterations', '?')} iterations.")
            if (payload["card"].get("check") or {}).get("beats_start") is False:
                log("This adapter did not improve on its regression start when it was made: the output is the "
                    "regression hypersharpening (METHOD=3).")
                stats = _statistics(info)
                net, scale = DetailInjection(stats["regression"]), 1.0
        else:
            report = (lambda f: progress(0.7 * f)) if progress else None
            stats = _statistics(info)
            net, scale, res, t_train = adapt_inf(hsi_path, msi_path, adapt_iterations, info=info, device=device,
                                                 preset=preset, weights=weights, patch=patch, batch=batch, lr=lr,
                                                 seed=seed, stats=stats, progress=report,
                                                 is_cancelled=is_cancelled, log=log)
        name = ("the regression hypersharpening (INF's fallback)" if isinstance(net, DetailInjection)
                else "INF (scene-adapted)")
        if int(back_projection) > 0:
            stats = stats or _statistics(info)
            check = check_back_projection(info, stats["regression"], int(back_projection))
            if check["helps"]:
                log(f"Back-projection onto the HSI ({int(back_projection)} iterations): on the pair degraded once "
                    f"more it lowers the regression's error {check['error_start']:.5f} -> "
                    f"{check['error_back_projected']:.5f}; applied.")
                net = BackProjected(net, (info.ratio * info.rows, info.ratio * info.cols), int(back_projection))
                name = name + ", back-projected"
            elif check["error_start"] is None:
                log("Back-projection onto the HSI: the pair is too small to check it one scale down; not applied.")
            else:
                log(f"Back-projection onto the HSI: on the pair degraded once more it does not lower the "
                    f"regression's error ({check['error_start']:.5f} -> {check['error_back_projected']:.5f}); "
                    "not applied.")
        job = DeepJob(msi_path, hsi_path, net, name=name, device=device, context=CONTEXT,
                      multiple=1, scale=scale, guide_bands=True, log=log)
        start = 0.0 if adapter else 0.7
        result = job.write(output_path, float32=float32, tile_size=tile_size, batch=4,
                           progress=(lambda f: progress(start + (1 - start) * f)) if progress else None,
                           is_cancelled=is_cancelled, executor=executor)
    _copy_wavelengths(hsi_path, output_path, info.ms_bands)
    return dict(result, train_s=t_train, iterations=res.iterations if res else 0,
                first_loss=res.first_loss if res else None, last_loss=res.last_loss if res else None)
