"""Training samples: PanCollection HDF5 files and self-supervised crops of any PAN/MS GeoTIFF pair.

A sample is a dict of float32 tensors, normalised: ``ms`` (C, p/r, p/r), ``lms`` (C, p, p), ``pan`` (1, p, p),
``gt`` (C, p, p). Scene crops follow Wald's protocol: the MS becomes the target, and the inputs are the MS and
PAN degraded by the sensor MTF by the ratio (``mtf.wald_degrade``); each crop is read from the raster with a
halo, so memory never depends on the raster size.
"""
import math

import numpy as np
import torch

from .. import mtf, raster
from ..errors import PansharpenError
from ..sensors import sensor_by_index


class PanCollectionH5:
    """PanCollection layout: datasets ``gt, ms, lms, pan`` (N, C, H, W) holding DN; divided by ``max_value``.

    Read through GDAL's HDF5 driver (its multidimensional API), the HDF5 library that QGIS itself has loaded:
    a pip wheel of h5py carries another HDF5, and inside QGIS's process the two clash ("h5py is running against
    HDF5 1.10 when it was built against ...", then "Not a datatype"). h5py is used only where GDAL has no HDF5
    driver.
    """

    KEYS = ("gt", "ms", "lms", "pan")

    def __init__(self, path, max_value=2047.0):
        self.path = path
        self._arrays = _gdal_arrays(path, self.KEYS)
        if self._arrays is None:
            self._arrays = _h5py_arrays(path, self.KEYS)
        shapes = {k: tuple(self._shape(k)) for k in self.KEYS}
        if any(len(v) != 4 for v in shapes.values()):
            raise PansharpenError(f"'{path}' is not a PanCollection file: its datasets must be (N, C, H, W), "
                                  f"found {shapes}.")
        self.n, self.bands = shapes["gt"][0], shapes["gt"][1]
        self.ratio = shapes["gt"][2] // max(1, shapes["ms"][2])
        self.scale = float(max_value)

    def _shape(self, key):
        a = self._arrays[key]
        return [d.GetSize() for d in a.GetDimensions()] if hasattr(a, "GetDimensions") else a.shape

    def _read(self, key, idx):
        a = self._arrays[key]
        if not hasattr(a, "GetDimensions"):
            return np.asarray(a[idx], dtype=np.float32)
        shape = self._shape(key)
        rows = []
        for i in idx:   # one sample at a time: a batch's indices are scattered over the file
            rows.append(a.ReadAsArray(array_start_idx=[int(i), 0, 0, 0], count=[1] + list(shape[1:])))
        return np.concatenate(rows).astype(np.float32)

    def __len__(self):
        return self.n

    def batch(self, indices, rng=None):
        idx = np.sort(np.asarray(indices))
        out = {k: torch.from_numpy(self._read(k, idx) / self.scale) for k in self.KEYS}
        return augment(out, rng)


def _gdal_arrays(path, keys):
    """{key: GDAL MDArray} of an HDF5 file, or None when this GDAL has no HDF5 driver."""
    from osgeo import gdal

    if gdal.GetDriverByName("HDF5") is None:
        return None
    gdal.UseExceptions()
    try:
        ds = gdal.OpenEx(path, gdal.OF_MULTIDIM_RASTER | gdal.OF_READONLY)
    except RuntimeError as exc:
        raise PansharpenError(f"'{path}' cannot be read as HDF5: {exc}") from exc
    if ds is None:
        raise PansharpenError(f"'{path}' cannot be read as HDF5.")
    root = ds.GetRootGroup()
    names = set(root.GetMDArrayNames() or [])
    missing = [k for k in keys if k not in names]
    if missing:
        raise PansharpenError(f"'{path}' is not a PanCollection file: datasets {missing} are missing.")
    arrays = {k: root.OpenMDArray(k) for k in keys}
    arrays["_dataset"] = ds   # keeps the file open while the arrays live
    return arrays


def _h5py_arrays(path, keys):
    try:
        import h5py
    except ImportError as exc:
        raise PansharpenError("Reading PanCollection files needs GDAL's HDF5 driver or h5py "
                              "(pip install h5py).") from exc
    f = h5py.File(path, "r")
    missing = [k for k in keys if k not in f]
    if missing:
        raise PansharpenError(f"'{path}' is not a PanCollection file: datasets {missing} are missing.")
    return {k: f[k] for k in keys}


