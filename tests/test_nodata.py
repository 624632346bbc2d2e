"""Nodata of every kind (issue 28, item 1), on a real scene: a declared value (0, -9999, 65535 on UInt16), NaN
declared or not, and +inf, in a block of the MS and another of the PAN. For every algorithm family the statistics
and filters ignore them, the output is nodata exactly where an input is, and valid pixels away from the blocks
(beyond the filters' reach) equal those of a run on the clean image: exactly for the methods without image
statistics, within a small fraction of the value range for those whose statistics lose the masked pixels.
Before this, NaN made the whole output NaN and -9999 pulled valid pixels to -3900.
"""
import numpy as np
import pytest
from osgeo import gdal

from panadapter_qgis.backend import assess, wald
from panadapter_qgis.backend.pipeline import FusionJob, pansharpen

gdal.UseExceptions()

# kind: (fill value, GDAL type, declared nodata)
KINDS = {
    "zero": (0.0, gdal.GDT_Float32, 0.0),
    "minus9999": (-9999.0, gdal.GDT_Float32, -9999.0),
    "uint16_65535": (65535.0, gdal.GDT_UInt16, 65535.0),
    "nan_declared": (np.nan, gdal.GDT_Float32, np.nan),
    "nan_undeclared": (np.nan, gdal.GDT_Float32, None),
    "inf": (np.inf, gdal.GDT_Float32, None),
}
MS_BLOCK = (slice(60, 72), slice(100, 112))     # MS pixels (Istanbul: ratio 2)
PAN_BLOCK = (slice(250, 266), slice(60, 84))    # PAN pixels
REACH = 48                                      # PAN pixels: beyond every filter's reach at ratio 2


def _write(like, path, array, gdal_type, nodata):
    src = gdal.Open(str(like))
    ds = gdal.GetDriverByName("GTiff").Create(str(path), src.RasterXSize, src.RasterYSize, src.RasterCount,
                                              gdal_type)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    for b in range(src.RasterCount):
        band = ds.GetRasterBand(b + 1)
        band.WriteArray(array[b])
        if nodata is not None:
            band.SetNoDataValue(float(nodata))
    ds = None
    return str(path)


def _variant(pan, ms, folder, kind, ms_block=MS_BLOCK, pan_block=PAN_BLOCK):
    """(pan, ms) copies of the pair with ``kind`` in the blocks (the clean copy for kind None)."""
    value, gdal_type, nodata = KINDS.get(kind, (None, gdal.GDT_Float32, None))
    arrays = []
    for path, block in ((pan, pan_block), (ms, ms_block)):
        a = gdal.Open(str(path)).ReadAsArray().astype(np.float64)
        a = a[None] if a.ndim == 2 else a
        if kind is not None:
            a[(slice(None),) + block] = value
        arrays.append(a)
    name = kind or "clean"
    return (_write(pan, folder / f"pan_{name}.tif", arrays[0], gdal_type, nodata),
            _write(ms, folder / f"ms_{name}.tif", arrays[1], gdal_type, nodata))


def _read(path):
    ds = gdal.Open(str(path))
    a = ds.ReadAsArray().astype(np.float64)
    return (a[None] if a.ndim == 2 else a), ds.GetRasterBand(1).GetNoDataValue()


def _nodata_mask(a, nodata):
    if nodata is None:
        return ~np.isfinite(a).all(0)
    return np.isnan(a).all(0) if np.isnan(nodata) else (a == nodata).all(0)


def _far(shape, ratio=2, reach=REACH):
    """Output pixels farther than ``reach`` from both blocks."""
    far = np.ones(shape, bool)
    ms_rows, ms_cols = MS_BLOCK
    far[max(0, ratio * ms_rows.start - reach):ratio * ms_rows.stop + reach,
        max(0, ratio * ms_cols.start - reach):ratio * ms_cols.stop + reach] = False
    far[max(0, PAN_BLOCK[0].start - reach):PAN_BLOCK[0].stop + reach,
        max(0, PAN_BLOCK[1].start - reach):PAN_BLOCK[1].stop + reach] = False
    return far


def _holes(shape, ratio=2):
    """Output pixels inside the blocks (the MS block on the PAN grid, and the PAN block)."""
    hole = np.zeros(shape, bool)
    hole[ratio * MS_BLOCK[0].start:ratio * MS_BLOCK[0].stop, ratio * MS_BLOCK[1].start:ratio * MS_BLOCK[1].stop] = True
    hole[PAN_BLOCK] = True
    return hole


@pytest.fixture(scope="module")
def pairs(istanbul, tmp_path_factory):
    """The Landsat-8 Istanbul pair (3 bands, ratio 2; values 6000-60000, so 0 is never a valid value), clean
    and with each kind of nodata."""
    folder = tmp_path_factory.mktemp("nodata")
    pan, ms = istanbul
    out = {None: _variant(pan, ms, folder, None)}
    for kind in KINDS:
        out[kind] = _variant(pan, ms, folder, kind)
    return folder, out


