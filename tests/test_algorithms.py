"""Every classical algorithm through the Processing registry (as the toolbox, the modeler and scripts run it)
on real scenes: georeference equal to the PAN's, band count and data type of the MS, nodata honoured."""
import numpy as np
import pytest
from osgeo import gdal, osr

from conftest import CLASSICAL_IDS

gdal.UseExceptions()


@pytest.fixture(scope="module")
def wv3_with_hole(tmp_path_factory, data_dir):
    """The WorldView-3 scene (Float32, nodata 0) with a nodata block punched into a copy of its PAN."""
    scene = data_dir / "pansharpening" / "wv3_cristianics"
    if not scene.is_dir():
        pytest.skip(f"missing scene {scene}")
    pan = str(tmp_path_factory.mktemp("wv3") / "pan_hole.tif")
    gdal.Translate(pan, str(scene / "pan.tif"))
    ds = gdal.Open(pan, gdal.GA_Update)
    arr = ds.ReadAsArray()
    arr[200:260, 300:380] = 0
    ds.GetRasterBand(1).WriteArray(arr)
    assert ds.GetRasterBand(1).GetNoDataValue() == 0
    ds = None
    return pan, str(scene / "ms.tif")


@pytest.mark.parametrize("method", CLASSICAL_IDS)
def test_algorithm_on_worldview3_through_the_registry(panadapter_provider, wv3_with_hole, tmp_path, method):
    import processing

    pan, ms = wv3_with_hole
    out = str(tmp_path / f"{method}.tif")
    result = processing.run(f"panadapter:{method}", {"PAN": pan, "MS": ms, "SENSOR": 2, "OUTPUT": out})
    assert result["OUTPUT"] == out
    fused, pan_ds, ms_ds = gdal.Open(out), gdal.Open(pan), gdal.Open(ms)
    assert fused.GetGeoTransform() == pytest.approx(pan_ds.GetGeoTransform(), abs=1e-9)
    assert osr.SpatialReference(fused.GetProjection()).IsSame(osr.SpatialReference(pan_ds.GetProjection()))
    assert fused.RasterCount == ms_ds.RasterCount == 8
    assert fused.GetRasterBand(1).DataType == gdal.GDT_Float32
    assert fused.GetRasterBand(1).GetNoDataValue() == 0
    data = fused.ReadAsArray()
    assert (data[:, 200:260, 300:380] == 0).all()          # PAN nodata -> output nodata
    valid = np.ones(data.shape[1:], bool)
    valid[200:260, 300:380] = False
    assert (data[:, valid] != 0).all() and np.isfinite(data).all()
    # a sharpened band still looks like its MS band (no band shuffle, no garbage)
    ms_arr = ms_ds.ReadAsArray().astype(np.float64)
    block_mean = data[:, :568, :576].reshape(8, 142, 4, 144, 4).mean(axis=(2, 4))
    for b in range(8):
        corr = np.corrcoef(block_mean[b, 80:].ravel(), ms_arr[b, 80:142].ravel())[0, 1]
        assert corr > 0.8, (method, b, corr)


@pytest.mark.parametrize("method", CLASSICAL_IDS)
def test_algorithm_keeps_the_integer_type_of_landsat7(panadapter_provider, data_dir, tmp_path, method):
    import processing

    scene = data_dir / "pansharpening" / "landsat7_fusebox" / "scene_12"
    out = str(tmp_path / f"{method}.tif")
    processing.run(f"panadapter:{method}", {"PAN": str(scene / "pan.tif"), "MS": str(scene / "ms.tif"),
                                            "SENSOR": 8, "MS_BANDS": [1, 2, 3, 4], "OUTPUT": out})
    fused = gdal.Open(out)
    assert fused.RasterCount == 4 and fused.GetRasterBand(1).DataType == gdal.GDT_Byte
    assert fused.GetGeoTransform() == pytest.approx(gdal.Open(str(scene / "pan.tif")).GetGeoTransform())
    assert fused.GetRasterBand(1).GetNoDataValue() is None  # the inputs declare none: none is invented
