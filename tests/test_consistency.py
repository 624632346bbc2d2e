"""The spectral-consistency projection (``backend.consistency``, the diagnostic of ``bench/bench_projection.py``):
its operator is Wald's degradation, the projection gives back the MS exactly and never moves a band away
from a truth that degrades to that MS (a real scene, Wald's protocol), the regularised one corrects less,
and blocks with halos, streamed over a raster, give the whole-image projection."""
import numpy as np
import pytest
import torch
from osgeo import gdal

from panadapter_qgis.backend import consistency, mtf, wald
from panadapter_qgis.backend.errors import PansharpenError
from panadapter_qgis.backend.pipeline import pansharpen

gdal.UseExceptions()


def degrade(x, ratio, gains):
    """``mtf.degrade_image`` (Wald's protocol) of a (C, H, W) float64 array."""
    out = mtf.degrade_image(torch.from_numpy(x)[None], [mtf.mtf_kernel_1d(g, ratio) for g in gains], ratio)
    return out[0].numpy()


@pytest.mark.parametrize("ratio, gains", [(2, (0.3, 0.25)), (3, (0.33,)), (4, (0.325, 0.355, 0.29))])
def test_axis_matrices_are_walds_degradation(ratio, gains):
    rng = np.random.default_rng(ratio)
    x = rng.normal(size=(len(gains), ratio * 11, ratio * 14))
    by_matrices = np.stack([consistency.axis_matrices(11, ratio, g)[0] @ x[b]
                            @ consistency.axis_matrices(14, ratio, g)[0].T for b, g in enumerate(gains)])
    np.testing.assert_allclose(by_matrices, degrade(x, ratio, gains), atol=1e-12)


@pytest.fixture(scope="module")
def reduced_scene(data_dir, tmp_path_factory):
    """FuseBox scene 15 by Wald's protocol: the reduced pair, its reference (the original MS, which
    degrades to the reduced MS by construction) and the MTF-GLP-FS fusion of the reduced pair."""
    d = tmp_path_factory.mktemp("consistency")
    src = data_dir / "pansharpening" / "landsat7_fusebox" / "scene_15"
    pan_lr, ms_lr = str(d / "pan_lr.tif"), str(d / "ms_lr.tif")
    wald.degrade(str(src / "pan.tif"), str(src / "ms.tif"), pan_lr, ms_lr, sensor=8)
    fused = str(d / "glp.tif")
    pansharpen(pan_lr, ms_lr, fused, "mtf_glp_fs", sensor=8, float32=True)
    read = lambda p: gdal.Open(p).ReadAsArray().astype(np.float64)  # noqa: E731
    ms_arr = read(ms_lr)
    truth = read(str(src / "ms.tif"))[:, :2 * ms_arr.shape[1], :2 * ms_arr.shape[2]]  # the grid Wald's cut
    return dict(pan=pan_lr, ms=ms_lr, fused=fused, ms_arr=ms_arr, fused_arr=read(fused), truth=truth, folder=d)


def test_projection_gives_back_the_ms_and_moves_each_band_towards_the_truth(reduced_scene):
    s = reduced_scene
    gains = [0.3] * 6
    projected = consistency.project(s["fused_arr"], s["ms_arr"], 2, gains)
    np.testing.assert_allclose(degrade(projected, 2, gains), s["ms_arr"], atol=1e-6)
    np.testing.assert_allclose(consistency.project(projected, s["ms_arr"], 2, gains), projected, atol=1e-6)
    # the truth lies in the set it projects onto: it degrades to the reduced MS (Float32 rounding)
    assert np.abs(degrade(s["truth"], 2, gains) - s["ms_arr"]).max() <= 1e-3
    before = np.sqrt(((s["fused_arr"] - s["truth"]) ** 2).mean((1, 2)))
    after = np.sqrt(((projected - s["truth"]) ** 2).mean((1, 2)))
    assert (after < before).all(), (before, after)
    # only what the degradation sees changes: the projection's change degrades to the MS residual
    change = projected - s["fused_arr"]
    np.testing.assert_allclose(degrade(change, 2, gains), s["ms_arr"] - degrade(s["fused_arr"], 2, gains),
                               atol=1e-6)


def test_blocks_with_halos_give_the_whole_image_projection(reduced_scene):
    s = reduced_scene
    h, w = s["ms_arr"].shape[1:]
    whole = consistency.project(s["fused_arr"], s["ms_arr"], 2, [0.3] * 6)
    blocks, rows, cols = consistency.project_region(s["fused_arr"], s["ms_arr"], 2, [0.3] * 6, 0, 0, h, w)
    assert rows == (0, h) and cols == (0, w)
    assert np.abs(blocks - whole).max() <= 1e-6 * np.abs(whole).max()


def test_project_raster_streams_the_projection_and_checks_the_grid(reduced_scene):
    s = reduced_scene
    out = str(s["folder"] / "glp_projected.tif")
    consistency.project_raster(s["fused"], s["pan"], s["ms"], out, sensor=8)
    written = gdal.Open(out).ReadAsArray().astype(np.float64)
    whole = consistency.project(s["fused_arr"], s["ms_arr"], 2, [0.3] * 6)
    assert np.abs(written - whole).max() <= 1e-4 * np.abs(whole).max()
    with pytest.raises(PansharpenError, match="PAN grid"):
        consistency.project_raster(s["ms"], s["pan"], s["ms"], str(s["folder"] / "bad.tif"), sensor=8)
    assert not (s["folder"] / "bad.tif").exists()


def test_regularised_projection_corrects_less_and_still_towards_the_ms(reduced_scene):
    s = reduced_scene
    gains = [0.3] * 6
    residual = np.abs(degrade(s["fused_arr"], 2, gains) - s["ms_arr"]).mean()
    changes, residuals = [], []
    for strength in (0.0, 0.1, 1.0):
        p = consistency.project(s["fused_arr"], s["ms_arr"], 2, gains, strength=strength)
        changes.append(np.linalg.norm(p - s["fused_arr"]))
        residuals.append(np.abs(degrade(p, 2, gains) - s["ms_arr"]).mean())
    assert changes[0] > changes[1] > changes[2] > 0
    assert residuals[0] < 1e-6 < residuals[1] < residuals[2] < residual
