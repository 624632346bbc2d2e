"""The one training loop: stages 1 and 2 of PanAdapter, scene adaptation, and backbone pre-training all use it.

Adam with a cosine-decayed learning rate, L1 loss on the normalised images, a budget in iterations and/or
minutes, progress and cancel callbacks, and resumable checkpoints with a small JSON card beside them.
"""
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..device import channels_last, cpu_lanes, map_lanes, torch_owns_the_cores
from ..errors import Cancelled


@dataclass
class TrainResult:
    iterations: int
    seconds: float
    first_loss: float
    last_loss: float
    losses: list = field(default_factory=list)
    check: Optional[dict] = None   # an adaptation's check against its starting point, when it makes one

    def to_dict(self):
        d = asdict(self)
        d.pop("losses")
        return d


@torch_owns_the_cores()
def train(model, batches: Callable, step: Callable, params: Sequence[torch.nn.Parameter], *, iterations: int,
          lr: float = 1e-3, minutes: Optional[float] = None, device=None, seed: int = 0,
          progress: Optional[Callable] = None, is_cancelled: Optional[Callable] = None,
          log: Optional[Callable] = None, checkpoint: Optional[str] = None, resume: bool = False,
          checkpoint_every: int = 200, card: Optional[dict] = None, hooks=None) -> TrainResult:
    """Optimise ``params`` for ``iterations`` steps (or until ``minutes`` have passed).

    ``batches(rng)`` returns a dict of tensors; ``step(model, batch)`` returns the scalar loss. ``hooks``
    (optional) has ``before(iteration)`` (e.g. switch what trains: a parameter whose ``requires_grad`` is
    off gets no gradient and Adam leaves it alone) and ``after(iteration)`` (e.g. an EMA update).
    A ``step`` whose loss is a mean over the batch's samples says so (``step.per_sample_mean = True``): on a
    CPU its batch is then shared among lanes (``lane_gradients``).
    """
    device = device or torch.device("cpu")
    layout = torch.channels_last if channels_last(device) else torch.contiguous_format
    model.to(memory_format=layout)
    params = [p for p in params if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=lr)
    start_it = 0
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    if resume and checkpoint and os.path.exists(checkpoint):
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"], strict=False)
        optimiser.load_state_dict(state["optimizer"])
        start_it = int(state["iteration"])
        rng = np.random.default_rng(seed + start_it)
        if log:
            log(f"Resumed from {checkpoint} at iteration {start_it}.")
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda i: 0.5 * (1 + math.cos(math.pi * min(1.0, (i + start_it) / max(1, iterations)))))
    t0 = time.perf_counter()
    losses = []
    model.train()
    it = start_it
    split = getattr(step, "per_sample_mean", False) and cpu_lanes(device) > 1
    pool = ThreadPoolExecutor(cpu_lanes(device), thread_name_prefix="pan-lane") if split else None
    threads = torch.get_num_threads()
    try:
        for it in range(start_it, iterations):
            if is_cancelled is not None and is_cancelled():
                raise Cancelled("Training was cancelled; no adapter file was written.")
            if minutes is not None and time.perf_counter() - t0 > 60 * minutes:
                if log:
                    log(f"Time budget of {minutes:g} min reached after {it - start_it} iterations.")
                break
            if hooks is not None:
                hooks.before(it)
            batch = {k: v.to(device).contiguous(memory_format=layout) if v.dim() == 4 else v.to(device)
                     for k, v in batches(rng).items()}
            optimiser.zero_grad(set_to_none=True)
            lanes = cpu_lanes(device, _batch_size(batch)) if split else 1
            if lanes > 1:
                loss = lane_gradients(model, step, batch, params, lanes, pool)
            else:
                loss = step(model, batch)
                loss.backward()
            optimiser.step()
            schedule.step()
            if hooks is not None:
                hooks.after(it)
            losses.append(float(loss.detach()))
            if progress is not None:
                progress((it + 1) / iterations)
            if log and (it + 1) % 50 == 0:
                log(f"iteration {it + 1}/{iterations}: loss {np.mean(losses[-50:]):.5f}")
            if checkpoint and (it + 1) % checkpoint_every == 0:
                save_checkpoint(checkpoint, model, optimiser, it + 1, card)
        else:
            it = iterations - 1
    finally:
        if pool is not None:
            pool.shutdown()
            torch.set_num_threads(threads)   # the default that threads started later take
    model.eval()
    done = it + 1 if losses else start_it
    if checkpoint:
        save_checkpoint(checkpoint, model, optimiser, done, card)
    tail = losses[-20:] or [float("nan")]
    return TrainResult(done, time.perf_counter() - t0, losses[0] if losses else float("nan"),
                       float(np.mean(tail)), losses)


def _batch_size(batch):
    return max((v.shape[0] for v in batch.values() if torch.is_tensor(v) and v.dim() == 4), default=1)


def lane_gradients(model, step, batch, params, lanes, pool):
    """The gradient of ``step``'s loss (a mean over the samples) on ``batch``, computed in ``lanes`` threads
    with their share of torch's threads (one each on 2 cores; ``device.map_lanes``), each on a share of the
    samples (its loss weighted by its share), and summed in a fixed order into the parameters' ``grad``: the
    gradient of the whole batch within float rounding, and the same at every run. Returns the batch's loss
    (detached). On a CPU the small operations of these models leave two threads waiting for each other; two
    lanes keep both cores busy (docs/BENCHMARKS.md)."""
    n = _batch_size(batch)
    params = [p for p in params if p.requires_grad]   # a hook may have switched some off

    def lane(a, b):
        part = {k: v[a:b] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v for k, v in batch.items()}
        loss = step(model, part) * ((b - a) / n)
        return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)

    done = map_lanes(pool, lane, n, lanes, torch.get_num_threads())
    for j, p in enumerate(params):
        grads = [g[j] for _, g in done if g[j] is not None]
        if grads:
            total = grads[0]
            for g in grads[1:]:
                total = total + g
            p.grad = total
    return sum(loss for loss, _ in done)


def save_checkpoint(path, model, optimiser, iteration, card=None):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimiser.state_dict(), "iteration": iteration}, tmp)
    os.replace(tmp, path)
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(dict(card or {}, iteration=iteration), f, indent=1)


def spectral_angle(pred, gt, eps=1e-8):
    """Mean angle (radians) between predicted and true pixel spectra (B, C, H, W)."""
    cos = (pred * gt).sum(1) / (pred.norm(dim=1) * gt.norm(dim=1) + eps)
    return torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6)).mean()


def l1_step(stage=None, sam_weight=0.0):
    """Loss of PanAdapter on a batch: L1 between the prediction and ``gt`` (plus ``sam_weight`` times the
    mean spectral angle, when given)."""
    def step(model, b):
        ratio = b["lms"].shape[-1] // b["ms"].shape[-1]
        extra = {"base": b["base"]} if "base" in b else {}
        pred = model(b["ms"], b["lms"], b["pan"], ratio, stage=stage, **extra)
        loss = torch.nn.functional.l1_loss(pred, b["gt"])
        if sam_weight:
            loss = loss + sam_weight * spectral_angle(pred, b["gt"])
        return loss
    step.per_sample_mean = True   # L1 and the angle are means over samples of one size
    return step
