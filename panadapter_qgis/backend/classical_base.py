"""The classical starting point of the deep models (issue 27): the deep models learn a residual over the output
of the best classical method for the pair, chosen on the pair degraded by Wald's protocol, with a zero-
initialised injection, so that an untrained (or rejected) adapter gives exactly that classical result.

``fuse_arrays`` runs a classical method on arrays held in memory (statistics over the arrays' interior: a
training window or the choice window); ``choose`` picks the method for a pair; a whole scene's base comes from
``pipeline.FusionJob`` (statistics of the whole image, as the classical algorithm itself computes them), in
``deep.DeepJob``.
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from . import metrics, mtf, raster
from .classical import create_method
from .classical.base import Moments, Stats, TileContext, feature_names, stack_features
from .sensors import sensor_by_index

# the classical methods a deep model may start from: the strongest of the bench (reduced-resolution ERGAS,
# README), none of which needs a band summary
CANDIDATES = ("mtf_glp_fs", "mtf_glp_hpm", "bdsd_pc", "awlp")
CHOICE_WINDOW = 384   # MS pixels: the central window on which the base method is chosen


def halo(ratio: int, methods: Sequence[str] = CANDIDATES) -> int:
    """MS pixels of halo that every method of ``methods`` needs around a tile."""
    return max(create_method(m).halo(ratio) for m in methods)


def fit_context(method, ctx: TileContext) -> dict:
    """The method's coefficients from the statistics of one context's whole interior (a window held in
    memory, every pixel valid)."""
    bands = len(ctx.ms_gains)
    stats = Stats()
    stats.pan = Moments(feature_names(method.pan_stats, bands))
    stats.lr = Moments(feature_names(method.lr_stats, bands))
    if method.pan_stats:
        stats.pan.add(stack_features(ctx, method.pan_stats))
    if method.lr_stats:
        stats.lr.add(stack_features(ctx, method.lr_stats))
    return method.fit(stats, bands)


def fuse_arrays(method_id: str, pan, ms, ratio: int, gains, pan_gain: float, halo_ms: int):
    """``method_id`` on tensors ``pan`` (1, 1, r(h+2H), r(w+2H)) and ``ms`` (1, C, h+2H, w+2H) with a halo of
    ``halo_ms`` = H MS pixels (at least the method's): the fused interior (1, C, r h, r w), float32, with the
    method's statistics taken over that interior."""
    import torch

    method = create_method(method_id)
    need = method.halo(ratio)
    if halo_ms < need:
        raise ValueError(f"{method_id} needs a halo of {need} MS pixels, got {halo_ms}")
    with torch.no_grad():
        ctx = TileContext(pan.float(), ms.float(), halo_ms, ratio, gains, pan_gain)
        params = fit_context(method, ctx)
        return method.apply(ctx, params).float()


def ergas_cut(reference, fused, ratio, cut=0) -> float:
    """ERGAS of (C, H, W) arrays (numpy, or tensors with a batch of one) with ``cut`` pixels dropped on every
    side (symmetric, unlike the toolbox's ``metrics.cut_border``), over the pixels finite in both (NaN marks
    nodata)."""
    ref, fus = (np.asarray(a[0].double().cpu().numpy() if hasattr(a, "cpu") else a, dtype=np.float64)
                for a in (reference, fused))
    if cut:
        ref, fus = ref[:, cut:-cut, cut:-cut], fus[:, cut:-cut, cut:-cut]
    ok = np.isfinite(ref).all(0) & np.isfinite(fus).all(0)
    if not ok.all():
        if not ok.any():
            return float("inf")
        ref, fus = ref[:, ok][:, None], fus[:, ok][:, None]
    return float(metrics.ergas(ref, fus, ratio))


def choose(pan_path: str, ms_path: str, sensor: int = 0, ms_bands=None, candidates: Sequence[str] = CANDIDATES,
           window: int = CHOICE_WINDOW, info: Optional[raster.PairInfo] = None) -> Tuple[str, Dict[str, float]]:
    """(method id, {method: ERGAS}) of the candidate with the lowest ERGAS on the pair's central window
    degraded by Wald's protocol (the sensor MTF), against that window's own MS: the reference exists one
    scale down, so the choice never needs one at the scale of the output."""
    import torch

    from .training.datasets import read_central_window

    info = info or raster.inspect_pair(pan_path, ms_path, ms_bands)
    r = info.ratio
    sens = sensor_by_index(sensor)
    count = raster.open_raster(ms_path, "MS").RasterCount
    gains = sens.gains_for(info.ms_bands, band_count=count)
    # the reduced pair needs the methods' halo at its own MS scale (r times smaller): read r times more
    hr = halo(r, candidates)
    k = hr * r
    ms, pan, (h, w) = read_central_window(info, window, k)
    h, w = h // r * r, w // r * r
    if min(h, w) < 4 * r:
        return candidates[0], {}
    ms, pan = ms[:, :, :h + 2 * k, :w + 2 * k], pan[:, :, :r * (h + 2 * k), :r * (w + 2 * k)]
    # nodata: filled for the filters, and the reference pixels that a filled pixel reached are left out
    bad = raster.invalid_mask(ms[0].numpy(), info.ms_nodata)
    pan_bad = raster.invalid_mask(pan[0].numpy(), info.pan_nodata)
    bad |= pan_bad.reshape(bad.shape[0], r, bad.shape[1], r).any((1, 3))
    ms, pan = _fill_invalid(ms, info.ms_nodata), _fill_invalid(pan, info.pan_nodata)
    with torch.no_grad():
        pan_lr, ms_lr = mtf.wald_degrade(pan.double(), ms.double(), r, gains, sens.pan_gain)
    reference = ms[:, :, k:k + h, k:k + w].clone()
    if bad.any():
        reference[:, :, torch.from_numpy(raster.dilate(bad, k)[k:k + h, k:k + w])] = float("nan")
    cut = max(1, min(h, w) // 16)
    scores = {}
    for m in candidates:
        fused = fuse_arrays(m, pan_lr.float(), ms_lr.float(), r, gains, sens.pan_gain, hr)
        e = ergas_cut(reference, fused, r, cut)
        scores[m] = e if np.isfinite(e) else float("inf")
    best = min(scores, key=scores.get)
    return best, scores


def _fill_invalid(x, nodata):
    """Nodata and non-finite values replaced by the mean of the valid ones (the choice window only)."""
    import torch

    bad = ~torch.isfinite(x)
    if nodata is not None and np.isfinite(nodata):
        bad |= x == float(nodata)
    if not bool(bad.any()):
        return x
    good = x[~bad]
    fill = float(good.mean()) if good.numel() else 0.0
    return torch.where(bad, torch.full_like(x, fill), x)


def _nan_invalid(values, nodata):
    """(C, H, W) numpy with NaN wherever a band holds nodata (any kind)."""
    out = np.array(values, dtype=np.float32)
    out[:, raster.invalid_mask(out, nodata)] = np.nan
    return out


_UTM_WKT = ('PROJCS["WGS 84 / UTM zone 33N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
            'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
            'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",15],PARAMETER["scale_factor",0.9996],'
            'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1]]')


def write_central_window(info: raster.PairInfo, folder: str, window: int = CHOICE_WINDOW) -> Tuple[str, str]:
    """The pair's central window (at most ``window`` MS pixels, the selected bands, aligned as the pair reader
    aligns them, nodata of every kind as NaN, the declared nodata) as a pair of Float32 GeoTIFFs in
    ``folder`` (a synthetic grid: PAN pixel 1, MS pixel ``ratio``): (pan path, ms path)."""
    import os

    from osgeo import gdal

    from .training.datasets import read_central_window

    r = info.ratio
    ms, pan, (h, w) = read_central_window(info, window, 0)
    ms, pan = _nan_invalid(ms[0].numpy(), info.ms_nodata), _nan_invalid(pan[0].numpy(), info.pan_nodata)
    paths = []
    for name, arr, px in (("pan.tif", pan, 1.0), ("ms.tif", ms, float(r))):
        path = os.path.join(folder, name)
        ds = gdal.GetDriverByName("GTiff").Create(path, arr.shape[2], arr.shape[1], arr.shape[0], gdal.GDT_Float32)
        ds.SetGeoTransform((500000.0, px, 0.0, 5000000.0, 0.0, -px))
        ds.SetProjection(_UTM_WKT)
        ds.WriteArray(arr.astype(np.float32))
        for b in range(arr.shape[0]):
            ds.GetRasterBand(b + 1).SetNoDataValue(float("nan"))
        ds = None
        paths.append(path)
    return paths[0], paths[1]
