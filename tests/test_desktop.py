"""The real QGIS desktop, driven as a user drives it (issue 30.1): what the pytest-qgis tests cannot prove.

QGIS 3.22 (``qgis``) starts under a virtual X display (Xvfb; the offscreen platform crashes the desktop), with
a throwaway profile where the plugin is enabled, and runs ``tests/desktop_startup.py`` through ``--code``. That
script opens Raster > PanAdapter > Pansharpening preview, picks a real Landsat-7 pair, runs Preview, "Run on
whole scene..." and the algorithm dialog, checks the styled output in the project, opens Raster > PanAdapter >
Device and dependencies, runs an algorithm's batch dialog on three real pairs, builds the degrade -> sharpen ->
assess model in the graphical modeler (saved, then run there) and quits. It writes a report and screenshots of
each step to ``tests/artifacts/desktop/`` (not committed). The committed model
(``tests/data/degrade_sharpen_assess.model3``, made by ``tests/desktop_model.py``) also runs through qgis_process.
"""
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sysconfig
import time

import pytest
from conftest import DATA_DIR, REPO_ROOT

QGIS = shutil.which("qgis")
XVFB = shutil.which("Xvfb")
QGIS_PROCESS = os.environ.get("QGIS_PROCESS", "/usr/bin/qgis_process.bin")
ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "desktop"
MODEL_FILE = REPO_ROOT / "tests" / "data" / "degrade_sharpen_assess.model3"
FUSEBOX = DATA_DIR / "pansharpening" / "landsat7_fusebox"
SCENE = FUSEBOX / "scene_09"
BATCH_SCENES = ("scene_09", "scene_10", "scene_11")
LANDSAT_SENSOR = 8            # the SENSOR enum's "Landsat 7/8/9"
SCREEN = (1600, 1000)
DEADLINE_S = 150              # the startup script gives up (report written, QGIS ends) after this
KILL_AFTER_S = 200            # and the test kills QGIS after this
STEPS = ("start", "load_scene", "open_preview_dock", "pick_layers", "preview", "run_whole_scene",
         "styled_output", "device_dialog", "batch", "modeler", "quit")

pytestmark = pytest.mark.slow


