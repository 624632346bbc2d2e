"""Scene adaptation: the adapter file round-trips into the deep tile loop; cancel and bad files are errors."""
import numpy as np
import pytest
import torch
from osgeo import gdal

from conftest import fusebox_crop
from panadapter_qgis.backend.adapt import finetune_scene, load_adapted
from panadapter_qgis.backend.deep import DeepJob
from panadapter_qgis.backend.errors import Cancelled, PansharpenError


@pytest.fixture(scope="module")
def pair(tmp_path_factory, data_dir):
    return fusebox_crop(data_dir, tmp_path_factory.mktemp("fusebox_crop"), "scene_09")


@pytest.fixture(scope="module")
def adapter(pair, tmp_path_factory):
    pan, ms = pair
    out = str(tmp_path_factory.mktemp("adapter") / "scene.pt")
    card = finetune_scene(pan, ms, out, sensor=8, iterations=30, patch=32, batch=4, device="cpu")
    return out, card


def test_adapter_file_and_card(adapter):
    path, card = adapter
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "panadapter-adapter" and payload["bands"] == 4 and payload["ratio"] == 2
    assert card["iterations"] == 30 and card["trained_parameters"] > 0
    assert np.isfinite(card["last_loss"])
    # from the bundled multi-sensor weights: the reduced-resolution loss alone (adapt.MULTI_SENSOR_DEFAULTS)
    assert (card["sam_weight"], card["consistency"], card["spatial"]) == (0.0, 0.0, 0.0)
    assert card["spatial_tolerance"] is None


def test_adaptation_from_other_weights_keeps_the_full_resolution_terms(pair, tmp_path):
    """From weights that are not the multi-sensor ones (here none: random initialisation) the defaults are the
    ones measured for them: the spectral angle (adapt.SAM_WEIGHT), the full-resolution spectral term and the
    D_s-like term down to the D_s the scene shows one scale down."""
    pan, ms = pair
    card = finetune_scene(pan, ms, str(tmp_path / "s.pt"), sensor=8, iterations=3, patch=32, batch=2,
                          device="cpu", base_weights=None)
    assert (card["sam_weight"], card["consistency"], card["spatial"]) == (3.0, 1.0, 0.3)
    assert 0.0 < card["spatial_tolerance"] < 1.0


def test_consistency_terms_change_what_is_learned(pair, tmp_path):
    """consistency=0 trains on the reduced-resolution loss alone; consistency=1 adds the full-resolution
    spectral term, spatial=0.3 the D_s-like one as well. Same seed, so the first reduced batch and the initial
    weights are the same: each term adds a positive amount to the first loss, and the adapted models differ (their
    errors on the held-out part of the degraded pair; the adapter may keep the pre-trained model instead, which
    is the same for all); the card says which terms were used."""
    pan, ms = pair
    cards = []
    for consistency, spatial in ((0.0, 0.0), (1.0, 0.0), (1.0, 0.3)):
        out = str(tmp_path / f"c{consistency}_{spatial}.pt")
        cards.append(finetune_scene(pan, ms, out, sensor=8, iterations=3, patch=32, batch=2, device="cpu",
                                    consistency=consistency, spatial=spatial))
    assert [(c["consistency"], c["spatial"]) for c in cards] == [(0.0, 0.0), (1.0, 0.0), (1.0, 0.3)]
    assert cards[0]["first_loss"] < cards[1]["first_loss"] < cards[2]["first_loss"]
    learned = [c["check"]["ergas_adapted"] for c in cards]
    assert learned[0] != learned[1] and learned[1] != learned[2]


def test_khan_spectral_form_is_recorded_and_changes_what_is_learned(pair, tmp_path):
    """spectral_form="khan" (the full-resolution spectral term in the form of HQNR's D_lambda) trains other
    weights than the default Wald form from the same seed (their held-out errors differ), and says so in the
    card; an unknown form is refused."""
    pan, ms = pair
    cards = []
    for form in ("wald", "khan"):
        out = str(tmp_path / f"{form}.pt")
        cards.append(finetune_scene(pan, ms, out, sensor=8, iterations=3, patch=32, batch=2, device="cpu",
                                    spectral_form=form, consistency=1.0))
    assert [c["spectral_form"] for c in cards] == ["wald", "khan"]
    assert cards[0]["check"]["ergas_adapted"] != cards[1]["check"]["ergas_adapted"]
    with pytest.raises(PansharpenError, match="Unknown spectral term form 'qnr'"):
        finetune_scene(pan, ms, str(tmp_path / "x.pt"), sensor=8, iterations=3, device="cpu", spectral_form="qnr")
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("weights, name", [({"spatial": -0.3}, "SPATIAL_WEIGHT"), ({"sam_weight": -1}, "SAM_WEIGHT"),
                                           ({"spatial": float("nan")}, "SPATIAL_WEIGHT")])