def augment(batch, rng):
    """A random element of the dihedral group (flips, and a transposition when every tensor is square),
    the same for every tensor of a batch."""
    if rng is None:
        return batch
    dims = [d for d, flip in ((-1, rng.random() < 0.5), (-2, rng.random() < 0.5)) if flip]
    transpose = rng.random() < 0.5 and all(v.shape[-1] == v.shape[-2] for v in batch.values())
    out = {}
    for k, v in batch.items():
        v = v.flip(dims) if dims else v
        out[k] = v.transpose(-1, -2) if transpose else v
    return out


def robust_scale(values: np.ndarray) -> float:
    """Normalisation constant of a scene: the 99.9th percentile of its valid MS values (at least 1e-6)."""
    v = values[np.isfinite(values)]
    return float(max(np.percentile(v, 99.9), 1e-6)) if v.size else 1.0


class SceneCrops:
    """Random Wald-protocol crops of a PAN/MS pair (the pair a user wants to sharpen, or training scenes).

    The pair is degraded once, in windows of ``window`` MS pixels (each read with a halo and filtered
    exactly as a whole image would be), spread over the scene on a regular lattice up to ``budget`` MS
    pixels: memory depends on the budget, never on the raster size. ``patch`` is the target size on the MS
    grid (the reduced pair's PAN grid); it must be a multiple of the ratio and of the model's token stride
    (``step``), unless ``nearest``: then ``patch`` is a nominal size and the nearest multiple is taken (a
    model's default patch at ratio 3: 64 -> 60, 32 -> 36).
    ``context``: reduced-pair LR pixels of image around each patch (its arrays are that much larger on every
    side, and a model's loss is taken on the interior), so that a model whose filters reach far (INF's
    pyramid low-pass) trains on patches that look like its inference tiles. ``guide_gain``: the MTF gain the
    PAN (or MSI) is degraded with, when it is not the sensor's PAN gain.
    """

    HALO = 48  # MS pixels; divided by the ratio it still covers the interpolator's reach (<= 12 MS pixels)

    def __init__(self, pan_path, ms_path, sensor=0, ms_bands=None, patch=64, window=256, budget=2**21,
                 scale=None, pan_mode="mtf", multiple=4, min_patch=16, guide_bands=False, context=0,
                 guide_gain=None, nearest=False, base_method=None):
        self.info = raster.inspect_pair(pan_path, ms_path, ms_bands, guide_bands=guide_bands)
        r = self.ratio = self.info.ratio
        step = self.step = r * multiple // math.gcd(r, multiple)
        if nearest:
            patch = max(step, int(round(patch / step)) * step)
        if patch % step:
            raise PansharpenError(f"Patch size {patch} is not a multiple of {step} (the ratio and the model's "
                                  f"token stride).")
        fit = min(self.info.rows, self.info.cols) // step * step
        need = -(-max(min_patch, step) // step) * step   # the smallest patch: a multiple of the step
        if fit < need:
            raise PansharpenError(f"The scene ({self.info.cols} x {self.info.rows} MS pixels) is too small to "
                                  f"learn from: at least {need} x {need} MS pixels are needed (training patches "
                                  f"of at least {min_patch} pixels, a multiple of {step}: the ratio and the "
                                  "model's token stride).")
        self.wanted = patch       # the size asked for (after ``nearest``)
        patch = min(patch, fit)   # small scenes: patches as large as the scene allows
        sens = sensor_by_index(sensor)
        count = raster.open_raster(ms_path, "MS").RasterCount
        self.gains = sens.gains_for(self.info.ms_bands, band_count=count)
        self.pan_gain = sens.pan_gain if guide_gain is None else float(guide_gain)
        self.patch, self.pan_mode = patch, pan_mode
        self.context = int(context)
        self.derived = []
        margin = self.context * r                       # MS pixels of context around a stored window
        self.halo = self.HALO if not margin else max(self.HALO, -(-(margin + 32) // r) * r)
        if base_method:   # the base method runs on the reduced window: its halo, one scale down
            from ..classical import create_method
            self.halo = max(self.halo, r * (create_method(base_method).halo(r) + self.context))
        self.bands = len(self.info.ms_bands)
        reader = raster.PairReader(self.info)
        window = max(patch, min(window, self.info.rows, self.info.cols)) // r * r
        starts = [(r0, c0) for r0 in _starts(self.info.rows, window, r) for c0 in _starts(self.info.cols, window, r)]
        keep = max(1, budget // (window * window))
        if len(starts) > keep:
            starts = [starts[i] for i in np.linspace(0, len(starts) - 1, keep).round().astype(int)]
        self.base_method = base_method
        self.windows = [self._degrade(reader, r0, c0, window) for r0, c0 in starts]
        if base_method:
            self.derived.append("base")
        self.scale = scale if scale is not None else robust_scale(
            np.concatenate([w["gt"].reshape(self.bands, -1).numpy() for w in self.windows], 1))

    def _degrade(self, reader, r0, c0, size):
        r, h, m = self.ratio, self.halo, self.context * self.ratio
        ms, pan = read_pair_window(reader, r, r0, c0, size, size, h)
        with torch.no_grad():
            pan_lr, ms_lr = mtf.wald_degrade(pan, ms, r, self.gains, self.pan_gain, self.pan_mode)
            hl = h // r
            lms = mtf.upsample(ms_lr, r, hl - self.context)
        inner = slice(h - m, h + size + m)
        low = slice(hl - self.context, hl + size // r + self.context)
        out = dict(gt=ms[0, :, inner, inner], pan=pan_lr[0, :, inner, inner], lms=lms[0],
                   ms=ms_lr[0, :, low, low])
        if self.base_method:
            from ..classical_base import fuse_arrays

            out["base"] = fuse_arrays(self.base_method, pan_lr, ms_lr, r, self.gains, self.pan_gain,
                                      hl - self.context)[0]
        return out

    def derive(self, name, fn):
        """Add ``name`` = fn(PAN) to every stored window (on its whole extent, context included): a model's
        input that needs more image around it than a training patch has, cropped with the patch."""
        with torch.no_grad():
            for w in self.windows:
                w[name] = fn(w["pan"][None])[0]
        self.derived.append(name)

    def sample(self, rng, context=None):
        """One reduced-resolution sample (normalised) from a random window and position, with ``context``
        reduced-pair LR pixels around the patch (at most the stored context; default: all of it)."""
        r, full = self.ratio, self.context
        c = full if context is None else min(int(context), full)
        p = self.patch + 2 * c * r
        w = self.windows[int(rng.integers(len(self.windows)))]
        rows, cols = (n - 2 * full * r for n in w["gt"].shape[-2:])
        first = (full - c) * r
        r0 = first + int(rng.integers(0, (rows - self.patch) // r + 1)) * r
        c0 = first + int(rng.integers(0, (cols - self.patch) // r + 1)) * r
        out = {k: w[k][:, r0:r0 + p, c0:c0 + p] for k in ("gt", "pan", "lms", *self.derived)}
        out["ms"] = w["ms"][:, r0 // r:(r0 + p) // r, c0 // r:(c0 + p) // r]
        return {k: v / self.scale for k, v in out.items()}

    def hold_out(self, share=0.25):
        """Set aside about ``share`` of the degraded scene, never trained on, to check an adaptation: every
        fourth window when there are at least four, else the bottom rows of each window (at least one patch,
        leaving at least one patch above). Returns the held-out windows (dicts of unnormalised tensors, as
        ``windows``); [] when the scene is too small to spare any."""
        if self.context:
            return []
        if len(self.windows) >= 4:
            held = self.windows[3::4]
            self.windows = [w for i, w in enumerate(self.windows) if i % 4 != 3]
            return held
        r, p, held, kept = self.ratio, self.patch, [], []
        for w in self.windows:
            rows = w["gt"].shape[-2]
            v = max(p, -(-int(rows * share) // r) * r)
            if rows - v < p:
                return []
            cut = rows - v
            low = {k: (t[:, cut // r:] if k == "ms" else t[:, cut:]) for k, t in w.items()}
            top = {k: (t[:, :cut // r] if k == "ms" else t[:, :cut]) for k, t in w.items()}
            held.append(low)
            kept.append(top)
        self.windows = kept
        return held

    def batch(self, size, rng, context=None):
        samples = [self.sample(rng, context) for _ in range(size)]
        return augment({k: torch.stack([s[k] for s in samples]) for k in samples[0]}, rng)


def _starts(n, window, r):
    """Window origins covering 0..n (multiples of r), the last one flush with the end."""
    if n <= window:
        return [0]
    last = (n - window) // r * r
    return sorted(set(list(range(0, last, window)) + [last]))


def read_pair_window(reader, ratio, r0, c0, h, w, halo=0):
    """MS rows r0..r0+h-1, cols c0..c0+w-1 with ``halo`` MS pixels around them (the raster's edge replicated
    where it is near), and the PAN over the same ground: MS (1, C, h + 2 halo, w + 2 halo) and PAN (1, 1,
    ``ratio`` times that), DN, as float32 tensors. ``reader``: a ``raster.PairReader``."""
    r, k = ratio, halo
    ms = torch.from_numpy(reader.read_ms(r0 - k, r0 + h + k, c0 - k, c0 + w + k))[None]
    pan = torch.from_numpy(reader.read_pan(r * (r0 - k), r * (r0 + h + k), r * (c0 - k), r * (c0 + w + k)))[None]
    return ms, pan


def read_central_window(info, window, halo=0):
    """``read_pair_window`` on the pair's central window of at most ``window`` x ``window`` MS pixels: MS, PAN
    and (h, w). Memory does not depend on the raster size."""
    h, w = min(info.rows, window), min(info.cols, window)
    r0, c0 = (info.rows - h) // 2, (info.cols - w) // 2
    return read_pair_window(raster.PairReader(info), info.ratio, r0, c0, h, w, halo) + ((h, w),)


def random_patches(data, ratio, span, size, rng, low=("ms",)):
    """``size`` random aligned patches of ``span`` MS pixels from ``data`` (tensors (C, H, W) of one area: the
    keys in ``low`` at the MS scale, the others at ``ratio`` times it), stacked and augmented (``augment``)."""
    rows, cols = data[low[0]].shape[-2], data[low[0]].shape[-1]
    out = []
    for _ in range(size):
        i, j = int(rng.integers(0, rows - span + 1)), int(rng.integers(0, cols - span + 1))
        out.append({key: (v[:, i:i + span, j:j + span] if key in low else
                          v[:, ratio * i:ratio * (i + span), ratio * j:ratio * (j + span)])
                    for key, v in data.items()})
    return augment({key: torch.stack([s[key] for s in out]) for key in data}, rng)


class FullResolutionPatches:
    """Patches of the pair itself at full resolution (no reference exists there): ``ms`` (C, p/r, p/r),
    its interpolation ``lms`` (C, p, p), ``pan`` (1, p, p) and ``pan_lp`` (1, p, p: the PAN reduced to the MS
    scale and interpolated back, as D_s's ``interp23tap(imresize(P, 1/r))``), normalised by ``scale``, from a central
    window of at most ``window`` MS pixels read with a halo (``read_central_window``). For consistency terms of a
    scene adaptation: the fused patch, degraded by the sensor MTF and the ratio, should give back ``ms``."""

    HALO = 12  # MS pixels: the 23-tap interpolator's reach

    def __init__(self, info, scale, patch, window=256, base_method=None, gains=None, pan_gain=None):
        r = self.ratio = info.ratio
        if patch % r:
            raise PansharpenError(f"Patch size {patch} is not a multiple of the ratio {r}.")
        p = patch // r
        if min(info.rows, info.cols) < p:
            raise PansharpenError(f"The scene ({info.cols} x {info.rows} MS pixels) is smaller than one "
                                  f"full-resolution patch ({p} MS pixels).")
        self.p = p
        k = self.HALO
        if base_method:
            from ..classical import create_method
            k = max(k, create_method(base_method).halo(r))
        ms, pan, (h, w) = read_central_window(info, window, k)
        with torch.no_grad():
            lms = mtf.upsample(ms, r, k)[0]
            if base_method:   # the classical base of a universal PanAdapter (``classical_base``)
                from ..classical_base import fuse_arrays
                base = torch.nan_to_num(fuse_arrays(base_method, pan, ms, r, gains, pan_gain, k)[0]) / scale
            # D_s's low-resolution reference: the PAN (with the same halo) reduced and interpolated back
            pan_low = mtf.degrade_image(pan.double(), mtf.bicubic_decimation_kernel_1d(r), r)
            pan_lp = mtf.upsample(pan_low, r, k)[0].float()
        pan = pan[0, :, r * k:r * (k + h), r * k:r * (k + w)]
        self.data = {"ms": ms[0, :, k:k + h, k:k + w] / scale, "lms": lms / scale, "pan": pan / scale,
                     "pan_lp": pan_lp / scale}
        if base_method:
            self.data["base"] = base

    def batch(self, size, rng):
        return random_patches(self.data, self.ratio, self.p, size, rng)

    def invariance_error(self, gains, pan_gain, block=32):
        """How well D_s's inter-scale invariance holds on this scene, measured one scale down where the MS
        is a reference: the window's PAN and MS degraded by Wald's protocol (``gains``, ``pan_gain``: the
        sensor MTF), the D_s (q = 1, ``block``-pixel blocks at the MS scale) between the MS itself and the PAN
        reduced once, against the D_s target that the degraded pair gives. 0 when the invariance is exact;
        the tolerance of ``spatial_consistency``. The window's rows and columns are cut to multiples of the
        ratio; ``block`` shrinks to the window."""
        from .. import wald
        r = self.ratio
        ms, pan = self.data["ms"].double().numpy(), self.data["pan"].double().numpy()
        h, w = ms.shape[1] // r * r, ms.shape[2] // r * r
        if min(h, w) < 2 * r:
            return 0.0
        ms, pan = ms[:, :h, :w], pan[:, :r * h, :r * w]
        pan_rr, ms_rr = wald.degrade_arrays(pan, ms, r, gains, pan_gain)
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]  # noqa: E731
        with torch.no_grad():
            lms = mtf.upsample_image(as_t(ms_rr), r)
            pan_lp = mtf.upsample_image(mtf.degrade_image(as_t(pan_rr), mtf.bicubic_decimation_kernel_1d(r), r), r)
            return float(batch_d_s(as_t(ms), lms, as_t(pan_rr), pan_lp, block))


def spectral_consistency(fused, ms, ratio, gains, margin=2, lms=None):
    """L1 between the fused patch degraded by the sensor MTF (``gains``: one per band, or one for all) and the
    ratio, and the MS it was made from, ``margin`` MS pixels in from the patch border (the filter's replicated
    edges): Wald's consistency. With ``lms`` (the MS interpolated onto the PAN grid), Khan's form instead, as
    HQNR's D_lambda compares them: the fused patch low-passed by the sensor MTF at the PAN scale, without
    decimation, against ``lms``, ``margin * ratio`` PAN pixels in from the border."""
    kernels = (mtf.mtf_kernel_1d(float(gains), ratio) if np.ndim(gains) == 0
               else [mtf.mtf_kernel_1d(float(g), ratio) for g in gains])
    if lms is not None:
        low, target, m = mtf.filter_same(fused, kernels), lms, margin * ratio
    else:
        low, target, m = mtf.degrade_image(fused, kernels, ratio), ms, margin
    return torch.nn.functional.l1_loss(low[..., m:low.shape[-2] - m, m:low.shape[-1] - m],
                                       target[..., m:target.shape[-2] - m, m:target.shape[-1] - m])


def block_q(x, y, block):
    """UIQI of x and y (B, C, H, W) on distinct ``block`` x ``block`` blocks: (B, C, H/block, W/block)."""
    pool = lambda a: torch.nn.functional.avg_pool2d(a, block, block)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy = pool(x * x) - mx * mx, pool(y * y) - my * my
    cxy = pool(x * y) - mx * my
    eps = 1e-12  # flat blocks (both constant): 0 instead of the toolbox's NaN
    return 4 * cxy * mx * my / ((vx + vy) * (mx * mx + my * my) + eps)


def spatial_consistency(fused, lms, pan, pan_lp, block=32, tolerance=0.0):
    """D_s as a loss, with a tolerance: ``max(0, D_s - tolerance)``, where D_s is QNR's spatial distortion of the
    batch (q = 1): the mean over bands of ``|mean Q(F_b, P) - mean Q(MS_b, P_LP)|``, each mean over the
    ``block`` x ``block`` blocks of all its patches; ``lms`` is the interpolated MS and ``pan_lp`` the PAN reduced
    and interpolated back (``FullResolutionPatches``). Each band should relate to the PAN at full resolution
    as the MS relates to it at the MS scale (the inter-scale invariance of QNR), as closely as that invariance
    holds on the scene (``tolerance``, from ``FullResolutionPatches.invariance_error``): below it the term
    would fit the assumption, not the scene. ``block`` shrinks to the patch size when the patch is smaller."""
    return torch.relu(batch_d_s(fused, lms, pan, pan_lp, block) - float(tolerance))


def batch_d_s(fused, lms, pan, pan_lp, block=32):
    """QNR's D_s (q = 1) of a batch (B, C, H, W): the mean over bands of ``|mean Q(F_b, P) - mean Q(MS_b,
    P_LP)|``, each mean over the ``block`` x ``block`` blocks of all the batch's images (``block`` shrinks to
    the image size when it is smaller); the target side carries no gradient."""
    block = min(block, fused.shape[-1], fused.shape[-2])
    with torch.no_grad():
        target = block_q(lms, pan_lp.expand_as(lms), block).mean((0, 2, 3))
    q = block_q(fused, pan.expand_as(fused), block).mean((0, 2, 3))
    return (q - target).abs().mean()
