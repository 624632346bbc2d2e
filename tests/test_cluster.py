"""The tile loop on a Dask distributed cluster (issue 31): a LocalCluster of 2 worker processes gives the
in-process result (bit-identical for a classical method, within float tolerance for PanAdapter), a worker
killed mid-run changes nothing, cancel leaves no file and no task, and the bad cases fail within seconds
with a message that names the problem."""
import os
import signal
import time

import numpy as np
import pytest
from osgeo import gdal

from conftest import REPO_ROOT, fusebox_crop
from panadapter_qgis.backend.adapt import sharpen_scene
from panadapter_qgis.backend.errors import Cancelled, PansharpenError
from panadapter_qgis.backend.pipeline import pansharpen

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def watchdog():
    """No test of this file may hang the suite (one did for 7 minutes while it was written, a worker killed
    during the statistics): each fails after 5 minutes."""
    def expire(signum, frame):
        raise TimeoutError("a cluster test ran for more than 5 minutes")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def cluster():
    """2 worker processes x 1 thread that import the backend from this checkout (PYTHONPATH)."""
    env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  env=env) as local:
        with distributed.Client(local, set_as_default=False) as client:
            yield local.scheduler_address, client


@pytest.fixture(scope="module")
def crop(data_dir, tmp_path_factory):
    return fusebox_crop(data_dir, tmp_path_factory.mktemp("cluster_crop"), "scene_10", pan_size=256,
                        bands=(1, 2, 3, 4, 5, 6))


def pixels(path):
    ds = gdal.Open(str(path))
    return ds.ReadAsArray(), ds.GetGeoTransform(), ds.GetProjection(), ds.GetMetadata()


def leftovers(folder):
    return [name for name in os.listdir(folder) if name.endswith(".part.tif")]


def test_classical_on_the_cluster_is_bit_identical(cluster, crop, tmp_path):
    address, _ = cluster
    here, there = tmp_path / "here.tif", tmp_path / "there.tif"
    pansharpen(*crop, str(here), "mtf_glp_fs", sensor=8, tile_size=64, device="cpu")
    logs, steps = [], []
    result = pansharpen(*crop, str(there), "mtf_glp_fs", sensor=8, tile_size=64, device="cpu", scheduler=address,
                        log=logs.append, progress=steps.append)
    a, b = pixels(here), pixels(there)
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    assert any("2 workers, 2 threads" in line and "GiB memory" in line for line in logs), logs
    assert "Dask cluster" in result["device"]
    assert steps[-1] == pytest.approx(1.0) and steps == sorted(steps)


def test_panadapter_on_the_cluster_equals_in_process(cluster, crop, tmp_path):
    address, _ = cluster
    here, there = tmp_path / "here.tif", tmp_path / "there.tif"
    common = dict(sensor=8, float32=True, tile_size=64, batch=2, device="cpu")
    sharpen_scene(*crop, str(here), **common)
    logs = []
    sharpen_scene(*crop, str(there), scheduler=address, log=logs.append, **common)
    a, b = pixels(here), pixels(there)
    assert a[1:] == b[1:]
    np.testing.assert_allclose(b[0], a[0], rtol=1e-5, atol=1e-3)
    assert any("torch" in line and "Dask cluster" in line for line in logs), logs


def test_ssdiff_blended_tiles_on_the_cluster_equal_in_process(cluster, crop, tmp_path):
    from panadapter_qgis.backend.adapt import ssdiff_scene

    address, _ = cluster
    here, there = tmp_path / "here.tif", tmp_path / "there.tif"
    common = dict(sensor=8, float32=True, steps=2, tile_size=64, batch=4, device="cpu")
    ssdiff_scene(*crop, str(here), **common)
    ssdiff_scene(*crop, str(there), scheduler=address, **common)
    np.testing.assert_allclose(pixels(there)[0], pixels(here)[0], rtol=1e-5, atol=1e-3)


def test_a_worker_killed_mid_run_changes_nothing(cluster, crop, tmp_path):
    address, client = cluster
    here, there = tmp_path / "here.tif", tmp_path / "there.tif"
    pansharpen(*crop, str(here), "mtf_glp_fs", sensor=8, tile_size=32, device="cpu")
    pids = client.run(os.getpid)
    killed = []

    def progress(fraction):
        if fraction > 0.6 and not killed:   # the tiles (0.3 to 1: the statistics come first)
            killed.append(sorted(pids.values())[0])
            os.kill(killed[0], signal.SIGKILL)

    pansharpen(*crop, str(there), "mtf_glp_fs", sensor=8, tile_size=32, device="cpu", scheduler=address,
               progress=progress)
    assert killed
    assert np.array_equal(pixels(here)[0], pixels(there)[0])
    client.wait_for_workers(2, timeout=60)   # the nanny restarts it


