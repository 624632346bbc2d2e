"""Check before working, leave nothing behind, say what is wrong (issue 28, items 3-5), on real scenes.

Outputs are checked before a pixel is read or a step trained; partial files go on SIGTERM and SIGHUP as on
Ctrl-C, under a temporary name that any legal output name leaves legal; messages name the actual problem.
"""
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsProcessingException

from conftest import REPO_ROOT, fusebox_crop

gdal.UseExceptions()


@pytest.fixture(scope="module")
def crop(data_dir, tmp_path_factory):
    """A 128-pixel PAN and its 4-band MS from Landsat-7 FuseBox scene_09 (ratio 2, uint8)."""
    return fusebox_crop(data_dir, tmp_path_factory.mktemp("crop"), pan_size=128)


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _leftovers(folder):
    return sorted(name for name in os.listdir(folder) if ".part" in name or name.endswith(".check"))


def _unwritable_folder():
    """A folder no process can write to, even as root (a read-only /proc or /sys), or skip."""
    for folder in ("/proc", "/sys"):
        try:
            handle, probe = tempfile.mkstemp(dir=folder)
        except OSError:
            return folder
        os.close(handle)
        os.remove(probe)
    pytest.skip("no read-only folder found")


# ------------------------------------------------------------------------------- item 3: outputs first

def test_finetune_refuses_a_missing_output_folder_before_training(panadapter_provider, crop, tmp_path):
    import processing

    pan, ms = crop
    missing = tmp_path / "no_such_folder" / "adapter.pt"
    started = time.monotonic()
    with pytest.raises(QgsProcessingException) as error:
        processing.run("panadapter:finetune", {"PAN": pan, "MS": ms, "SENSOR": 8, "ITERATIONS": 200,
                                               "OUTPUT": str(missing)})
    elapsed = time.monotonic() - started
    message = str(error.value)
    assert "does not exist" in message and str(missing.parent) in message
    assert message.count("does not exist") == 1  # one clear message, not a traceback
    assert elapsed < 5, f"{elapsed:.1f} s: it trained before checking the output"
    assert not missing.parent.exists()


# (algorithm, parameters besides the outputs, the output parameter to spoil, its good extension)
def _cases(pan, ms):
    pair = {"PAN": pan, "MS": ms, "SENSOR": 8}
    return [
        ("panadapter:brovey", pair, "OUTPUT", ".tif"),
        ("panadapter:mtf_glp_fs", pair, "OUTPUT", ".tif"),
        ("panadapter:panadapter", pair, "OUTPUT", ".tif"),
        ("panadapter:ssdiff", pair, "OUTPUT", ".tif"),
        ("panadapter:finetune", dict(pair, ITERATIONS=50), "OUTPUT", ".pt"),
        ("panadapter:inf_fusion", {"HSI": ms, "MSI": pan, "METHOD": 2}, "OUTPUT", ".tif"),
        ("panadapter:degrade", dict(pair, OUTPUT_MS="TEMPORARY_OUTPUT"), "OUTPUT_PAN", ".tif"),
        ("panadapter:assess", {"FUSED": [ms], "PAN": pan, "MS": ms}, "OUTPUT_HTML", ".html"),
        ("panadapter:assess", {"FUSED": [ms], "PAN": pan, "MS": ms}, "OUTPUT_CSV", ".csv"),
    ]


@pytest.mark.parametrize("problem", ["missing folder", "unwritable folder", "extension", "an input",
                                     "name too long"])
def test_every_algorithm_checks_its_outputs_first(panadapter_provider, crop, tmp_path, problem):
    import processing

    pan, ms = crop
    for algorithm, parameters, name, extension in _cases(pan, ms):
        if problem == "missing folder":
            target, words = str(tmp_path / "missing" / f"out{extension}"), ["does not exist", "missing"]
        elif problem == "unwritable folder":
            target, words = os.path.join(_unwritable_folder(), f"out{extension}"), ["cannot write in"]
        elif problem == "extension":
            target, words = str(tmp_path / "out.png"), ["must be", extension, "out.png"]
        elif problem == "an input":
            target = parameters.get("MS") or parameters.get("HSI")
            words = ["is also an input", "destroy"]
            if not target.endswith(extension):
                continue  # an input with the extension of this output is refused as above
        else:
            target, words = str(tmp_path / ("n" * 300 + extension)), ["bytes long", "at most 255"]
        before = _digest(target) if os.path.isfile(target) else None
        with pytest.raises(QgsProcessingException) as error:
            processing.run(algorithm, dict(parameters, **{name: target}))
        message = str(error.value)
        assert message.startswith(f"{name}:"), (algorithm, message)
        assert all(word in message for word in words), (algorithm, message)
        if before is not None:
            assert _digest(target) == before  # the input is untouched
        assert _leftovers(tmp_path) == []


