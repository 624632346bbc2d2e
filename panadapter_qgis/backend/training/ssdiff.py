"""SSDiff training: the diffusion loss, EMA weights and L-BAF, all through the one loop of ``trainer.train``.

L-BAF (METHODS.md §1b.5): after the whole network has converged, the branches are fine-tuned *alternately*:
for ``switch`` iterations the spectral branch learns (spatial branch frozen, the spatial attention term T^spa
detached), then the spatial branch (spectral frozen, T^spe detached), and so on. The shared down/up modules
and the time MLP stay frozen. ``LBAF`` is that schedule; ``EMA`` keeps the exponential moving average of the
trained weights, which is what inference uses.
"""
from typing import Optional

import torch

from ..models.ssdiff import diffusion_loss
from ..models.ssdiff.diffusion import T, ddim_timesteps, q_sample
from .trainer import train

PHASES = ("spectral", "spatial")


class EMA:
    """Exponential moving average of the trainable parameters, with the usual warm-up
    (decay = min(``decay``, (1 + n) / (10 + n)) at update n) so that short runs are not dominated by the
    initial weights."""

    def __init__(self, net, decay=0.999):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
        self.updates = 0

    @torch.no_grad()
    def update(self, net):
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for n, p in net.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(d).add_(p.detach(), alpha=1 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, net):
        own = dict(net.named_parameters())
        for n, v in self.shadow.items():
            own[n].copy_(v)


class Hooks:
    """``trainer.train`` hooks: the L-BAF switch (when ``switch`` is set) before each step, EMA after."""

    def __init__(self, net, ema: EMA, switch: Optional[int] = None, first: str = "spectral"):
        self.net, self.ema, self.switch = net, ema, switch
        self.order = PHASES if first == "spectral" else PHASES[::-1]
        self.mode = None
        self.phases = []   # (iteration, mode) of each switch, for the card

    def phase(self, it):
        return self.order[(it // self.switch) % 2] if self.switch else None

    def before(self, it):
        mode = self.phase(it)
        if mode != self.mode:
            self.net.set_trainable(self.net.BRANCHES[mode])
            self.net.set_lbaf(mode)
            self.mode = mode
            self.phases.append((it, mode))

    def after(self, it):
        self.ema.update(self.net)


def ssdiff_step(sam_weight=0.0, extra_loss=None):
    def step(net, batch):
        loss = diffusion_loss(net, batch, sam_weight=sam_weight)
        return loss if extra_loss is None else loss + extra_loss(net, batch)
    return step


def sampled_estimate(net, ms, lms, pan, steps=10):
    """The HRMS estimate ``LMS + x0`` at one timestep of a ``steps``-step DDIM chain, with gradients.

    Full-resolution patches have no target x0, so the noisy input is built as sampling builds it: from the
    network's own (detached) first estimate at t = T - 1 from pure noise, noised to a timestep drawn from the
    chain. The full-resolution losses then see what the sampler's steps see.
    """
    b = lms.shape[0]
    with torch.no_grad():
        first = net(torch.randn_like(lms), torch.full((b,), T - 1, device=lms.device, dtype=torch.long),
                    ms, lms, pan)
    times = torch.tensor(ddim_timesteps(steps), device=lms.device)
    t = times[torch.randint(0, len(times), (b,), device=lms.device)]
    return lms + net(q_sample(first.float(), t, torch.randn_like(lms)), t, ms, lms, pan)


def train_ssdiff(net, batches, iterations, *, lbaf_switch=None, ema_decay=0.999, lr=1e-3, sam_weight=0.0,
                 minutes=None, extra_loss=None,
                 device=None, seed=0, progress=None, is_cancelled=None, log=None, checkpoint=None, resume=False):
    """Train ``net`` (SSNet) with the diffusion loss. ``lbaf_switch`` None: every parameter learns (the main
    training); an integer: L-BAF, switching branch every that many iterations. The EMA weights are copied
    into ``net`` at the end. ``extra_loss(net, batch)``, when given, is added to the diffusion loss (the
    full-resolution terms of scene adaptation). Returns (TrainResult, names of the trained parameters, phases)."""
    names = (tuple(p for ps in net.BRANCHES.values() for p in ps) if lbaf_switch else ("",))
    params = net.set_trainable(names)
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    ema = EMA(net, ema_decay)
    hooks = Hooks(net, ema, lbaf_switch)
    if log:
        what = f"L-BAF, switching branch every {lbaf_switch} iterations" if lbaf_switch else "all parameters"
        log(f"SSDiff: {iterations} iterations, {sum(p.numel() for p in params):,} trainable parameters ({what}).")
    try:
        result = train(net, batches, ssdiff_step(sam_weight, extra_loss), params, iterations=iterations, lr=lr,
                       minutes=minutes, device=device, seed=seed, progress=progress, is_cancelled=is_cancelled, log=log,
                       checkpoint=checkpoint, resume=resume, hooks=hooks)
    finally:
        net.set_lbaf(None)
    if ema.updates:
        ema.copy_to(net)
    net.set_trainable(())
    return result, trained, hooks.phases
