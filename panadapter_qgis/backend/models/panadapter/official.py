"""Load the official pre-trained files by key and shape: ``edsr_baseline_x2-1bc95232.pt`` (EDSR-PyTorch) into
both CNN bodies and ``IPT_pretrain.pt`` (IPT's ``body``) into the ViT (paper preset).

EDSR keys ``body.{i}.body.{0,2}.*`` and ``body.{n}.*`` map to ``sspen.{spectral,spatial}.cnn.body...``; IPT
keys ``body.*`` map to ``vit.*``. Heads, tails and upsamplers of the originals have no counterpart (their
band counts and tasks differ) and are reported as skipped, like any tensor whose shape does not match.
"""
import torch


def _load_file(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def map_edsr(state):
    out = {}
    for key, value in state.items():
        if key.startswith("body."):
            for branch in ("spectral", "spatial"):
                out[f"sspen.{branch}.cnn.{key}"] = value
    return out


def map_ipt(state):
    return {"vit." + key[len("body."):]: value for key, value in state.items() if key.startswith("body.")}


def load_by_shape(model, mapped):
    """Copy every mapped tensor whose key exists with the same shape; returns (loaded, skipped) key lists."""
    own = model.state_dict()
    loaded, skipped = [], []
    with torch.no_grad():
        for key, value in mapped.items():
            if key in own and tuple(own[key].shape) == tuple(value.shape):
                own[key].copy_(value)
                loaded.append(key)
            else:
                skipped.append(key)
    return loaded, skipped


def load_official(model, edsr_path=None, ipt_path=None):
    """Load whichever official files are given; returns {'loaded': [...], 'skipped': [...]}."""
    loaded, skipped = [], []
    for path, mapper in ((edsr_path, map_edsr), (ipt_path, map_ipt)):
        if path:
            a, b = load_by_shape(model, mapper(_load_file(path)))
            loaded += a
            skipped += b
    return {"loaded": loaded, "skipped": skipped}
