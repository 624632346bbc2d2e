"""Quality assessment of fused rasters on real scenes (backend.assess): identities, agreement with the
whole-array indices of backend.metrics, strips and tiles, several rasters, reports and user errors.
"""
import base64
import csv
import math
import re

import numpy as np
import pytest
import torch
from osgeo import gdal, osr

from panadapter_qgis.backend import assess, metrics, mtf, raster, wald
from panadapter_qgis.backend.errors import PansharpenError
from panadapter_qgis.backend.pipeline import pansharpen
from panadapter_qgis.backend.sensors import sensor_by_index

gdal.UseExceptions()

REDUCED = ("q2n", "q_avg", "sam", "ergas", "scc", "psnr")
FULL = ("d_lambda", "d_s", "hqnr", "d_lambda_qnr", "qnr")


def read(path):
    return gdal.Open(str(path)).ReadAsArray().astype(np.float64)


class Scene:
    """A real pair, its Wald-degraded pair and fusions of both (upsample, MTF-GLP-FS) in a temp folder."""

    def __init__(self, data_dir, folder, name, sensor):
        src = data_dir / "pansharpening" / name
        if not (src / "pan.tif").is_file():
            pytest.skip(f"scene not found: {src}")
        self.name, self.sensor, self.folder = name, sensor, folder
        self.pan, self.ms = str(src / "pan.tif"), str(src / "ms.tif")
        self.pan_lr, self.ms_lr, self.reference = (str(folder / f) for f in ("pan_lr.tif", "ms_lr.tif", "ref.tif"))
        self.ratio = wald.degrade(self.pan, self.ms, self.pan_lr, self.ms_lr, sensor=sensor,
                                  out_reference=self.reference)["ratio"]
        self.reduced, self.full = {}, {}
        for method in ("upsample", "mtf_glp_fs"):
            self.reduced[method] = str(folder / f"rr_{method}.tif")
            pansharpen(self.pan_lr, self.ms_lr, self.reduced[method], method, sensor=sensor, float32=True)
            self.full[method] = str(folder / f"fr_{method}.tif")
            pansharpen(self.pan, self.ms, self.full[method], method, sensor=sensor, float32=True)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, data_dir):
    cache = {}

    def get(name, sensor):
        if name not in cache:
            cache[name] = Scene(data_dir, tmp_path_factory.mktemp(name.replace("/", "_")), name, sensor)
        return cache[name]

    return get


@pytest.fixture
def wv3(scenes):
    return scenes("wv3_cristianics", 2)


@pytest.fixture
def istanbul_scene(scenes):
    return scenes("landsat8_istanbul", 8)


@pytest.fixture
def fusebox(scenes):
    return scenes("landsat7_fusebox/scene_05", 8)


def whole_reduced(reference_path, fused_path, ratio, data_range, cast, dim_cut=21):
    return metrics.reduced_resolution_indices(read(reference_path), np.nan_to_num(read(fused_path)), ratio,
                                              data_range, dim_cut, cast_uint16=cast)


def whole_full(scene, fused_path, row, cast):
    """The full-resolution indices of backend.metrics on whole arrays: the MS and the reduced PAN
    interpolated over the whole processing grid, the window of the assessment cut out afterwards."""
    info = raster.inspect_pair(scene.pan, scene.ms)
    reader, r = raster.PairReader(info), info.ratio
    ms = torch.from_numpy(reader.read_ms(0, info.rows, 0, info.cols)).double()[None]
    pan = torch.from_numpy(reader.read_pan(0, info.out_rows, 0, info.out_cols)).double()[None]
    ms_up = mtf.upsample_image(ms, r)[0].numpy()
    pan_lp = mtf.upsample_image(mtf.degrade_image(pan, mtf.bicubic_decimation_kernel_1d(r), r), r)[0, 0].numpy()
    col, line, cols, rows = row["window"]
    fused_ds, grid = gdal.Open(fused_path), info.out_geotransform
    gt = fused_ds.GetGeoTransform()
    c0 = int(round((gt[0] - grid[0]) / grid[1])) + col
    r0 = int(round((gt[3] - grid[3]) / grid[5])) + line
    window = (slice(r0, r0 + rows), slice(c0, c0 + cols))
    fused = fused_ds.ReadAsArray(col, line, cols, rows).astype(np.float64)
    sensor = sensor_by_index(scene.sensor)
    out = metrics.full_resolution_indices(fused, ms_up[:, window[0], window[1]], pan[0, 0].numpy()[window],
                                          pan_lp[window], sensor.gains_for(info.ms_bands, len(info.ms_bands)),
                                          r, cast_uint16=cast)
    out["d_lambda_qnr"] = metrics.d_lambda_qnr(fused, ms_up[:, window[0], window[1]])
    out["qnr"] = metrics.qnr(out["d_lambda_qnr"], out["d_s"])
    return out


