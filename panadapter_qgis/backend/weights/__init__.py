"""Bundled weights: small checkpoints trained by ``make weights`` (``scripts/train_weights.py``).

Each model has ``<name>.pt`` (``torch.save`` of ``{"model": state_dict, "preset": ..., "bands": ...}``,
read with ``weights_only=True``) and ``<name>.json``, its card (data, iterations, device, metrics).
"""
import hashlib
import json
from pathlib import Path
from typing import Optional

WEIGHTS_DIR = Path(__file__).resolve().parent
REGISTRY = {"panadapter": "panadapter_fast", "ssdiff": "ssdiff_small", "inf": "inf_small"}


def bundled(model: str = "panadapter") -> Optional[str]:
    """Path of the bundled checkpoint of ``model``, or None when the plugin ships none."""
    name = REGISTRY.get(model)
    path = WEIGHTS_DIR / f"{name}.pt" if name else None
    return str(path) if path is not None and path.exists() else None


def card(model: str = "panadapter") -> dict:
    """The card of the bundled checkpoint ({} when there is none)."""
    name = REGISTRY.get(model)
    path = WEIGHTS_DIR / f"{name}.json" if name else None
    if path is None or not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


# other bundled checkpoints, given by path (WEIGHTS): the Landsat-7-only PanAdapter weights of the small preset
# (6 bands, ratio 2), the default until 2026-12-06 and still the better start on Landsat-7 scenes
LANDSAT7_PANADAPTER = WEIGHTS_DIR / "panadapter_small.pt"


def find_by_sha256(digest: str) -> Optional[str]:
    """The bundled checkpoint (any ``.pt`` of this folder) with this content hash, or None."""
    for path in sorted(WEIGHTS_DIR.glob("*.pt")):
        if sha256(path) == digest:
            return str(path)
    return None
