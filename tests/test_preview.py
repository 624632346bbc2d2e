"""The map preview's logic without QGIS: which window of the output grid a canvas shows and at which
decimation, block averages, the true-colour bands and stretch, and previews of a real scene that match the
whole-scene result."""
import math

import numpy as np
import pytest
from osgeo import gdal

from panadapter_qgis.backend import preview
from panadapter_qgis.backend.errors import Cancelled, PansharpenError
from panadapter_qgis.backend.preview import FUSED, MULTISPECTRAL, block_mean, plan_preview, rgb_bands

gdal.UseExceptions()

# The WorldView-3 scene's output grid: 576 x 572 PAN pixels of 0.3 m, ratio 4.
GT = (400430.4, 0.3, 0.0, 4217661.6, 0.0, -0.3)
ROWS, COLS, RATIO = 572, 576, 4


def extent_of(row0, col0, rows, cols, pixel=0.3):
    """(xmin, ymin, xmax, ymax) of a window of the grid, ``pixel`` metres per screen pixel."""
    x0, y1 = GT[0] + col0 * 0.3, GT[3] - row0 * 0.3
    return x0, y1 - rows * pixel, x0 + cols * pixel, y1


# ------------------------------------------------------------------------------------------- planning

def test_native_resolution_fuses_exactly_the_canvas_window():
    plan = plan_preview(extent_of(120, 100, 150, 200), 200, 150, GT, ROWS, COLS, RATIO)
    assert (plan.row0, plan.row1, plan.col0, plan.col1) == (120, 270, 100, 300)
    assert (plan.factor, plan.mode, plan.rows, plan.cols) == (1, FUSED, 150, 200)
    assert plan.geotransform == pytest.approx((GT[0] + 30, 0.3, 0, GT[3] - 36, 0, -0.3))
    assert plan.zoom == pytest.approx(1.0)


def test_unaligned_native_extent_adds_at_most_the_partly_visible_row_and_column():
    x0, y0, x1, y1 = extent_of(120, 100, 150, 200)
    plan = plan_preview((x0 + 0.1, y0 - 0.1, x1 + 0.1, y1 - 0.1), 200, 150, GT, ROWS, COLS, RATIO)
    assert plan.factor == 1
    assert (plan.rows, plan.cols) == (151, 201)
    assert (plan.row0, plan.col0) == (120, 100)


def test_zoomed_in_fuses_fewer_pixels_than_the_canvas():
    plan = plan_preview(extent_of(300, 300, 150, 200, pixel=0.1), 200, 150, GT, ROWS, COLS, RATIO)
    assert plan.factor == 1 and plan.mode == FUSED
    assert (plan.rows, plan.cols) == (50, 67)  # 15 m x 20 m, the last column partly visible


def test_zoomed_out_below_the_ratio_averages_fused_blocks_on_a_stable_grid():
    plan = plan_preview(extent_of(101, 99, 150, 200, pixel=0.45), 200, 150, GT, ROWS, COLS, RATIO)
    assert plan.mode == FUSED and plan.factor == 2
    assert plan.rows <= 150 and plan.cols <= 200
    assert plan.row0 % 2 == 0 and plan.col0 % 2 == 0  # aligned on the factor: panning does not shift it
    assert plan.geotransform[1] == pytest.approx(0.6) and plan.geotransform[5] == pytest.approx(-0.6)
    assert plan.fused_pixels == (plan.row1 - plan.row0) * (plan.col1 - plan.col0)


def test_zoomed_out_to_the_ms_pixel_shows_the_multispectral_image():
    plan = plan_preview(extent_of(0, 0, 143, 144, pixel=1.2), 144, 143, GT, ROWS, COLS, RATIO)
    assert plan.mode == MULTISPECTRAL
    assert plan.factor % RATIO == 0 and plan.factor >= 4
    assert plan.rows <= 143 and plan.cols <= 144
    assert plan.fused_pixels == 0


def test_too_many_pan_pixels_in_view_falls_back_to_the_multispectral_image():
    extent = extent_of(0, 0, 150, 200, pixel=0.45)
    assert plan_preview(extent, 200, 150, GT, ROWS, COLS, RATIO).mode == FUSED
    plan = plan_preview(extent, 200, 150, GT, ROWS, COLS, RATIO, max_fused_pixels=10_000)
    assert plan.mode == MULTISPECTRAL and plan.factor == 4


def test_a_canvas_beyond_the_images_is_clipped_to_the_grid():
    x0, y0, x1, y1 = extent_of(500, 500, 150, 200)  # runs past the bottom-right corner
    plan = plan_preview((x0, y0, x1, y1), 200, 150, GT, ROWS, COLS, RATIO)
    assert (plan.row1, plan.col1) == (ROWS, COLS)
    assert (plan.rows, plan.cols) == (72, 76)


def test_a_canvas_outside_the_images_is_an_error():
    with pytest.raises(PansharpenError, match="no part of the PAN/MS overlap"):
        plan_preview((0, 0, 60, 45), 200, 150, GT, ROWS, COLS, RATIO)
    with pytest.raises(PansharpenError, match="no size"):
        plan_preview(extent_of(0, 0, 150, 200), 0, 150, GT, ROWS, COLS, RATIO)


