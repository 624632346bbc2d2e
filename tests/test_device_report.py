"""What "Device and dependencies" says for each kind of PyTorch install, with a stand-in torch module (this
machine has one kind only): a CUDA GPU, a CUDA build without a usable GPU, a CPU-only build, no torch."""
import sys
import types

from panadapter_qgis.dependencies import device_report


def fake_torch(version, cuda_build, gpus=()):
    torch = types.ModuleType("torch")
    torch.__version__ = version
    torch.version = types.SimpleNamespace(cuda=cuda_build)
    torch.get_num_threads = lambda: 16
    torch.cuda = types.SimpleNamespace(
        is_available=lambda: bool(gpus),
        device_count=lambda: len(gpus),
        get_device_properties=lambda i: types.SimpleNamespace(name=gpus[i][0], total_memory=gpus[i][1]))
    return torch


def test_a_cuda_gpu_is_named_with_its_memory(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", fake_torch("2.5.1+cu124", "12.4", [("NVIDIA H100 80GB HBM3",
                                                                                     80 * 2**30)]))
    report = device_report()
    text = report.as_text()
    assert report.cuda_available and report.cpu_reason is None
    assert "PyTorch: 2.5.1+cu124" in text and "CUDA build: 12.4" in text
    assert "GPU 0: NVIDIA H100 80GB HBM3, 80.0 GiB" in text
    assert "Runs on: CUDA GPU 0: NVIDIA H100 80GB HBM3 (80.0 GiB)" in text


def test_a_cuda_build_without_a_usable_gpu_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", fake_torch("2.5.1+cu124", "12.4"))
    report = device_report()
    assert not report.cuda_available and report.device.startswith("CPU (16 threads)")
    assert "built for CUDA 12.4 but finds no usable NVIDIA GPU" in report.cpu_reason
    assert "driver" in report.cpu_reason


def test_a_cpu_only_build_says_how_to_get_the_cuda_build(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", fake_torch("2.13.0+cpu", None))
    report = device_report()
    assert "CPU-only build" in report.cpu_reason and "--index-url" in report.cpu_reason
    assert "CUDA build: no (CPU-only build)" in report.as_text()


def test_a_broken_driver_does_not_break_the_report(monkeypatch):
    torch = fake_torch("2.5.1+cu124", "12.4")

    def broken():
        raise RuntimeError("CUDA driver initialization failed")

    torch.cuda.is_available = broken
    monkeypatch.setitem(sys.modules, "torch", torch)
    report = device_report()
    assert not report.cuda_available and "CUDA driver initialization failed" in report.cpu_reason


def test_without_torch_the_report_carries_the_install_commands(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    report = device_report()
    assert report.torch_version is None
    text = report.as_text()
    assert "Runs on: nothing (PyTorch is missing)" in text
    for command in ("/usr/bin/python3 -m pip install --user torch", "OSGeo4W Shell",
                    "QGIS.app/Contents/MacOS/bin/python3"):
        assert command in text


def test_the_real_torch_of_this_machine():
    import torch

    report = device_report()
    assert report.torch_version == torch.__version__
    assert report.cuda_available == torch.cuda.is_available()


def test_the_system_openblas_is_named_where_torch_meets_it(monkeypatch):
    from panadapter_qgis.backend import device

    monkeypatch.setitem(sys.modules, "torch", fake_torch("2.13.0+cpu", None))
    monkeypatch.setattr(device, "_blas", ["/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"])
    monkeypatch.setattr(device, "_openblas", [object()])
    assert "System BLAS: QGIS's OpenBLAS" in device_report().as_text()
    monkeypatch.setattr(device, "_blas", [None])
    monkeypatch.setattr(device, "_openblas", [None])
    assert "System BLAS" not in device_report().as_text()


def test_a_slow_system_blas_is_named_with_the_remedy(monkeypatch):
    from panadapter_qgis.backend import device

    monkeypatch.setitem(sys.modules, "torch", fake_torch("2.13.0+cpu", None))
    monkeypatch.setattr(device, "_blas", ["/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0"])
    monkeypatch.setattr(device, "_openblas", [None])
    text = device_report().as_text()
    assert "System BLAS: /usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0" in text
    assert "update-alternatives --config libblas.so.3-x86_64-linux-gnu" in text
