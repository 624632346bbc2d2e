"""EXP: the MS interpolated to the PAN grid with the toolbox 23-tap interpolator (the baseline)."""
from .base import ClassicalMethod


class Upsample(ClassicalMethod):
    id = "upsample"
    name = "Upsample (23-tap interpolation, EXP)"
    help = ("Interpolates the MS onto the PAN grid with the 23-tap filter of the standard pansharpening "
            "toolbox (EXP). It adds no PAN detail: it is the baseline every sharpening method must beat.")
    apply_keys = ("ms_up",)

    def apply(self, ctx, params):
        return ctx["ms_up"]
