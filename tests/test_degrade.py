"""Wald's protocol on real scenes (backend.wald): georeference, sizes, radiometry, tiles, PAN variants.

A reduced pair must be a pair like any other (georeferenced, the MS pixel ``ratio`` times the PAN pixel) whose
fusion lands on the grid of the original MS, the reference; streaming in tiles must not change a number.
"""
import numpy as np
import pytest
from osgeo import gdal, osr

from panadapter_qgis.backend import metrics, raster, wald
from panadapter_qgis.backend.errors import PansharpenError
from panadapter_qgis.backend.pipeline import pansharpen
from panadapter_qgis.backend.sensors import sensor_by_index

gdal.UseExceptions()

# scene -> sensor index (DESIGN.md enum)
SCENES = {"wv3_cristianics": 2, "landsat8_istanbul": 8, "landsat7_fusebox/scene_05": 8}


def scene_paths(data_dir, name):
    scene = data_dir / "pansharpening" / name
    if not (scene / "pan.tif").is_file():
        pytest.skip(f"scene not found: {scene}")
    return str(scene / "pan.tif"), str(scene / "ms.tif")


def read(path):
    return gdal.Open(str(path)).ReadAsArray().astype(np.float64)


def degraded(data_dir, tmp_path, name, **options):
    pan, ms = scene_paths(data_dir, name)
    out = {k: str(tmp_path / f"{k}.tif") for k in ("pan", "ms", "ref")}
    result = wald.degrade(pan, ms, out["pan"], out["ms"], sensor=SCENES[name], out_reference=out["ref"],
                          **options)
    return pan, ms, out, result


