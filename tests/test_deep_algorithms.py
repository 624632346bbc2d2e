"""The deep-learning algorithms through the Processing registry: finetune -> adapter -> panadapter, train."""
import numpy as np
import pytest
import torch
from osgeo import gdal
from qgis.core import QgsProcessingException

import processing
from conftest import fusebox_crop


@pytest.fixture(scope="module")
def crop(tmp_path_factory, data_dir):
    """A 256 x 256 PAN / 128 x 128 x 4 MS crop of a Landsat-7 scene (ratio 2, uint8)."""
    return fusebox_crop(data_dir, tmp_path_factory.mktemp("deep_crop"), "scene_12")


@pytest.fixture(scope="module")
def adapter(crop, tmp_path_factory, module_provider):
    pan, ms = crop
    out = str(tmp_path_factory.mktemp("adapter") / "scene.pt")
    result = processing.run("panadapter:finetune", {"PAN": pan, "MS": ms, "SENSOR": 8, "MODEL": 0,
                                                    "ITERATIONS": 24, "DEVICE": 1, "OUTPUT": out})
    return out, result


def test_finetune_writes_an_adapter_file(adapter):
    path, result = adapter
    assert result["OUTPUT"] == path and result["ITERATIONS_DONE"] == 24
    assert np.isfinite(result["FINAL_LOSS"]) and result["FINAL_LOSS"] > 0
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "panadapter-adapter"
    assert (payload["bands"], payload["ratio"], payload["sensor"], payload["stage"]) == (4, 2, 8, 2)
    assert payload["card"]["stage_iterations"] == [18, 6]
    assert payload["card"]["spectral_form"] is None    # no full-resolution spectral term: none recorded
    # SAM_WEIGHT, SPECTRAL_TERM_WEIGHT and SPATIAL_WEIGHT empty: from the bundled multi-sensor weights, the
    # reduced-resolution loss alone (adapt.MULTI_SENSOR_DEFAULTS)
    assert (payload["card"]["sam_weight"], payload["card"]["consistency"], payload["card"]["spatial"]) == (0, 0, 0)


def test_panadapter_with_the_adapter_follows_the_pan_grid(adapter, crop, tmp_path, panadapter_provider):
    path, _ = adapter
    pan, ms = crop
    out = str(tmp_path / "fused.tif")
    processing.run("panadapter:panadapter", {"PAN": pan, "MS": ms, "SENSOR": 8, "ADAPTER": path, "DEVICE": 1,
                                             "TILE_SIZE": 128, "OUTPUT": out})
    fused, pan_ds = gdal.Open(out), gdal.Open(pan)
    assert (fused.RasterXSize, fused.RasterYSize, fused.RasterCount) == (256, 256, 4)
    assert fused.GetGeoTransform() == pan_ds.GetGeoTransform()
    assert fused.GetRasterBand(1).DataType == gdal.GDT_Byte
    data, ms_arr = fused.ReadAsArray().astype(float), gdal.Open(ms).ReadAsArray().astype(float)
    # the fused bands keep the MS radiometry (block means of the output ~ the MS)
    blocks = data.reshape(4, 128, 2, 128, 2).mean((2, 4))
    assert np.abs(blocks - ms_arr).mean() < 0.1 * ms_arr.mean()


def test_tiles_leave_no_seams(adapter, crop, tmp_path, panadapter_provider):
    """Tiles of 64 and 256 PAN pixels give (almost) the same image: each tile sees a margin of context."""
    path, _ = adapter
    pan, ms = crop
    outs = []
    for tile in (64, 256):
        out = str(tmp_path / f"t{tile}.tif")
        processing.run("panadapter:panadapter", {"PAN": pan, "MS": ms, "SENSOR": 8, "ADAPTER": path, "DEVICE": 1,
                                                 "TILE_SIZE": tile, "OUTPUT_FLOAT32": True, "OUTPUT": out})
        outs.append(gdal.Open(out).ReadAsArray())
    diff = np.abs(outs[0] - outs[1])
    assert np.percentile(diff, 99) < 0.01 * outs[1].mean()


def test_adapter_for_other_bands_is_refused(adapter, crop, tmp_path, panadapter_provider, data_dir):
    path, _ = adapter
    scene = data_dir / "pansharpening" / "landsat8_istanbul"
    with pytest.raises(QgsProcessingException, match="trained for 4 MS bands"):
        processing.run("panadapter:panadapter", {"PAN": str(scene / "pan.tif"), "MS": str(scene / "ms.tif"),
                                                 "ADAPTER": path, "OUTPUT": str(tmp_path / "x.tif")})
    assert not (tmp_path / "x.tif").exists()


def test_missing_adapter_file_is_named(crop, tmp_path, panadapter_provider):
    pan, ms = crop
    with pytest.raises(QgsProcessingException, match="does not exist"):
        processing.run("panadapter:panadapter", {"PAN": pan, "MS": ms, "ADAPTER": str(tmp_path / "none.pt"),
                                                 "OUTPUT": str(tmp_path / "x.tif")})