def _check(clean_path, path, tolerance):
    """The output's nodata covers the blocks, nothing is non-finite outside the declared nodata, no valid pixel
    leaves the clean run's range (widened by 5 %), and far pixels are within ``tolerance`` x the range."""
    clean, _ = _read(clean_path)
    out, nodata = _read(path)
    assert nodata is not None, "an output whose input has nodata must declare a nodata value"
    bad = _nodata_mask(out, nodata)
    hole = _holes(bad.shape)
    assert bad[hole].all(), "the output must be nodata where an input is"
    assert not bad[_far(bad.shape)].any(), "nodata spread to valid pixels far from the blocks"
    valid = out[:, ~bad]
    assert np.isfinite(valid).all()
    lo, hi = clean.min(), clean.max()
    span = hi - lo
    assert valid.min() >= lo - 0.05 * span and valid.max() <= hi + 0.05 * span, (valid.min(), valid.max(), lo, hi)
    far = _far(bad.shape)
    diff = np.abs(out[:, far] - clean[:, far]).max()
    assert diff <= tolerance * span, (diff, span)
    return diff / span


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("method,tolerance", [("upsample", 1e-4), ("mtf_glp_fs", 0.01), ("gs", 0.01),
                                               ("bdsd_pc", 0.01), ("pracs", 0.015)])
def test_classical_methods_mask_every_kind_of_nodata(pairs, kind, method, tolerance):
    """upsample has no statistics: far pixels equal the clean run's (up to UInt16 rounding); the others lose
    only the masked pixels from their statistics."""
    folder, variants = pairs
    clean = folder / f"{method}_clean.tif"
    if not clean.exists():
        pansharpen(*variants[None], str(clean), method, float32=True)
    out = folder / f"{method}_{kind}.tif"
    pansharpen(*variants[kind], str(out), method, float32=True)
    _check(clean, out, tolerance)


@pytest.mark.parametrize("kind", ["minus9999", "nan_undeclared", "inf", "uint16_65535"])
def test_degrade_masks_nodata_and_far_pixels_are_exact(pairs, kind):
    """Wald's degradation has no statistics: far pixels equal the clean degradation; blocks are nodata."""
    folder, variants = pairs
    clean = [str(folder / f"deg_clean_{x}.tif") for x in ("pan", "ms")]
    if not (folder / "deg_clean_ms.tif").exists():
        wald.degrade(*variants[None], *clean)
    outs = [str(folder / f"deg_{kind}_{x}.tif") for x in ("pan", "ms")]
    wald.degrade(*variants[kind], *outs)
    for c, o, factor in ((clean[0], outs[0], 2), (clean[1], outs[1], 4)):
        ref, _ = _read(c)
        got, nodata = _read(o)
        bad = _nodata_mask(got, nodata)
        far = _far((bad.shape[0] * factor, bad.shape[1] * factor))[::factor, ::factor]
        assert not bad[far].any()
        assert np.abs(got[:, far] - ref[:, far]).max() <= (0.5 if kind == "uint16_65535" else 1e-3)
        assert bad.any() and np.isfinite(got[:, ~bad]).all()
        lo, hi = ref.min(), ref.max()
        assert got[:, ~bad].min() >= lo - 0.05 * (hi - lo) and got[:, ~bad].max() <= hi + 0.05 * (hi - lo)


def test_the_preview_window_masks_nodata_as_the_written_file(pairs):
    """The map preview (FusionJob.fuse_window) gives the written file's pixels, NaN where it is nodata."""
    folder, variants = pairs
    pan, ms = variants["minus9999"]
    out = folder / "preview_written.tif"
    pansharpen(pan, ms, str(out), "mtf_glp_fs", float32=True)
    written, nodata = _read(out)
    window, _ = FusionJob(pan, ms, "mtf_glp_fs").fuse_window(100, 200, 180, 280)
    part = written[:, 100:200, 180:280]
    assert np.array_equal(np.isnan(window).all(0), part[0] == nodata)
    ok = ~np.isnan(window).all(0)
    assert np.allclose(window[:, ok], part[:, ok], atol=1e-2)


@pytest.mark.parametrize("kind", ["minus9999", "nan_declared"])
def test_assess_skips_nodata(pairs, kind):
    """A fused raster with a nodata block: SAM and ERGAS over the other pixels equal those of the clean fused
    raster with the same pixels left out of the sums (a NaN copy), and stay close to the clean scores."""
    folder, variants = pairs
    clean = folder / "mtf_glp_fs_clean.tif"
    if not clean.exists():
        pansharpen(*variants[None], str(clean), "mtf_glp_fs", float32=True)
    fused = folder / f"assess_{kind}.tif"
    pansharpen(*variants[kind], str(fused), "mtf_glp_fs", float32=True)
    reference = folder / "reference.tif"
    if not reference.exists():
        _write(clean, reference, _read(clean)[0] * 1.01, gdal.GDT_Float32, None)  # any image on the grid
    res = assess.assess_reduced([str(clean), str(fused)], str(reference), dim_cut=0, ratio=2)
    clean_row, row = res["rows"]
    assert 0 < row["nodata_fraction"] < 0.05
    assert np.isfinite(row["ergas"]) and np.isfinite(row["sam"])
    assert row["ergas"] == pytest.approx(clean_row["ergas"], rel=0.05)
    assert any("skip them" in n for n in res["notes"])


