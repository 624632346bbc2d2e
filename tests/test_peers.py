"""Sanity tests of the peer-tool wrappers in bench/peers.py (GDAL, OTB, GRASS).

Each available peer runs on the small Landsat-8 Istanbul pair (PAN 558x374,
3 MS bands, ratio 2, PAN offset by half a PAN pixel). A peer whose tool is not
installed is skipped with the Debian package to install. No qgis import.

Run: .venv/bin/python -m pytest -q tests/test_peers.py -p no:pytest_qgis
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import peers as P  # noqa: E402

gdal.UseExceptions()

pytestmark = pytest.mark.peers

DATA = Path(os.environ.get("PANADAPTER_TEST_DATA", ROOT.parent / "shared" / "data"))
PAIR = DATA / "pansharpening" / "landsat8_istanbul"
PAN = PAIR / "pan.tif"
MS = PAIR / "ms.tif"

INSTALL_HINT = {
    "gdal_brovey": "gdal_pansharpen.py/gdal_translate not installed (Debian: gdal-bin, python3-gdal)",
    "otb_bundle": "otbcli_BundleToPerfectSensor not installed (Debian: otb-bin)",
    "otb_rcs": "otbcli_Superimpose/otbcli_Pansharpening not installed (Debian: otb-bin)",
    "otb_lmvm": "otbcli_Superimpose/otbcli_Pansharpening not installed (Debian: otb-bin)",
    "otb_bayes": "otbcli_Superimpose/otbcli_Pansharpening not installed (Debian: otb-bin)",
    "grass_brovey": "grass not installed (Debian: grass-core)",
    "grass_ihs": "grass not installed (Debian: grass-core)",
    "grass_pca": "grass not installed (Debian: grass-core)",
}

#: MS bands given to the GRASS peers, deliberately not 1,2,3 to check the order
GRASS_RGB = (3, 2, 1)


def _needs_data():
    if not (PAN.is_file() and MS.is_file()):
        pytest.skip(f"test data not found: {PAIR} (set PANADAPTER_TEST_DATA)")


@pytest.fixture(scope="module")
def pan_grid():
    _needs_data()
    ds = gdal.Open(str(PAN))
    return ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize


@pytest.fixture(scope="module")
def ms_up(pan_grid):
    """MS bicubically resampled onto the PAN grid (bands, rows, cols)."""
    gt, w, h = pan_grid
    bounds = (gt[0], gt[3] + h * gt[5], gt[0] + w * gt[1], gt[3])
    ds = gdal.Warp("", str(MS), format="MEM", outputBounds=bounds, width=w, height=h,
                   resampleAlg="cubic", outputType=gdal.GDT_Float32)
    return ds.ReadAsArray().astype(np.float64)


def test_registry():
    assert set(P.PEERS) == {
        "gdal_brovey", "otb_bundle", "otb_rcs", "otb_lmvm", "otb_bayes",
        "grass_brovey", "grass_ihs", "grass_pca",
    }
    assert all(callable(f) for f in P.PEERS.values())
    assert all(isinstance(P.available(n), bool) for n in P.PEERS)
    with pytest.raises(KeyError):
        P.available("no_such_peer")
    assert not issubclass(P.PeerUnavailable, RuntimeError)


@pytest.mark.parametrize("name", sorted(P.PEERS))
def test_peer_on_istanbul(name, tmp_path, pan_grid, ms_up):
    if not P.available(name):
        pytest.skip(INSTALL_HINT[name])
    gt, w, h = pan_grid
    out = tmp_path / f"{name}.tif"
    kwargs = {"rgb_bands": GRASS_RGB} if name.startswith("grass_") else {}
    got = P.PEERS[name](str(PAN), str(MS), str(out), timeout=300, **kwargs)
    assert got == str(out) and out.is_file()

    ds = gdal.Open(str(out))
    bands = list(GRASS_RGB) if name.startswith("grass_") else [1, 2, 3]
    assert ds.RasterCount == len(bands) == (P.OUTPUT_BANDS[name] or 3)
    assert (ds.RasterXSize, ds.RasterYSize) == (w, h)
    assert np.allclose(ds.GetGeoTransform(), gt, rtol=0, atol=1e-6)
    assert ds.GetRasterBand(1).DataType == gdal.GDT_Float32

    for i, msb in enumerate(bands):
        band = ds.GetRasterBand(i + 1)
        a = band.ReadAsArray().astype(np.float64)
        nd = band.GetNoDataValue()
        valid = ~np.isnan(a)
        if nd is not None and not np.isnan(nd):
            valid &= a != nd
        # nodata only along the edges (OTB fill, GRASS NULL): at most 1 %
        assert valid.mean() > 0.99, f"{name} band {i + 1}: {100 * (1 - valid.mean()):.2f} % nodata"
        assert np.isfinite(a[valid]).all()
        ref = ms_up[msb - 1][valid]
        r = np.corrcoef(a[valid], ref)[0, 1]
        assert r > 0.5, f"{name} band {i + 1} vs MS band {msb}: r = {r:.3f}"


def test_unavailable_raises(monkeypatch, tmp_path):
    _needs_data()
    monkeypatch.setattr(P, "_which", lambda name: None)
    monkeypatch.setattr(P, "_gdal_pansharpen_cmd", lambda: None)
    for name, fn in P.PEERS.items():
        assert P.available(name) is False
        with pytest.raises(P.PeerUnavailable):
            fn(str(PAN), str(MS), str(tmp_path / f"{name}.tif"))
        assert not (tmp_path / f"{name}.tif").exists()


def test_run_reports_stderr_and_timeout():
    with pytest.raises(RuntimeError, match="boom"):
        P._run([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"], 30)
    with pytest.raises(RuntimeError, match="timed out"):
        P._run([sys.executable, "-c", "import time; time.sleep(30)"], 0.5)


def test_finalize_crops_onto_pan_grid(tmp_path):
    """A tool result on a larger, aligned grid is cut back exactly to the PAN grid."""
    drv = gdal.GetDriverByName("GTiff")
    pan = drv.Create(str(tmp_path / "pan.tif"), 6, 4, 1, gdal.GDT_UInt16)
    pan.SetGeoTransform((1000.0, 2.0, 0.0, 2000.0, 0.0, -2.0))
    pan = None
    big = drv.Create(str(tmp_path / "big.tif"), 10, 8, 2, gdal.GDT_Float32)
    big.SetGeoTransform((996.0, 2.0, 0.0, 2004.0, 0.0, -2.0))  # 2 pixels more on each side
    data = np.arange(2 * 8 * 10, dtype=np.float32).reshape(2, 8, 10)
    for b in range(2):
        big.GetRasterBand(b + 1).WriteArray(data[b])
    big = None
    out = P._finalize(str(tmp_path / "big.tif"), str(tmp_path / "pan.tif"), str(tmp_path / "out.tif"),
                      nodata=None, descriptions=["a", "b"], scale=[1.0, 2.0])
    ds = gdal.Open(out)
    assert ds.GetGeoTransform() == (1000.0, 2.0, 0.0, 2000.0, 0.0, -2.0)
    got = ds.ReadAsArray()
    assert np.array_equal(got[0], data[0, 2:6, 2:8])
    assert np.array_equal(got[1], 2 * data[1, 2:6, 2:8])
    assert ds.GetRasterBand(2).GetDescription() == "b"
