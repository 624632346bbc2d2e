"""Issue 27: a PanAdapter for any sensor, never worse than the classical methods.

The universal preset adds a residual to the classical base method chosen on the pair degraded by Wald's protocol;
the residual starts at zero, an adaptation is checked on a part of the degraded pair that it did not train on,
and an adapter that does not beat its base gives the base. Real scenes of ``../shared/data``.
"""
import json

import numpy as np
import pytest
from osgeo import gdal

from conftest import fusebox_crop
from panadapter_qgis.backend import weights
from panadapter_qgis.backend.adapt import finetune_scene, load_adapted, save_weights, sharpen_scene
from panadapter_qgis.backend.classical_base import CANDIDATES, choose
from panadapter_qgis.backend.models.panadapter import PRESETS, create_model
from panadapter_qgis.backend.pipeline import pansharpen


BUNDLED_UNIVERSAL = PRESETS.get(weights.card("panadapter").get("preset"), PRESETS["small"]).universal


def _read(path):
    return gdal.Open(str(path)).ReadAsArray().astype(np.float64)


@pytest.fixture(scope="module")
def quickbird(data_dir):
    """QuickBird full-resolution test pair of pretraining/ (4 bands, ratio 4, 11-bit, MS 256 x 256), which no
    bundled weights were fitted on."""
    d = data_dir / "pretraining" / "qb_abfnet" / "fr_test_0"
    if not (d / "pan.tif").is_file():
        pytest.skip("pretraining data not found")
    return str(d / "pan.tif"), str(d / "ms.tif")


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("untrained") / "universal.pt"
    torch_net = create_model(4, "universal")
    save_weights(str(path), torch_net, preset="universal", ratio=None, stage=2, card={})
    return str(path)


def test_base_method_is_chosen_on_the_degraded_pair(quickbird):
    pan, ms = quickbird
    method, scores = choose(pan, ms, sensor=3)
    assert set(scores) == set(CANDIDATES)
    assert method == min(scores, key=scores.get)
    assert all(np.isfinite(v) and v > 0 for v in scores.values())


@pytest.mark.parametrize("bands", [3, 5, 8])
def test_an_untrained_universal_model_gives_exactly_its_classical_base(data_dir, tmp_path, untrained, bands):
    """Zero-initialised injection: whatever the band count (weights built for 4), the untrained model's output
    is the classical base method's, through the whole tile loop."""
    scene = data_dir / "pansharpening" / "wv3_cristianics"
    ms_bands = list(range(1, bands + 1))
    out, classical = tmp_path / "deep.tif", tmp_path / "classical.tif"
    logs = []
    sharpen_scene(str(scene / "pan.tif"), str(scene / "ms.tif"), str(out), weights_path=untrained, sensor=2,
                  ms_bands=ms_bands, float32=True, log=logs.append)
    method = next(line for line in logs if line.startswith("Classical base")).split()[2].rstrip(",")
    assert method in CANDIDATES
    pansharpen(str(scene / "pan.tif"), str(scene / "ms.tif"), str(classical), method, sensor=2, ms_bands=ms_bands,
               float32=True)
    a, b = _read(out), _read(classical)
    assert a.shape == b.shape == (bands,) + a.shape[1:]
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