def test_train_writes_weights_that_panadapter_uses(data_dir, tmp_path, panadapter_provider):
    """panadapter:train on a PanCollection file (8-band WorldView-3 patches), then inference with them."""
    h5 = data_dir / "pansharpening" / "wv3_patches_pancollection.h5"
    weights = str(tmp_path / "wv3.pt")
    result = processing.run("panadapter:train", {"DATASET": str(h5), "ITERATIONS": 6, "DEVICE": 1,
                                                 "OUTPUT": weights})
    assert np.isfinite(result["FINAL_LOSS"])
    saved = torch.load(weights, weights_only=True)
    assert saved["bands"] == 8 and saved["ratio"] == 4 and saved["card"]["iterations"] == 6
    scene = data_dir / "pansharpening" / "wv3_cristianics"
    out = str(tmp_path / "wv3.tif")
    processing.run("panadapter:panadapter", {"PAN": str(scene / "pan.tif"), "MS": str(scene / "ms.tif"),
                                             "SENSOR": 2, "WEIGHTS": weights, "DEVICE": 1, "OUTPUT": out})
    fused = gdal.Open(out)
    assert (fused.RasterXSize, fused.RasterYSize, fused.RasterCount) == (576, 572, 8)


def test_finetune_ssdiff_then_ssdiff_algorithm(crop, tmp_path, panadapter_provider):
    """MODEL=1 adapts SSDiff by L-BAF from its bundled weights; panadapter:ssdiff uses the adapter, and the
    same SEED gives the same image."""
    pan, ms = crop
    adapter = str(tmp_path / "s.pt")
    result = processing.run("panadapter:finetune", {"PAN": pan, "MS": ms, "SENSOR": 8, "MODEL": 1,
                                                    "ITERATIONS": 8, "SPECTRAL_TERM": 1, "SAM_WEIGHT": 0.5,
                                                    "SPATIAL_WEIGHT": 0, "SPECTRAL_TERM_WEIGHT": 0.5,
                                                    "DEVICE": 1, "OUTPUT": adapter})
    assert result["ITERATIONS_DONE"] == 8 and np.isfinite(result["FINAL_LOSS"])
    payload = torch.load(adapter, weights_only=True)
    assert payload["model"] == "ssdiff" and payload["bands"] == 4
    assert payload["card"]["spectral_form"] == "khan"  # SPECTRAL_TERM 1
    assert payload["card"]["sam_weight"] == 0.5 and payload["card"]["consistency"] == 0.5  # SPECTRAL_TERM_WEIGHT
    assert payload["card"]["spatial"] == 0.0 and payload["card"]["spatial_tolerance"] is None  # SPATIAL_WEIGHT 0
    outs = []
    for i, seed in enumerate((3, 3)):
        out = str(tmp_path / f"s{i}.tif")
        processing.run("panadapter:ssdiff", {"PAN": pan, "MS": ms, "SENSOR": 8, "ADAPTER": adapter, "STEPS": 2,
                                             "SEED": seed, "DEVICE": 1, "OUTPUT": out})
        outs.append(gdal.Open(out).ReadAsArray())
    fused = gdal.Open(str(tmp_path / "s0.tif"))
    assert (fused.RasterXSize, fused.RasterYSize, fused.RasterCount) == (256, 256, 4)
    assert fused.GetGeoTransform() == gdal.Open(pan).GetGeoTransform()
    assert fused.GetRasterBand(1).DataType == gdal.GDT_Byte
    assert np.array_equal(outs[0], outs[1])
    blocks = outs[0].astype(float).reshape(4, 128, 2, 128, 2).mean((2, 4))
    ms_arr = gdal.Open(ms).ReadAsArray().astype(float)
    assert np.abs(blocks - ms_arr).mean() < 0.1 * ms_arr.mean()


def test_finetune_iterations_left_empty_take_the_model_default(crop, tmp_path, panadapter_provider):
    """ITERATIONS empty: each model's own default (adapt.ITERATIONS: SSDiff's L-BAF needs more than PanAdapter);
    MINUTES stops the run early and the adapter is still written, its card saying how far it got."""
    from panadapter_qgis.backend.adapt import ITERATIONS

    assert ITERATIONS["ssdiff"] > ITERATIONS["panadapter"]
    pan, ms = crop
    for model, index in (("panadapter", 0), ("ssdiff", 1)):
        out = str(tmp_path / f"{model}.pt")
        result = processing.run("panadapter:finetune", {"PAN": pan, "MS": ms, "SENSOR": 8, "MODEL": index,
                                                        "MINUTES": 0.05, "DEVICE": 1, "OUTPUT": out})
        card = torch.load(out, weights_only=True)["card"]
        assert card["planned_iterations"] == ITERATIONS[model]
        assert 0 < result["ITERATIONS_DONE"] == card["iterations"] < ITERATIONS[model]


def test_ssdiff_with_a_panadapter_adapter_is_refused(adapter, crop, tmp_path, panadapter_provider):
    path, _ = adapter
    pan, ms = crop
    with pytest.raises(QgsProcessingException, match="made for PanAdapter"):
        processing.run("panadapter:ssdiff", {"PAN": pan, "MS": ms, "ADAPTER": path, "OUTPUT": str(tmp_path / "x.tif")})
    assert not (tmp_path / "x.tif").exists()
