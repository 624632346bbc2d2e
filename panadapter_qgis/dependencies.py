# SPDX-License-Identifier: GPL-2.0-or-later
"""Optional dependencies (PyTorch) and the one text that tells users how to install them.

Pure Python, no qgis import: the Processing algorithms and the GUI (dependency status) both use it.
Nothing here imports torch at module import; ``require_torch`` does, when an algorithm runs, and
``device_report`` does, when the "Device and dependencies" section is shown.
"""
import importlib.util
import platform
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

TORCH_INSTALL_HELP = """\
PanAdapter needs PyTorch, installed into the Python that QGIS runs (Python {python}).
Install it with one of these commands, then restart QGIS:

Linux (QGIS from your distribution's packages, e.g. Debian or Ubuntu), in a terminal:
    /usr/bin/python3 -m pip install --user torch --index-url https://download.pytorch.org/whl/cpu
  This is the CPU-only build (about 200 MB). For an NVIDIA GPU, leave out "--index-url ..." to get the
  CUDA build (several GB). On Debian 12, Ubuntu 23.04 and later add --break-system-packages, and if
  "No module named pip" appears, first run: sudo apt install python3-pip

Windows (OSGeo4W or the standalone QGIS installer): open "OSGeo4W Shell" from the QGIS folder of the
Start menu and run:
    python -m pip install torch --index-url https://download.pytorch.org/whl/cpu
  For an NVIDIA GPU use --index-url https://download.pytorch.org/whl/cu126 instead (PyPI's Windows
  wheels are CPU-only).

macOS (QGIS.app), in Terminal:
    /Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install --user torch
  (use your application's name, e.g. QGIS-LTR.app).

To check, type "import torch; print(torch.__version__)" in the QGIS Python Console
(Plugins > Python Console)."""


class MissingDependencyError(ImportError):
    """A required optional package is missing; the message says how to install it."""


def python_version() -> str:
    return platform.python_version()


def torch_install_help() -> str:
    """The installation instructions, with the Python version of this interpreter filled in."""
    return TORCH_INSTALL_HELP.format(python=python_version())


def torch_missing_message(error: Optional[BaseException] = None) -> str:
    """What an algorithm reports when ``import torch`` failed (``error`` is the original exception)."""
    reason = f"PyTorch could not be imported ({type(error).__name__}: {error}).\n" if error else ""
    return reason + torch_install_help()


def torch_installed() -> bool:
    """Whether a ``torch`` package is on the path, without importing it (cheap, for status displays)."""
    module = sys.modules.get("torch", False)
    if module is None:  # explicitly blocked (tests do this to simulate a missing torch)
        return False
    if module is not False:
        return True
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def require_torch():
    """Import and return torch, or raise ``MissingDependencyError`` with the installation instructions.

    A broken install raises other errors than ImportError (OSError for a missing CUDA or C++ runtime
    DLL on Windows), so every exception is reported with the same instructions.
    """
    try:
        import torch
    except Exception as error:  # noqa: BLE001 (see docstring)
        raise MissingDependencyError(torch_missing_message(error)) from error
    return torch


# ----------------------------------------------------------------------------------------------------------
# What the "Device and dependencies" section shows

@dataclass
class DeviceReport:
    """PyTorch and the compute device as the plugin sees them (``device_report``)."""
    python: str
    torch_version: Optional[str] = None        # None: torch could not be imported
    torch_error: Optional[str] = None          # why not
    cuda_build: Optional[str] = None           # CUDA version torch was built for; None: CPU-only build
    cuda_available: bool = False
    gpus: List[Tuple[str, int]] = field(default_factory=list)  # (name, total memory in bytes)
    cpu_threads: Optional[int] = None
    cpu_reason: Optional[str] = None           # why the CPU is used, when it is
    system_blas: Optional[str] = None          # the system BLAS torch's products reach (QGIS on Linux), said

    @property
    def device(self) -> str:
        """What DEVICE = automatic runs on."""
        if self.torch_version is None:
            return "nothing (PyTorch is missing)"
        if self.cuda_available and self.gpus:
            name, memory = self.gpus[0]
            return f"CUDA GPU 0: {name} ({memory / 2**30:.1f} GiB)"
        return f"CPU ({self.cpu_threads} threads)" if self.cpu_threads else "CPU"

    def lines(self) -> List[Tuple[str, str]]:
        """(label, value) rows, in the order the dialog shows them."""
        rows = [("Python", self.python)]
        if self.torch_version is None:
            rows.append(("PyTorch", f"not available ({self.torch_error})" if self.torch_error else "not installed"))
        else:
            rows.append(("PyTorch", self.torch_version))
            rows.append(("CUDA build", self.cuda_build or "no (CPU-only build)"))
            rows.append(("CUDA available", "yes" if self.cuda_available else "no"))
            for index, (name, memory) in enumerate(self.gpus):
                rows.append((f"GPU {index}", f"{name}, {memory / 2**30:.1f} GiB"))
        rows.append(("Runs on", self.device))
        if self.cpu_reason:
            rows.append(("Why not a GPU", self.cpu_reason))
        if self.system_blas:
            rows.append(("System BLAS", self.system_blas))
        return rows

    def as_text(self) -> str:
        text = "\n".join(f"{label}: {value}" for label, value in self.lines())
        if self.torch_version is None:
            text += "\n\n" + torch_install_help()
        return text


def device_report() -> DeviceReport:
    """Import torch (seconds the first time) and describe it and the devices it sees; never raises."""
    report = DeviceReport(python=f"{python_version()} ({sys.prefix})")
    try:
        torch = require_torch()
    except MissingDependencyError as error:
        cause = error.__cause__
        report.torch_error = f"{type(cause).__name__}: {cause}" if cause else None
        report.cpu_reason = "PyTorch is not installed in the Python that QGIS runs (see below)."
        return report
    report.torch_version = str(torch.__version__)
    report.cuda_build = getattr(torch.version, "cuda", None)
    try:
        from .backend.device import global_openblas, slow_blas
        slow = slow_blas()
        if slow:
            report.system_blas = (
                f"{slow}, which torch's matrix products use here instead of its own BLAS: the deep models "
                "can run several times slower. Choose OpenBLAS (Debian, Ubuntu: sudo update-alternatives --config "
                "libblas.so.3-x86_64-linux-gnu), then restart QGIS.")
        elif global_openblas() is not None:
            report.system_blas = ("QGIS's OpenBLAS, which torch's matrix products use here: kept to one thread "
                                  "while PanAdapter computes.")
    except Exception:  # noqa: BLE001 (the dialog must open whatever the backend's state)
        pass
    try:
        report.cpu_threads = torch.get_num_threads()
        report.cuda_available = bool(torch.cuda.is_available())
        if report.cuda_available:
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                report.gpus.append((props.name, int(props.total_memory)))
    except Exception as error:  # noqa: BLE001 (a broken driver must not break the dialog)
        report.cuda_available = False
        report.cpu_reason = f"PyTorch could not query CUDA ({type(error).__name__}: {error})."
        return report
    if not report.cuda_available:
        if not report.cuda_build:
            report.cpu_reason = (
                f"This PyTorch ({report.torch_version}) is a CPU-only build. To use an NVIDIA GPU, install "
                "the CUDA build (Linux: the install command without \"--index-url ...\"; Windows: with "
                "--index-url https://download.pytorch.org/whl/cu126), then restart QGIS.")
        else:
            report.cpu_reason = (
                f"This PyTorch was built for CUDA {report.cuda_build} but finds no usable NVIDIA GPU: there is "
                "none, or the NVIDIA driver is missing or too old for that CUDA version.")
    return report
