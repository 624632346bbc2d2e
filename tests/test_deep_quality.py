"""What PanAdapter is for, on real scenes the bundled weights never saw (Wald's reduced-resolution test).

The bundled weights (``make weights``) saw eight FuseBox scenes (01-04, 06-09) among their multi-sensor training
data; these tests use scenes 10, 15 and 25 and WorldView-3, which no weights saw. Scene adaptation sees only
the reduced pair (it degrades it once more to learn); the original MS is the reference it never sees.
"""
import pytest

from conftest import ergas_sam, reduced_pair
from panadapter_qgis.backend import weights
from panadapter_qgis.backend.adapt import finetune_scene, sharpen_scene
from panadapter_qgis.backend.classical import METHODS
from panadapter_qgis.backend.pipeline import pansharpen

pytestmark = pytest.mark.skipif(weights.bundled() is None, reason="no bundled weights (make weights)")


@pytest.mark.slow
@pytest.mark.parametrize("scene", ["scene_15", "scene_25"])
def test_bundled_weights_are_never_worse_than_their_classical_base(data_dir, tmp_path, scene):
    """No adaptation at all: the bundled multi-sensor weights on a held-out Landsat-7 scene start from the
    classical method chosen on the pair degraded once more, check themselves there, and end within 1 % of that
    method's ERGAS and SAM on Wald's reduced pair (or better)."""
    pan, ms, reference, ratio, _ = reduced_pair(data_dir, tmp_path, f"landsat7_fusebox/{scene}", 8, [])
    out, logs = tmp_path / "panadapter.tif", []
    sharpen_scene(pan, ms, str(out), sensor=8, float32=True, device="cpu", log=logs.append)
    method = next(line for line in logs if line.startswith("Classical base")).split()[2].rstrip(",")
    assert any(line.startswith("One scale down") for line in logs)
    base = tmp_path / "base.tif"
    pansharpen(pan, ms, str(base), method, sensor=8, float32=True)
    ergas, sam = ergas_sam(reference, out, ratio)
    base_ergas, base_sam = ergas_sam(reference, base, ratio)
    assert ergas <= 1.01 * base_ergas and sam <= 1.01 * base_sam, (ergas, sam, method, base_ergas, base_sam)


@pytest.mark.slow
def test_scene_adapted_panadapter_beats_every_classical_method_on_an_unseen_scene(data_dir, tmp_path):
    """FuseBox scene 10: adapted on its own reduced pair, PanAdapter beats the best of the provider's twelve
    classical methods on SAM and on ERGAS by more than 5 % (issue 4 asks for 10 % on average over the scenes:
    ``make bench-quality``, README). The full-resolution spatial term (``adapt.SPATIAL_WEIGHT``, 0.3) costs
    reduced-resolution ERGAS for full-resolution HQNR: here 3.99 against 3.48 without it and 4.39 for the best
    classical method; measured 3.61 at weight 0.1, which loses Sentinel-2 T33UUB's HQNR (0.979
    against PRACS's 0.989)."""
    pan, ms, reference, ratio, classical = reduced_pair(data_dir, tmp_path, "landsat7_fusebox/scene_10", 8, METHODS)
    adapter, out = str(tmp_path / "a.pt"), tmp_path / "panadapter.tif"
    card = finetune_scene(pan, ms, adapter, sensor=8, iterations=600, device="cpu")
    assert card["last_loss"] < card["first_loss"]
    sharpen_scene(pan, ms, str(out), adapter=adapter, sensor=8, float32=True, device="cpu")
    ergas, sam = ergas_sam(reference, out, ratio)
    best_ergas = min(v[0] for v in classical.values())
    best_sam = min(v[1] for v in classical.values())
    assert ergas < 0.95 * best_ergas, (ergas, classical)
    assert sam < best_sam, (sam, classical)


@pytest.mark.slow
def test_adaptation_to_another_sensor_sharpens_worldview3(data_dir, tmp_path):
    """8 bands at ratio 4 from 6-band ratio-2 weights: new band heads learn on a 35 x 36 reduced MS, with the
    full-resolution spectral consistency term. The adapted model more than halves upsampling's ERGAS and
    beats the best classical ERGAS and SAM (bench: 2.41 against MTF-GLP-HPM's 2.54, SAM 3.32 against
    Brovey's 3.35; without the consistency term it was 2.51 and 3.46)."""
    pan, ms, reference, ratio, classical = reduced_pair(data_dir, tmp_path, "wv3_cristianics", 2, METHODS)
    adapter, out = str(tmp_path / "a.pt"), tmp_path / "panadapter.tif"
    finetune_scene(pan, ms, adapter, sensor=2, iterations=600, device="cpu")
    sharpen_scene(pan, ms, str(out), adapter=adapter, sensor=2, float32=True, device="cpu")
    ergas, sam = ergas_sam(reference, out, ratio)
    assert ergas < 0.5 * classical["upsample"][0], (ergas, classical["upsample"])
    assert ergas < min(v[0] for v in classical.values()), (ergas, classical)
    assert sam < min(v[1] for v in classical.values()), (sam, classical)
