"""Scene-adaptive fine-tuning: adapt a deep model to the user's own PAN/MS pair, with no training set.

The pair is degraded by Wald's protocol (``training.datasets.SceneCrops``): the model learns to rebuild the
MS from the degraded MS and PAN, then sharpens the full-resolution pair. Only the parameter groups of
scene adaptation are trained (PanAdapter: adapters, projections, INR tail and the band-dependent heads);
the backbones stay frozen. The result is an *adapter file* that ``DeepJob``/``panadapter:panadapter`` reads.

Adapter file (``torch.save``, read with ``weights_only=True``): ``format``, ``version``, ``model``,
``preset``, ``bands``, ``ratio``, ``sensor``, ``scale`` (the scene normalisation), ``base`` (the weights it
was adapted from, or ``None``), ``state`` (the tensors it changed; the whole model when there was no base),
``card`` (iterations, seconds, losses).
"""
import os
import time
from typing import Callable, Optional


from .device import import_torch, select_device
from .errors import PansharpenError, user_errors
from .training.datasets import SceneCrops
from .training.trainer import l1_step, train

FORMAT = "panadapter-adapter"
MODELS = ("panadapter",)


def _create(model, bands, preset):
    if model != "panadapter":
        raise PansharpenError(f"Scene adaptation of '{model}' is not available; available: {', '.join(MODELS)}.")
    from .models.panadapter import create_model
    return create_model(bands, preset)


def _load_base(net, base_path):
    torch = import_torch()
    try:
        state = torch.load(base_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise PansharpenError(f"The weights file '{base_path}' cannot be read: {exc}") from exc
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
    return loaded


@user_errors
def finetune_scene(pan_path, ms_path, output_path, *, model="panadapter", preset="small", sensor=0,
                   ms_bands=None, iterations=300, minutes=None, device="auto", base_weights=None, patch=64,
                   batch=8, lr=1e-3, seed=0, progress: Optional[Callable] = None,
                   is_cancelled: Optional[Callable] = None, log: Optional[Callable] = None) -> dict:
    """Adapt ``model`` to the pair and write the adapter file ``output_path``; returns its card."""
    torch = import_torch()
    log = log or (lambda msg: None)
    if not output_path:
        raise PansharpenError("No output adapter file was given.")
    if int(iterations) < 1:
        raise PansharpenError("ITERATIONS must be at least 1.")
    dev = select_device(device)
    crops = SceneCrops(pan_path, ms_path, sensor=sensor, ms_bands=ms_bands, patch=patch)
    torch.manual_seed(seed)
    net = _create(model, crops.bands, preset).to(dev)
    base = None
    if base_weights:
        n = _load_base(net, base_weights)
        base = os.path.basename(base_weights)
        log(f"Loaded {n} tensors from {base}.")
        groups = net.ADAPT + net.BAND_DEPENDENT
    else:
        log("No pre-trained weights given: every parameter is trained on the scene.")
        groups = ("",)
    params = net.set_trainable(groups)
    log(f"Adapting {sum(p.numel() for p in params):,} parameters on {len(crops.windows)} windows of the "
        f"degraded scene (ratio {crops.ratio}, scale {crops.scale:.4g}).")
    t0 = time.perf_counter()
    result = train(net, lambda rng: crops.batch(batch, rng), l1_step(), params, iterations=int(iterations),
                   lr=lr, minutes=minutes, device=dev, seed=seed, progress=progress, is_cancelled=is_cancelled,
                   log=log)
    names = {n for n, p in net.named_parameters() if p.requires_grad}
    state = {k: v.detach().cpu() for k, v in net.state_dict().items() if base is None or k in names}
    card = dict(result.to_dict(), seconds=time.perf_counter() - t0, patch=patch, batch=batch, lr=lr,
                trained_parameters=int(sum(p.numel() for p in params)))
    payload = dict(format=FORMAT, version=1, model=model, preset=preset, bands=crops.bands, ratio=crops.ratio,
                   sensor=int(sensor), scale=float(crops.scale), base=base, state=state, card=card)
    tmp = output_path + ".part"
    try:
        torch.save(payload, tmp)
        os.replace(tmp, output_path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise PansharpenError(f"The adapter file '{output_path}' cannot be written: {exc}") from exc
    log(f"Adapter written: {output_path} ({result.iterations} iterations, loss {result.first_loss:.4f} -> "
        f"{result.last_loss:.4f}).")
    return dict(card, output=output_path)


@user_errors
def load_adapted(adapter_path, bands=None, base_weights=None):
    """The model of an adapter file, ready for inference; returns (model, payload)."""
    torch = import_torch()
    try:
        payload = torch.load(adapter_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise PansharpenError(f"The adapter file '{adapter_path}' cannot be read: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PansharpenError(f"'{adapter_path}' is not an adapter file written by panadapter:finetune.")
    if bands is not None and payload["bands"] != bands:
        raise PansharpenError(f"The adapter was trained for {payload['bands']} MS bands; {bands} are selected.")
    net = _create(payload["model"], payload["bands"], payload["preset"])
    if payload["base"] is not None:
        if not base_weights:
            raise PansharpenError(f"The adapter needs its base weights '{payload['base']}'.")
        _load_base(net, base_weights)
    missing = set(payload["state"]) - set(net.state_dict())
    if missing:
        raise PansharpenError(f"The adapter file does not match this version of the model ({len(missing)} "
                              "unknown tensors).")
    net.load_state_dict(payload["state"], strict=payload["base"] is None)
    return net.eval(), payload