@pytest.mark.skipif(not BUNDLED_UNIVERSAL, reason="no bundled multi-sensor weights (make weights)")
def test_bundled_weights_run_zero_shot_on_a_band_count_never_seen_in_training(data_dir, tmp_path):
    """EO-1 ALI: 9 bands at ratio 3 (training saw 3, 4, 6 and 8 bands at ratios 2 and 4): the bundled weights
    run with no adapter and stay close to their classical base (within 10 % ERGAS of it on the reduced pair)."""
    from conftest import ergas_sam
    from panadapter_qgis.backend.wald import degrade_pair

    d = data_dir / "hyperspectral" / "paris_hyperion_ali"
    pan, ms = str(tmp_path / "pan_lr.tif"), str(tmp_path / "ms_lr.tif")
    info, reference = degrade_pair(str(d / "pan.tif"), str(d / "ms.tif"), pan, ms, 0)
    logs = []
    out = tmp_path / "zero_shot.tif"
    sharpen_scene(pan, ms, str(out), sensor=0, float32=True, log=logs.append)
    method = next(line for line in logs if line.startswith("Classical base")).split()[2].rstrip(",")
    pansharpen(pan, ms, str(tmp_path / "base.tif"), method, sensor=0, float32=True)
    fused = _read(out)
    assert fused.shape[0] == 9 and np.isfinite(fused).all()
    ergas, _ = ergas_sam(reference.astype(np.float64), out, info.ratio)
    base_ergas, _ = ergas_sam(reference.astype(np.float64), tmp_path / "base.tif", info.ratio)
    assert ergas < 1.1 * base_ergas, (ergas, base_ergas)


@pytest.mark.skipif(not BUNDLED_UNIVERSAL, reason="no bundled multi-sensor weights (make weights)")
def test_the_card_names_every_data_set_with_its_terms():
    card = weights.card("panadapter")
    assert PRESETS[card["preset"]].universal
    scenes = [d["scene"] for d in card["data"]]
    assert len(scenes) >= 10 and all(d["terms"] for d in card["data"])
    assert {d["bands"] for d in card["data"]} >= {3, 4, 6, 8} and {d["ratio"] for d in card["data"]} == {2, 4}
    for test_scene in ("gf2_panformer/test_rr_0", "qb_abfnet/rr_test_0", "pairmax_rr/ge_tren_urb",
                       "pairmax_rr/w4_mexi_urb"):
        assert test_scene not in scenes and test_scene in card["held_out"]
    assert "natural" in json.dumps(card["restoration"])


def test_adaptation_lowers_the_loss_and_is_checked_on_held_out_pixels(quickbird, tmp_path, untrained):
    pan, ms = quickbird
    adapter = str(tmp_path / "a.pt")
    card = finetune_scene(pan, ms, adapter, sensor=3, iterations=60, base_weights=untrained, consistency=0)
    assert card["last_loss"] < card["first_loss"]
    check = card["check"]
    assert check["pixels"] > 0 and check["beats_base"] == (check["ergas_adapted"] < check["ergas_base"])
    _, payload = load_adapted(adapter, base_weights=untrained)
    assert payload["base_method"] in CANDIDATES and payload["beats_base"] == check["beats_base"]


def test_an_adapter_that_does_not_beat_its_base_gives_the_base(data_dir, tmp_path, untrained):
    """A learning rate that diverges: the check on the held-out part of the degraded pair rejects the adapter,
    and panadapter:panadapter then writes exactly the classical base's pixels, saying so."""
    pan, ms = fusebox_crop(data_dir, tmp_path, "scene_10", pan_size=256)
    adapter = str(tmp_path / "bad.pt")
    card = finetune_scene(pan, ms, adapter, sensor=8, iterations=20, base_weights=untrained, lr=5.0,
                          consistency=0)
    assert card["check"]["beats_base"] is False
    logs = []
    out, classical = tmp_path / "out.tif", tmp_path / "classical.tif"
    sharpen_scene(pan, ms, str(out), adapter=adapter, weights_path=untrained, sensor=8, float32=True,
                  log=logs.append)
    assert any("did not beat its classical base" in line for line in logs)
    pansharpen(pan, ms, str(classical), card["base_method"], sensor=8, float32=True)
    a, b = _read(out), _read(classical)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