def test_cancel_stops_the_cluster_and_leaves_no_file(cluster, crop, tmp_path):
    address, client = cluster
    out = tmp_path / "cancelled.tif"
    steps = []
    with pytest.raises(Cancelled):
        pansharpen(*crop, str(out), "mtf_glp_fs", sensor=8, tile_size=32, device="cpu", scheduler=address,
                   progress=steps.append, is_cancelled=lambda: len(steps) >= 2)
    assert not out.exists() and not leftovers(tmp_path)

    def ours(dask_scheduler):
        return [key for key in dask_scheduler.tasks if str(key).startswith("panadapter-")]

    deadline = time.monotonic() + 10
    while client.run_on_scheduler(ours) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not client.run_on_scheduler(ours)


def test_an_unreachable_scheduler_fails_within_seconds(crop, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(PansharpenError, match=r"tcp://127\.0\.0\.1:9.*could not be reached"):
        pansharpen(*crop, str(tmp_path / "x.tif"), "mtf_glp_fs", scheduler="tcp://127.0.0.1:9")
    assert time.monotonic() - t0 < 20
    assert not os.listdir(tmp_path)


def test_an_input_a_worker_cannot_open_is_named(cluster, crop, tmp_path):
    address, client = cluster
    client.wait_for_workers(2, timeout=60)
    pan = "/vsimem/cluster_test/pan.tif"     # this process's memory: no worker sees it
    gdal.Translate(pan, crop[0])
    try:
        with pytest.raises(PansharpenError) as error:
            pansharpen(pan, crop[1], str(tmp_path / "x.tif"), "mtf_glp_fs", scheduler=address)
    finally:
        gdal.Unlink(pan)
    message = str(error.value)
    assert pan in message and "Dask worker tcp://" in message and "every worker" in message
    assert not os.listdir(tmp_path)


def test_workers_with_another_backend_version_are_refused(cluster, crop, tmp_path, monkeypatch):
    from panadapter_qgis.backend import cluster as backend_cluster

    address, _ = cluster
    monkeypatch.setattr(backend_cluster, "backend_version", lambda: "9.9.9")   # this machine's, not theirs
    with pytest.raises(PansharpenError, match=r"Dask worker tcp://\S+ has PanAdapter \S+, this machine 9\.9\.9"):
        pansharpen(*crop, str(tmp_path / "x.tif"), "mtf_glp_fs", scheduler=address)
    assert not os.listdir(tmp_path)


def test_without_dask_the_error_says_how_to_install_it(crop, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(PansharpenError, match=r'pip install "dask\[distributed\]"'):
        pansharpen(*crop, str(tmp_path / "x.tif"), "mtf_glp_fs", scheduler="tcp://10.0.0.5:8786")


def test_the_algorithms_take_scheduler_from_the_parameter_or_the_environment(cluster, crop, tmp_path,
                                                                             panadapter_provider, monkeypatch):
    import processing
    from qgis.core import QgsApplication, QgsProcessingFeedback, QgsProcessingParameterDefinition

    address, _ = cluster
    registry = QgsApplication.processingRegistry()
    for name in ("panadapter:mtf_glp_fs", "panadapter:panadapter", "panadapter:ssdiff"):
        parameter = registry.algorithmById(name).parameterDefinition("SCHEDULER")
        assert parameter.flags() & QgsProcessingParameterDefinition.FlagAdvanced, name
    monkeypatch.setenv("PANADAPTER_SCHEDULER", address)
    algorithm = registry.createAlgorithmById("panadapter:mtf_glp_fs")
    assert algorithm.parameterDefinition("SCHEDULER").defaultValue() == address

    class Feedback(QgsProcessingFeedback):
        lines = []

        def pushInfo(self, info):  # noqa: N802
            self.lines.append(info)

    feedback = Feedback()
    here, there = str(tmp_path / "here.tif"), str(tmp_path / "there.tif")
    common = {"PAN": crop[0], "MS": crop[1], "SENSOR": 8, "DEVICE": 1, "TILE_SIZE": 64}
    processing.run("panadapter:mtf_glp_fs", {**common, "SCHEDULER": "", "OUTPUT": here})
    processing.run(algorithm, {**common, "OUTPUT": there}, feedback=feedback)   # the environment's default
    assert np.array_equal(pixels(here)[0], pixels(there)[0])
    assert any(line.startswith(f"Dask cluster {address}: 2 workers") for line in feedback.lines), feedback.lines


def test_without_a_scheduler_dask_is_not_imported(crop, tmp_path):
    import subprocess
    import sys

    code = ("import sys; from panadapter_qgis.backend.pipeline import pansharpen; "
            f"pansharpen({crop[0]!r}, {crop[1]!r}, {str(tmp_path / 'x.tif')!r}, device='cpu'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
