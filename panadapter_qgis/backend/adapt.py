"""Scene-adaptive fine-tuning: adapt a deep model to the user's own PAN/MS pair, with no training set.

The pair is degraded by Wald's protocol (``training.datasets.SceneCrops``): the model learns to rebuild the
MS from the degraded MS and PAN, then sharpens the full-resolution pair. PanAdapter is adapted in its two
stages: stage 1 (the prior extractors and Tail1) then stage 2 (adapters, projections, ViT head and Tail2),
``stage2_share`` of the iterations going to stage 2. From pre-trained weights (the bundled ones by default)
the backbones stay frozen: in stage 1 only the band heads, the LPE modules, their projections and Tail1
learn; with no pre-trained weights every stage-1 parameter learns. The result is an *adapter file* that
``DeepJob``/``panadapter:panadapter`` reads.

Adapter file (``torch.save``, read with ``weights_only=True``): ``format``, ``version``, ``model``,
``preset``, ``bands``, ``ratio``, ``sensor``, ``scale`` (the scene normalisation), ``stage`` (the forward
to use), ``base`` (file name of the weights it was adapted from, or ``None``), ``base_sha256``, ``state``
(the tensors it changed; the whole model when there was no base), ``card`` (iterations, seconds, losses).
"""
import math
import os
import time
from typing import Callable, Optional

from . import cluster, raster, weights
from .device import import_torch, select_device
from .errors import PansharpenError, user_errors
from .models import FixedModel
from .training.datasets import SceneCrops
from .training.trainer import l1_step, train

FORMAT = "panadapter-adapter"
MODELS = ("panadapter", "ssdiff", "inf")
LBAF_SWITCH = 50   # SSDiff scene adaptation: iterations per L-BAF phase
LBAF_LR = 5e-4     # and its learning rate from pre-trained weights
# training patch (target pixels) of each model: SSDiff's full attention makes 64 four times as costly as 32,
# and its bundled weights were trained on 32
PATCH = {"panadapter": 64, "ssdiff": 32}
# weight of the D_s-like full-resolution term, chosen for full-resolution HQNR on the scenes whose PAN reaches
# into the NIR (0 left D_s 3-5x the classical methods'; 0.1 lost T33UUB's HQNR by more). It costs reduced-
# resolution ERGAS on bright urban pixels: development scenes, 0.3 / 0 (README): Zhengzhou ERGAS 2.343 / 2.146,
# FuseBox 10 3.487 / 3.458, FuseBox 10 full-pair HQNR 0.9509 / 0.9189 (best classical 0.8517)
SPATIAL_WEIGHT = 0.3
# weight of the spectral angle (radians) beside the reduced-resolution loss, per model, measured on the
# development scenes FuseBox 10 and 25 (600 iterations). PanAdapter, reduced resolution, mean ERGAS / SAM:
# 3.494 / 2.321 with 0, 3.469 / 2.287 with 1, 3.462 / 2.267 with 3 (HQNR of FuseBox 10 adapted on the full
# pair: 0.9515 with 0, 0.9509 with 3). SSDiff (10 DDIM steps): 3.706 / 2.436
# with 0, 3.557 / 2.330 with 3, 3.620 / 2.338 with 10, but adapted on the full pairs its HQNR falls with 3
# (0.9586 -> 0.9485 and 0.9627 -> 0.9559: D_s 0.019 -> 0.028, 0.008 -> 0.015), so SSDiff's stays 0
SAM_WEIGHT = {"panadapter": 3.0, "ssdiff": 0.0}
# default scene-adaptation iterations per model (``panadapter:finetune`` ITERATIONS left empty). PanAdapter has
# converged by 600 (Zhengzhou, reduced resolution: ERGAS 2.343 with 600, 2.312 with 1500). SSDiff's L-BAF, one
# branch at a time, has not: development scenes, reduced resolution, 10 DDIM steps, ERGAS with 600 / 1500 /
# 3000 iterations (D_s term 0): Zhengzhou 2.666 / 2.320 / 2.218, FuseBox 10 3.683 / 3.524 / 3.484 (1500 at
# lr 1e-3: Zhengzhou 2.256). Adapted on the full pairs with 3000, HQNR Zhengzhou 0.9682, FuseBox 10 0.9488 (best
# classical 0.9553, 0.8517); FuseBox 10 with 600: 0.9586
ITERATIONS = {"panadapter": 600, "ssdiff": 3000, "inf": 600}
# PanAdapter adapted from the bundled multi-sensor weights: the reduced-resolution L1 loss alone (no spectral
# angle, no full-resolution terms), measured from those weights (docs/BENCHMARKS.md, 2026-12-07). With the
# defaults above every checked adaptation lost to the pre-trained model on the held-out part of the degraded
# pair (held-out ERGAS, adapted / pre-trained: GeoEye-1 3.239 / 3.203, WorldView-4 2.294 / 2.043, the
# WorldView-3 scene repeated 2 x 2 2.973 / 2.902 with the full-resolution terms alone, 3.086 with the angle
# alone), so the adapter kept the pre-trained model; with the loss alone the adaptation beat it on all three
# (3.197, 2.038, 2.887), in 35-40 % less time. Full resolution (adapted on the full pairs): HQNR QuickBird
# fr_test_0 0.9436 against 0.9403, WorldView-3 0.9514 against 0.9508, Sentinel-2 T49JGM 0.8829 against 0.8894
MULTI_SENSOR_DEFAULTS = dict(sam_weight=0.0, consistency=0.0, spatial=0.0)
SPECTRAL_FORMS = ("wald", "khan")  # the full-resolution spectral term: decimated against the MS, or Khan's form


def _create(model, bands, preset, guide_bands=None):
    if model == "inf":
        from .models.inf import create_model as create_inf
        return create_inf(bands, guide_bands, preset)
    if model == "panadapter":
        from .models.panadapter import create_model
    elif model == "ssdiff":
        from .models.ssdiff import create_model
    else:
        raise PansharpenError(f"Scene adaptation of '{model}' is not available; available: {', '.join(MODELS)}.")
    return create_model(bands, preset)


