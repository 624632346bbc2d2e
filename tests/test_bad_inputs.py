"""The bad-input battery (issue 28, item 6): what a hostile-but-realistic user gives ``qgis_process``. Each case
must end with qgis_process's error status, a message that names the problem, no Python traceback, and no file
left in the output folder (nor a partial one)."""
import collections
import os
import pathlib
import shutil

import numpy as np
import pytest
from osgeo import gdal

from conftest import fusebox_crop

gdal.UseExceptions()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qgis(tmp_path_factory):
    from test_qgis_process import QGIS_PROCESS, qgis_env, qgis_process

    if not shutil.which(QGIS_PROCESS):
        pytest.skip(f"{QGIS_PROCESS} not installed")
    env = dict(qgis_env(tmp_path_factory.mktemp("qgis-profile")), OMP_NUM_THREADS="1")
    enabled = qgis_process(env, "plugins", "enable", "panadapter_qgis")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return lambda *args: qgis_process(env, "run", *args)


@pytest.fixture(scope="module")
def inputs(data_dir, wv3, tmp_path_factory):
    """A Landsat-7 crop (128-pixel PAN, 4-band MS, ratio 2) and broken variants of it."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    pan, ms = fusebox_crop(data_dir, folder, pan_size=128)
    p = dict(pan=pan, ms=ms, wv3_pan=wv3[0], wv3_ms=wv3[1])
    p["corrupt"] = str(folder / "corrupt.tif")
    with open(p["corrupt"], "wb") as f:
        f.write(b"II*\x00" + bytes(range(256)) * 8)   # a TIFF signature, then nothing TIFF
    gt = gdal.Open(ms).GetGeoTransform()
    p["far_ms"] = str(folder / "far_ms.tif")
    gdal.Translate(p["far_ms"], ms, outputBounds=[gt[0] + 1e6, gt[3], gt[0] + 1e6 + 64 * gt[1], gt[3] + 64 * gt[5]])
    p["ratio1_ms"] = str(folder / "ratio1_ms.tif")
    gdal.Translate(p["ratio1_ms"], ms, width=128, height=128)
    pg = gdal.Open(pan).GetGeoTransform()
    p["ratio25_ms"] = str(folder / "ratio25_ms.tif")
    gdal.Translate(p["ratio25_ms"], ms, srcWin=[0, 0, 50, 50],
                   outputBounds=[pg[0], pg[3], pg[0] + 125 * pg[1], pg[3] + 125 * pg[5]])
    p["rotated_ms"] = str(folder / "rotated_ms.tif")
    gdal.Translate(p["rotated_ms"], ms)
    ds = gdal.Open(p["rotated_ms"], gdal.GA_Update)
    g = list(ds.GetGeoTransform())
    g[2] = g[4] = 5.0
    ds.SetGeoTransform(g)
    ds = None
    p["nogeo_ms"] = str(folder / "nogeo_ms.tif")
    ds = gdal.GetDriverByName("GTiff").Create(p["nogeo_ms"], 64, 64, 4, gdal.GDT_Byte)
    ds.WriteArray(gdal.Open(ms).ReadAsArray())
    ds = None
    p["not_torch"] = str(folder / "notes.pt")
    with open(p["not_torch"], "w") as f:
        f.write("not a PyTorch file\n")
    import torch
    from panadapter_qgis.backend.adapt import FORMAT
    # adapters of another band count and of another model (the checks come before the tensors are read)
    p["six_band_adapter"] = str(folder / "six.pt")
    torch.save(dict(format=FORMAT, model="panadapter", bands=6, preset="small", state={}, base=None),
               p["six_band_adapter"])
    p["ssdiff_adapter"] = str(folder / "ssdiff.pt")
    torch.save(dict(format=FORMAT, model="ssdiff", bands=4, preset="small", state={}, base=None),
               p["ssdiff_adapter"])
    return p


def _cases(p, out):
    fuse = ["panadapter:mtf_glp_fs"]
    pair = [f"--PAN={p['pan']}", f"--MS={p['ms']}"]
    target = f"--OUTPUT={out / 'fused.tif'}"
    return {
        "missing PAN": (fuse + [f"--PAN={out / 'nope.tif'}", f"--MS={p['ms']}", target],
                        "Could not load source layer for PAN"),
        "corrupt MS": (fuse + [f"--PAN={p['pan']}", f"--MS={p['corrupt']}", target],
                       "Could not load source layer for MS"),
        "swapped inputs": (fuse + [f"--PAN={p['ms']}", f"--MS={p['pan']}", target], "PAN raster must have one band"),
        "no overlap": (fuse + [f"--PAN={p['pan']}", f"--MS={p['far_ms']}", target], "do not overlap"),
        "ratio 1": (fuse + [f"--PAN={p['pan']}", f"--MS={p['ratio1_ms']}", target], "ratio 1"),
        "ratio 2.5": (fuse + [f"--PAN={p['pan']}", f"--MS={p['ratio25_ms']}", target],
                      "2.500 x 2.500, not close to an integer"),
        "rotated georeference": (fuse + [f"--PAN={p['pan']}", f"--MS={p['rotated_ms']}", target],
                                 "rotated geotransform"),
        "missing georeference": (fuse + [f"--PAN={p['pan']}", f"--MS={p['nogeo_ms']}", target],
                                 "no coordinate reference system"),
        "missing output folder": (fuse + pair + [f"--OUTPUT={out / 'none' / 'fused.tif'}"], "does not exist"),
        "output folder not writable": (fuse + pair + ["--OUTPUT=/proc/panadapter/fused.tif"], "/proc/panadapter"),
        "wrong extension": (fuse + pair + [f"--OUTPUT={out / 'fused.jpg'}"], "must be a GeoTIFF"),
        "output is an input": (fuse + pair + [f"--OUTPUT={p['ms']}"], "is also an input (MS)"),
        "repeated band": (fuse + [f"--PAN={p['wv3_pan']}", f"--MS={p['wv3_ms']}", "--MS_BANDS=5,5,3", target],
                          "repeats band 5"),
        "tile size below its minimum": (fuse + pair + ["--TILE_SIZE=8", target], "must be at least 64; got 8"),
        "CUDA without a GPU": (fuse + pair + ["--DEVICE=2", target], "PyTorch sees no CUDA GPU"),
        "adapter not a torch file": (["panadapter:panadapter"] + pair + [f"--ADAPTER={p['not_torch']}", target],
                                     "is not a PyTorch weights file"),
        "adapter of another band count": (["panadapter:panadapter"] + pair
                                          + [f"--ADAPTER={p['six_band_adapter']}", target],
                                          "trained for 6 MS bands; 4 are selected"),
        "adapter of another model": (["panadapter:panadapter"] + pair + [f"--ADAPTER={p['ssdiff_adapter']}", target],
                                     "not PanAdapter"),
        "finetune into a missing folder": (["panadapter:finetune"] + pair
                                           + [f"--OUTPUT={out / 'none' / 'adapter.pt'}"], "OUTPUT: the folder"),
        "inf_fusion speaks of HSI and MSI": (["panadapter:inf_fusion", f"--HSI={p['pan']}", f"--MSI={p['ms']}",
                                              target], "HSI"),
    }


CASES = list(_cases(collections.defaultdict(str), pathlib.Path()))


@pytest.mark.parametrize("case", CASES)
def test_a_bad_input_is_a_named_error_and_leaves_nothing(qgis, inputs, tmp_path, case):
    if case == "output folder not writable" and os.path.isdir("/proc/panadapter"):
        pytest.skip("/proc/panadapter exists")
    arguments, words = _cases(inputs, tmp_path)[case]
    if case == "CUDA without a GPU":
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA GPU")
    ran = qgis(*arguments)
    said = ran.stdout + ran.stderr
    assert ran.returncode == 1, (ran.returncode, said[-3000:])
    errors = said[said.find("ERROR:"):] if "ERROR:" in said else ""
    assert words in errors, said[-3000:]
    assert "Traceback" not in said, said[-3000:]
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)
    assert np.all([not name.endswith(".part.tif") for name in os.listdir(os.path.dirname(inputs["ms"]))])
