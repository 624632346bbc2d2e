"""What PanAdapter is for, on real scenes the bundled weights never saw (Wald's reduced-resolution test).

The bundled weights (``make weights``) saw eight FuseBox scenes (01-04, 06-09) among their multi-sensor training
data; these tests use scenes 10, 15 and 25 and WorldView-3, which no weights saw. Scene adaptation sees only
the reduced pair (it degrades it once more to learn); the original MS is the reference it never sees.
"""
import pytest

from conftest import ergas_sam, reduced_pair
from panadapter_qgis.backend import weights
from panadapter_qgis.backend.adapt import finetune_scene, sharpen_scene
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
def test_landsat7_specialist_weights_beat_mtf_glp_fs_on_an_unseen_landsat7_scene(data_dir, tmp_path):
    """The earlier Landsat-7-only weights, still bundled (``weights.LANDSAT7_PANADAPTER``, given as WEIGHTS): no
    adaptation, a held-out FuseBox scene of their sensor."""
    pan, ms, reference, ratio, classical = reduced_pair(data_dir, tmp_path, "landsat7_fusebox/scene_15", 8,
                                                        ["mtf_glp_fs"])
    out = tmp_path / "panadapter.tif"
    sharpen_scene(pan, ms, str(out), weights_path=str(weights.LANDSAT7_PANADAPTER), sensor=8, float32=True,
                  device="cpu")
    ergas, sam = ergas_sam(reference, out, ratio)
    assert ergas < 0.9 * classical["mtf_glp_fs"][0], (ergas, classical)
    assert sam < classical["mtf_glp_fs"][1], (sam, classical)


@pytest.mark.slow
def test_zero_shot_picks_the_landsat7_weights_where_they_win_one_scale_down(data_dir, tmp_path):
    """Without WEIGHTS, a 6-band pair checks both bundled models one scale down and keeps the better: on a
    held-out Landsat-7 scene the Landsat-7 model, which beats MTF-GLP-FS by more than 10 % ERGAS there."""
    pan, ms, reference, ratio, classical = reduced_pair(data_dir, tmp_path, "landsat7_fusebox/scene_15", 8,
                                                        ["mtf_glp_fs"])
    out, logs = tmp_path / "panadapter.tif", []
    sharpen_scene(pan, ms, str(out), sensor=8, float32=True, device="cpu", log=logs.append)
    assert any("the Landsat-7 model: ERGAS" in line for line in logs), logs
    assert any(line.startswith("The output is the Landsat-7 model's") for line in logs), logs
    ergas, sam = ergas_sam(reference, out, ratio)
    assert ergas < 0.9 * classical["mtf_glp_fs"][0], (ergas, classical)


def _adapted_against_base(data_dir, tmp_path, name, sensor, iterations, checked=True):
    pan, ms, reference, ratio, classical = reduced_pair(data_dir, tmp_path, name, sensor, ["upsample"])
    adapter, out = str(tmp_path / "a.pt"), tmp_path / "panadapter.tif"
    card = finetune_scene(pan, ms, adapter, sensor=sensor, iterations=iterations, device="cpu")
    assert card["last_loss"] < card["first_loss"]
    # a reduced MS too small to spare a quarter (WorldView-3's is 35 x 36) is adapted on all of it, unchecked
    assert (card["check"]["pixels"] > 0) if checked else card["check"] is None
    sharpen_scene(pan, ms, str(out), adapter=adapter, sensor=sensor, float32=True, device="cpu")
    base = tmp_path / "base.tif"
    pansharpen(pan, ms, str(base), card["base_method"], sensor=sensor, float32=True)
    return ergas_sam(reference, out, ratio), ergas_sam(reference, base, ratio), classical, card


@pytest.mark.slow
def test_scene_adapted_panadapter_is_never_worse_than_its_base_on_an_unseen_scene(data_dir, tmp_path):
    """FuseBox scene 10, adapted on its own reduced pair from the multi-sensor weights: the adapter is checked on
    the held-out quarter of the degraded pair; what panadapter:panadapter gives is within 1 % of the classical
    base's ERGAS and SAM, or better. (Measured 2026-12-07 with 600 iterations: ERGAS 4.499, against 4.387 for
    the best classical method: the multi-sensor start does not yet reach what the Landsat-7 weights reached,
    README.)"""
    (ergas, sam), (base_ergas, base_sam), _, card = _adapted_against_base(
        data_dir, tmp_path, "landsat7_fusebox/scene_10", 8, 200)
    assert ergas <= 1.01 * base_ergas and sam <= 1.01 * base_sam, (ergas, sam, base_ergas, base_sam, card["check"])


@pytest.mark.slow
def test_adaptation_to_another_sensor_sharpens_worldview3(data_dir, tmp_path):
    """8 bands at ratio 4: the adapted model more than halves upsampling's ERGAS and is never worse than its
    classical base (measured 2026-12-07 with 600 iterations: ERGAS below the best classical method's 2.537,
    SAM 3.566 against Brovey's 3.353)."""
    (ergas, sam), (base_ergas, base_sam), classical, _ = _adapted_against_base(
        data_dir, tmp_path, "wv3_cristianics", 2, 200, checked=False)
    assert ergas < 0.5 * classical["upsample"][0], (ergas, classical["upsample"])
    assert ergas <= 1.01 * base_ergas and sam <= 1.01 * base_sam, (ergas, sam, base_ergas, base_sam)


@pytest.mark.slow
def test_adapting_a_landsat7_pair_keeps_the_landsat7_weights_where_they_win(data_dir, tmp_path):
    """A held-out Landsat-7 scene's reduced pair, adapted from the multi-sensor weights: the check on the held-out
    quarter also scores the bundled Landsat-7 weights (which the zero-shot run checks one scale down), finds them
    better than the adapted model, the pre-trained one and the base, and records it; panadapter:panadapter with
    that adapter then gives exactly what it gives without one, and says why."""
    import numpy as np
    from osgeo import gdal

    pan, ms, reference, ratio, _ = reduced_pair(data_dir, tmp_path, "landsat7_fusebox/scene_15", 8, [])
    adapter, logs = str(tmp_path / "a.pt"), []
    card = finetune_scene(pan, ms, adapter, sensor=8, iterations=30, device="cpu", log=logs.append)
    check = card["check"]
    assert card["kept"] == "specialist", check
    assert check["ergas_specialist"] < min(check["ergas_adapted"], check["ergas_pretrained"], check["ergas_base"])
    assert any("the bundled Landsat-7 model is the best" in line for line in logs)
    with_adapter, without, logs = tmp_path / "a.tif", tmp_path / "z.tif", []
    sharpen_scene(pan, ms, str(with_adapter), adapter=adapter, sensor=8, float32=True, device="cpu",
                  log=logs.append)
    assert any("the bundled Landsat-7 model beat this adapter" in line for line in logs)
    sharpen_scene(pan, ms, str(without), sensor=8, float32=True, device="cpu")
    a, b = (gdal.Open(str(p)).ReadAsArray() for p in (with_adapter, without))
    np.testing.assert_array_equal(a, b)