def _is_universal(preset):
    from .models.panadapter import PRESETS
    return preset in PRESETS and PRESETS[preset].universal


def _token_stride(model, preset):
    """The multiple of a training patch's size that the model's tokens need (PanAdapter's token stride; 4 for the
    other models)."""
    if model == "panadapter":
        from .models.panadapter import PRESETS
        if preset in PRESETS:
            return max(4, PRESETS[preset].token_stride)
    return 4


def choose_base_method(pan_path, ms_path, sensor=0, ms_bands=None):
    """The classical method a universal PanAdapter starts from on this pair (``classical_base.choose``)."""
    from .classical_base import choose
    return choose(pan_path, ms_path, sensor, ms_bands)


def _base_message(method, scores, residual=True):
    listed = ", ".join(f"{m} {e:.3f}" for m, e in sorted(scores.items(), key=lambda kv: kv[1]))
    return (f"Classical base: {method}, the best on the pair degraded by Wald's protocol (ERGAS: {listed}); the "
            + ("deep model adds its residual to it." if residual else
               "adapted model is checked against it and gives way to it where it does not beat it."))


def check_against_base(net, windows, crops, stage, device):
    """ERGAS of the model and of its classical base against the reference, on held-out windows of the degraded
    pair (non-overlapping patches of the training size): the adaptation's check (issue 27)."""
    import numpy as np

    from . import metrics
    torch = import_torch()
    r, p = crops.ratio, crops.patch
    preds, bases, refs = [], [], []
    net.eval()
    with torch.inference_mode():
        for w in windows:
            rows, cols = w["gt"].shape[-2:]
            for i in range(0, rows - p + 1, p):
                for j in range(0, cols - p + 1, p):
                    cut = {k: (v[:, i // r:(i + p) // r, j // r:(j + p) // r] if k == "ms" else v[:, i:i + p, j:j + p])
                           for k, v in w.items()}
                    b = {k: (v / crops.scale)[None].to(device) for k, v in cut.items()}
                    out = net(b["ms"], b["lms"], b["pan"], r, stage=stage, base=b["base"])
                    preds.append(out[0].double().cpu().numpy() * crops.scale)
                    bases.append(cut["base"].double().numpy())
                    refs.append(cut["gt"].double().numpy())
    net.train()
    ref, pred, bse = (np.concatenate(x, 2) for x in (refs, preds, bases))
    e_net, e_base = float(metrics.ergas(ref, pred, r)), float(metrics.ergas(ref, bse, r))
    return dict(ergas_adapted=e_net, ergas_base=e_base, beats_base=bool(e_net < e_base),
                pixels=int(ref.shape[1] * ref.shape[2]))


def check_zero_shot(net, info, sensor, method, window=384):
    """The pre-trained model against its classical base one scale down, through the inference path itself:
    the pair's central window is degraded by Wald's protocol, sharpened by both, and each is compared with the
    window's own MS (ERGAS). Returns dict(ergas_model, ergas_base, beats_base)."""
    import tempfile

    import numpy as np
    from osgeo import gdal

    from . import wald
    from .classical_base import ergas_cut, write_central_window
    from .deep import DeepJob, default_tile
    from .pipeline import pansharpen

    with tempfile.TemporaryDirectory(prefix="panadapter-check-") as tmp:
        pan, ms = write_central_window(info, tmp, window)
        lr = [os.path.join(tmp, f) for f in ("pan_lr.tif", "ms_lr.tif", "reference.tif")]
        degraded = wald.degrade(pan, ms, lr[0], lr[1], sensor=sensor, out_reference=lr[2])
        r = degraded["ratio"]
        out_base, out_model = os.path.join(tmp, "base.tif"), os.path.join(tmp, "model.tif")
        pansharpen(lr[0], lr[1], out_base, method, sensor=sensor, float32=True)
        DeepJob(lr[0], lr[1], net, sensor=sensor, base_method=method, tile_size=default_tile(net)).write(
            out_model, float32=True)
        def read(path):
            a = gdal.Open(path).ReadAsArray().astype(np.float64)
            return a[None] if a.ndim == 2 else a
        ref = read(lr[2])
        cut = max(1, min(ref.shape[1:]) // 16)
        e_model, e_base = (ergas_cut(ref, read(p), r, cut) for p in (out_model, out_base))
    return dict(ergas_model=e_model, ergas_base=e_base, beats_base=bool(e_model < e_base))


class BaseOnly(FixedModel):
    """The classical base alone, where the model did not beat it: a stand-in for ``DeepJob`` that returns its
    ``base``."""
    needs_base = universal = True

    def __call__(self, ms, lms, pan, ratio, base=None, **_):
        return base


def _read_weights(path):
    """The content of a weights file (``torch.load``, tensors only)."""
    torch = import_torch()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise PansharpenError(f"'{path}' is not a PyTorch weights file (torch.load could not read it: {exc}). Give "
                              "a .pt file written by panadapter:finetune, panadapter:train or make weights.") from exc


def _load_base(net, base_path, content=None):
    """Copy the tensors of the weights file ``base_path`` (its ``content`` when already read) that fit."""
    torch = import_torch()
    state = _read_weights(base_path) if content is None else content
    state = state.get("model", state.get("state", state))
    own = net.state_dict()
    loaded = 0
    with torch.no_grad():
        for key, value in state.items():
            if key in own and tuple(own[key].shape) == tuple(value.shape):
                own[key].copy_(value)
                loaded += 1
    if loaded == 0:
        raise PansharpenError(f"'{base_path}' holds no tensor of this model.")
    if hasattr(net, "init_bands_from"):   # weights of another band count: start every band from their mean
        loaded += net.init_bands_from(state)
    return loaded


def resolve_base(base_weights, model="panadapter"):
    """``"bundled"`` -> the bundled checkpoint (None when the plugin ships none); a path must exist."""
    if base_weights in (None, ""):
        return None
    if base_weights == "bundled":
        return weights.bundled(model)
    if not os.path.isfile(base_weights):
        raise PansharpenError(f"The weights file '{base_weights}' does not exist.")
    return base_weights


def _split(total, share):
    """(stage-1, stage-2) parts of ``total`` (iterations or minutes)."""
    if total is None:
        return None, None
    second = total * float(share)
    if isinstance(total, int):
        second = int(round(second))
    return total - second, second


def _save(payload, output_path):
    torch = import_torch()
    tmp = raster.partial_path(output_path)   # short, hidden, removed on SIGTERM/SIGHUP while it exists
    raster.register_partial(tmp)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, output_path)
    except OSError as exc:
        raise PansharpenError(f"The adapter file '{output_path}' cannot be written: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        raster.unregister_partial(tmp)


def two_stages(net, batches, groups, iterations, stage2_share, *, minutes=None, lr=1e-3, device=None, seed=0,
               progress=None, is_cancelled=None, log=None, checkpoint=None, resume=False, sam_weight=0.0,
               extra_loss=None):
    """Stage 1 then stage 2 of PanAdapter, ``stage2_share`` of the iterations (and minutes) to stage 2.

    ``groups``: (stage-1 parameter prefixes, stage-2 prefixes). Returns (results, names of the trained
    tensors, the stage whose forward gives the output).
    """
    n1, n2 = _split(int(iterations), stage2_share)
    m1, m2 = _split(minutes, stage2_share)
    log = log or (lambda msg: None)
    trained, results = set(), []
    for stage, its, mins, prefixes, (a, b) in ((1, n1, m1, groups[0], (0.0, n1 / iterations)),
                                                (2, n2, m2, groups[1], (n1 / iterations, 1.0))):
        if its < 1:
            continue
        params = net.set_trainable(prefixes)
        trained |= {name for name, p in net.named_parameters() if p.requires_grad}
        log(f"Stage {stage}: {its} iterations, {sum(p.numel() for p in params):,} trainable parameters.")
        report = (lambda f, a=a, b=b: progress(a + (b - a) * f)) if progress else None
        ckpt = f"{checkpoint}.stage{stage}.pt" if checkpoint else None
        step = l1_step(stage, sam_weight)
        if extra_loss is not None:
            step = (lambda model, b, step=step, stage=stage: step(model, b) + extra_loss(model, b, stage))
        results.append(train(net, batches, step, params, iterations=its, lr=lr, minutes=mins,
                             device=device, seed=seed + stage, progress=report, is_cancelled=is_cancelled,
                             log=log, checkpoint=ckpt, resume=resume))
    return results, trained, (2 if n2 >= 1 else 1)


@user_errors
def finetune_scene(pan_path, ms_path, output_path, *, model="panadapter", preset="small", sensor=0,
                   ms_bands=None, iterations=None, minutes=None, device="auto", base_weights="bundled",
                   stage2_share=0.25, patch=None, batch=8, lr=None, seed=0, sam_weight=None, consistency=None,
                   spatial=None, spectral_form="wald",
                   progress: Optional[Callable] = None,
                   is_cancelled: Optional[Callable] = None, log: Optional[Callable] = None) -> dict:
    """Adapt ``model`` to the pair and write the adapter file ``output_path``; returns its card.

    ``base_weights``: ``"bundled"`` (the default; plain random initialisation when the plugin ships none),
    a checkpoint path, or None for random initialisation. ``consistency`` (PanAdapter and SSDiff): weight of a
    full-resolution term beside the reduced-resolution L1 loss: patches of the pair itself, fused and degraded
    by the sensor MTF and the ratio, should give back their MS (0: the reduced-resolution loss only).
    ``spectral_form``: ``"wald"`` (the fused patch, MTF-filtered and decimated, against the MS) or ``"khan"``
    (MTF-filtered at the PAN scale against the interpolated MS, as HQNR's D_lambda measures it).
    ``spatial``: weight of a second full-resolution term, D_s as a loss
    (``training.datasets.spatial_consistency``): each fused band should relate to the PAN as the MS relates to
    the PAN reduced to its scale, down to the tolerance that the scene itself shows one scale down
    (``FullResolutionPatches.invariance_error``; in the card as ``spatial_tolerance``).
    ``sam_weight``: weight of the mean spectral angle beside the reduced-resolution L1 loss. None for
    ``sam_weight``, ``consistency`` and ``spatial``: ``MULTI_SENSOR_DEFAULTS`` when PanAdapter starts from
    multi-sensor (universal) weights, else the model's ``SAM_WEIGHT``, 1 and ``SPATIAL_WEIGHT`` (``spatial``
    None with ``consistency`` 0: 0).
    ``iterations`` None: the model's ``ITERATIONS``.
    """
    torch = import_torch()
    log = log or (lambda msg: None)
    if not output_path:
        raise PansharpenError("No output adapter file was given.")
    if model not in MODELS:
        _create(model, 1, preset)  # raises the error that names the available models
    iterations = int(ITERATIONS[model] if iterations is None else iterations)
    if iterations < 1:
        raise PansharpenError("ITERATIONS must be at least 1.")
    if spectral_form not in SPECTRAL_FORMS:
        raise PansharpenError(f"Unknown spectral term form '{spectral_form}': use {' or '.join(SPECTRAL_FORMS)}.")
    if not 0 <= float(stage2_share) < 1:
        raise PansharpenError("The stage-2 share of the iterations must be in [0, 1).")
    if model == "inf":
        return _finetune_inf(pan_path, ms_path, output_path, iterations=iterations, minutes=minutes,
                             preset=preset, device=device, batch=batch, lr=lr or 1e-3, seed=seed, sensor=sensor,
                             progress=progress, is_cancelled=is_cancelled, log=log)
    dev = select_device(device)
    for label, value in (("SAM_WEIGHT", sam_weight), ("SPATIAL_WEIGHT", spatial),
                         ("The full-resolution weight", consistency)):
        if value is not None and not float(value) >= 0:   # also refuses NaN
            raise PansharpenError(f"{label} must be at least 0 (got {value}).")
    base_path = resolve_base(base_weights, model)
    base_meta = _read_weights(base_path) if base_path else None
    if isinstance(base_meta, dict) and base_meta.get("preset"):
        preset = base_meta["preset"]       # adapt the weights' own architecture
    defaults = (MULTI_SENSOR_DEFAULTS if model == "panadapter" and base_path and _is_universal(preset) else
                dict(sam_weight=SAM_WEIGHT[model], consistency=1.0, spatial=SPATIAL_WEIGHT))
    sam_weight = defaults["sam_weight"] if sam_weight is None else float(sam_weight)
    consistency = defaults["consistency"] if consistency is None else float(consistency)
    # the D_s-like term's default goes with the spectral one: a run asked for no spectral term gets neither
    spatial = (defaults["spatial"] if consistency else 0.0) if spatial is None else float(spatial)
    base_method = None
    if model == "panadapter" and (_is_universal(preset) or base_path):
        # from pre-trained weights of another preset (the Landsat-7 ones) the classical base is what the
        # adapted model is checked against; the multi-sensor (universal) model also adds its residual to it
        base_method, scores = choose_base_method(pan_path, ms_path, sensor, ms_bands)
        log(_base_message(base_method, scores, residual=_is_universal(preset)))
    # no patch given: the model's own (PATCH), the nearest multiple of the ratio and the token stride
    crops = SceneCrops(pan_path, ms_path, sensor=sensor, ms_bands=ms_bands, patch=patch or PATCH[model],
                       nearest=not patch, base_method=base_method, multiple=_token_stride(model, preset))
    if crops.patch != crops.wanted:
        log(f"The scene is small: training patches of {crops.patch} instead of {crops.wanted} MS pixels.")
    held_out = crops.hold_out() if base_method else []
    if base_method and not held_out:
        without = (f"the pre-trained model where it beats {base_method} one scale down, else {base_method}"
                   if _is_universal(preset) else
                   f"the pre-trained model on its own band count, else {base_method}")
        log("The scene is too small to set part of it aside: the adapted model cannot be checked against the "
            f"classical base, so panadapter:panadapter will give what it gives without an adapter ({without}; "
            "unchecked adaptations made small test pairs 5-39 % worse). Give a larger scene to adapt.")
    torch.manual_seed(seed)
    net = _create(model, crops.bands, preset).to(dev)
    base = base_sha = None
    if base_path:
        n = _load_base(net, base_path, base_meta)
        base, base_sha = os.path.basename(base_path), weights.sha256(base_path)
        log(f"Loaded {n} pre-trained tensors from {base}; the backbones stay frozen.")
    log(f"Adapting on {len(crops.windows)} windows of the degraded scene (ratio {crops.ratio}, scale "
        f"{crops.scale:.4g}).")
    lr = lr or (LBAF_LR if model == "ssdiff" and base else 1e-3)
    # the pre-trained model as it is, for the check: an adaptation that does not improve on it keeps it
    start = ({k: v.detach().clone() for k, v in net.state_dict().items()}
             if held_out and base is not None and model == "panadapter" else None)
    t0 = time.perf_counter()
    full, tolerance = None, 0.0
    if consistency or spatial:
        # full-resolution terms: the pair itself, fused and degraded, gives back its MS (spectral), and D_s
        from .training.datasets import FullResolutionPatches, spatial_consistency, spectral_consistency

        full = FullResolutionPatches(crops.info, crops.scale, crops.patch, base_method=base_method,
                                     gains=crops.gains, pan_gain=crops.pan_gain)
        if spatial:
            tolerance = full.invariance_error(crops.gains, crops.pan_gain)
            log(f"D_s-like term: tolerance {tolerance:.4f} (how far the scene's own MS is from the D_s target "
                "one scale down).")

    def batches(rng):
        b = crops.batch(batch, rng)
        if full is not None:
            b.update({"full_" + k: v for k, v in full.batch(max(1, batch // 2), rng).items()})
        return b

    def full_resolution_terms(fused, b):
        loss = 0.0
        if consistency:
            loss = float(consistency) * spectral_consistency(fused, b["full_ms"], crops.ratio, crops.gains,
                                                             lms=b["full_lms"] if spectral_form == "khan" else None)
        if spatial:
            loss = loss + float(spatial) * spatial_consistency(fused, b["full_lms"], b["full_pan"],
                                                               b["full_pan_lp"], tolerance=tolerance)
        return loss

    def extra_loss(model, b, stage):
        more = {"base": b["full_base"]} if "full_base" in b else {}
        return full_resolution_terms(model(b["full_ms"], b["full_lms"], b["full_pan"], crops.ratio, stage=stage,
                                           **more), b)
    extra = {}
    if model == "ssdiff":
        from .training.ssdiff import sampled_estimate

        fr_loss = None if full is None else (lambda m, b: full_resolution_terms(
            sampled_estimate(m, b["full_ms"], b["full_lms"], b["full_pan"]), b))
        results, trained, stage, extra = _adapt_ssdiff(net, batches, iterations, minutes, base is not None,
                                                       lr=lr, sam_weight=sam_weight, device=dev, seed=seed,
                                                       progress=progress, is_cancelled=is_cancelled, log=log,
                                                       extra_loss=fr_loss)
    else:
        if base is None:
            log("No pre-trained weights: stage 1 trains the prior extractors from random initialisation.")
        groups = (net.ADAPT_STAGE1, net.ADAPT) if base else (net.STAGE1, net.STAGE2)
        results, trained, stage = two_stages(net, batches, groups, iterations, stage2_share, minutes=minutes,
                                             lr=lr, device=dev, seed=seed, sam_weight=sam_weight,
                                             extra_loss=extra_loss if full is not None else None,
                                             progress=progress, is_cancelled=is_cancelled, log=log)
    check, kept = None, None
    if held_out:
        check = check_against_base(net, held_out, crops, stage, dev)
        if start is not None:
            adapted = {k: v.detach().clone() for k, v in net.state_dict().items()}
            net.load_state_dict(start)
            check["ergas_pretrained"] = check_against_base(net, held_out, crops, stage, dev)["ergas_adapted"]
            adapted_error = check["ergas_adapted"] if math.isfinite(check["ergas_adapted"]) else math.inf
            if check["ergas_pretrained"] < min(adapted_error, check["ergas_base"]):
                kept = "pretrained"   # the adapter holds the pre-trained tensors: the adaptation did not help
                check["beats_base"] = True
            else:
                net.load_state_dict(adapted)
            # a Landsat pair: the bundled Landsat-7 weights, which the zero-shot run also checks, on the same quarter
            specialist = _specialist(model, crops.bands, base_weights, sensor)
            if specialist is not None:
                other = specialist[0].to(dev)
                check["ergas_specialist"] = check_against_base(other, held_out, crops, other.stage, dev)[
                    "ergas_adapted"]
                used = (check["ergas_pretrained"] if kept else adapted_error if check["beats_base"] else
                        check["ergas_base"])
                if check["ergas_specialist"] < used:
                    kept = "specialist"   # panadapter:panadapter then runs as without an adapter
                    check["beats_base"] = True
        figures = (f"ERGAS {check['ergas_adapted']:.4f} adapted"
                   + (f", {check['ergas_pretrained']:.4f} pre-trained" if "ergas_pretrained" in check else "")
                   + (f", {check['ergas_specialist']:.4f} the Landsat-7 model" if "ergas_specialist" in check
                      else "")
                   + f", {check['ergas_base']:.4f} for {base_method}")
        verdict = {
            "specialist": "the bundled Landsat-7 model is the best: panadapter:panadapter will run as without an "
                          "adapter (it checks that model one scale down).",
            "pretrained": "the pre-trained model is the best: the adaptation did not help, the adapter keeps the "
                          "pre-trained model."}
        log(f"Check on the {check['pixels']:,} held-out pixels of the degraded pair (never trained on): {figures}: "
            + (verdict[kept] if kept else "the adapted model is better and will be used." if check["beats_base"]
               else f"the adapted model is not better; panadapter:panadapter will give the {base_method} result."))
    state = {k: v.detach().cpu() for k, v in net.state_dict().items() if base is None or k in trained}
    card = dict(iterations=sum(r.iterations for r in results), planned_iterations=iterations,
                stage_iterations=[r.iterations for r in results],
                first_loss=results[0].first_loss, last_loss=results[-1].last_loss,
                seconds=time.perf_counter() - t0, patch=crops.patch, batch=batch, lr=lr, device=str(dev),
                sam_weight=sam_weight,
                trained_parameters=int(sum(v.numel() for k, v in net.state_dict().items() if k in trained)),
                consistency=float(consistency) if full is not None else 0.0,
                spectral_form=spectral_form if full is not None else None,
                spatial=float(spatial) if full is not None else 0.0,
                spatial_tolerance=float(tolerance) if full is not None and spatial else None,
                base_method=base_method, check=check, kept=kept, **extra)
    payload = dict(format=FORMAT, version=2, model=model, preset=preset, bands=crops.bands, ratio=crops.ratio,
                   sensor=int(sensor), scale=float(crops.scale), stage=stage, base=base, base_sha256=base_sha,
                   state=state, card=card, base_method=base_method,
                   beats_base=(False if base_method else None) if check is None else bool(check["beats_base"]))
    _save(payload, output_path)
    log(f"Adapter written: {output_path} ({card['iterations']} iterations, loss {card['first_loss']:.4f} -> "
        f"{card['last_loss']:.4f}, {card['seconds']:.0f} s).")
    return dict(card, output=output_path)


def _finetune_inf(msi_path, hsi_path, output_path, *, iterations, minutes, preset, device, batch, lr, seed,
                  sensor, progress, is_cancelled, log):
    """INF's scene adaptation as an adapter file (``panadapter:finetune`` MODEL=2: the MSI is given as PAN,
    the HSI as MS)."""
    from .hyperspectral import adapt_inf

    info = raster.inspect_pair(msi_path, hsi_path, guide_bands=True)
    net, scale, res, seconds = adapt_inf(hsi_path, msi_path, iterations, info=info, minutes=minutes, device=device,
                                         preset=preset, batch=batch, lr=lr, seed=seed, fallback=False,
                                         progress=progress, is_cancelled=is_cancelled, log=log)
    card = dict(iterations=res.iterations, check=res.check, planned_iterations=iterations, stage_iterations=[res.iterations],
                first_loss=res.first_loss,
                last_loss=res.last_loss, seconds=seconds, batch=batch, lr=lr, device=str(select_device(device)),
                trained_parameters=int(sum(p.numel() for p in net.parameters())))
    payload = dict(format=FORMAT, version=2, model="inf", preset=preset, bands=net.bands,
                   guide_bands=net.guide_bands, ratio=info.ratio, sensor=int(sensor), scale=float(scale),
                   stage=None, base=None, base_sha256=None,
                   state={k: v.detach().cpu() for k, v in net.state_dict().items()}, card=card)
    _save(payload, output_path)
    log(f"Adapter written: {output_path} ({card['iterations']} iterations).")
    return dict(card, output=output_path)


def _adapt_ssdiff(net, batches, iterations, minutes, pretrained, *, lr, sam_weight, device, seed, progress, is_cancelled,
                  log, extra_loss=None):
    """SSDiff scene adaptation: L-BAF from pre-trained weights; from random initialisation, the first half
    trains the whole network (the main training L-BAF presupposes), the second half is L-BAF. ``extra_loss``:
    the full-resolution terms, on the estimate of a sampling step (``training.ssdiff.sampled_estimate``)."""
    from .training.ssdiff import train_ssdiff

    n_full = 0 if pretrained else iterations // 2
    parts = [(n_full, None), (iterations - n_full, LBAF_SWITCH)]
    results, trained, lbaf_phases, done = [], set(), 0, 0.0
    for its, switch in parts:
        if its < 1:
            continue
        share = its / iterations
        report = (lambda f, a=done, s=share: progress(a + s * f)) if progress else None
        mins = minutes * share if minutes else None
        result, names, phases = train_ssdiff(net, batches, its, lbaf_switch=switch, lr=lr, sam_weight=sam_weight,
                                             minutes=mins, device=device, seed=seed + len(results),
                                             extra_loss=extra_loss, progress=report, is_cancelled=is_cancelled, log=log)
        results.append(result)
        trained |= names
        lbaf_phases += sum(1 for _, mode in phases if mode)
        done += share
    return results, trained, None, dict(lbaf_switch=LBAF_SWITCH, lbaf_phases=lbaf_phases)


@user_errors
def load_adapted(adapter_path, bands=None, base_weights=None, model=None):
    """The model of an adapter file, ready for inference; returns (model, payload).

    An adapter made from pre-trained weights holds only what it changed: its base is the bundled
    checkpoint when the hashes match, else ``base_weights`` must name it.
    """
    torch = import_torch()
    if not os.path.isfile(str(adapter_path)):
        raise PansharpenError(f"The adapter file '{adapter_path}' does not exist.")
    try:
        payload = torch.load(adapter_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise PansharpenError(f"'{adapter_path}' is not a PyTorch adapter file (torch.load could not read it: "
                              f"{exc}). Give a .pt file written by panadapter:finetune.") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PansharpenError(f"'{adapter_path}' is not an adapter file written by panadapter:finetune.")
    if model is not None and payload.get("model") != model:
        made = LABELS.get(payload.get("model"), payload.get("model"))
        raise PansharpenError(f"The adapter file was made for {made}, not {LABELS.get(model, model)}: run "
                              f"panadapter:finetune with that model.")
    if bands is not None and payload["bands"] != bands:
        raise PansharpenError(f"The adapter was trained for {payload['bands']} MS bands; {bands} are selected.")
    net = _create(payload["model"], payload["bands"], payload["preset"], payload.get("guide_bands"))
    if payload["base"] is not None:
        base_path = base_weights or weights.find_by_sha256(payload.get("base_sha256") or "")
        if not base_path:
            raise PansharpenError(f"The adapter was made from the weights '{payload['base']}', which this "
                                  "plugin does not bundle: give that file as the base weights.")
        _load_base(net, base_path)
        payload["base_path"] = base_path   # in memory only: the weights file the adapter was read with
    missing = set(payload["state"]) - set(net.state_dict())
    if missing:
        raise PansharpenError(f"The adapter file does not match this version of the model ({len(missing)} "
                              "unknown tensors).")
    net.load_state_dict(payload["state"], strict=payload["base"] is None)
    if payload["model"] == "panadapter":
        net.stage = int(payload.get("stage") or 2)
    return net.eval(), payload


@user_errors
def load_pretrained(model="panadapter", bands=None, weights_path="bundled", preset="small", meta=None):
    """A model with pre-trained weights and no scene adaptation (band heads that do not match the band
    count stay at their initialisation: fine-tune for such sensors). Returns (model, card). ``meta``: the
    weights file's content when the caller has already read it."""
    path = resolve_base(weights_path, model)
    if not path:
        raise PansharpenError("This plugin has no bundled weights for this model: run panadapter:finetune on "
                              "the scene and give its adapter file.")
    meta = _read_weights(path) if meta is None else meta
    meta = meta if isinstance(meta, dict) else {}
    net = _create(model, bands or meta.get("bands"), meta.get("preset", preset))
    _load_base(net, path, meta)
    if model == "panadapter":
        net.stage = int(meta.get("stage") or 2)
    return net.eval(), (meta.get("card", {}) if isinstance(meta, dict) else {})


LABELS = {"panadapter": "PanAdapter", "ssdiff": "SSDiff", "inf": "INF"}


def _scene_model(model, info, adapter, weights_path, log, sensor=0, ms_bands=None):
    """(network, scale or None, output name) for ``model`` on the pair: the adapter's, or the pre-trained one
    when no adapter is given (only for the band count the weights were trained for)."""
    bands, label = len(info.ms_bands), LABELS[model]
    if adapter:
        base = weights_path if weights_path not in (None, "", "bundled") else None
        net, payload = load_adapted(adapter, bands=bands, base_weights=base, model=model)
        if payload["ratio"] != info.ratio:
            raise PansharpenError(f"The adapter was made for a resolution ratio of {payload['ratio']}; this pair "
                                  f"has {info.ratio}. Run panadapter:finetune on this pair.")
        log(f"Adapter {os.path.basename(adapter)}: {payload['card'].get('iterations', '?')} iterations on "
            f"a {payload['bands']}-band scene (ratio {payload['ratio']}).")
        method = payload.get("base_method")
        if method and payload.get("beats_base") is False:
            check = payload["card"].get("check")
            if check:
                log(f"This adapter did not beat its classical base {method} on the held-out part of the degraded "
                    f"pair (ERGAS {check.get('ergas_adapted', float('nan')):.4f} against "
                    f"{check.get('ergas_base', float('nan')):.4f}): the output is the {method} result.")
                return BaseOnly(bands), payload["scale"], f"{method} (the adapter's classical base)", method
            pretrained = _adapter_origin(payload)
            if pretrained and not _runs_without_adapter(pretrained, model, bands):
                pretrained = None   # weights of another band count that need an adapter: the base
            if pretrained:
                # unchecked: the pre-trained model it started from, with the zero-shot run's own check one
                # scale down, is never worse than what the user had before adapting
                log("This adapter could not be checked (its scene was too small to set a part aside): the output "
                    "is the pre-trained model's, as without an adapter.")
                return _scene_model(model, info, None, pretrained, log, sensor, ms_bands)
            log(f"This adapter could not be checked against its classical base {method} (its scene was too "
                f"small to set a part aside): the output is the {method} result.")
            return BaseOnly(bands), payload["scale"], f"{method} (the adapter's classical base)", method
        if payload["card"].get("kept") == "specialist" and _adapter_origin(payload) == "bundled":
            log("On the held-out part of the degraded pair the bundled Landsat-7 model beat this adapter: the "
                "output is what it is without an adapter.")
            return _scene_model(model, info, None, "bundled", log, sensor, ms_bands)
        if payload["card"].get("kept") == "pretrained":
            log("This adapter keeps the pre-trained model: its adaptation did not improve on it on the held-out "
                "part of the degraded pair.")
            return net, payload["scale"], f"{label} (pre-trained; the adaptation did not help)", method
        return net, payload["scale"], f"{label} (scene-adapted)", method
    path = resolve_base(weights_path, model)
    meta = _read_weights(path) if path else {}
    if path and _is_universal(meta.get("preset")):
        net, _ = load_pretrained(model, bands, path, meta=meta)
        method, scores = choose_base_method(info.pan_path, info.ms_path, sensor, ms_bands)
        log(_base_message(method, scores))
        candidates = [(net, f"{label} (pre-trained, multi-sensor)", "the multi-sensor model")]
        specialist = _specialist(model, bands, weights_path, sensor)
        if specialist is not None:
            candidates.append(specialist)
        checked = [(check_zero_shot(c[0], info, sensor, method), c) for c in candidates]
        for check, (_, _, what) in checked:
            log(f"One scale down, {what}: ERGAS {check['ergas_model']:.4f} against {check['ergas_base']:.4f} for "
                f"{method}.")
        check, (best, name, what) = min(checked, key=lambda c: c[0]["ergas_model"])
        if not check["beats_base"]:
            log(f"No pre-trained model beats {method} on this pair one scale down: the output is the {method} "
                "result. panadapter:finetune adapts the model to the pair.")
            return BaseOnly(bands), None, f"{method} (the classical base)", method
        log(f"The output is {what}'s, the best one scale down.")
        return best, None, name, method
    if not path or meta.get("bands") != bands:
        have = f"{meta.get('bands')}-band images" if path else "no sensor"
        raise PansharpenError(f"The pre-trained weights are for {have}; this MS has {bands} bands. Adapt the "
                              "model to this scene with panadapter:finetune and give its adapter file "
                              "(ADAPTER).")
    net, _ = load_pretrained(model, bands, path, meta=meta)
    return net, None, f"{label} (pre-trained)", None


def _adapter_origin(payload):
    """The weights an adapter was read with (``load_adapted``), as ``_scene_model`` takes them (``"bundled"``
    for the bundled default, so that the zero-shot run is the one a user gets without the adapter), or None
    when it was trained from scratch."""
    path = payload.get("base_path")
    if not path:
        return None
    default = resolve_base("bundled", payload.get("model", "panadapter"))
    return "bundled" if default and os.path.samefile(path, default) else path


def _runs_without_adapter(weights_path, model, bands):
    """Whether ``panadapter:panadapter`` runs these weights without an adapter on ``bands`` bands (the
    bundled or universal ones on any band count; others on their own band count only)."""
    if weights_path == "bundled":
        return True
    meta = _read_weights(weights_path)
    return _is_universal(meta.get("preset")) or meta.get("bands") == bands


def _specialist(model, bands, weights_path, sensor):
    """(network, output name, description) of the bundled Landsat-7-only PanAdapter weights for a Landsat pair
    of their band count when no other weights were asked for: the zero-shot run checks them one scale down
    beside the multi-sensor model (on the Landsat-7 test scenes they are 18-21 % better than the best classical
    method), else None. Only for Landsat: on a 6-band Sentinel-2 test scene they won one scale down and lost
    14 % at the test scale (docs/BENCHMARKS.md)."""
    from .sensors import sensor_by_index

    if model != "panadapter" or weights_path not in (None, "", "bundled"):
        return None
    if sensor_by_index(sensor).key != "landsat":
        return None
    path = str(weights.LANDSAT7_PANADAPTER)
    if not os.path.isfile(path) or _read_weights(path).get("bands") != bands:
        return None
    net, _ = load_pretrained(model, bands, path)
    return net, f"{LABELS[model]} (pre-trained, Landsat-7)", "the Landsat-7 model"


def _check_output(pan_path, ms_path, output_path):
    if not output_path:
        raise PansharpenError("No output file was given.")
    if not output_path.lower().endswith((".tif", ".tiff")):
        raise PansharpenError("The output must be a GeoTIFF file (.tif).")
    for p in (pan_path, ms_path):
        if os.path.abspath(p) == os.path.abspath(output_path):
            raise PansharpenError("The output file must not be one of the input rasters.")


# default TILE_SIZE (PAN pixels) of the two algorithms (PanAdapter: ``deep.default_tile`` of its network)
DEEP_TILE = {"panadapter": None, "ssdiff": 64}


@user_errors
def deep_job(model, pan_path, ms_path, *, adapter=None, weights_path="bundled", sensor=0, ms_bands=None,
             device="auto", steps=10, seed=0, tile_size=None, overlap=None, ensemble=1, log=None):
    """The ``DeepJob`` of ``panadapter:panadapter`` (``model="panadapter"``) or ``panadapter:ssdiff``
    (``"ssdiff"``: DDIM with ``steps``, eta 0, noise from ``seed`` anchored to the scene pixels, tiles
    overlapping by ``overlap`` PAN pixels, default a quarter of the tile, blended): the model of ``adapter``
    or, without one, the pre-trained weights (their band count only). ``write`` sharpens the whole scene,
    ``fuse_window`` a window with the same pixels (the map preview). ``tile_size`` None: the model's
    default (``deep.default_tile``)."""
    from .deep import DeepJob, default_tile

    if model not in DEEP_TILE:
        raise PansharpenError(f"'{model}' is not a pansharpening model: use one of {', '.join(DEEP_TILE)}.")
    if model == "ssdiff" and not 1 <= int(steps) <= 1000:
        raise PansharpenError("STEPS must be between 1 and 1000.")
    log = log or (lambda msg: None)
    info = raster.inspect_pair(pan_path, ms_path, ms_bands)
    net, scale, name, base_method = _scene_model(model, info, adapter, weights_path, log, sensor, ms_bands)
    tile_size = int(tile_size or DEEP_TILE[model] or default_tile(net))
    common = dict(sensor=sensor, ms_bands=ms_bands, device=device, scale=scale, tile_size=tile_size, log=log)
    if model == "panadapter":
        return DeepJob(pan_path, ms_path, net, name=name, ensemble=ensemble, base_method=base_method, **common)
    from .models.ssdiff import SSDiffSampler

    overlap = tile_size // 4 if overlap is None else int(overlap)
    return DeepJob(pan_path, ms_path, SSDiffSampler(net, steps, seed), name=f"{name}, {int(steps)} DDIM steps",
                   context=0, multiple=net.MULTIPLE, overlap=max(1, overlap // info.ratio), **common)


@user_errors
def sharpen_scene(pan_path, ms_path, output_path, *, adapter=None, weights_path="bundled", sensor=0,
                  ms_bands=None, device="auto", tile_size=None, batch=4, float32=False, ensemble=1,
                  progress=None, is_cancelled=None, log=None, scheduler=None) -> dict:
    """``panadapter:panadapter``: sharpen the pair with an adapted model (``adapter``, a file written by
    :func:`finetune_scene`) or, without one, with the pre-trained weights (their band count only);
    ``scheduler``: the address of a Dask scheduler whose workers sharpen the tiles (empty: this process)."""
    _check_output(pan_path, ms_path, output_path)
    with cluster.connect(scheduler, log, (pan_path, ms_path), deep=True) as executor:
        job = deep_job("panadapter", pan_path, ms_path, adapter=adapter, weights_path=weights_path, sensor=sensor,
                       ms_bands=ms_bands, device=device, tile_size=tile_size, ensemble=ensemble, log=log)
        return job.write(output_path, float32=float32, batch=batch, progress=progress, is_cancelled=is_cancelled,
                         executor=executor)


@user_errors
def ssdiff_scene(pan_path, ms_path, output_path, *, adapter=None, weights_path="bundled", sensor=0,
                 ms_bands=None, steps=10, seed=0, device="auto", tile_size=64, overlap=None, batch=8,
                 float32=False, progress=None, is_cancelled=None, log=None, scheduler=None) -> dict:
    """``panadapter:ssdiff``: DDIM sampling (``steps``, eta 0, noise from ``seed`` anchored to the scene
    pixels) of SSDiff, adapted (``adapter``) or pre-trained, on overlapping tiles of ``tile_size`` PAN
    pixels blended over ``overlap`` PAN pixels (default: a quarter of the tile); ``scheduler``: as in
    :func:`sharpen_scene`."""
    _check_output(pan_path, ms_path, output_path)
    with cluster.connect(scheduler, log, (pan_path, ms_path), deep=True) as executor:
        job = deep_job("ssdiff", pan_path, ms_path, adapter=adapter, weights_path=weights_path, sensor=sensor,
                       ms_bands=ms_bands, device=device, steps=steps, seed=seed, tile_size=tile_size,
                       overlap=overlap, log=log)
        return job.write(output_path, float32=float32, batch=batch, progress=progress, is_cancelled=is_cancelled,
                         executor=executor)


def save_weights(path, net, *, preset, ratio, stage, card):
    """A pre-trained checkpoint (the bundled format): what ``base_weights``/``weights_path`` accept."""
    _save(dict(model={k: v.detach().cpu() for k, v in net.state_dict().items()}, preset=preset,
               bands=net.bands, ratio=ratio, stage=stage, card=card), path)


@user_errors
def train_dataset(dataset_path, output_path, *, max_value=2047.0, iterations=2000, stage2_share=0.5,
                  init_weights=None, preset="small", batch=8, lr=1e-3, device="auto", seed=0, resume=False,
                  progress=None, is_cancelled=None, log=None) -> dict:
    """``panadapter:train``: both PanAdapter stages on a PanCollection HDF5 file (``gt, ms, lms, pan``).

    Writes a checkpoint in the bundled format; a resumable checkpoint ``<output>.ckpt.stage<N>.pt`` is kept
    beside it every 200 iterations (``resume=True`` goes on from it).
    """
    from .training.datasets import PanCollectionH5

    torch = import_torch()
    log = log or (lambda msg: None)
    if not output_path:
        raise PansharpenError("No output weights file was given.")
    if int(iterations) < 1:
        raise PansharpenError("ITERATIONS must be at least 1.")
    if not os.path.isfile(str(dataset_path)):
        raise PansharpenError(f"The dataset '{dataset_path}' does not exist.")
    try:
        data = PanCollectionH5(dataset_path, max_value)
    except OSError as exc:
        raise PansharpenError(f"'{dataset_path}' is not a readable HDF5 file: {exc}") from exc
    dev = select_device(device)
    torch.manual_seed(seed)
    net = _create("panadapter", data.bands, preset).to(dev)
    init = resolve_base(init_weights)
    if init:
        log(f"Starting from {os.path.basename(init)} ({_load_base(net, init)} tensors).")
    log(f"{len(data)} samples of {data.bands} bands, ratio {data.ratio}.")
    t0 = time.perf_counter()
    n = min(batch, len(data))
    results, _, stage = two_stages(
        net, lambda rng: data.batch(rng.choice(len(data), size=n, replace=False), rng), (net.STAGE1, net.STAGE2),
        int(iterations), stage2_share, lr=lr, device=dev, seed=seed, progress=progress,
        is_cancelled=is_cancelled, log=log, checkpoint=output_path + ".ckpt", resume=resume)
    card = dict(data=os.path.basename(str(dataset_path)), samples=len(data), max_value=max_value,
                iterations=sum(r.iterations for r in results), stage_iterations=[r.iterations for r in results],
                first_loss=results[0].first_loss, last_loss=results[-1].last_loss,
                seconds=time.perf_counter() - t0, batch=n, lr=lr, device=str(dev), init=init and os.path.basename(init))
    save_weights(output_path, net, preset=preset, ratio=data.ratio, stage=stage, card=card)
    log(f"Weights written: {output_path} (loss {card['first_loss']:.4f} -> {card['last_loss']:.4f}).")
    return dict(card, output=output_path)
