"""Hyperspectral-multispectral fusion: spectral responses, SSIM, INF and its baselines, panadapter:inf_fusion.

The pair is the protocol of ``bench/bench_hyperspectral.py`` on the real EO-1 Hyperion Paris scene: the MSI
is simulated from the HSI with the Landsat TM5 responses, the LR-HSI is the HSI degraded by 4.
"""
import csv

import numpy as np
import pytest
import torch
from osgeo import gdal
from qgis.core import QgsProcessingException

import processing
from bench.bench_hyperspectral import degrade, write
from panadapter_qgis.backend import metrics
from panadapter_qgis.backend.hyperspectral import (DetailInjection, load_srf, simulate_msi, srf_matrix)
from panadapter_qgis.backend.models.inf import create_model


@pytest.fixture(scope="module")
def paris(data_dir, tmp_path_factory):
    """(HSI reference (128, 72, 72), LR-HSI path, MSI path, wavelengths)."""
    root = data_dir / "hyperspectral"
    hsi = gdal.Open(str(root / "paris_hyperion_ali" / "hs.tif")).ReadAsArray().astype(np.float32)
    with open(root / "paris_hyperion_ali" / "hs_bands.csv") as f:
        wl = np.array([float(r["approx_center_nm"]) for r in csv.DictReader(f)])
    _, matrix = srf_matrix(load_srf(root / "srf" / "landsat_tm5_srf.csv"), wl)
    folder = tmp_path_factory.mktemp("paris")
    hsi_path, msi_path = str(folder / "lr_hsi.tif"), str(folder / "msi.tif")
    write(hsi_path, degrade(hsi, 4), 120.0, wl)
    write(msi_path, simulate_msi(hsi, matrix), 30.0)
    return hsi, hsi_path, msi_path, wl


def test_spectral_responses_in_both_layouts(data_dir):
    srf = data_dir / "hyperspectral" / "srf"
    tm5 = load_srf(srf / "landsat_tm5_srf.csv")            # long: band,wavelength_nm,response
    ikonos = load_srf(srf / "ikonos_srf.csv")              # wide: wavelength_nm,pan,blue,...
    assert sorted(tm5) == ["blue", "green", "nir", "red", "swir1", "swir2"]
    assert sorted(ikonos) == ["blue", "green", "nir", "pan", "red"]
    names, m = srf_matrix(tm5, np.arange(400, 2500, 10.0))
    np.testing.assert_allclose(m.sum(1), 1.0)
    # each band's weights sit inside its own spectral range
    centre = dict(zip(names, (m * np.arange(400, 2500, 10.0)).sum(1)))
    assert 450 < centre["blue"] < 520 < centre["green"] < 600 < centre["red"] < 700 < centre["nir"] < 900
    assert centre["swir1"] < centre["swir2"]


def test_srf_file_errors_are_named(tmp_path):
    from panadapter_qgis.backend.errors import PansharpenError

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(PansharpenError, match="expected columns"):
        load_srf(bad)
    with pytest.raises(PansharpenError, match="does not exist"):
        load_srf(tmp_path / "none.csv")


def test_ssim_properties():
    rng = np.random.default_rng(0)
    a = rng.random((3, 48, 48)) * 100
    assert metrics.ssim(a, a, 100) == pytest.approx(1.0)
    noisy = [metrics.ssim(a, a + rng.normal(0, s, a.shape), 100) for s in (2, 10, 30)]
    assert 1 > noisy[0] > noisy[1] > noisy[2] > 0
    # luminance term: a constant shift lowers SSIM a little, not the structure terms
    assert 0.9 < metrics.ssim(a, a + 5, 100) < 1


def test_untrained_inf_is_the_upsampling_then_the_detail_injection():
    torch.manual_seed(0)
    net = create_model(10, 3)
    ms, lms, pan = torch.rand(2, 10, 8, 8), torch.rand(2, 10, 32, 32), torch.rand(2, 3, 32, 32)
    assert torch.equal(net(ms, lms, pan, 4), lms)
    match, gains = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]), np.linspace(0.5, 1.5, 10)
    net.set_injection(match, gains)
    baseline = DetailInjection(match, gains)(ms, lms, pan, 4)
    torch.testing.assert_close(net(ms, lms, pan, 4), baseline)


def test_detail_injection_beats_upsampling_and_keeps_the_hsi_bands(paris, tmp_path, panadapter_provider):
    hsi, hsi_path, msi_path, wl = paris
    scores = {}
    for method, index in (("glp", 1), ("upsample", 2)):
        out = str(tmp_path / f"{method}.tif")
        processing.run("panadapter:inf_fusion", {"HSI": hsi_path, "MSI": msi_path, "METHOD": index,
                                                 "OUTPUT_FLOAT32": True, "DEVICE": 1, "OUTPUT": out})
        ds = gdal.Open(out)
        assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (72, 72, 128)
        assert ds.GetGeoTransform() == gdal.Open(msi_path).GetGeoTransform()
        assert float(ds.GetRasterBand(5).GetMetadata()["wavelength"]) == pytest.approx(wl[4], abs=0.01)
        fused = ds.ReadAsArray().astype(np.float64)
        scores[method] = (metrics.psnr(hsi, fused, float(hsi.max())), metrics.sam(hsi, fused))
    assert scores["glp"][0] > scores["upsample"][0] + 5 and scores["glp"][1] < scores["upsample"][1]