def test_two_outputs_of_degrade_may_not_be_one_file(panadapter_provider, crop, tmp_path):
    import processing

    pan, ms = crop
    same = str(tmp_path / "both.tif")
    with pytest.raises(QgsProcessingException, match="OUTPUT_MS and OUTPUT_PAN are the same file"):
        processing.run("panadapter:degrade", {"PAN": pan, "MS": ms, "SENSOR": 8, "OUTPUT_PAN": same,
                                              "OUTPUT_MS": same})
    assert os.listdir(tmp_path) == []


def test_outputs_resolved_once_are_the_ones_written(panadapter_provider, crop, tmp_path):
    """An optional output left empty is not written; a temporary one is written where the result says (a
    temporary output resolves to a new file each time it is asked for)."""
    import processing

    pan, ms = crop
    outputs = {"OUTPUT_PAN": str(tmp_path / "pan_lr.tif"), "OUTPUT_MS": "TEMPORARY_OUTPUT"}
    result = processing.run("panadapter:degrade", {"PAN": pan, "MS": ms, "SENSOR": 8, **outputs})
    assert "OUTPUT_REFERENCE" not in result
    assert gdal.Open(result["OUTPUT_MS"]).RasterXSize == gdal.Open(ms).RasterXSize // 2
    assert gdal.Open(result["OUTPUT_PAN"]).RasterXSize == gdal.Open(ms).RasterXSize  # the MS pixel size
    assert sorted(os.listdir(tmp_path)) == ["pan_lr.tif"]
    report = processing.run("panadapter:assess", {"FUSED": [result["OUTPUT_MS"]], "REFERENCE": result["OUTPUT_MS"],
                                                  "RATIO": 2, "DIM_CUT": 0, "OUTPUT_HTML": "TEMPORARY_OUTPUT"})
    assert report["ERGAS"] == pytest.approx(0.0, abs=1e-9)
    assert os.path.isfile(report["OUTPUT_HTML"]) and "OUTPUT_CSV" not in report
    assert "ERGAS" in open(report["OUTPUT_HTML"]).read()


# --------------------------------------------------------------------- item 4: temporary name, signals

def test_a_252_character_output_name_works(panadapter_provider, wv3, tmp_path):
    """The output is written under a short hidden name and renamed: a name of 252 characters (legal: 255
    at most) stays legal, where '<name>.part.tif' (261) was not."""
    import processing

    pan, ms = wv3
    output = tmp_path / ("w" * 248 + ".tif")
    assert len(output.name) == 252
    result = processing.run("panadapter:mtf_glp", {"PAN": pan, "MS": ms, "SENSOR": 2, "OUTPUT": str(output)})
    assert result["OUTPUT"] == str(output)
    fused, pan_ds = gdal.Open(str(output)), gdal.Open(pan)
    assert fused.RasterCount == 8
    assert fused.GetGeoTransform() == pytest.approx(pan_ds.GetGeoTransform())
    assert np.isfinite(fused.ReadAsArray()).all()
    assert os.listdir(tmp_path) == [output.name]  # no partial or auxiliary file beside it


def test_the_temporary_name_is_short_hidden_and_beside_the_output(tmp_path):
    from panadapter_qgis.backend.raster import partial_path

    output = str(tmp_path / ("x" * 250 + ".tif"))
    first, second = partial_path(output), partial_path(output)
    assert os.path.dirname(first) == str(tmp_path)
    name = os.path.basename(first)
    assert name.startswith(".") and name.endswith(".part.tif") and len(name) < 60
    assert first != second  # two runs on one output never share a temporary file


_SLOW_RUN = r"""
import sys, time
sys.path.insert(0, {root!r})
from panadapter_qgis.backend.pipeline import pansharpen
pansharpen({pan!r}, {ms!r}, {out!r}, "mtf_glp", sensor=2, tile_size=64,
           progress=lambda fraction: time.sleep(0.2))
"""


