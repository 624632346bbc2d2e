"""SSDiff: ``create_model(bands, preset)`` (the SSNet denoiser) and its diffusion (``diffusion``)."""
from .diffusion import SSDiffSampler, ddim_sample, diffusion_loss, noise_field  # noqa: F401
from .net import PRESETS, SSDiffConfig, SSNet, create_model  # noqa: F401
