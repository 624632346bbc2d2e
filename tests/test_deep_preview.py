"""The map preview of the deep models: a window fused by ``DeepJob.fuse_window`` has the pixels of the
whole-scene run (PanAdapter's tiles pasted in order, SSDiff's overlapping tiles blended), through
``render_preview`` too; the deep models fuse fewer pixels zoomed out; errors are the algorithms' own."""
import numpy as np
import pytest
from osgeo import gdal

from panadapter_qgis.backend import preview
from panadapter_qgis.backend.adapt import deep_job, sharpen_scene, ssdiff_scene
from panadapter_qgis.backend.errors import Cancelled, PansharpenError
from panadapter_qgis.backend.preview import FUSED, MULTISPECTRAL

from conftest import fusebox_crop

gdal.UseExceptions()


@pytest.fixture(scope="module")
def crop(tmp_path_factory, data_dir):
    """200 x 200 PAN, 100 x 100 x 6 MS of a FuseBox scene that the bundled weights never saw (scene 10): the
    pre-trained weights (6 bands) run without an adapter. 100 MS pixels in 32-pixel tiles: the last tile
    row and column are moved back over their neighbours."""
    return fusebox_crop(data_dir, tmp_path_factory.mktemp("deep_preview"), "scene_10", pan_size=200,
                        bands=(1, 2, 3, 4, 5, 6))


@pytest.fixture(scope="module")
def whole(crop, tmp_path_factory):
    """Float32 whole-scene results of panadapter:panadapter (64-pixel tiles) and panadapter:ssdiff (2 steps)."""
    d = tmp_path_factory.mktemp("deep_whole")
    sharpen_scene(*crop, str(d / "pa.tif"), sensor=8, float32=True, tile_size=64, device="cpu")
    ssdiff_scene(*crop, str(d / "sd.tif"), sensor=8, float32=True, steps=2, seed=3, device="cpu")
    return {"panadapter": gdal.Open(str(d / "pa.tif")).ReadAsArray(),
            "ssdiff": gdal.Open(str(d / "sd.tif")).ReadAsArray()}


def extent_of(path, row0, col0, rows, cols, zoom=1.0):
    """(xmin, ymin, xmax, ymax) of a window of ``path``'s grid, and the canvas size showing it at ``zoom``
    PAN pixels per screen pixel."""
    gt = gdal.Open(path).GetGeoTransform()
    x0, y1 = gt[0] + col0 * gt[1], gt[3] + row0 * gt[5]
    return (x0, y1 + rows * gt[5], x0 + cols * gt[1], y1), round(cols / zoom), round(rows / zoom)


def test_panadapter_window_is_the_whole_scene_run(crop, whole):
    job = deep_job("panadapter", *crop, sensor=8, device="cpu", tile_size=64)
    window, gt = job.fuse_window(50, 193, 21, 200)
    assert window.shape == (6, 143, 179)
    np.testing.assert_allclose(window, whole["panadapter"][:, 50:193, 21:200], rtol=1e-5, atol=1e-3)
    # the tiles matter to a network (not to a classical base it fell back to): the same window with other
    # tiles is another (seamless, but different) result
    other, _ = job.fuse_window(50, 193, 21, 200, tile_size=128)
    from panadapter_qgis.backend.adapt import BaseOnly
    if isinstance(job.model, BaseOnly):
        np.testing.assert_allclose(other, window, rtol=1e-5, atol=1e-3)
    else:   # the network's residual over its base differs with the tiling (the base alone differs by < 1e-4)
        assert np.abs(other - window).max() > 1e-3
    assert gt[0] == pytest.approx(gdal.Open(crop[0]).GetGeoTransform()[0] + 21 * 15.0)