# ----------------------------------------------------------------------------------------------------------
# Identities

def test_the_reference_against_itself_gives_the_identities(wv3):
    row = assess.assess_reduced(wv3.reference, wv3.reference)["rows"][0]
    assert row["q2n"] == pytest.approx(1.0, abs=1e-12)
    assert row["q_avg"] == pytest.approx(1.0, abs=1e-12)
    assert row["scc"] == pytest.approx(1.0, abs=1e-12)
    assert row["sam"] == 0.0 and row["ergas"] == 0.0 and row["psnr"] == math.inf
    assert row["nodata_fraction"] == 0.0


def test_the_interpolated_ms_has_no_band_pair_distortion_at_full_resolution(istanbul_scene):
    """The upsample method is the interpolated MS that the full-resolution indices compare with: QNR's
    D_lambda is 0 for it (up to its Float32 rounding), Khan's is not (it low-passes the fused image)."""
    row = assess.assess_full(istanbul_scene.full["upsample"], istanbul_scene.pan, istanbul_scene.ms, 8)["rows"][0]
    assert row["d_lambda_qnr"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < row["d_lambda"] < 0.1
    assert row["hqnr"] == pytest.approx((1 - row["d_lambda"]) * (1 - row["d_s"]))
    assert row["qnr"] == pytest.approx((1 - row["d_lambda_qnr"]) * (1 - row["d_s"]))


# ----------------------------------------------------------------------------------------------------------
# Agreement with the whole-array indices

@pytest.mark.parametrize("scene_name", ["wv3", "fusebox", "istanbul_scene"])
def test_reduced_resolution_equals_the_whole_array_indices(request, scene_name):
    scene = request.getfixturevalue(scene_name)
    fused = scene.reduced["mtf_glp_fs"]
    result = assess.assess_reduced(fused, scene.reference)
    row = result["rows"][0]
    assert result["ratio"] == scene.ratio  # from the fused raster's metadata
    expected = whole_reduced(scene.reference, fused, scene.ratio, result["data_range"],
                             result["q2n_uint16_cast"])
    for key in REDUCED:
        assert row[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-14), key
    # ... and with 7-row strips, which cut Q2n blocks, Q windows and Sobel neighbourhoods everywhere
    strips = assess.assess_reduced(fused, scene.reference, strip_rows=7)["rows"][0]
    for key in REDUCED:
        assert strips[key] == pytest.approx(row[key], rel=1e-12, abs=1e-14), key


@pytest.mark.parametrize("scene_name", ["wv3", "istanbul_scene"])
def test_full_resolution_equals_the_whole_array_indices_whatever_the_tiles(request, scene_name):
    scene = request.getfixturevalue(scene_name)
    fused = scene.full["mtf_glp_fs"]
    result = assess.assess_full(fused, scene.pan, scene.ms, scene.sensor)
    row = result["rows"][0]
    col, line, cols, rows = row["window"]
    assert cols % 32 == 0 and rows % 32 == 0
    expected = whole_full(scene, fused, row, result["q2n_uint16_cast"])
    for key in FULL:
        assert row[key] == pytest.approx(expected[key], rel=1e-10, abs=1e-12), key
    tiled = assess.assess_full(fused, scene.pan, scene.ms, scene.sensor, tile_size=64)["rows"][0]
    for key in FULL:
        assert tiled[key] == pytest.approx(row[key], rel=1e-10, abs=1e-12), key


def test_psnr_peak_comes_from_bit_depth_else_the_maximum(wv3, fusebox):
    with_bits = assess.assess_reduced(fusebox.reduced["upsample"], fusebox.reference)
    assert with_bits["data_range"] == 255.0 and "BIT_DEPTH" in with_bits["data_range_source"]
    without = assess.assess_reduced(wv3.reduced["upsample"], wv3.reference)  # float32, no BIT_DEPTH
    assert without["data_range"] == pytest.approx(read(wv3.reference).max())
    assert "maximum" in without["data_range_source"]
    # FuseBox holds 8-bit counts: Q2n with the toolbox's uint16 cast; WV3 is float radiance: without
    assert with_bits["q2n_uint16_cast"] and not without["q2n_uint16_cast"]
    assert any("uint16" in note for note in without["notes"])


# ----------------------------------------------------------------------------------------------------------
# Several rasters, reports

def test_several_rasters_give_one_row_each_and_sharpening_ranks_first(wv3, tmp_path):
    fused = [wv3.reduced["upsample"], wv3.reduced["mtf_glp_fs"]]
    result = assess.assess_reduced(fused, wv3.reference)
    assert [r["name"] for r in result["rows"]] == ["rr_upsample", "rr_mtf_glp_fs"]
    up, fs = result["rows"]
    assert fs["ergas"] < up["ergas"] and fs["sam"] < up["sam"]
    assert fs["q2n"] > up["q2n"] and fs["scc"] > up["scc"] and fs["psnr"] > up["psnr"]
    alone = assess.assess_reduced(wv3.reduced["mtf_glp_fs"], wv3.reference)["rows"][0]
    assert all(alone[k] == fs[k] for k in REDUCED)

    full = assess.assess_full([wv3.full["upsample"], wv3.full["mtf_glp_fs"]], wv3.pan, wv3.ms, 2)
    up, fs = full["rows"]
    assert fs["hqnr"] > up["hqnr"] and fs["d_s"] < up["d_s"]


def test_html_report_and_csv(wv3, tmp_path):
    result = assess.assess_reduced([wv3.reduced["upsample"], wv3.reduced["mtf_glp_fs"]], wv3.reference)
    assert [label for label in result["error_maps"][0]] == ["visible (bands 5, 3, 2)",
                                                            "other bands (1, 4, 6, 7, 8)"]
    page = assess.write_html_report(result, str(tmp_path / "report.html"))
    text = open(page, encoding="utf-8").read()
    assert text.count("<tr>") >= 3 and "rr_mtf_glp_fs" in text and "ERGAS" in text
    assert "class='best'" in text
    assert "BIT_DEPTH" in text or "maximum of the reference" in text  # the PSNR peak's source
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) == 2 * 2 + 1  # two rasters x two band groups, and the colour scale
    for data in images:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        gdal.FileFromMemBuffer("/vsimem/map.png", png)
        assert gdal.Open("/vsimem/map.png").RasterCount == 3
        gdal.Unlink("/vsimem/map.png")

    table = assess.write_csv(result, str(tmp_path / "table.csv"))
    with open(table, newline="") as f:
        lines = list(csv.DictReader(f))
    assert [line["name"] for line in lines] == ["rr_upsample", "rr_mtf_glp_fs"]
    for line, row in zip(lines, result["rows"]):
        for key in REDUCED:
            assert float(line[key]) == row[key]

    full = assess.assess_full(wv3.full["mtf_glp_fs"], wv3.pan, wv3.ms, 2)
    text = open(assess.write_html_report(full, str(tmp_path / "full.html")), encoding="utf-8").read()
    assert "HQNR" in text and "D_s" in text and text.count("data:image/png") == 3
    assert '"hqnr"' in assess.to_json(full)