@pytest.mark.parametrize("seed", range(40))
def test_a_zoomed_out_preview_never_has_more_pixels_than_the_canvas(seed):
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(20, 400)), int(rng.integers(20, 300))
    pixel = float(rng.uniform(0.31, 4.0))
    x0 = GT[0] + rng.uniform(-50, 150)
    y1 = GT[3] - rng.uniform(-50, 150)
    extent = (x0, y1 - height * pixel, x0 + width * pixel, y1)
    try:
        plan = plan_preview(extent, width, height, GT, ROWS, COLS, RATIO, max_fused_pixels=50_000)
    except PansharpenError:
        return  # the view missed the images
    assert plan.factor >= math.ceil(pixel / 0.3 - 1e-3)
    assert plan.rows <= height and plan.cols <= width
    assert plan.fused_pixels <= 50_000
    assert plan.mode == FUSED or plan.factor % RATIO == 0


# ----------------------------------------------------------------------------------------- block mean

def test_block_mean_averages_blocks_ignores_nan_and_keeps_partial_edges():
    a = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5)
    a[0, 0, 0] = np.nan
    a[1, 4, :] = np.nan
    out = block_mean(a, 2)
    assert out.shape == (2, 3, 3)
    assert out[0, 0, 0] == pytest.approx(np.mean([1, 5, 6]))
    assert out[0, 1, 1] == pytest.approx(a[0, 2:4, 2:4].mean())
    assert out[0, 2, 2] == pytest.approx(a[0, 4, 4])         # partial corner block: its one pixel
    assert out[0, 0, 2] == pytest.approx(a[0, 0:2, 4].mean())  # partial right column
    assert np.isnan(out[1, 2]).all()                           # blocks with no valid pixel
    assert block_mean(a, 1) is a


# -------------------------------------------------------------------------------------- true colour

def _descriptions(path):
    ds = gdal.Open(str(path))
    return [ds.GetRasterBand(i + 1).GetDescription() for i in range(ds.RasterCount)]


def test_rgb_from_the_band_descriptions_of_real_scenes(data_dir):
    scenes = data_dir / "pansharpening"
    # Landsat 8 Istanbul: blue, green, red
    assert rgb_bands(_descriptions(scenes / "landsat8_istanbul" / "ms.tif")) == (3, 2, 1)
    # FuseBox Landsat 7: red, green, blue, NIR, SWIR1, SWIR2
    assert rgb_bands(_descriptions(scenes / "landsat7_fusebox" / "scene_01" / "ms.tif")) == (1, 2, 3)
    # Zhengzhou GaoFen: "MS band 3 (red?)" still names red
    assert rgb_bands(_descriptions(scenes / "zhengzhou_4band" / "ms.tif")) == (3, 2, 1)


def test_rgb_from_the_sensor_or_the_band_count(data_dir):
    wv3 = _descriptions(data_dir / "pansharpening" / "wv3_cristianics" / "ms.tif")  # "MS band n (source order)"
    assert rgb_bands(wv3, sensor=2) == (5, 3, 2)
    assert rgb_bands(wv3, sensor=0) == (5, 3, 2)           # eight bands: the WorldView order
    assert rgb_bands([""] * 4, sensor=3) == (3, 2, 1)       # QuickBird B, G, R, NIR
    assert rgb_bands([""] * 4) == (3, 2, 1)
    assert rgb_bands([""] * 6, sensor=8) == (1, 2, 3)       # Landsat in the FuseBox order
    assert rgb_bands([""] * 5) == (1, 2, 3)
    assert rgb_bands(["pan"]) == (1, 1, 1)


def test_rgb_follows_the_selected_ms_bands():
    # WorldView-3 bands 5, 3, 2 selected in that order: the output's bands 1, 2, 3 are red, green, blue
    assert rgb_bands([""] * 3, sensor=2, source_bands=[5, 3, 2], source_count=8) == (1, 2, 3)
    assert rgb_bands([""] * 4, sensor=2, source_bands=[2, 3, 5, 7], source_count=8) == (3, 2, 1)
    # red not selected: the first three bands
    assert rgb_bands([""] * 3, sensor=2, source_bands=[1, 2, 3], source_count=8) == (1, 2, 3)


def test_red_edge_and_infrared_do_not_count_as_red():
    bands = ["coastal", "blue", "green", "yellow", "red", "red edge", "near infrared 1", "near infrared 2"]
    assert rgb_bands(bands) == (5, 3, 2)


def test_stretch_limits_are_the_2_and_98_percentiles_of_the_finite_pixels():
    band = np.arange(10_000, dtype=np.float32).reshape(1, 100, 100)
    band[0, :10] = np.nan
    (low, high), = preview.stretch_limits(band)
    finite = np.arange(1000, 10_000)
    assert low == pytest.approx(np.percentile(finite, 2)) and high == pytest.approx(np.percentile(finite, 98))
    (low, high), = preview.stretch_limits(np.full((1, 5, 5), 7, np.float32))
    assert high > low == 7
    assert preview.stretch_limits(np.full((1, 3, 3), np.nan, np.float32)) == [(0.0, 1.0)]


