"""Classical pansharpening methods, one module per family, and the registry the provider reads."""
from dataclasses import dataclass

from .bdsd import BDSDPC
from .component_substitution import GIHS, GS, GSA, PCA, Brovey
from .mra import AWLP, MTFGLP, MTFGLPFS, MTFGLPHPM
from .pracs import PRACS
from .upsample import Upsample

_CLASSES = (Upsample, Brovey, GIHS, GS, GSA, PCA, MTFGLP, MTFGLPHPM, MTFGLPFS, BDSDPC, AWLP, PRACS)


@dataclass(frozen=True)
class MethodSpec:
    id: str
    name: str
    group: str
    help: str
    min_bands: int


METHODS = {c.id: MethodSpec(c.id, c.name, c.group, c.help, c.min_bands) for c in _CLASSES}


def create_method(method_id: str):
    for c in _CLASSES:
        if c.id == method_id:
            return c()
    from ..errors import PansharpenError
    raise PansharpenError(f"Unknown pansharpening method '{method_id}'. Known: {', '.join(METHODS)}.")
