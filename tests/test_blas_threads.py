"""The system OpenBLAS that torch's matrix products reach inside QGIS: single-threaded while torch computes.

QGIS and qgis_process on Debian are linked with libblas.so.3 (OpenBLAS once QGIS's packages are installed), so
its symbols are global and torch's ``sgemm_`` calls go to it; called from inside torch's parallel loops, its
spinning threads fought torch's for the cores (a 0.6 MP PanAdapter inference: 174 s in qgis_process, 11 s in
Python). ``backend.device.torch_owns_the_cores`` keeps it to one thread during inference and training only.
"""
import ctypes.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO_ROOT, fusebox_crop

from panadapter_qgis.backend import device
from panadapter_qgis.backend.deep import DeepJob
from panadapter_qgis.backend.training.trainer import train


class FakeOpenBLAS:
    """Stands for the global OpenBLAS: its thread count, and every count set."""

    def __init__(self, threads):
        self.threads, self.history = threads, []

    def openblas_get_num_threads(self):
        return self.threads

    def openblas_set_num_threads(self, n):
        self.threads = n
        self.history.append(n)


@pytest.fixture
def fake_openblas(monkeypatch):
    lib = FakeOpenBLAS(4)
    monkeypatch.setattr(device, "_openblas", [lib])
    return lib


class _Recorder(torch.nn.Module):
    """Returns the LMS and records the OpenBLAS thread count at each forward."""

    bands = 3

    def __init__(self, lib):
        super().__init__()
        self.lib, self.seen = lib, []
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ms, lms, pan, ratio):
        self.seen.append(self.lib.openblas_get_num_threads())
        return lms + self.w


def test_inference_runs_with_openblas_single_threaded_and_restores_it(fake_openblas, data_dir, tmp_path):
    pan, ms = fusebox_crop(data_dir, tmp_path, "scene_09", pan_size=128, bands=(1, 2, 3))
    model = _Recorder(fake_openblas)
    messages = []
    DeepJob(pan, ms, model, sensor=8, device="cpu", log=messages.append).write(str(tmp_path / "f.tif"),
                                                                              tile_size=64, batch=2)
    assert model.seen and set(model.seen) == {1}
    assert fake_openblas.threads == 4            # given back to numpy and the rest of QGIS afterwards
    assert any("the system OpenBLAS runs single-threaded meanwhile" in m for m in messages)


def test_training_runs_with_openblas_single_threaded_and_restores_it(fake_openblas):
    model = _Recorder(fake_openblas)
    x = torch.rand(1, 3, 8, 8)

    def step(net, b):
        return (net(b["x"], b["x"], b["x"], 1) - 1).abs().mean()

    result = train(model, lambda rng: {"x": x}, step, list(model.parameters()), iterations=5, lr=0.1)
    assert result.iterations == 5 and model.seen == [1] * 5
    assert fake_openblas.threads == 4


def test_a_classical_method_runs_under_the_same_guard(fake_openblas, istanbul, tmp_path):
    from panadapter_qgis.backend.pipeline import pansharpen

    pan, ms = istanbul
    messages = []
    pansharpen(str(pan), str(ms), str(tmp_path / "f.tif"), "mtf_glp_fs", sensor=8, log=messages.append)
    assert (tmp_path / "f.tif").exists()
    assert 1 in fake_openblas.history and fake_openblas.threads == 4
    assert any("the system OpenBLAS runs single-threaded meanwhile" in m for m in messages)


def test_nested_and_failing_runs_restore_the_count_once(fake_openblas):
    with device.torch_owns_the_cores():
        with device.torch_owns_the_cores():
            assert fake_openblas.threads == 1
        assert fake_openblas.threads == 1            # the outer run still computes
    assert fake_openblas.threads == 4
    with pytest.raises(RuntimeError):
        with device.torch_owns_the_cores():
            raise RuntimeError("a failed run")
    assert fake_openblas.threads == 4 and fake_openblas.history == [1, 4, 1, 4]


def test_without_a_global_openblas_nothing_is_touched(monkeypatch):
    monkeypatch.setattr(device, "_openblas", [None])
    monkeypatch.setattr(device, "_blas", [None])
    with device.torch_owns_the_cores():
        pass
    assert "OpenBLAS" not in device.describe(torch.device("cpu"))


def test_another_global_blas_is_named_in_the_run_log(monkeypatch):
    monkeypatch.setattr(device, "_openblas", [None])
    monkeypatch.setattr(device, "_blas", ["/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0"])
    said = device.describe(torch.device("cpu"))
    assert "system BLAS /usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0" in said and "slower" in said
    monkeypatch.setattr(device, "_blas", ["/opt/intel/oneapi/mkl/lib/libmkl_rt.so.2"])
    assert device.slow_blas() is None


OPENBLAS = ctypes.util.find_library("openblas")
REFERENCE_BLAS = "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3"   # Debian's libblas3

PROBE = textwrap.dedent("""
    import ctypes, json, sys
    sys.path.insert(0, {repo!r})
    if {load_global}:   # as QGIS's executables do: the system BLAS in the global scope before torch
        lib = ctypes.CDLL({name!r}, mode=ctypes.RTLD_GLOBAL)
        if hasattr(lib, "openblas_set_num_threads"):
            lib.openblas_set_num_threads(2)
    import numpy, torch
    numpy.ones((64, 64)) @ numpy.ones((64, 64))   # numpy's own BLAS, loaded by Python
    from panadapter_qgis.backend import device
    found = device.global_openblas()
    out = dict(found=found is not None, slow=device.slow_blas())
    if found is not None:
        with device.torch_owns_the_cores():
            out["inside"] = found.openblas_get_num_threads()
            torch.rand(256, 256) @ torch.rand(256, 256)
        out["after"] = found.openblas_get_num_threads()
    print(json.dumps(out))
""")


def _probe(load_global, name=OPENBLAS):
    code = PROBE.format(repo=str(REPO_ROOT), load_global=load_global, name=name)
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(OPENBLAS is None, reason="no OpenBLAS on this machine")
def test_a_global_openblas_is_found_and_set_to_one_thread_then_back():
    assert _probe(True) == {"found": True, "slow": None, "inside": 1, "after": 2}


@pytest.mark.skipif(not os.path.exists(REFERENCE_BLAS), reason="Debian's reference BLAS is not installed")
def test_the_reference_blas_in_the_global_scope_is_named_as_slow():
    probed = _probe(True, REFERENCE_BLAS)
    assert probed["found"] is False and "/blas/libblas.so.3" in probed["slow"]


def test_a_plain_python_process_leaves_numpys_blas_alone():
    assert _probe(False) == {"found": False, "slow": None}
