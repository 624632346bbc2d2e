"""INF (implicit neural feature fusion of an HSI and an MSI): ``create_model(bands, guide_bands, preset)``."""
from .net import PRESETS, INFConfig, INFN, create_model  # noqa: F401