# ---------------------------------------------------------------------------- previews of a real scene

@pytest.fixture(scope="module")
def whole_scene(wv3, tmp_path_factory):
    """The whole-scene MTF-GLP-FS result (Float32) as the pipeline writes it."""
    from panadapter_qgis.backend.pipeline import pansharpen

    out = str(tmp_path_factory.mktemp("whole") / "fused.tif")
    pansharpen(*wv3, out, method="mtf_glp_fs", sensor=2, float32=True, tile_size=256)
    return gdal.Open(out).ReadAsArray()


def test_native_preview_has_the_pixels_of_the_whole_scene_run(wv3, whole_scene, tmp_path):
    cache = preview.JobCache()
    request = preview.PreviewRequest(*wv3, method="mtf_glp_fs", sensor=2)
    out = str(tmp_path / "p.tif")
    result = preview.render_preview(cache, request, extent_of(120, 100, 150, 200), 200, 150, out)
    ds = gdal.Open(out)
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (200, 150, 8)
    assert ds.GetGeoTransform() == pytest.approx((GT[0] + 30, 0.3, 0, GT[3] - 36, 0, -0.3))
    np.testing.assert_allclose(ds.ReadAsArray(), whole_scene[:, 120:270, 100:300], rtol=1e-4, atol=1e-4)
    assert result.rgb == (5, 3, 2)
    assert len(result.limits) == 8 and all(high > low for low, high in result.limits)


def test_zoomed_out_preview_is_the_block_mean_of_the_whole_scene_run(wv3, whole_scene, tmp_path):
    cache = preview.JobCache()
    request = preview.PreviewRequest(*wv3, method="mtf_glp_fs", sensor=2)
    out = str(tmp_path / "p.tif")
    result = preview.render_preview(cache, request, extent_of(100, 100, 150, 200, pixel=0.6), 200, 150, out)
    plan = result.plan
    assert plan.mode == FUSED and plan.factor == 2
    window = whole_scene[:, plan.row0:plan.row1, plan.col0:plan.col1]
    np.testing.assert_allclose(gdal.Open(out).ReadAsArray(), block_mean(window, 2), rtol=1e-4, atol=1e-4)


def test_zoomed_out_to_the_whole_scene_shows_the_averaged_ms(wv3, tmp_path):
    cache = preview.JobCache()
    request = preview.PreviewRequest(*wv3, method="mtf_glp_fs", sensor=2)
    out = str(tmp_path / "p.tif")
    result = preview.render_preview(cache, request, extent_of(0, 0, 143, 144, pixel=4.0), 144, 143, out)
    plan = result.plan
    assert plan.mode == MULTISPECTRAL and plan.factor == 16
    ms = gdal.Open(wv3[1]).ReadAsArray().astype(np.float32)
    data = gdal.Open(out).ReadAsArray()
    assert data.shape == (8, plan.rows, plan.cols) == (8, 36, 36)
    np.testing.assert_allclose(data, block_mean(ms, 4), rtol=1e-4)
    ds = gdal.Open(out)
    assert ds.GetGeoTransform()[1] == pytest.approx(4.8)


def test_the_statistics_are_computed_once_per_pair_method_and_sensor(wv3, tmp_path):
    cache = preview.JobCache(size=2)
    request = preview.PreviewRequest(*wv3, method="gsa", sensor=2)
    first = preview.render_preview(cache, request, extent_of(0, 0, 150, 200), 200, 150, str(tmp_path / "a.tif"))
    job = cache.get(request).job
    params = job.params
    preview.render_preview(cache, request, extent_of(200, 200, 150, 200), 200, 150, str(tmp_path / "b.tif"))
    assert cache.get(request).job is job and job.params is params
    other = preview.PreviewRequest(*wv3, method="gsa", sensor=0)
    assert cache.get(other).job is not job
    cache.get(preview.PreviewRequest(*wv3, method="brovey"))
    assert len(cache) == 2  # the least recently used job went
    assert first.method == "gsa"


def test_cancel_stops_the_preview_and_writes_nothing(wv3, tmp_path):
    out = tmp_path / "p.tif"
    with pytest.raises(Cancelled):
        preview.render_preview(preview.JobCache(), preview.PreviewRequest(*wv3), extent_of(0, 0, 150, 200),
                               200, 150, str(out), is_cancelled=lambda: True)
    assert not out.exists()


def test_a_method_without_window_fusion_is_refused_with_advice(wv3, tmp_path):
    assert preview.previewable("mtf_glp_fs") and preview.previewable("panadapter")
    assert not preview.previewable("inf_fusion")
    with pytest.raises(PansharpenError, match="no map preview yet"):
        preview.JobCache().get(preview.PreviewRequest(*wv3, method="inf_fusion"))
