"""The backend pipeline on real scenes: georeference, types, nodata, tile independence, errors, cancel.

Fixtures derived from the real scenes (a shifted copy, a copy without CRS, ...) are generated in tmp_path.
"""
import os

import numpy as np
import pytest
from osgeo import gdal

from panadapter_qgis.backend.classical import METHODS
from panadapter_qgis.backend.errors import Cancelled, PansharpenError
from panadapter_qgis.backend.pipeline import pansharpen
from panadapter_qgis.backend.raster import inspect_pair

gdal.UseExceptions()


def scene(data_dir, name):
    d = data_dir / "pansharpening" / name
    if not d.is_dir():
        pytest.skip(f"missing scene {d}")
    return str(d / "pan.tif"), str(d / "ms.tif")


def read(path):
    ds = gdal.Open(str(path))
    return ds, ds.ReadAsArray()


def no_output_left(out):
    directory = os.path.dirname(out)
    leftovers = [f for f in os.listdir(directory)
                 if f.startswith(os.path.basename(out)) or ".part.tif" in f]  # hidden partial files too
    return not leftovers


@pytest.mark.parametrize("name, sensor, dtype", [
    ("wv3_cristianics", 2, gdal.GDT_Float32),
    ("landsat7_fusebox/scene_03", 8, gdal.GDT_Byte),
    ("zhengzhou_4band", 0, gdal.GDT_UInt16),
])
def test_output_on_pan_grid_with_ms_bands_and_type(data_dir, tmp_path, name, sensor, dtype):
    pan, ms = scene(data_dir, name)
    out = str(tmp_path / "fused.tif")
    result = pansharpen(pan, ms, out, "mtf_glp_fs", sensor=sensor)
    ds, arr = read(out)
    pan_ds, ms_ds = gdal.Open(pan), gdal.Open(ms)
    pgt, ogt = pan_ds.GetGeoTransform(), ds.GetGeoTransform()
    assert ogt[1] == pgt[1] and ogt[5] == pgt[5]                       # PAN pixel size
    # origin on a PAN pixel corner, inside the PAN
    col = (ogt[0] - pgt[0]) / pgt[1]
    row = (ogt[3] - pgt[3]) / pgt[5]
    assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)
    assert 0 <= round(col) and round(col) + ds.RasterXSize <= pan_ds.RasterXSize
    assert 0 <= round(row) and round(row) + ds.RasterYSize <= pan_ds.RasterYSize
    assert ds.GetSpatialRef().IsSame(pan_ds.GetSpatialRef())
    assert ds.RasterCount == ms_ds.RasterCount == result["bands"]
    assert ds.GetRasterBand(1).DataType == dtype
    for b in range(1, ds.RasterCount + 1):
        assert ds.GetRasterBand(b).GetDescription() == ms_ds.GetRasterBand(b).GetDescription()
    assert ds.RasterXSize == result["ratio"] * (ds.RasterXSize // result["ratio"])
    structure = ds.GetMetadata("IMAGE_STRUCTURE")
    assert structure.get("COMPRESSION") == "DEFLATE"
    block = 512 if min(ds.RasterXSize, ds.RasterYSize) >= 512 else 256  # COG-sized blocks unless it is small
    assert ds.GetRasterBand(1).GetBlockSize() == [block, block]
    assert np.isfinite(arr.astype(np.float64)).all()


def test_aligned_pair_keeps_the_whole_pan(data_dir, tmp_path):
    """CristianICS WV3: PAN and MS share the origin, so the output is exactly the PAN grid."""
    pan, ms = scene(data_dir, "wv3_cristianics")
    info = inspect_pair(pan, ms)
    assert info.ratio == 4 and not info.warped
    out = str(tmp_path / "f.tif")
    pansharpen(pan, ms, out, "upsample")
    ds = gdal.Open(out)
    assert ds.GetGeoTransform() == pytest.approx(gdal.Open(pan).GetGeoTransform())
    assert (ds.RasterXSize, ds.RasterYSize) == (576, 572)


def test_half_pixel_offset_ms_is_warped_onto_the_pan_grid(data_dir, tmp_path):
    """Istanbul: the PAN starts half a PAN pixel inside the MS; the MS is resampled, not shifted."""
    pan, ms = scene(data_dir, "landsat8_istanbul")
    info = inspect_pair(pan, ms)
    assert info.ratio == 2 and info.warped and info.notes
    out = str(tmp_path / "f.tif")
    messages = []
    pansharpen(pan, ms, out, "upsample", log=messages.append)
    assert any("resampled" in m for m in messages)
    ds, fused = read(out)
    assert ds.GetGeoTransform()[0] == gdal.Open(pan).GetGeoTransform()[0]
    # upsampled MS still agrees with the MS it came from: block means vs the MS pixels under them
    ms_arr = gdal.Open(ms).ReadAsArray().astype(np.float64)
    corr = np.corrcoef(fused[0, 40:200:2, 40:200:2].ravel(),
                       ms_arr[0, 20:100, 20:100].ravel())[0, 1]  # PAN offset is 0.25 MS px: nearly aligned
    assert corr > 0.9


def test_non_square_near_integer_ratio_is_resampled(data_dir, tmp_path):
    """Zhengzhou: 0.498 x 0.5006 m PAN, 2 x 2.01 m MS (ratio 4.015): accepted as 4 and warped."""
    pan, ms = scene(data_dir, "zhengzhou_4band")
    info = inspect_pair(pan, ms)
    assert info.ratio == 4 and info.warped
    out = str(tmp_path / "f.tif")
    pansharpen(pan, ms, out, "brovey")
    ds = gdal.Open(out)
    assert ds.RasterXSize == 4 * info.cols and ds.RasterYSize == 4 * info.rows
    assert ds.GetRasterBand(1).DataType == gdal.GDT_UInt16


@pytest.mark.parametrize("method", sorted(METHODS))
def test_output_does_not_depend_on_tile_size(data_dir, tmp_path, method):
    """Global statistics once per image: tiles of 128 PAN pixels give the whole-image result."""
    pan, ms = scene(data_dir, "wv3_cristianics")
    whole, tiled = str(tmp_path / "whole.tif"), str(tmp_path / "tiled.tif")
    pansharpen(pan, ms, whole, method, sensor=2, tile_size=4096, float32=True)
    pansharpen(pan, ms, tiled, method, sensor=2, tile_size=128, float32=True)
    a, b = read(whole)[1], read(tiled)[1]
    valid = a != 0  # nodata is 0 in this scene
    assert valid.mean() > 0.5
    scale = np.abs(a[valid]).max()
    assert np.abs(a[valid] - b[valid]).max() <= 1e-4 * scale
    assert (a == 0).sum() == (b == 0).sum()


def test_blocks_written_as_tiles_finish_leave_the_same_file(data_dir, tmp_path, monkeypatch):
    """The writer compresses a tile's whole blocks as soon as it has them (on its thread, while the next tile
    is computed); tiles that do not cover whole blocks stay in GDAL's cache until the end, so that no block is
    compressed twice. Either way: the same pixels, and no larger file."""
    from panadapter_qgis.backend import raster

    flushes = []
    original = raster.TiledGeoTiff._whole_blocks
    monkeypatch.setattr(raster.TiledGeoTiff, "_whole_blocks",
                        lambda self, *a: flushes.append(original(self, *a)) or flushes[-1])
    pan, ms = scene(data_dir, "wv3_cristianics")
    sizes, pixels = {}, {}
    for tile in (512, 200, 4096):
        out = str(tmp_path / f"t{tile}.tif")
        flushes.clear()
        pansharpen(pan, ms, out, "mtf_glp_fs", sensor=2, tile_size=tile)
        assert gdal.Open(out).GetRasterBand(1).GetBlockSize() == [512, 512]
        sizes[tile], pixels[tile] = os.path.getsize(out), read(out)[1]
        if tile == 200:
            assert not any(flushes)   # 200-pixel tiles never hold a whole 512-pixel block column
        else:
            assert any(flushes)
    scale = np.abs(pixels[4096]).max()
    for tile in (512, 200):   # the tile size changes only the order of float sums (see the test above)
        assert np.abs(pixels[tile] - pixels[4096]).max() <= 1e-4 * scale
    assert max(sizes.values()) <= 1.01 * min(sizes.values()), sizes


def _copy(src, dst, **translate):
    gdal.Translate(str(dst), str(src), **translate)
    return str(dst)


def test_nodata_in_pan_or_ms_becomes_nodata(data_dir, tmp_path):
    pan, ms = scene(data_dir, "landsat7_fusebox/scene_03")
    pan_nd = _copy(pan, tmp_path / "pan_nd.tif", noData=0)
    ms_nd = _copy(ms, tmp_path / "ms_nd.tif", noData=0)
    ds = gdal.Open(pan_nd, gdal.GA_Update)
    arr = ds.ReadAsArray()
    arr[100:140, 200:260] = 0
    ds.GetRasterBand(1).WriteArray(arr)
    ds = gdal.Open(ms_nd, gdal.GA_Update)
    band = ds.GetRasterBand(2)
    arr = band.ReadAsArray()
    arr[300:320, 10:30] = 0   # one band only: the pixel is unknown
    band.WriteArray(arr)
    band = ds = None
    out = str(tmp_path / "f.tif")
    pansharpen(pan_nd, ms_nd, out, "gsa", sensor=8)
    ds, fused = read(out)
    assert ds.GetRasterBand(1).GetNoDataValue() == 0
    assert (fused[:, 100:140, 200:260] == 0).all()
    assert (fused[:, 600:640, 20:60] == 0).all()
    outside = np.ones(fused.shape[1:], dtype=bool)
    outside[100:140, 200:260] = False
    outside[600:640, 20:60] = False
    original_zero = (gdal.Open(pan).ReadAsArray() == 0) | np.repeat(np.repeat(
        (gdal.Open(ms).ReadAsArray() == 0).any(0), 2, 0), 2, 1)
    assert (fused[:, outside & ~original_zero] != 0).all()  # valid pixels never take the nodata value


def test_ms_band_subset(data_dir, tmp_path):
    pan, ms = scene(data_dir, "wv3_cristianics")
    out = str(tmp_path / "f.tif")
    pansharpen(pan, ms, out, "gsa", sensor=2, ms_bands=[5, 3, 2])
    ds = gdal.Open(out)
    ms_ds = gdal.Open(ms)
    assert ds.RasterCount == 3
    assert [ds.GetRasterBand(i).GetDescription() for i in (1, 2, 3)] == \
        [ms_ds.GetRasterBand(i).GetDescription() for i in (5, 3, 2)]


# ------------------------------------------------------------------------------------------- errors

def _assert_error(tmp_path, pan, ms, words, method="mtf_glp_fs", **kw):
    out = str(tmp_path / "out.tif")
    with pytest.raises(PansharpenError) as err:
        pansharpen(pan, ms, out, method, **kw)
    text = str(err.value).lower()
    assert any(w in text for w in words), text
    assert no_output_left(out)


def test_error_no_overlap(data_dir, tmp_path):
    pan, ms = scene(data_dir, "landsat7_fusebox/scene_03")
    far = _copy(ms, tmp_path / "far.tif", outputBounds=[900000, 4000000, 900000 + 399 * 30, 4000000 - 399 * 30])
    _assert_error(tmp_path, pan, far, ["do not overlap"])


def test_error_multiband_pan(data_dir, tmp_path):
    pan, ms = scene(data_dir, "landsat7_fusebox/scene_03")
    _assert_error(tmp_path, ms, ms, ["one band"])


def test_error_too_few_bands(data_dir, tmp_path):
    pan, ms = scene(data_dir, "landsat7_fusebox/scene_03")
    _assert_error(tmp_path, pan, ms, ["at least 2 bands"], method="gsa", ms_bands=[1])


def test_error_ratio_below_one(data_dir, tmp_path):
    pan, ms = scene(data_dir, "landsat7_fusebox/scene_03")
    pan3 = _copy(ms, tmp_path / "ms_as_pan.tif", bandList=[1])
    ms_fine = _copy(pan, tmp_path / "pan_as_ms.tif")
    _assert_error(tmp_path, pan3, ms_fine, ["below 1", "swapped"])


def test_error_same_resolution(data_dir, tmp_path):
    pan, _ = scene(data_dir, "landsat7_fusebox/scene_03")
    _assert_error(tmp_path, pan, pan, ["same resolution"], method="upsample")


def test_error_non_integer_ratio(data_dir, tmp_path):
    pan, ms = scene(data_dir, "landsat7_fusebox/scene_03")
    ms25 = _copy(ms, tmp_path / "ms25.tif", xRes=37.5, yRes=37.5, resampleAlg="average")
    _assert_error(tmp_path, pan, ms25, ["not close to an integer"])


def test_error_unreadable_file(data_dir, tmp_path):
    pan, _ = scene(data_dir, "landsat7_fusebox/scene_03")
    bad = tmp_path / "broken.tif"
    bad.write_text("this is not a raster")
    _assert_error(tmp_path, pan, str(bad), ["could not be read"])
    _assert_error(tmp_path, pan, str(tmp_path / "missing.tif"), ["does not exist"])


def test_error_missing_crs(data_dir, tmp_path):
    pan, ms = scene(data_dir, "landsat7_fusebox/scene_03")
    no_crs = _copy(ms, tmp_path / "nocrs.tif")
    ds = gdal.Open(no_crs, gdal.GA_Update)
    ds.SetProjection("")
    ds = None
    _assert_error(tmp_path, pan, no_crs, ["no coordinate reference system"])


def test_error_unknown_method_and_output_equal_to_input(data_dir, tmp_path):
    pan, ms = scene(data_dir, "landsat7_fusebox/scene_03")
    _assert_error(tmp_path, pan, ms, ["unknown pansharpening method"], method="nope")
    with pytest.raises(PansharpenError, match="must not be one of the input"):
        pansharpen(pan, ms, ms, "upsample")


@pytest.mark.parametrize("method", ["upsample", "mtf_glp_fs"])
def test_cancel_stops_within_a_tile_and_removes_the_output(data_dir, tmp_path, method):
    pan, ms = scene(data_dir, "wv3_cristianics")
    out = str(tmp_path / "out.tif")
    calls = []

    def is_cancelled():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        pansharpen(pan, ms, out, method, tile_size=128, is_cancelled=is_cancelled)
    assert len(calls) == 4       # checked before each tile, stopped at the first true answer
    assert no_output_left(out)


def test_progress_is_monotonic_and_reaches_one(data_dir, tmp_path):
    pan, ms = scene(data_dir, "landsat8_istanbul")
    seen = []
    pansharpen(pan, ms, str(tmp_path / "f.tif"), "bdsd_pc", tile_size=128, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)


COLD_RUN = """
import sys, threading
sys.path.insert(0, {repo!r})
from panadapter_qgis.backend import device
from panadapter_qgis.backend.pipeline import FusionJob
assert "torch" not in sys.modules  # the backend's modules do not import it
job = FusionJob({pan!r}, {ms!r}, "brovey", sensor=8)
assert len(device._preload) == 1 and device._preload[0].name == "torch-import", device._preload
job.write({out!r})
print("devices", job.device)
"""


def test_a_cold_run_imports_torch_in_the_background_and_writes_the_same_pixels(data_dir, tmp_path):
    """A fresh process (qgis_process, a QGIS session's first run): torch's import starts on a thread while
    GDAL opens the pair and reads the band summary; the fused pixels are those of an in-session run."""
    import subprocess
    import sys

    pan, ms = scene(data_dir, "landsat8_istanbul")
    cold, warm = str(tmp_path / "cold.tif"), str(tmp_path / "warm.tif")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = COLD_RUN.format(repo=repo, pan=pan, ms=ms, out=cold)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "devices cpu" in done.stdout or "devices cuda" in done.stdout
    pansharpen(pan, ms, warm, "brovey", sensor=8)
    a, b = read(cold)[1], read(warm)[1]
    assert a.shape == b.shape and np.array_equal(a, b)


def test_a_torch_that_cannot_be_imported_is_reported_by_the_backend(monkeypatch, data_dir, tmp_path):
    import sys

    from panadapter_qgis.backend import device

    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now raises ImportError
    device.preload_torch()  # a no-op: the module entry exists
    pan, ms = scene(data_dir, "landsat8_istanbul")
    out = str(tmp_path / "fused.tif")
    with pytest.raises(PansharpenError, match="PyTorch could not be imported .*install"):
        pansharpen(pan, ms, out, "brovey", sensor=8)
    assert no_output_left(out)