def test_the_fast_preset_runs_at_ratio_3_where_its_tokens_need_8_ms_pixel_tiles(data_dir, tmp_path):
    """The ``fast`` preset's 8-pixel tokens (issue 29): at ratio 3 (EO-1 ALI, 9 bands) a tile of 4 MS pixels
    would be 12 PAN pixels, not a multiple of 8; the tile loop takes multiples of 8 MS pixels, the output is
    the model's (its tails made non-zero, so it differs from the base) and does not depend on the tile size."""
    import torch

    from panadapter_qgis.backend.deep import DeepJob, tile_multiple
    from panadapter_qgis.backend.wald import degrade_pair

    torch.manual_seed(0)
    net = create_model(9, "fast").eval()
    assert tile_multiple(net, 3) == 8 and tile_multiple(net, 2) == 4 and tile_multiple(net, 4) == 4
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    d = data_dir / "hyperspectral" / "paris_hyperion_ali"
    pan, ms = str(tmp_path / "pan_lr.tif"), str(tmp_path / "ms_lr.tif")
    degrade_pair(str(d / "pan.tif"), str(d / "ms.tif"), pan, ms, 0)
    outs = []
    for tile in (48, 96):
        out = tmp_path / f"fast_{tile}.tif"
        DeepJob(pan, ms, net, sensor=0, base_method="mtf_glp_fs", tile_size=tile).write(str(out), float32=True)
        outs.append(_read(out))
    pansharpen(pan, ms, str(tmp_path / "base.tif"), "mtf_glp_fs", sensor=0, float32=True)
    base = _read(tmp_path / "base.tif")
    assert outs[0].shape == base.shape and outs[0].shape[0] == 9 and np.isfinite(outs[0]).all()
    assert np.abs(outs[0] - base).max() > 1e-3 * np.abs(base).max()
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4 * np.abs(base).max())



def test_an_adapter_too_small_to_check_gives_the_zero_shot_result(data_dir, tmp_path):
    """A pair too small to set a part aside (GaoFen-2 test_rr_0, one training window): the adapter cannot be
    checked, is recorded as such, and panadapter:panadapter gives what it gives without an adapter (there the
    pre-trained model passes its check one scale down, so not the classical base) and says why."""
    d = data_dir / "pretraining" / "gf2_panformer" / "test_rr_0"
    if not (d / "pan.tif").is_file():
        pytest.skip("pretraining data not found")
    pan, ms = str(d / "pan.tif"), str(d / "ms.tif")
    adapter, logs = str(tmp_path / "a.pt"), []
    card = finetune_scene(pan, ms, adapter, sensor=7, iterations=10, consistency=0, device="cpu",
                          log=logs.append)
    assert card["check"] is None and any("cannot be checked" in line for line in logs)
    out, zero_shot, classical, logs = tmp_path / "adapted.tif", tmp_path / "zero.tif", tmp_path / "base.tif", []
    sharpen_scene(pan, ms, str(out), adapter=adapter, sensor=7, float32=True, device="cpu", log=logs.append)
    assert any("could not be checked" in line for line in logs)
    sharpen_scene(pan, ms, str(zero_shot), sensor=7, float32=True, device="cpu")
    pansharpen(pan, ms, str(classical), card["base_method"], sensor=7, float32=True)
    np.testing.assert_allclose(_read(out), _read(zero_shot), rtol=1e-5, atol=1e-4)
    assert np.abs(_read(out) - _read(classical)).max() > 1e-2


def test_an_adaptation_that_does_not_improve_on_the_pretrained_model_keeps_it(data_dir, tmp_path):
    """A learning rate that diverges on the WorldView-3 test scene (never trained on): the check on the held-out
    part of the degraded pair scores the pre-trained model too, finds it better than both the adapted model
    and the classical base, and the adapter keeps the pre-trained tensors: panadapter:panadapter with it gives
    the pre-trained model's pixels and says why."""
    from panadapter_qgis.backend.adapt import load_pretrained
    from panadapter_qgis.backend.deep import DeepJob, default_tile

    d = data_dir / "pansharpening" / "wv3_cristianics"
    pan, ms = str(d / "pan.tif"), str(d / "ms.tif")
    adapter = str(tmp_path / "diverged.pt")
    card = finetune_scene(pan, ms, adapter, sensor=2, iterations=20, lr=5.0, consistency=0, device="cpu")
    check = card["check"]
    assert check["ergas_pretrained"] < check["ergas_base"]
    assert not check["ergas_adapted"] <= check["ergas_pretrained"]   # worse, or NaN
    assert card["kept"] == "pretrained" and check["beats_base"] is True
    logs = []
    out, pretrained = tmp_path / "out.tif", tmp_path / "pretrained.tif"
    sharpen_scene(pan, ms, str(out), adapter=adapter, sensor=2, float32=True, log=logs.append)
    assert any("keeps the pre-trained model" in line for line in logs), logs
    net, _ = load_pretrained("panadapter", 8)
    _, payload = load_adapted(adapter)
    DeepJob(pan, ms, net, sensor=2, base_method=card["base_method"], scale=payload["scale"],
            tile_size=default_tile(net)).write(str(pretrained), float32=True)
    a, b = _read(out), _read(pretrained)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