def start_xvfb():
    """Xvfb on a display number it picks itself (-displayfd): (process, ':N')."""
    read_end, write_end = os.pipe()
    xvfb = subprocess.Popen([XVFB, "-displayfd", str(write_end), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                             "-nolisten", "tcp", "-noreset"], pass_fds=(write_end,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write_end)
    number = b""
    deadline = time.monotonic() + 20
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([read_end], [], [], 0.5)
        if ready:
            chunk = os.read(read_end, 16)
            if not chunk:
                break
            number += chunk
    os.close(read_end)
    if not number.strip().isdigit():
        xvfb.kill()
        raise RuntimeError(f"Xvfb did not start: {xvfb.stderr.read().decode(errors='replace')[-2000:]}")
    return xvfb, f":{number.strip().decode()}"


def stop(process):
    """End a process group we started (QGIS may have children) and reap it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


def qgis_child_env(display):
    env = {key: value for key, value in os.environ.items()
           if key not in ("QT_QPA_PLATFORM", "QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH", "PYTHONPATH")}
    env.update(DISPLAY=display, QGIS_PLUGINPATH=str(REPO_ROOT),
               PYTHONPATH=sysconfig.get_paths()["purelib"])  # torch and the rest of this venv
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def write_profile(root):
    """A throwaway profile (``--profiles-path root``) with the plugin enabled, as QGIS3.ini records it."""
    ini = root / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\npanadapter_qgis=true\n\n[core]\nNewsFeed\\httpsfeedqgisorg\\disabled=true\n")
    return root


@pytest.fixture(scope="module")
def desktop(tmp_path_factory):
    """Run the desktop session once: (report, stderr, returncode, seconds)."""
    if QGIS is None:
        pytest.skip("the QGIS desktop (qgis) is not installed")
    if XVFB is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb; make test installs it)")
    for scene in BATCH_SCENES:
        if not (FUSEBOX / scene / "pan.tif").is_file():
            pytest.skip(f"scene not found: {FUSEBOX / scene}")
    tmp = tmp_path_factory.mktemp("desktop")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    work = tmp / "work"
    work.mkdir()
    profiles = write_profile(tmp / "profiles")
    config = {"out": str(ARTIFACTS), "work": str(work), "tests_dir": str(REPO_ROOT / "tests"),
              "pan": str(SCENE / "pan.tif"), "ms": str(SCENE / "ms.tif"), "method": "mtf_glp_fs",
              "sensor": LANDSAT_SENSOR, "batch_search": "MTF-GLP-FS",
              "batch_pairs": [[str(FUSEBOX / s / "pan.tif"), str(FUSEBOX / s / "ms.tif")] for s in BATCH_SCENES],
              "model_file": str(MODEL_FILE), "screen": list(SCREEN), "deadline": DEADLINE_S,
              "timeout_preview": 90, "timeout_run": 90, "timeout_batch": 120}
    config_path = tmp / "config.json"
    config_path.write_text(json.dumps(config, indent=1))
    xvfb, display = start_xvfb()
    env = qgis_child_env(display)
    env["PANADAPTER_DESKTOP_CONFIG"] = str(config_path)
    env["XDG_RUNTIME_DIR"] = str(tmp)
    command = [QGIS, "--profiles-path", str(profiles), "--noversioncheck", "--nologo",
               "--code", str(REPO_ROOT / "tests" / "desktop_startup.py")]
    start = time.monotonic()
    try:
        with open(tmp / "stdout.txt", "wb") as out, open(tmp / "stderr.txt", "wb") as err:
            qgis = subprocess.Popen(command, env=env, stdout=out, stderr=err, start_new_session=True, cwd=tmp)
            try:
                returncode = qgis.wait(timeout=KILL_AFTER_S)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                stop(qgis)
    finally:
        xvfb.terminate()
        try:
            xvfb.wait(timeout=10)
        except subprocess.TimeoutExpired:
            xvfb.kill()
            xvfb.wait()
    seconds = time.monotonic() - start
    stderr = (tmp / "stderr.txt").read_text(errors="replace")
    shutil.copy(tmp / "stderr.txt", ARTIFACTS / "qgis_stderr.txt")
    report_path = ARTIFACTS / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    return {"report": report, "stderr": stderr, "returncode": returncode, "seconds": seconds,
            "profiles": profiles, "work": work}


def steps_by_name(desktop):
    report = desktop["report"]
    assert report is not None, f"QGIS wrote no report (exit status {desktop['returncode']}); stderr:\n" + \
        desktop["stderr"][-3000:]
    return {step["name"]: step for step in report["steps"]}


def test_qgis_quits_by_itself_after_every_step(desktop):
    assert desktop["returncode"] is not None, f"QGIS did not end within {KILL_AFTER_S} s and was killed"
    report = desktop["report"]
    assert report is not None and report["finished"], "the startup script did not reach its last step"
    assert "watchdog" not in report, report["watchdog"]
    assert "exit_fallback" not in report, report["exit_fallback"]
    assert not report.get("driver_errors"), report.get("driver_errors")
    assert desktop["returncode"] == 0, desktop["stderr"][-3000:]


@pytest.mark.parametrize("name", STEPS)
def test_step(desktop, name):
    steps = steps_by_name(desktop)
    assert name in steps, f"step {name} never ran (ran: {list(steps)})"
    step = steps[name]
    assert step["ok"], f"step {name} failed:\n{step['error']}\ndetails: {json.dumps(step['details'])[:3000]}"
    for shot in step["screenshots"]:
        assert shot["saved"] and (ARTIFACTS / shot["file"]).is_file(), shot


def test_no_python_error_in_the_message_log_or_stderr(desktop):
    report = desktop["report"]
    assert report is not None
    assert not report["log_errors"], json.dumps(report["log_errors"], indent=1)[:5000]
    assert "Traceback" not in desktop["stderr"], desktop["stderr"][-5000:]


def test_what_the_steps_saw(desktop):
    steps = steps_by_name(desktop)
    menu = steps["open_preview_dock"]["details"]["raster_panadapter_menu"]
    assert "Pansharpening preview" in menu and "Device and dependencies" in menu
    assert steps["preview"]["details"]["renderer"] == "multibandcolor"
    whole = steps["run_whole_scene"]["details"]
    assert whole["parameters"]["SENSOR"] == str(LANDSAT_SENSOR)  # the dock's choices went into the dialog
    assert whole["output"]["bands"] == 6 and whole["output"]["georeferenced"]
    assert "PyTorch" in steps["device_dialog"]["details"]["report"]
    batch = steps["batch"]["details"]
    assert batch["runs"] == 3 and len({info["path"] for info in batch["outputs"]}) == 3
    for info in batch["outputs"]:
        assert info["driver"] == "GTiff" and info["bands"] == 6 and info["std"] > 0, info
    modeler = steps["modeler"]["details"]
    assert modeler["same_structure"], (modeler["structure_saved"], modeler["structure_committed"])
    indices = modeler["indices"]
    assert math.isfinite(indices["ERGAS"]) and indices["ERGAS"] > 0
    assert 0 < indices["Q2N"] <= 1


def test_the_committed_model_runs_in_qgis_process(tmp_path):
    """qgis_process runs tests/data/degrade_sharpen_assess.model3; its index outputs are sane numbers."""
    if not shutil.which(QGIS_PROCESS):
        pytest.skip(f"{QGIS_PROCESS} not installed")
    if not (SCENE / "pan.tif").is_file():
        pytest.skip(f"scene not found: {SCENE}")
    profile = tmp_path / "profile"
    env = {key: value for key, value in os.environ.items() if key not in ("QGIS_OPTIONS_PATH", "PYTHONPATH")}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(profile), QGIS_PLUGINPATH=str(REPO_ROOT),
               PYTHONPATH=sysconfig.get_paths()["purelib"])
    enabled = subprocess.run([QGIS_PROCESS, "plugins", "enable", "panadapter_qgis"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    report = tmp_path / "report.html"
    ran = subprocess.run([QGIS_PROCESS, "run", str(MODEL_FILE), f"--PAN={SCENE / 'pan.tif'}",
                          f"--MS={SCENE / 'ms.tif'}", f"--SENSOR={LANDSAT_SENSOR}",
                          f"--assess:QUALITY_REPORT={report}", "--json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "Traceback" not in ran.stderr, ran.stderr[-3000:]
    results = json.loads(ran.stdout)["results"]
    ergas, sam, q2n = results["assess:ERGAS"], results["assess:SAM"], results["assess:Q2N"]
    assert math.isfinite(ergas) and 0 < ergas < 20, results
    assert math.isfinite(sam) and 0 < sam < 20, results
    assert 0 < q2n <= 1, results
    assert report.is_file() and "ERGAS" in report.read_text()


def test_the_committed_model_is_what_desktop_model_builds(panadapter_provider):
    """tests/data/degrade_sharpen_assess.model3 has the structure ``desktop_model.build_model()`` gives (the
    desktop test checks the same of the model the graphical modeler saved)."""
    from qgis.core import QgsProcessingModelAlgorithm

    import desktop_model

    committed = QgsProcessingModelAlgorithm()
    assert committed.fromFile(str(MODEL_FILE))
    assert desktop_model.structure(desktop_model.build_model()) == desktop_model.structure(committed)
    valid, errors = committed.validate()
    assert valid, errors
    outputs = desktop_model.structure(committed)["children"]["assess"]["outputs"]
    assert outputs == {"QUALITY_REPORT": "OUTPUT_HTML", **{name: name for name in desktop_model.INDEX_OUTPUTS}}