@pytest.mark.parametrize("name", sorted(SCENES))
def test_outputs_are_georeferenced_on_the_ms_grid_and_ratio_times_coarser(data_dir, tmp_path, name):
    pan, ms, out, result = degraded(data_dir, tmp_path, name)
    info = raster.inspect_pair(pan, ms)
    r = info.ratio
    rows, cols = info.rows // r * r, info.cols // r * r  # the grid is cut to a multiple of the ratio
    x0, px, _, y0, _, py = info.out_geotransform
    pan_lr, ms_lr, ref = (gdal.Open(out[k]) for k in ("pan", "ms", "ref"))

    assert (pan_lr.RasterYSize, pan_lr.RasterXSize, pan_lr.RasterCount) == (rows, cols, 1)
    assert (ms_lr.RasterYSize, ms_lr.RasterXSize) == (rows // r, cols // r)
    assert (result["rows"], result["cols"], result["ratio"]) == (rows // r, cols // r, r)
    assert pan_lr.GetGeoTransform() == pytest.approx((x0, px * r, 0, y0, 0, py * r))
    assert ms_lr.GetGeoTransform() == pytest.approx((x0, px * r * r, 0, y0, 0, py * r * r))
    assert ref.GetGeoTransform() == pan_lr.GetGeoTransform()
    pan_srs = osr.SpatialReference(gdal.Open(pan).GetProjection())
    for ds in (pan_lr, ms_lr, ref):
        assert osr.SpatialReference(ds.GetProjection()).IsSame(pan_srs)
        assert ds.GetRasterBand(1).DataType == gdal.GDT_Float32
    ms_ds = gdal.Open(ms)
    descriptions = [ms_ds.GetRasterBand(b + 1).GetDescription() for b in range(ms_ds.RasterCount)]
    assert [ms_lr.GetRasterBand(b + 1).GetDescription() for b in range(ms_lr.RasterCount)] == descriptions
    assert ms_lr.GetMetadataItem("RATIO") == str(r)
    # the reduced pair is a pair: the pipeline accepts it and puts the fusion on the reference grid
    assert raster.inspect_pair(out["pan"], out["ms"]).ratio == r
    # when the MS grid coincides with the processing grid, the original MS is the reference as it is
    if not info.warped:
        assert result["reference"] == out["ref"]
        np.testing.assert_array_equal(read(out["ref"]), read(ms)[:, :rows, :cols])


@pytest.mark.parametrize("name", sorted(SCENES))
def test_reduced_ms_keeps_the_band_means(data_dir, tmp_path, name):
    _, _, out, _ = degraded(data_dir, tmp_path, name)
    reference, ms_lr = read(out["ref"]), read(out["ms"])
    np.testing.assert_allclose(ms_lr.mean(axis=(1, 2)), reference.mean(axis=(1, 2)), rtol=0.01)
    pan_lr_mean = read(out["pan"]).mean()
    assert pan_lr_mean > 0


@pytest.mark.parametrize("name, pan_mode", [("wv3_cristianics", "mtf"), ("landsat8_istanbul", "bicubic"),
                                            ("landsat7_fusebox/scene_05", "mtf")])
def test_tiles_give_the_whole_array_numbers(data_dir, tmp_path, name, pan_mode):
    pan, ms = scene_paths(data_dir, name)
    # tiles of 64 PAN pixels: 4 reduced pixels at ratio 4, 16 at ratio 2, with partial tiles at the edges
    wald.degrade(pan, ms, str(tmp_path / "p.tif"), str(tmp_path / "m.tif"), sensor=SCENES[name],
                 pan_mode=pan_mode, tile_size=64)
    info = raster.inspect_pair(pan, ms)
    r = info.ratio
    rows, cols = info.rows // r * r, info.cols // r * r
    reader = raster.PairReader(info)
    sensor = sensor_by_index(SCENES[name])
    pan_whole, ms_whole = wald.degrade_arrays(reader.read_pan(0, rows * r, 0, cols * r),
                                              reader.read_ms(0, rows, 0, cols), r,
                                              sensor.gains_for(info.ms_bands, len(info.ms_bands)),
                                              sensor.pan_gain, pan_mode)
    np.testing.assert_array_equal(read(tmp_path / "p.tif"), pan_whole[0].astype(np.float32))
    np.testing.assert_array_equal(read(tmp_path / "m.tif"), ms_whole.astype(np.float32))


def test_bicubic_pan_differs_from_mtf_pan_and_the_ms_does_not_change(data_dir, tmp_path):
    pan, ms = scene_paths(data_dir, "wv3_cristianics")
    for mode in ("mtf", "bicubic"):
        wald.degrade(pan, ms, str(tmp_path / f"p_{mode}.tif"), str(tmp_path / f"m_{mode}.tif"), sensor=2,
                     pan_mode=mode)
    pan_mtf, pan_bicubic = read(tmp_path / "p_mtf.tif"), read(tmp_path / "p_bicubic.tif")
    np.testing.assert_array_equal(read(tmp_path / "m_mtf.tif"), read(tmp_path / "m_bicubic.tif"))
    relative = np.abs(pan_mtf - pan_bicubic).mean() / pan_mtf.mean()
    assert relative > 1e-3
    # both are low-pass versions of the same PAN: same mean, and the bicubic keeps more detail
    assert pan_bicubic.mean() == pytest.approx(pan_mtf.mean(), rel=1e-3)
    assert np.abs(np.diff(pan_bicubic, axis=-1)).mean() > np.abs(np.diff(pan_mtf, axis=-1)).mean()
    assert gdal.Open(str(tmp_path / "p_bicubic.tif")).GetMetadataItem("PAN_DEGRADATION") == "bicubic"


@pytest.mark.slow
@pytest.mark.parametrize("name, gain", [("wv3_cristianics", 0.67), ("landsat7_fusebox/scene_05", 0.95)])
def test_fusing_the_reduced_pair_is_measured_against_the_original_ms(data_dir, tmp_path, name, gain):
    """The reduced pair fused with ``upsample`` and MTF-GLP-FS: the ERGAS against the original MS, as in
    tests/test_quality.py (degrade_pair's reference array). Sharpening cuts it by a third on WorldView-3;
    less on Landsat 7, whose NIR-heavy PAN matches the visible bands poorly."""
    sensor = SCENES[name]
    pan, ms = scene_paths(data_dir, name)
    info, reference = wald.degrade_pair(pan, ms, str(tmp_path / "p.tif"), str(tmp_path / "m.tif"), sensor)
    wald.degrade(pan, ms, str(tmp_path / "p2.tif"), str(tmp_path / "m2.tif"), sensor=sensor,
                 out_reference=str(tmp_path / "ref.tif"))
    np.testing.assert_array_equal(reference, read(tmp_path / "ref.tif"))
    np.testing.assert_array_equal(read(tmp_path / "m.tif"), read(tmp_path / "m2.tif"))
    ergas = {}
    for method in ("upsample", "mtf_glp_fs"):
        out = tmp_path / f"{method}.tif"
        pansharpen(str(tmp_path / "p.tif"), str(tmp_path / "m.tif"), str(out), method, sensor=sensor,
                   float32=True)
        fused = read(out)
        assert fused.shape == reference.shape
        assert gdal.Open(str(out)).GetGeoTransform() == pytest.approx(
            gdal.Open(str(tmp_path / "ref.tif")).GetGeoTransform())
        ergas[method] = metrics.ergas(metrics.cut_border(reference), metrics.cut_border(fused), info.ratio)
    # upsampling a Wald-degraded MS loses the MTF-attenuated detail: a few ERGAS units on these scenes
    assert 1.0 < ergas["upsample"] < 15.0
    assert ergas["mtf_glp_fs"] < gain * ergas["upsample"]


def test_band_selection_float_off_and_reference(data_dir, tmp_path):
    pan, ms = scene_paths(data_dir, "landsat7_fusebox/scene_05")
    out = {k: str(tmp_path / f"{k}.tif") for k in ("pan", "ms", "ref")}
    result = wald.degrade(pan, ms, out["pan"], out["ms"], sensor=8, ms_bands=[3, 2, 1], float32=False,
                          out_reference=out["ref"])
    ms_ds, ms_lr, ref = gdal.Open(ms), gdal.Open(out["ms"]), gdal.Open(out["ref"])
    assert result["bands"] == ms_lr.RasterCount == ref.RasterCount == 3
    assert [ms_lr.GetRasterBand(i + 1).GetDescription() for i in range(3)] == \
           [ms_ds.GetRasterBand(b).GetDescription() for b in (3, 2, 1)]
    # the input types (Byte), values rounded
    for ds in (ms_lr, ref, gdal.Open(out["pan"])):
        assert ds.GetRasterBand(1).DataType == gdal.GDT_Byte
    np.testing.assert_array_equal(read(out["ref"]), read(ms)[[2, 1, 0], :398, :398])  # 399 cut to 2 x 199
    assert ms_lr.GetMetadataItem("BIT_DEPTH") == "8"


def test_nodata_blocks_stay_nodata(tmp_path):
    """A no-data MS pixel makes the reduced pixel that contains it no-data (Float32 keeps the value)."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    rng = np.random.default_rng(0)
    driver = gdal.GetDriverByName("GTiff")
    pan = driver.Create(str(tmp_path / "pan.tif"), 64, 64, 1, gdal.GDT_Float32)
    pan.SetGeoTransform((500000, 1, 0, 5000000, 0, -1))
    pan.SetProjection(srs.ExportToWkt())
    pan.WriteArray(rng.uniform(100, 200, (64, 64)))
    ms = driver.Create(str(tmp_path / "ms.tif"), 16, 16, 4, gdal.GDT_Float32)
    ms.SetGeoTransform((500000, 4, 0, 5000000, 0, -4))
    ms.SetProjection(srs.ExportToWkt())
    data = rng.uniform(100, 200, (4, 16, 16))
    data[2, 9, 5] = -1
    for b in range(4):
        ms.GetRasterBand(b + 1).WriteArray(data[b])
        ms.GetRasterBand(b + 1).SetNoDataValue(-1)
    pan = ms = None
    wald.degrade(str(tmp_path / "pan.tif"), str(tmp_path / "ms.tif"), str(tmp_path / "p.tif"),
                 str(tmp_path / "m.tif"))
    reduced = gdal.Open(str(tmp_path / "m.tif"))
    assert reduced.GetRasterBand(1).GetNoDataValue() == -1
    values = reduced.ReadAsArray()
    assert (values[:, 9 // 4, 5 // 4] == -1).all()
    assert (values != -1).sum() == values.size - 4


def test_user_errors_are_sentences_and_leave_nothing(data_dir, tmp_path):
    pan, ms = scene_paths(data_dir, "wv3_cristianics")
    with pytest.raises(PansharpenError, match="must not be one of the input"):
        wald.degrade(pan, ms, pan, str(tmp_path / "m.tif"))
    with pytest.raises(PansharpenError, match="different files"):
        wald.degrade(pan, ms, str(tmp_path / "x.tif"), str(tmp_path / "x.tif"))
    with pytest.raises(PansharpenError, match="PAN degradation"):
        wald.degrade(pan, ms, str(tmp_path / "p.tif"), str(tmp_path / "m.tif"), pan_mode="lanczos")
    with pytest.raises(PansharpenError, match="one band"):
        wald.degrade(ms, pan, str(tmp_path / "p.tif"), str(tmp_path / "m.tif"))
    with pytest.raises(PansharpenError, match="folder"):
        wald.degrade(pan, ms, str(tmp_path / "no" / "p.tif"), str(tmp_path / "m.tif"))
    assert not list(tmp_path.rglob("*.tif"))