def test_a_band_subset_is_matched_by_description(fusebox, tmp_path):
    subset = str(tmp_path / "rgb.tif")
    pansharpen(fusebox.pan_lr, fusebox.ms_lr, subset, "mtf_glp_fs", sensor=8, float32=True, ms_bands=[3, 2, 1])
    row = assess.assess_reduced(subset, fusebox.reference)["rows"][0]
    assert row["reference_bands"] == [3, 2, 1]
    all_bands = read(fusebox.reduced["mtf_glp_fs"])[[2, 1, 0]]
    expected = metrics.ergas(metrics.cut_border(read(fusebox.reference)[[2, 1, 0]]), metrics.cut_border(all_bands),
                             2)
    assert row["ergas"] == pytest.approx(expected, rel=1e-3)  # same method; statistics differ a little


# ----------------------------------------------------------------------------------------------------------
# User errors

def _copy(src, dst, **translate):
    gdal.Translate(str(dst), str(src), **translate)
    return str(dst)


def test_rasters_that_cannot_be_compared_are_refused_with_a_sentence(wv3, tmp_path):
    fused = wv3.reduced["mtf_glp_fs"]
    ds = gdal.Open(fused)
    x0, px, _, y0, _, py = ds.GetGeoTransform()
    w, h = ds.RasterXSize, ds.RasterYSize
    with pytest.raises(PansharpenError, match="pixels of .* same grid"):  # full-resolution raster vs MS grid
        assess.assess_reduced(wv3.full["mtf_glp_fs"], wv3.reference)
    far = _copy(fused, tmp_path / "far.tif", outputBounds=[x0 + 2 * w * px, y0, x0 + 3 * w * px, y0 + h * py])
    with pytest.raises(PansharpenError, match="do not overlap"):
        assess.assess_reduced(far, wv3.reference)
    half = _copy(fused, tmp_path / "half.tif", outputBounds=[x0 + px / 2, y0, x0 + px / 2 + w * px, y0 + h * py])
    with pytest.raises(PansharpenError, match="fraction of a pixel"):
        assess.assess_reduced(half, wv3.reference)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    other_crs = _copy(fused, tmp_path / "crs.tif", outputSRS=srs.ExportToWkt())
    with pytest.raises(PansharpenError, match="coordinate reference system"):
        assess.assess_reduced(other_crs, wv3.reference)
    two_bands = _copy(fused, tmp_path / "two.tif", bandList=[1, 2])
    update = gdal.Open(two_bands, gdal.GA_Update)
    for b in (1, 2):  # no descriptions to match the bands by
        update.GetRasterBand(b).SetDescription("")
    update = None
    with pytest.raises(PansharpenError, match="has 2 bands and the reference 8"):
        assess.assess_reduced(two_bands, wv3.reference)
    with pytest.raises(PansharpenError, match="No fused raster"):
        assess.assess_reduced([], wv3.reference)
    with pytest.raises(PansharpenError, match="too small for a border cut"):
        small = _copy(fused, tmp_path / "small.tif", srcWin=[0, 0, 40, 40])
        assess.assess_reduced(small, wv3.reference)
    with pytest.raises(PansharpenError, match="less than one 32 x 32 block"):
        assess.assess_full(_copy(wv3.full["mtf_glp_fs"], tmp_path / "tiny.tif", srcWin=[0, 0, 20, 100]),
                           wv3.pan, wv3.ms, 2)


@pytest.mark.parametrize("ratio", [2, 3, 4, 8])
def test_numpy_interpolation_is_the_torch_one(ratio):
    halo = mtf.interp_halo(ratio)
    x = np.random.default_rng(ratio).uniform(0, 2047, (3, 19 + 2 * halo, 26 + 2 * halo))
    expected = mtf.upsample(torch.from_numpy(x)[None], ratio, halo)[0].numpy()
    np.testing.assert_allclose(assess.upsample_valid(x, ratio, halo), expected, rtol=0, atol=1e-9)
