# SPDX-License-Identifier: GPL-2.0-or-later
"""Optional dependencies (PyTorch) and the one text that tells users how to install them.

Pure Python, no qgis import: the Processing algorithms and the GUI (dependency status) both use it.
Nothing here imports torch at module import; ``require_torch`` does, when an algorithm runs.
"""
import importlib.util
import platform
import sys
from typing import Optional

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
  (leave out "--index-url ..." for the CUDA build).

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