def test_inf_adapts_on_the_pair_and_writes_the_fused_hsi(paris, tmp_path, panadapter_provider):
    hsi, hsi_path, msi_path, _ = paris
    out = str(tmp_path / "inf.tif")
    processing.run("panadapter:inf_fusion", {"HSI": hsi_path, "MSI": msi_path, "METHOD": 0, "ADAPT_ITERATIONS": 5,
                                             "OUTPUT_FLOAT32": True, "DEVICE": 1, "OUTPUT": out})
    fused = gdal.Open(out).ReadAsArray().astype(np.float64)
    assert fused.shape == hsi.shape and np.isfinite(fused).all()
    up = str(tmp_path / "up.tif")
    processing.run("panadapter:inf_fusion", {"HSI": hsi_path, "MSI": msi_path, "METHOD": 2, "OUTPUT_FLOAT32": True,
                                             "OUTPUT": up})
    upsampled = gdal.Open(up).ReadAsArray().astype(np.float64)
    assert metrics.psnr(hsi, fused, float(hsi.max())) > metrics.psnr(hsi, upsampled, float(hsi.max()))


def test_swapped_inputs_are_named(paris, tmp_path, panadapter_provider):
    _, hsi_path, msi_path, _ = paris
    with pytest.raises(QgsProcessingException, match="ratio"):
        processing.run("panadapter:inf_fusion", {"HSI": msi_path, "MSI": hsi_path, "METHOD": 1,
                                                 "OUTPUT": str(tmp_path / "x.tif")})
    assert not (tmp_path / "x.tif").exists()


def test_assess_gives_the_fusion_indices(paris, tmp_path, panadapter_provider):
    """panadapter:assess on a fused HSI: PSNR, SSIM, SAM and ERGAS (with the ratio) as the metrics give them."""
    hsi, hsi_path, msi_path, wl = paris
    fused_path, reference = str(tmp_path / "glp.tif"), str(tmp_path / "reference.tif")
    processing.run("panadapter:inf_fusion", {"HSI": hsi_path, "MSI": msi_path, "METHOD": 1, "OUTPUT_FLOAT32": True,
                                             "OUTPUT": fused_path})
    write(reference, hsi, 30.0, wl)
    result = processing.run("panadapter:assess", {"FUSED": [fused_path], "REFERENCE": reference, "RATIO": 4,
                                                  "DIM_CUT": 0})
    fused = gdal.Open(fused_path).ReadAsArray().astype(np.float64)
    ref = hsi.astype(np.float64)
    peak = float(ref.max())
    assert result["SSIM"] == pytest.approx(metrics.ssim(ref, fused, peak), rel=1e-9)
    assert result["PSNR"] == pytest.approx(metrics.psnr(ref, fused, peak), rel=1e-9)
    assert result["ERGAS"] == pytest.approx(metrics.ergas(ref, fused, 4), rel=1e-6)
    assert result["SAM"] == pytest.approx(metrics.sam(ref, fused), rel=1e-6)


def test_finetune_model_2_writes_an_inf_adapter_that_inf_fusion_uses(paris, tmp_path, panadapter_provider):
    hsi, hsi_path, msi_path, _ = paris
    adapter = str(tmp_path / "inf.pt")
    result = processing.run("panadapter:finetune", {"PAN": msi_path, "MS": hsi_path, "MODEL": 2, "ITERATIONS": 4,
                                                    "DEVICE": 1, "OUTPUT": adapter})
    assert result["ITERATIONS_DONE"] == 4
    payload = torch.load(adapter, weights_only=True)
    assert (payload["model"], payload["bands"], payload["guide_bands"], payload["ratio"]) == ("inf", 128, 6, 4)
    out = str(tmp_path / "fused.tif")
    processing.run("panadapter:inf_fusion", {"HSI": hsi_path, "MSI": msi_path, "METHOD": 0, "ADAPTER": adapter,
                                             "OUTPUT_FLOAT32": True, "OUTPUT": out})
    fused = gdal.Open(out).ReadAsArray()
    assert fused.shape == hsi.shape and np.isfinite(fused).all()
    # an adapter of another model is refused, naming the problem
    other = str(tmp_path / "pa.pt")
    torch.save(dict(payload, model="ssdiff"), other)
    with pytest.raises(QgsProcessingException, match="made for SSDiff, not INF"):
        processing.run("panadapter:inf_fusion", {"HSI": hsi_path, "MSI": msi_path, "ADAPTER": other,
                                                 "OUTPUT": str(tmp_path / "x.tif")})
    assert not (tmp_path / "x.tif").exists()
