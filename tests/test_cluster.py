"""The tile loop on a Dask distributed cluster (issue 31): a LocalCluster of 2 worker processes gives the
in-process result (bit-identical for a classical method, Wald's degradation and both assessments, within float
tolerance for PanAdapter and the HSI/MSI fusion), a worker killed mid-run changes nothing, cancel leaves no file and no
task, and the bad cases fail within seconds with a message that names the problem."""
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


@pytest.fixture(scope="module")
def hs_pair(data_dir, tmp_path_factory):
    """(LR-HSI path, MSI path) of the hyperspectral tests' Paris protocol (test_hyperspectral.paris): the
    Hyperion HSI degraded by 4 (128 bands, 18 x 18) and the MSI simulated with the Landsat TM5 responses."""
    import csv

    from bench.bench_hyperspectral import degrade, write
    from panadapter_qgis.backend.hyperspectral import load_srf, simulate_msi, srf_matrix

    root = data_dir / "hyperspectral"
    hsi = gdal.Open(str(root / "paris_hyperion_ali" / "hs.tif")).ReadAsArray().astype(np.float32)
    with open(root / "paris_hyperion_ali" / "hs_bands.csv") as f:
        wl = np.array([float(r["approx_center_nm"]) for r in csv.DictReader(f)])
    _, matrix = srf_matrix(load_srf(root / "srf" / "landsat_tm5_srf.csv"), wl)
    folder = tmp_path_factory.mktemp("cluster_hs")
    hsi_path, msi_path = str(folder / "lr_hsi.tif"), str(folder / "msi.tif")
    write(hsi_path, degrade(hsi, 4), 120.0, wl)
    write(msi_path, simulate_msi(hsi, matrix), 30.0)
    return hsi_path, msi_path


@pytest.fixture(scope="module")
def holed_crop(crop, tmp_path_factory):
    """The crop with nodata (0, declared) in a block of the MS and another of the PAN, so that the workers'
    nodata filler and masks are exercised."""
    folder = tmp_path_factory.mktemp("cluster_holes")
    paths = []
    for path, name, block in zip(crop, ("pan.tif", "ms.tif"), ((slice(100, 140), slice(30, 90)),
                                                               (slice(10, 30), slice(70, 100)))):
        out = str(folder / name)
        ds = gdal.Translate(out, path)
        for b in range(1, ds.RasterCount + 1):
            band = ds.GetRasterBand(b)
            values = band.ReadAsArray()
            values[block] = 0
            band.WriteArray(values)
            band.SetNoDataValue(0)
        ds = None
        paths.append(out)
    return tuple(paths)


def pixels(path):
    ds = gdal.Open(str(path))
    return ds.ReadAsArray(), ds.GetGeoTransform(), ds.GetProjection(), ds.GetMetadata()


def single_threaded():
    """This process's torch has one thread, as the workers have: then the deep code's reductions run in the
    same order here and there, and the same code gives the same bits (more threads may change the last one)."""
    import torch

    return torch.get_num_threads() == 1


def nodata_values(path):
    ds = gdal.Open(str(path))
    return [ds.GetRasterBand(b).GetNoDataValue() for b in range(1, ds.RasterCount + 1)]


def recording_feedback():
    """A Processing feedback that keeps the lines of the run log (``lines``)."""
    from qgis.core import QgsProcessingFeedback

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushInfo(self, info):  # noqa: N802
            self.lines.append(info)

    return Feedback()


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


@pytest.mark.parametrize("float32", [False, True])
def test_degrade_on_the_cluster_is_bit_identical(cluster, holed_crop, tmp_path, float32):
    """Wald's degradation: the workers read and degrade the tiles (nodata filled and masked), this machine
    writes the same three files, bit for bit, in the input types (rounded, clipped) or Float32."""
    from panadapter_qgis.backend.wald import degrade

    address, _ = cluster
    names = ("pan_lr.tif", "ms_lr.tif", "reference.tif")
    here, there = [[str(tmp_path / f"{where}_{n}") for n in names] for where in ("here", "there")]
    common = dict(sensor=8, float32=float32, tile_size=64)
    a = degrade(*holed_crop, here[0], here[1], out_reference=here[2], **common)
    logs, steps = [], []
    b = degrade(*holed_crop, there[0], there[1], out_reference=there[2], scheduler=address, log=logs.append,
                progress=steps.append, **common)
    assert len(steps) > 2 and steps == sorted(steps) and steps[-1] == pytest.approx(1.0)
    for x, y in zip(here, there):
        p, q = pixels(x), pixels(y)
        assert p[0].dtype == q[0].dtype == (np.float32 if float32 else np.uint8)
        assert np.array_equal(p[0], q[0]) and p[1:] == q[1:], y
        assert nodata_values(x) == nodata_values(y)
    assert (pixels(here[1])[0] == nodata_values(here[1])[0]).any()   # the hole reached the outputs
    assert {k: v for k, v in a.items() if k not in ("seconds", "pan", "ms", "reference")} == \
           {k: v for k, v in b.items() if k not in ("seconds", "pan", "ms", "reference")}
    assert any("tiles on Dask cluster" in line for line in logs), logs
    assert not leftovers(tmp_path)


