"""PanAdapter: ``create_model(bands, preset)`` with presets ``small`` and ``paper``."""
from .model import PRESETS, PanAdapter, PanAdapterConfig, create_model  # noqa: F401