def _wait_for_partial(folder, process, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(name.endswith(".part.tif") for name in os.listdir(folder)):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    out, err = process.communicate()
    pytest.fail(f"no partial file appeared: {out[-2000:]} {err[-2000:]}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_during_a_run_leaves_no_partial_file(wv3, tmp_path, signum):
    pan, ms = wv3
    folder = tmp_path / "out"
    folder.mkdir()
    output = folder / "fused.tif"
    script = _SLOW_RUN.format(root=str(REPO_ROOT), pan=pan, ms=ms, out=str(output))
    # the default dispositions, whatever this suite inherited (a run started in the background by a shell
    # ignores SIGINT, one under nohup SIGHUP: the child would not be stopped at all)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                               preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))
    _wait_for_partial(folder, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    if signum == signal.SIGINT:
        assert process.returncode != 0 and "KeyboardInterrupt" in err
    else:
        assert process.returncode == -signum, err[-2000:]  # it still ends as that signal ends it
    assert os.listdir(folder) == []


def test_an_interruption_anywhere_leaves_no_partial_file(tmp_path):
    """Ctrl+C can land before the caller holds the writer (so no ``abort`` runs): the file still goes when
    the interpreter exits."""
    script = (f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
              "from panadapter_qgis.backend import raster\n"
              f"path = raster.partial_path({str(tmp_path / 'fused.tif')!r})\n"
              "raster.register_partial(path)\n"
              "open(path, 'w').write('x'); open(path + '.aux.xml', 'w').write('x')\n"
              "raise KeyboardInterrupt\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "KeyboardInterrupt" in run.stderr
    assert os.listdir(tmp_path) == []


def test_a_signal_the_process_ignores_stays_ignored(wv3, tmp_path):
    """Under nohup (SIGHUP ignored) a hang-up neither stops the run nor removes its file."""
    pan, ms = wv3
    output = tmp_path / "fused.tif"
    script = "import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN)\n" + _SLOW_RUN.format(
        root=str(REPO_ROOT), pan=pan, ms=ms, out=str(output)).replace("0.2", "0.02")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    _wait_for_partial(tmp_path, process)
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    assert os.listdir(tmp_path) == ["fused.tif"]
    assert gdal.Open(str(output)).RasterCount == 8


def test_handlers_are_restored_after_a_run(wv3, tmp_path):
    from panadapter_qgis.backend.pipeline import pansharpen

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    pansharpen(*wv3, str(tmp_path / "f.tif"), "brovey", sensor=2)
    assert {s: signal.getsignal(s) for s in before} == before


# ----------------------------------------------------------------------------------- item 5: messages

def test_a_repeated_band_is_named(panadapter_provider, wv3, tmp_path):
    import processing

    pan, ms = wv3
    for algorithm, output in (("panadapter:brovey", {"OUTPUT": str(tmp_path / "b.tif")}),
                              ("panadapter:degrade", {"OUTPUT_PAN": str(tmp_path / "p.tif"),
                                                      "OUTPUT_MS": str(tmp_path / "m.tif")})):
        for value in ("5,5,3", [5, 5, 3]):
            with pytest.raises(QgsProcessingException, match="repeats band 5") as error:
                processing.run(algorithm, dict({"PAN": pan, "MS": ms, "SENSOR": 2, "MS_BANDS": value}, **output))
            assert "[0]" not in str(error.value)
    assert os.listdir(tmp_path) == []


def test_a_band_list_given_as_text_is_read(panadapter_provider, wv3, tmp_path):
    """'5,3,2' as qgis_process passes it: the bands 5, 3 and 2 in that order (Processing alone reads band 0)."""
    import processing

    pan, ms = wv3
    out = str(tmp_path / "b.tif")
    processing.run("panadapter:brovey", {"PAN": pan, "MS": ms, "SENSOR": 2, "MS_BANDS": "5,3,2", "OUTPUT": out})
    fused, ms_ds = gdal.Open(out), gdal.Open(ms)
    assert [fused.GetRasterBand(i).GetDescription() for i in (1, 2, 3)] == \
        [ms_ds.GetRasterBand(b).GetDescription() for b in (5, 3, 2)]


def test_backend_names_repeated_and_missing_bands(wv3):
    from panadapter_qgis.backend.errors import PansharpenError
    from panadapter_qgis.backend.raster import inspect_pair

    pan, ms = wv3
    with pytest.raises(PansharpenError, match=r"band list \(5, 5, 3\) repeats band 5"):
        inspect_pair(pan, ms, [5, 5, 3])
    with pytest.raises(PansharpenError, match="MS band 9 does not exist: the MS raster has 8 bands"):
        inspect_pair(pan, ms, [1, 9])


@pytest.mark.parametrize("algorithm, tile, words", [("panadapter:brovey", 8, "at least 64"),
                                                    ("panadapter:panadapter", 8, "at least 32"),
                                                    ("panadapter:ssdiff", 8, "from 16 to 512"),
                                                    ("panadapter:ssdiff", 1024, "from 16 to 512")])
def test_tile_size_limits_are_in_the_help_and_the_error(panadapter_provider, crop, tmp_path, algorithm, tile,
                                                        words):
    import processing
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById(algorithm)
    assert words.capitalize() + " pixels." in alg.parameterDefinition("TILE_SIZE").help()
    assert words.capitalize() in alg.shortHelpString()
    pan, ms = crop
    with pytest.raises(QgsProcessingException) as error:
        processing.run(algorithm, {"PAN": pan, "MS": ms, "SENSOR": 8, "TILE_SIZE": tile,
                                   "OUTPUT": str(tmp_path / "o.tif")})
    assert f"TILE_SIZE (Tile size (panchromatic pixels)) must be {words}; got {tile}" in str(error.value)


@pytest.mark.parametrize("parameter", ["WEIGHTS", "ADAPTER"])
def test_a_file_that_is_not_a_torch_file_is_named(panadapter_provider, crop, tmp_path, parameter):
    import processing

    pan, ms = crop
    for content in (b"not weights\n", b"", open(ms, "rb").read()):   # text, empty, a GeoTIFF renamed .pt
        fake = tmp_path / "fake.pt"
        fake.write_bytes(content)
        with pytest.raises(QgsProcessingException, match="is not a PyTorch weights file") as error:
            processing.run("panadapter:panadapter", {"PAN": pan, "MS": ms, "SENSOR": 8, parameter: str(fake),
                                                     "OUTPUT": str(tmp_path / "o.tif")})
        assert str(error.value).startswith(f"{parameter}: ")
    started = time.monotonic()
    with pytest.raises(QgsProcessingException, match="is not a PyTorch weights file"):
        processing.run("panadapter:finetune", {"PAN": pan, "MS": ms, "SENSOR": 8, "ITERATIONS": 200,
                                               "WEIGHTS": str(fake), "OUTPUT": str(tmp_path / "a.pt")})
    assert time.monotonic() - started < 5
    assert sorted(os.listdir(tmp_path)) == ["fake.pt"]


def test_the_bundled_weights_pass_the_torch_file_check(tmp_path):
    from panadapter_qgis.backend import weights
    from panadapter_qgis.processing.algorithms.common import check_torch_file

    path = weights.bundled("panadapter")
    assert check_torch_file("WEIGHTS", path) == path


@pytest.fixture(scope="module")
def istanbul_geographic(istanbul, tmp_path_factory):
    """The Istanbul MS reprojected to EPSG:4326 as gdalwarp does by default (square pixels in degrees:
    about 28 x 37 m in the PAN's UTM zone, 1.85 x 2.45 PAN pixels, 2.13 on average: ratio 2), and one with
    pixels 1.17 times as large (2.49 on average: no whole ratio)."""
    pan, ms = istanbul
    folder = tmp_path_factory.mktemp("geographic")
    near, far = str(folder / "ms_4326.tif"), str(folder / "ms_4326_coarse.tif")
    gdal.Warp(near, str(ms), dstSRS="EPSG:4326")
    size = gdal.Open(near).GetGeoTransform()[1]
    gdal.Warp(far, str(ms), dstSRS="EPSG:4326", xRes=size * 1.17, yRes=size * 1.17)
    return str(pan), str(ms), near, far


def test_a_geographic_ms_is_warped_onto_the_projected_pan(istanbul_geographic, tmp_path):
    from panadapter_qgis.backend.pipeline import pansharpen
    from panadapter_qgis.backend.raster import inspect_pair

    pan, ms, near, _ = istanbul_geographic
    info = inspect_pair(pan, near)
    assert info.ratio == 2 and info.warped
    assert any("EPSG:4326" in note and "EPSG:32635" in note and "warped" in note for note in info.notes)
    logged = []
    pansharpen(pan, near, str(tmp_path / "geo.tif"), "mtf_glp", sensor=0, log=logged.append)
    assert any("EPSG:4326" in line and "warped" in line for line in logged)
    pansharpen(pan, ms, str(tmp_path / "utm.tif"), "mtf_glp", sensor=0)
    geo, utm = gdal.Open(str(tmp_path / "geo.tif")), gdal.Open(str(tmp_path / "utm.tif"))
    assert geo.GetRasterBand(1).XSize >= utm.GetRasterBand(1).XSize - 4
    assert geo.GetGeoTransform()[1] == utm.GetGeoTransform()[1] == 15.0
    # the same image, up to the resampling of the MS to degrees and back: compare the common area
    a, b = geo.ReadAsArray().astype(np.float64), utm.ReadAsArray().astype(np.float64)
    dx = round((utm.GetGeoTransform()[0] - geo.GetGeoTransform()[0]) / 15.0)
    dy = round((geo.GetGeoTransform()[3] - utm.GetGeoTransform()[3]) / 15.0)
    assert dx >= 0 and dy >= 0
    h, w = min(a.shape[1] - dy, b.shape[1]), min(a.shape[2] - dx, b.shape[2])
    a, b = a[:, dy:dy + h, dx:dx + w][:, 20:-20, 20:-20], b[:, :h, :w][:, 20:-20, 20:-20]
    for band in range(3):
        assert np.corrcoef(a[band].ravel(), b[band].ravel())[0, 1] > 0.95


def test_a_geographic_ms_at_no_whole_ratio_is_refused_naming_both_crs(istanbul_geographic, tmp_path):
    from panadapter_qgis.backend.errors import PansharpenError
    from panadapter_qgis.backend.pipeline import pansharpen

    pan, _, _, far = istanbul_geographic
    with pytest.raises(PansharpenError) as error:
        pansharpen(pan, far, str(tmp_path / "o.tif"), "brovey")
    message = str(error.value)
    assert "EPSG:4326 (WGS 84)" in message and "EPSG:32635 (WGS 84 / UTM zone 35N)" in message
    assert "Reproject the MS" in message
    assert os.listdir(tmp_path) == []


def test_inf_fusion_messages_speak_of_hsi_and_msi(panadapter_provider, wv3, tmp_path):
    """Its parameters are HSI and MSI; its errors say so (here: the two swapped)."""
    import processing

    pan, ms = wv3
    with pytest.raises(QgsProcessingException) as error:
        processing.run("panadapter:inf_fusion", {"HSI": pan, "MSI": ms, "METHOD": 2,
                                                 "OUTPUT": str(tmp_path / "o.tif")})
    message = str(error.value)
    assert "MSI" in message and "HSI" in message and "swapped" in message
    assert "PAN" not in message and " MS " not in message
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------- through qgis_process

@pytest.fixture(scope="module")
def qgis_process_env(tmp_path_factory):
    from test_qgis_process import QGIS_PROCESS, qgis_env, qgis_process

    import shutil
    if not shutil.which(QGIS_PROCESS):
        pytest.skip(f"{QGIS_PROCESS} not installed")
    env = dict(qgis_env(tmp_path_factory.mktemp("qgis-profile")), OMP_NUM_THREADS="1")
    enabled = qgis_process(env, "plugins", "enable", "panadapter_qgis")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return env


@pytest.mark.slow
def test_qgis_process_sigterm_removes_the_partial_file(qgis_process_env, data_dir, tmp_path):
    """SIGTERM (timeout, kill, cluster schedulers) during an SSDiff run: the process ends as SIGTERM ends it
    and leaves neither output nor partial file."""
    from test_qgis_process import QGIS_PROCESS

    scene = data_dir / "pansharpening" / "landsat7_fusebox" / "scene_09"
    ms6 = str(tmp_path / "ms6.tif")
    gdal.Translate(ms6, str(scene / "ms.tif"), bandList=[1, 2, 3, 4, 5, 6])
    folder = tmp_path / "out"
    folder.mkdir()
    process = subprocess.Popen([QGIS_PROCESS, "run", "panadapter:ssdiff", f"--PAN={scene / 'pan.tif'}",
                                f"--MS={ms6}", "--SENSOR=8", f"--OUTPUT={folder / 'fused.tif'}"],
                               env=qgis_process_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_partial(folder, process, seconds=240)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGTERM, out[-2000:] + err[-2000:]
    assert os.listdir(folder) == []