def test_degrade_cancelled_on_the_cluster_leaves_no_file(cluster, crop, tmp_path):
    from panadapter_qgis.backend.wald import degrade

    address, _ = cluster
    steps = []
    with pytest.raises(Cancelled):
        degrade(*crop, str(tmp_path / "p.tif"), str(tmp_path / "m.tif"), sensor=8, tile_size=16,
                scheduler=address, progress=steps.append, is_cancelled=lambda: len(steps) >= 2)
    assert not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def assessed(holed_crop, tmp_path_factory):
    """Two fused rasters of the holed crop's Wald pair (so with no-data), its reference, and two of the
    crop at full resolution."""
    from panadapter_qgis.backend.wald import degrade

    folder = tmp_path_factory.mktemp("cluster_assess")
    pan_lr, ms_lr, ref = (str(folder / n) for n in ("pan_lr.tif", "ms_lr.tif", "ref.tif"))
    degrade(*holed_crop, pan_lr, ms_lr, out_reference=ref, sensor=8, float32=False)
    reduced, full = [], []
    for method in ("mtf_glp_fs", "gsa"):
        reduced.append(str(folder / f"reduced_{method}.tif"))
        pansharpen(pan_lr, ms_lr, reduced[-1], method, sensor=8, device="cpu")
        full.append(str(folder / f"full_{method}.tif"))
        pansharpen(*holed_crop, full[-1], method, sensor=8, device="cpu")
    return reduced, ref, full


def same_assessment(a, b):
    """Every number, note and error map of two assessments equal (the timings aside)."""
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in a["rows"]] == \
           [{k: v for k, v in row.items() if k != "seconds"} for row in b["rows"]]
    assert a["notes"] == b["notes"] and a["groups"] == b["groups"]
    for x, y in zip(a["error_maps"], b["error_maps"]):
        assert x.keys() == y.keys()
        for key in x:
            assert np.array_equal(x[key], y[key], equal_nan=True), key


def test_assess_reduced_on_the_cluster_is_bit_identical(cluster, assessed):
    """Wald's-protocol indices, the strips on the workers (each read with the rows above it that the running
    indices keep): the same numbers and error maps, bit for bit, no-data included."""
    from panadapter_qgis.backend.assess import assess_reduced

    address, _ = cluster
    fused, reference, _ = assessed
    here = assess_reduced(fused, reference, sensor=8, strip_rows=32)
    logs, steps = [], []
    there = assess_reduced(fused, reference, sensor=8, strip_rows=32, scheduler=address, log=logs.append,
                           progress=steps.append)
    same_assessment(here, there)
    assert all(0 < row["nodata_fraction"] < 0.2 for row in here["rows"])
    assert all(np.isfinite(row[k]) for row in here["rows"] for k in ("q2n", "sam", "ergas", "scc", "ssim"))
    assert any("strips on Dask cluster" in line for line in logs), logs
    assert steps == sorted(steps) and steps[-1] == pytest.approx(1.0)


def test_assess_full_on_the_cluster_is_bit_identical(cluster, assessed, holed_crop):
    from panadapter_qgis.backend.assess import assess_full

    address, _ = cluster
    _, _, fused = assessed
    here = assess_full(fused, *holed_crop, sensor=8, tile_size=64)
    logs = []
    there = assess_full(fused, *holed_crop, sensor=8, tile_size=64, scheduler=address, log=logs.append)
    same_assessment(here, there)
    assert all(0 < row["hqnr"] < 1 for row in here["rows"])
    assert any("tiles of 2 raster(s) on Dask cluster" in line for line in logs), logs