def test_assess_of_a_raster_without_valid_pixels_is_undefined(pairs):
    folder, variants = pairs
    clean = folder / "mtf_glp_fs_clean.tif"
    if not clean.exists():
        pansharpen(*variants[None], str(clean), "mtf_glp_fs", float32=True)
    empty = _write(clean, folder / "empty.tif", np.full(_read(clean)[0].shape, -9999.0), gdal.GDT_Float32, -9999.0)
    res = assess.assess_reduced([empty], str(clean), dim_cut=0, ratio=2)
    row = res["rows"][0]
    assert row["nodata_fraction"] == 1.0 and np.isnan(row["ergas"]) and np.isnan(row["sam"])
    assert any("no valid pixel" in n for n in res["notes"])


@pytest.mark.parametrize("kind", ["minus9999", "nan_undeclared"])
def test_panadapter_zero_shot_masks_nodata(pairs, kind):
    """PanAdapter (bundled weights): the same classical base and decision as on the clean pair (nodata is left
    out of the base choice and the zero-shot check), nodata in the blocks, far pixels as the clean run's."""
    from panadapter_qgis.backend.adapt import sharpen_scene

    folder, variants = pairs
    clean = folder / "panadapter_clean.tif"
    notes_clean = []
    if not clean.exists():
        sharpen_scene(*variants[None], str(clean), sensor=8, float32=True, log=notes_clean.append)
    out = folder / f"panadapter_{kind}.tif"
    notes = []
    sharpen_scene(*variants[kind], str(out), sensor=8, float32=True, log=notes.append)
    base = [n.split(",")[0] for n in notes if n.startswith("Classical base")]
    if notes_clean:
        assert base == [n.split(",")[0] for n in notes_clean if n.startswith("Classical base")]
    _check(clean, out, 0.01)


def test_ssdiff_masks_nodata(data_dir, tmp_path):
    """SSDiff (bundled 6-band weights) on a Landsat-7 crop with an undeclared NaN block: NaN there, finite
    and in range elsewhere (it goes through the same tile source as every deep model)."""
    from conftest import fusebox_crop
    from panadapter_qgis.backend.adapt import ssdiff_scene

    pan, ms = fusebox_crop(data_dir, tmp_path, "scene_09", pan_size=128, bands=(1, 2, 3, 4, 5, 6))
    p = gdal.Open(str(pan)).ReadAsArray().astype(np.float64)[None]
    m = gdal.Open(str(ms)).ReadAsArray().astype(np.float64)
    m[:, 20:28, 20:28] = np.nan
    pan2 = _write(pan, tmp_path / "pan_nan.tif", p, gdal.GDT_Float32, None)
    ms2 = _write(ms, tmp_path / "ms_nan.tif", m, gdal.GDT_Float32, None)
    out = tmp_path / "ssdiff.tif"
    ssdiff_scene(pan2, ms2, str(out), sensor=8, float32=True, steps=2)
    got, nodata = _read(out)
    assert nodata is not None and np.isnan(nodata)
    bad = np.isnan(got).all(0)
    assert bad[40:56, 40:56].all() and not bad[:24].any() and not bad[:, 72:].any()
    assert np.isfinite(got[:, ~bad]).all() and -20 <= got[:, ~bad].min() and got[:, ~bad].max() <= 300


def test_assess_says_why_an_index_is_undefined(pairs, tmp_path):
    """Q and Q2n need 32-pixel windows: on a 24-pixel crop they are NaN, and a note says why (issue 28.5)."""
    folder, variants = pairs
    clean = folder / "mtf_glp_fs_clean.tif"
    if not clean.exists():
        pansharpen(*variants[None], str(clean), "mtf_glp_fs", float32=True)
    small, ref = str(tmp_path / "small.tif"), str(tmp_path / "ref.tif")
    gdal.Translate(small, str(clean), srcWin=[0, 0, 24, 24])
    _write(small, ref, _read(small)[0] * 1.01, gdal.GDT_Float32, None)
    res = assess.assess_reduced([small], ref, dim_cut=0, ratio=2)
    row = res["rows"][0]
    assert np.isfinite(row["ergas"]) and np.isnan(row["q_avg"])
    assert any("Q" in n and "undefined" in n and "smaller than" in n for n in res["notes"]), res["notes"]