def test_ssdiff_window_blends_the_tiles_of_the_whole_scene_run(crop, whole):
    job = deep_job("ssdiff", *crop, sensor=8, device="cpu", steps=2, seed=3)
    window, _ = job.fuse_window(7, 150, 40, 177, batch=3)
    np.testing.assert_allclose(window, whole["ssdiff"][:, 7:150, 40:177], rtol=1e-5, atol=1e-3)
    other_seed, _ = deep_job("ssdiff", *crop, sensor=8, device="cpu", steps=2, seed=4).fuse_window(7, 150, 40, 177)
    assert np.abs(other_seed - window).max() > 1e-2


@pytest.mark.parametrize("method", ["panadapter", "ssdiff"])
def test_native_deep_preview_has_the_pixels_of_the_algorithm(crop, whole, tmp_path, method):
    cache = preview.JobCache()
    request = preview.PreviewRequest(*crop, method=method, sensor=8, device="cpu", steps=2, seed=3)
    extent, width, height = extent_of(crop[0], 60, 30, 120, 150)
    out = str(tmp_path / "p.tif")
    if method == "panadapter":   # the algorithm's default tiles are 128 pixels: the whole run must use them
        sharpen_scene(*crop, str(tmp_path / "w.tif"), sensor=8, float32=True, device="cpu")
        reference = gdal.Open(str(tmp_path / "w.tif")).ReadAsArray()
    else:
        reference = whole["ssdiff"]
    result = preview.render_preview(cache, request, extent, width, height, out)
    assert result.plan.mode == FUSED and result.plan.factor == 1
    np.testing.assert_allclose(gdal.Open(out).ReadAsArray(), reference[:, 60:180, 30:180], rtol=1e-5, atol=1e-3)
    assert gdal.Open(out).GetMetadataItem("PANSHARPENING_METHOD") == method
    assert cache.get(request).job is cache.get(request).job   # the model is loaded once per request


def test_zoomed_out_deep_preview_fuses_fewer_pixels(crop, tmp_path, monkeypatch):
    """A ratio-4 pair (the crop's MS averaged 2 x 2) seen at 1.5 PAN pixels per screen pixel: below the
    ratio, so the classical preview fuses the view; the deep models' pixel budget makes theirs MS-only."""
    ms4 = str(tmp_path / "ms4.tif")
    gdal.Translate(ms4, crop[1], width=50, height=50, resampleAlg="average")
    pair = (crop[0], ms4)
    monkeypatch.setattr(preview, "DEEP_MAX_FUSED_PIXELS", 10_000)
    extent, width, height = extent_of(crop[0], 0, 0, 200, 200, zoom=1.5)
    cache = preview.JobCache()
    classical = preview.render_preview(cache, preview.PreviewRequest(*pair, method="mtf_glp_fs", sensor=8),
                                       extent, width, height, str(tmp_path / "a.tif"))
    deep = preview.render_preview(cache, preview.PreviewRequest(*pair, method="panadapter", sensor=8,
                                                                device="cpu"),
                                  extent, width, height, str(tmp_path / "b.tif"))
    assert classical.plan.mode == FUSED and classical.plan.factor == 2
    assert deep.plan.mode == MULTISPECTRAL


def test_deep_preview_without_a_fitting_model_says_what_to_do(data_dir, tmp_path):
    four = fusebox_crop(data_dir, tmp_path, "scene_10", pan_size=64)   # 4 bands: SSDiff's weights have 6
    with pytest.raises(PansharpenError, match="panadapter:finetune"):
        preview.JobCache().get(preview.PreviewRequest(*four, method="ssdiff", sensor=8))
    with pytest.raises(PansharpenError, match="does not exist"):
        preview.JobCache().get(preview.PreviewRequest(*four, method="ssdiff", adapter=str(tmp_path / "no.pt")))


def test_cancelled_deep_preview_writes_nothing(crop, tmp_path):
    extent, width, height = extent_of(crop[0], 0, 0, 100, 100)
    out = tmp_path / "p.tif"
    with pytest.raises(Cancelled):
        preview.render_preview(preview.JobCache(), preview.PreviewRequest(*crop, method="ssdiff", sensor=8),
                               extent, width, height, str(out), is_cancelled=lambda: True)
    assert not out.exists()