def test_negative_loss_weights_are_refused_with_their_name(pair, tmp_path, weights, name):
    """A negative weight would reward the distortion its term measures: refused, naming the parameter."""
    pan, ms = pair
    with pytest.raises(PansharpenError, match=f"{name} must be at least 0"):
        finetune_scene(pan, ms, str(tmp_path / "x.pt"), sensor=8, iterations=3, device="cpu", **weights)
    assert not (tmp_path / "x.pt").exists()


def test_adapted_model_sharpens_the_scene(adapter, pair, tmp_path):
    path, _ = adapter
    pan, ms = pair
    net, payload = load_adapted(path, bands=4)
    out = str(tmp_path / "f.tif")
    DeepJob(pan, ms, net, sensor=8, device="cpu", scale=payload["scale"]).write(out, tile_size=64)
    fused = gdal.Open(out)
    assert (fused.RasterXSize, fused.RasterYSize, fused.RasterCount) == (256, 256, 4)
    assert fused.GetRasterBand(1).DataType == gdal.GDT_Byte
    data = fused.ReadAsArray().astype(float)
    ms_arr = gdal.Open(ms).ReadAsArray().astype(float)
    assert abs(data.mean() - ms_arr.mean()) < 0.05 * ms_arr.mean()


def test_wrong_band_count_and_not_an_adapter(adapter, tmp_path):
    path, _ = adapter
    with pytest.raises(PansharpenError, match="trained for 4 MS bands"):
        load_adapted(path, bands=3)
    bogus = tmp_path / "bogus.pt"
    torch.save({"hello": 1}, bogus)
    with pytest.raises(PansharpenError, match="not an adapter file"):
        load_adapted(str(bogus))


def test_cancelled_finetune_writes_no_file(pair, tmp_path):
    pan, ms = pair
    out = tmp_path / "a.pt"
    with pytest.raises(Cancelled):
        finetune_scene(pan, ms, str(out), iterations=50, patch=32, batch=2, device="cpu",
                       is_cancelled=lambda: True)
    assert not list(tmp_path.iterdir())


def test_default_training_patch_fits_every_ratio(data_dir):
    """A model's nominal patch (PanAdapter 64, SSDiff 32) becomes the nearest multiple of the ratio and the
    token stride 4, capped by the scene: real pairs of ratio 2 (FuseBox), 3 (EO-1 ALI: 58 x 72 MS pixels under
    the PAN, so at most 48) and 4 (WorldView-3). An explicit size that is not a multiple is still refused."""
    from panadapter_qgis.backend.adapt import PATCH
    from panadapter_qgis.backend.training.datasets import SceneCrops

    folders = {2: data_dir / "pansharpening" / "landsat7_fusebox" / "scene_10",
               3: data_dir / "hyperspectral" / "paris_hyperion_ali",
               4: data_dir / "pansharpening" / "wv3_cristianics"}
    got = {}
    for ratio, folder in folders.items():
        pan, ms = str(folder / "pan.tif"), str(folder / "ms.tif")
        for model in ("panadapter", "ssdiff"):
            crops = SceneCrops(pan, ms, patch=PATCH[model], nearest=True, budget=2**14)
            assert crops.ratio == ratio and crops.patch % crops.step == 0
            got[ratio, model] = crops.patch
        with pytest.raises(PansharpenError, match="not a multiple of"):
            SceneCrops(pan, ms, patch=crops.step * 3 + 2)
    assert got == {(2, "panadapter"): 64, (2, "ssdiff"): 32, (3, "panadapter"): 48, (3, "ssdiff"): 36,
                   (4, "panadapter"): 64, (4, "ssdiff"): 32}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["panadapter", "ssdiff"])
def test_finetune_and_sharpen_a_ratio_3_pair_with_the_defaults(data_dir, tmp_path, model):
    """EO-1 ALI Paris (PAN 10 m over 58 of the 72 MS columns at 30 m, 9 bands): the default training patch
    used to be 64 (PanAdapter) / 32 (SSDiff) pixels, which ratio 3 with the token stride 4 refused."""
    from panadapter_qgis.backend.adapt import sharpen_scene, ssdiff_scene

    folder = data_dir / "hyperspectral" / "paris_hyperion_ali"
    pan, ms = str(folder / "pan.tif"), str(folder / "ms.tif")
    adapter, out = str(tmp_path / "ali.pt"), str(tmp_path / "fused.tif")
    card = finetune_scene(pan, ms, adapter, model=model, iterations=4, batch=2, device="cpu")
    assert card["patch"] % 12 == 0 and torch.load(adapter, weights_only=True)["ratio"] == 3
    if model == "panadapter":
        sharpen_scene(pan, ms, out, adapter=adapter, float32=True, device="cpu")
    else:
        ssdiff_scene(pan, ms, out, adapter=adapter, steps=2, float32=True, device="cpu")
    fused, ref = gdal.Open(out), gdal.Open(pan)
    assert (fused.RasterXSize, fused.RasterYSize, fused.RasterCount) == (174, 216, 9)
    assert fused.GetGeoTransform() == ref.GetGeoTransform()
    assert np.isfinite(fused.ReadAsArray()).all()