def test_assess_with_a_worker_killed_mid_run_and_cancelled(cluster, assessed):
    from panadapter_qgis.backend.assess import assess_reduced

    address, client = cluster
    fused, reference, _ = assessed
    here = assess_reduced(fused, reference, sensor=8, strip_rows=32)
    client.wait_for_workers(2, timeout=60)
    pids = client.run(os.getpid)
    killed = []

    def progress(fraction):
        if fraction > 0.4 and not killed:
            killed.append(sorted(pids.values())[-1])
            os.kill(killed[0], signal.SIGKILL)

    there = assess_reduced(fused, reference, sensor=8, strip_rows=32, scheduler=address, progress=progress)
    assert killed
    same_assessment(here, there)
    client.wait_for_workers(2, timeout=60)
    steps = []
    with pytest.raises(Cancelled):
        assess_reduced(fused, reference, sensor=8, strip_rows=32, scheduler=address, progress=steps.append,
                       is_cancelled=lambda: len(steps) >= 2)


def test_hsi_baseline_on_the_cluster_equals_in_process(cluster, hs_pair, tmp_path):
    """fuse_baseline (the detail injection, its matrix fitted here once) on the workers, 9 tiles: the same
    pixels (bit for bit when this process's torch has 1 thread, as the workers'), the same band metadata."""
    from panadapter_qgis.backend.hyperspectral import fuse_baseline

    address, _ = cluster
    here, there = tmp_path / "here.tif", tmp_path / "there.tif"
    common = dict(device="cpu", float32=True, tile_size=32, batch=2)
    fuse_baseline(*hs_pair, str(here), "glp", **common)
    logs = []
    result = fuse_baseline(*hs_pair, str(there), "glp", scheduler=address, log=logs.append, **common)
    a, b = pixels(here), pixels(there)
    assert a[1:] == b[1:]
    np.testing.assert_allclose(b[0], a[0], rtol=1e-5, atol=1e-3)
    assert np.array_equal(b[0], a[0]) or not single_threaded()
    assert gdal.Open(str(there)).GetRasterBand(7).GetMetadata() == gdal.Open(str(here)).GetRasterBand(7).GetMetadata()
    assert "Dask cluster" in result["device"] and any("9 tiles on Dask cluster" in line for line in logs), logs


def test_inf_on_the_cluster_equals_in_process(cluster, hs_pair, tmp_path):
    """inf_fusion: the network (here INF's regression starting point with the bundled trunk, no adaptation)
    travels to the workers once; the adaptation, when there is one, runs here before the tiles."""
    from panadapter_qgis.backend.hyperspectral import inf_fusion

    address, _ = cluster
    here, there = tmp_path / "here.tif", tmp_path / "there.tif"
    common = dict(adapt_iterations=0, device="cpu", float32=True, tile_size=32)
    inf_fusion(*hs_pair, str(here), **common)
    steps = []
    result = inf_fusion(*hs_pair, str(there), scheduler=address, progress=steps.append, **common)
    a, b = pixels(here), pixels(there)
    assert a[1:] == b[1:]
    np.testing.assert_allclose(b[0], a[0], rtol=1e-5, atol=1e-3)
    assert np.array_equal(b[0], a[0]) or not single_threaded()
    assert "Dask cluster" in result["device"] and result["iterations"] == 0
    assert steps == sorted(steps) and steps[-1] == pytest.approx(1.0)


def test_inf_checks_the_cluster_before_adapting(hs_pair, tmp_path):
    """A bad SCHEDULER fails within seconds, before minutes of adaptation."""
    from panadapter_qgis.backend.hyperspectral import inf_fusion

    logs = []
    t0 = time.monotonic()
    with pytest.raises(PansharpenError, match="could not be reached"):
        inf_fusion(*hs_pair, str(tmp_path / "x.tif"), adapt_iterations=300, device="cpu",
                   scheduler="tcp://127.0.0.1:9", log=logs.append)
    assert time.monotonic() - t0 < 20
    assert not any("adapting" in line for line in logs) and not os.listdir(tmp_path)


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