def test_an_adaptation_from_the_landsat7_weights_is_checked_against_the_classical_base(data_dir, tmp_path):
    """Adapting from other pre-trained weights than the multi-sensor ones (the Landsat-7 weights, 6 bands, on
    the 8-band WorldView-3 test scene, with a learning rate that diverges): the adaptation chooses the
    classical base too, checks the adapted and the pre-trained model against it on the held-out part of the
    degraded pair, and panadapter:panadapter gives the base where neither beats it, and says why."""
    from panadapter_qgis.backend import weights
    from panadapter_qgis.backend.classical_base import CANDIDATES

    d = data_dir / "pansharpening" / "wv3_cristianics"
    pan, ms = str(d / "pan.tif"), str(d / "ms.tif")
    adapter, logs = str(tmp_path / "from_landsat7.pt"), []
    card = finetune_scene(pan, ms, adapter, sensor=2, iterations=20, lr=5.0, consistency=0, device="cpu",
                          base_weights=str(weights.LANDSAT7_PANADAPTER), log=logs.append)
    check = card["check"]
    assert card["base_method"] in CANDIDATES and check["pixels"] > 0
    assert not check["ergas_adapted"] <= check["ergas_base"]                # diverged (NaN) or worse
    assert check["ergas_pretrained"] > check["ergas_base"] and card["kept"] is None
    assert check["beats_base"] is False
    assert any("checked against it" in line for line in logs)
    _assert_the_adapter_gives_its_base(pan, ms, adapter, card, 2, tmp_path, "did not beat its classical base")


def _assert_the_adapter_gives_its_base(pan, ms, adapter, card, sensor, tmp_path, says):
    """panadapter:panadapter with ``adapter`` gives the classical result of the adapter's base method and its
    log says ``says``."""
    out, classical, logs = tmp_path / "out.tif", tmp_path / "base.tif", []
    sharpen_scene(pan, ms, str(out), adapter=adapter, sensor=sensor, float32=True, device="cpu", log=logs.append)
    assert any(says in line for line in logs), logs
    pansharpen(pan, ms, str(classical), card["base_method"], sensor=sensor, float32=True)
    a, b = _read(out), _read(classical)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


def test_an_unchecked_adapter_from_weights_of_another_band_count_gives_the_classical_base(data_dir, tmp_path):
    """A pair too small to set a part aside (GaoFen-2 test_rr_0, 4 bands) adapted from the 6-band Landsat-7
    weights: unchecked, and those weights do not run on 4 bands without an adapter, so panadapter:panadapter
    gives the classical base (not an error, not the unchecked model)."""
    from panadapter_qgis.backend import weights

    d = data_dir / "pretraining" / "gf2_panformer" / "test_rr_0"
    if not (d / "pan.tif").is_file():
        pytest.skip("pretraining data not found")
    pan, ms = str(d / "pan.tif"), str(d / "ms.tif")
    adapter = str(tmp_path / "a.pt")
    card = finetune_scene(pan, ms, adapter, sensor=7, iterations=10, consistency=0, device="cpu",
                          base_weights=str(weights.LANDSAT7_PANADAPTER))
    assert card["check"] is None and card["base_method"]
    _assert_the_adapter_gives_its_base(pan, ms, adapter, card, 7, tmp_path,
                                       "could not be checked against its classical base")
