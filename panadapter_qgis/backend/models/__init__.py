"""The deep models (``nn.Module``s only): ``panadapter``, ``ssdiff``, ``inf``."""


def set_trainable(module, prefixes):
    """``requires_grad`` only for the parameters whose name starts with one of ``prefixes``; returns them."""
    params = []
    for name, p in module.named_parameters():
        p.requires_grad_(name.startswith(tuple(prefixes)))
        if p.requires_grad:
            params.append(p)
    return params


class FixedModel:
    """Base of the stand-ins that ``deep.DeepJob`` runs in place of a network (no weights: ``to`` and ``eval``
    do nothing); a subclass defines ``__call__(ms, lms, pan, ratio, ...)``."""

    def __init__(self, bands):
        self.bands = bands

    def to(self, device):
        return self

    def eval(self):
        return self