def test_tiles_the_scheduler_forgets_are_submitted_again(cluster, crop, tmp_path):
    """The intermittent case of a killed worker, made to happen: the scheduler forgets the run's pending tiles
    (here another client cancels them by force); the run submits them again and writes the same pixels."""
    address, client = cluster
    here, there = tmp_path / "here.tif", tmp_path / "there.tif"
    pansharpen(*crop, str(here), "mtf_glp_fs", sensor=8, tile_size=32, device="cpu")
    dropped = []

    def ours(dask_scheduler):
        return [key for key in dask_scheduler.tasks if str(key).startswith("panadapter-")]

    def progress(fraction):
        if fraction > 0.6 and not dropped:
            dropped.extend(client.run_on_scheduler(ours))
            client.cancel([distributed.Future(key, client) for key in dropped], force=True)

    pansharpen(*crop, str(there), "mtf_glp_fs", sensor=8, tile_size=32, device="cpu", scheduler=address,
               progress=progress)
    assert dropped
    assert np.array_equal(pixels(here)[0], pixels(there)[0])


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
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    address, _ = cluster
    registry = QgsApplication.processingRegistry()
    for name in ("panadapter:mtf_glp_fs", "panadapter:panadapter", "panadapter:ssdiff", "panadapter:inf_fusion",
                 "panadapter:degrade", "panadapter:assess"):
        parameter = registry.algorithmById(name).parameterDefinition("SCHEDULER")
        assert parameter.flags() & QgsProcessingParameterDefinition.FlagAdvanced, name
    monkeypatch.setenv("PANADAPTER_SCHEDULER", address)
    algorithm = registry.createAlgorithmById("panadapter:mtf_glp_fs")
    assert algorithm.parameterDefinition("SCHEDULER").defaultValue() == address

    feedback = recording_feedback()
    here, there = str(tmp_path / "here.tif"), str(tmp_path / "there.tif")
    common = {"PAN": crop[0], "MS": crop[1], "SENSOR": 8, "DEVICE": 1, "TILE_SIZE": 64}
    processing.run("panadapter:mtf_glp_fs", {**common, "SCHEDULER": "", "OUTPUT": here})
    processing.run(algorithm, {**common, "OUTPUT": there}, feedback=feedback)   # the environment's default
    assert np.array_equal(pixels(here)[0], pixels(there)[0])
    assert any(line.startswith(f"Dask cluster {address}: 2 workers") for line in feedback.lines), feedback.lines


def test_degrade_and_inf_fusion_algorithms_send_their_tiles_to_scheduler(cluster, crop, hs_pair, tmp_path,
                                                                          panadapter_provider):
    """SCHEDULER reaches the backend of panadapter:degrade and panadapter:inf_fusion; empty, the run is the
    in-process one."""
    import processing

    address, _ = cluster
    runs = {}
    for where, value in (("here", ""), ("there", address)):
        runs[where] = [str(tmp_path / f"{where}_{n}.tif") for n in ("pan", "ms", "hs")]
        processing.run("panadapter:degrade", {"PAN": crop[0], "MS": crop[1], "SENSOR": 8, "OUTPUT_FLOAT32": False,
                                              "SCHEDULER": value, "OUTPUT_PAN": runs[where][0],
                                              "OUTPUT_MS": runs[where][1]})
        processing.run("panadapter:inf_fusion", {"HSI": hs_pair[0], "MSI": hs_pair[1], "METHOD": 3, "DEVICE": 1,
                                                 "OUTPUT_FLOAT32": True, "SCHEDULER": value,
                                                 "OUTPUT": runs[where][2]})
    for x, y in zip(runs["here"][:2], runs["there"][:2]):
        assert np.array_equal(pixels(x)[0], pixels(y)[0])
    np.testing.assert_allclose(pixels(runs["there"][2])[0], pixels(runs["here"][2])[0], rtol=1e-5, atol=1e-3)


def test_the_assess_algorithm_sends_its_strips_to_scheduler(cluster, assessed, panadapter_provider):
    import json

    import processing

    address, _ = cluster
    fused, reference, _ = assessed
    results = {}
    for where, value in (("here", ""), ("there", address)):
        feedback = recording_feedback()
        out = processing.run("panadapter:assess", {"FUSED": fused, "REFERENCE": reference, "SENSOR": 8,
                                                   "SCHEDULER": value, "OUTPUT_HTML": None},
                             feedback=feedback)
        rows = json.loads(out["RESULTS"])["rows"]
        results[where] = [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    assert results["here"] == results["there"] and len(results["here"]) == 2
    assert any("strips on Dask cluster" in line for line in feedback.lines), feedback.lines


def test_without_a_scheduler_dask_is_not_imported(crop, hs_pair, tmp_path):
    import subprocess
    import sys

    code = ("import sys; from panadapter_qgis.backend.pipeline import pansharpen; "
            "from panadapter_qgis.backend.wald import degrade; "
            "from panadapter_qgis.backend.hyperspectral import fuse_baseline; "
            f"pansharpen({crop[0]!r}, {crop[1]!r}, {str(tmp_path / 'x.tif')!r}, device='cpu'); "
            f"degrade({crop[0]!r}, {crop[1]!r}, {str(tmp_path / 'p.tif')!r}, {str(tmp_path / 'm.tif')!r}); "
            f"fuse_baseline({hs_pair[0]!r}, {hs_pair[1]!r}, {str(tmp_path / 'h.tif')!r}, device='cpu'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
