"""Device choice (CUDA when present, else CPU), autocast for the deep models, CUDA out-of-memory back-off, and
the system OpenBLAS that torch's matrix products reach inside QGIS (``torch_owns_the_cores``)."""
import contextlib
import ctypes
import os
import sys
import threading
from typing import Optional

from .errors import PansharpenError

TORCH_MISSING = ("PyTorch is not installed in the Python that QGIS uses. Install it into that Python "
                 "(for example `python3 -m pip install torch` on Linux, the OSGeo4W Shell on Windows, or "
                 "QGIS's bundled Python on macOS) and restart QGIS; the plugin's 'Device and dependencies' "
                 "help gives the exact commands.")


_preload = []


def _passive_openmp():
    """OpenMP threads that sleep when they wait (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose otherwise:
    libgomp's threads spin in their barriers by default, which on a machine whose cores are shared (QGIS
    rendering, a second algorithm, a test run) takes the cores from the very threads they wait for. Measured
    on the 2-core CPU under a load of 3.5 (docs/BENCHMARKS.md): a PanAdapter window 8.6-10.1 s by default,
    7.8-8.9 s passive (ACTIVE: 9.9-19.1 s). It must be set before torch loads libgomp."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def preload_torch():
    """Start importing torch in a background thread and return at once (a no-op once torch is imported or
    the import has started). A run calls it first and opens its rasters with GDAL meanwhile: torch's first
    import (about 2 s on a 2-core CPU) overlaps that I/O instead of preceding it. :func:`import_torch` waits
    for it (Python's import lock) and reports a missing torch as usual."""
    if "torch" in sys.modules or _preload:
        return
    _passive_openmp()

    def run():
        try:
            import torch  # noqa: F401
        except Exception:  # noqa: BLE001 - import_torch() repeats the import and reports the error
            pass

    thread = threading.Thread(target=run, name="torch-import", daemon=True)
    _preload.append(thread)
    thread.start()


def wait_for_preload():
    """Wait until a :func:`preload_torch` import has ended (at once when there is none). A run that fails
    before it needs torch calls it before returning: a process that exits while a thread is inside torch's
    import can crash on the way out (an abort or a segmentation fault instead of the error message's exit
    status)."""
    for thread in list(_preload):
        thread.join()


def import_torch():
    """torch, or a PansharpenError that says how to install it. Any failure counts, not only ImportError: a
    broken install raises others (OSError for a missing runtime library on Windows)."""
    _passive_openmp()
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 (see docstring)
        raise PansharpenError(f"PyTorch could not be imported ({type(exc).__name__}: {exc}). "
                              + TORCH_MISSING) from exc
    return torch


def select_device(name="auto"):
    """'auto' | 'cpu' | 'cuda' (or an index 0/1/2 as in the DEVICE enum) -> torch.device."""
    torch = import_torch()
    if isinstance(name, int):
        name = ("auto", "cpu", "cuda")[name]
    name = (name or "auto").lower()
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PansharpenError("CUDA was requested but PyTorch sees no CUDA GPU here (torch "
                                  f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Choose "
                                  "the CPU or 'auto'.")
        return torch.device(name)
    if name != "auto":
        raise PansharpenError(f"Unknown device '{name}': use auto, cpu or cuda.")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def channels_last(device) -> bool:
    """Whether models run channels-last on ``device``: on the CPU, where oneDNN's 3 x 3 convolutions at 16-32
    channels (the encoders' ResBlocks) run 2-2.5x faster in that layout, forward and backward (the same sums
    in another order; docs/BENCHMARKS.md); ``PANADAPTER_CHANNELS_LAST=0`` turns it off."""
    return (import_torch().device(device or "cpu").type == "cpu"
            and os.environ.get("PANADAPTER_CHANNELS_LAST", "1") != "0")


def cpu_lanes(device, tiles: Optional[int] = None) -> int:
    """How many tiles of a batch run side by side, each in its own thread with its share of torch's threads
    (one on 2 cores), on ``device``: on a CPU, torch's thread count (at most ``tiles``, unless None;
    ``PANADAPTER_LANES`` caps it), else 1. The deep models are long chains of small operations; in one thread
    each, the cores never wait for each other at the end of an operation (PanAdapter on 2 cores:
    docs/BENCHMARKS.md)."""
    torch = import_torch()
    if torch.device(device or "cpu").type != "cpu" or (tiles is not None and tiles < 2):
        return 1
    lanes = torch.get_num_threads()
    cap = os.environ.get("PANADAPTER_LANES", "")
    if cap.strip().isdigit() and int(cap) > 0:
        lanes = min(lanes, int(cap))
    return max(1, lanes if tiles is None else min(lanes, tiles))


def map_lanes(pool, fn, count: int, lanes: int, threads: int):
    """``[fn(start, stop) for each of lanes contiguous shares of range(count)]``, each share in a thread of
    ``pool`` that runs torch on its share of ``threads`` (``cpu_lanes``); the caller restores its own thread
    count afterwards (``torch.set_num_threads(threads)``: the default that threads started later take)."""
    torch = import_torch()
    per_lane = max(1, threads // lanes)
    shares = [(count * i // lanes, count * (i + 1) // lanes) for i in range(lanes)]

    def lane(share):
        torch.set_num_threads(per_lane)   # this worker thread's own OpenMP setting
        return fn(*share)
    return list(pool.map(lane, shares))


def describe(device) -> str:
    torch = import_torch()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"CUDA {props.name} ({props.total_memory / 2**30:.1f} GiB)"
    slow = slow_blas()
    if slow:
        shared = (f"; torch's matrix products go to the system BLAS {slow}, which can make this several "
                  "times slower: choose OpenBLAS for libblas.so.3, see the README")
    elif global_openblas() is not None:
        shared = "; the system OpenBLAS runs single-threaded meanwhile"
    else:
        shared = ""
    return f"CPU ({torch.get_num_threads()} threads{shared})"


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p), ("dli_sname", ctypes.c_char_p),
                ("dli_saddr", ctypes.c_void_p)]


def _global_scope():
    """The process's global symbol scope as a ``ctypes`` library (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


_blas = []    # [resolved path of the library whose sgemm_ is global, or None], looked up once per process


def global_blas():
    """The file of the BLAS whose ``sgemm_`` is in the process's global symbol scope (symbolic links
    resolved), which torch's matrix products then use instead of its own (see ``global_openblas``), or None:
    a plain Python process, Windows, macOS."""
    if not _blas:
        lib, info, found = _global_scope(), _DlInfo(), None
        if (lib is not None and hasattr(lib, "sgemm_") and hasattr(lib, "dladdr")
                and lib.dladdr(ctypes.cast(lib.sgemm_, ctypes.c_void_p), ctypes.byref(info)) and info.dli_fname):
            found = os.path.realpath(os.fsdecode(info.dli_fname))
        _blas.append(found)
    return _blas[0]


def slow_blas():
    """``global_blas`` when it is neither OpenBLAS nor MKL (e.g. the reference BLAS, ``libblas3`` on Debian:
    PanAdapter's inference of a 0.6 MP scene took 81 s in qgis_process against 12 s with OpenBLAS), else
    None. Nothing in the process can change which library torch's products bind to; the user can, by
    selecting OpenBLAS for ``libblas.so.3`` (``update-alternatives``)."""
    path = global_blas()
    if path is None:
        return None
    name = path.lower()
    return None if "openblas" in name or "mkl" in name else path


_openblas = []                       # [library or None], looked up once per process
_openblas_lock = threading.Lock()
_openblas_users = [0, None]          # runs inside torch_owns_the_cores, the thread count to restore


def global_openblas():
    """The OpenBLAS in the process's global symbol scope (a ``ctypes`` library), or None.

    On Linux, a program linked with a system BLAS puts that library's symbols in the global scope, and
    torch's own calls to ``sgemm_`` then resolve to it instead of its bundled BLAS: QGIS and qgis_process
    on Debian are linked with ``libblas.so.3``, which is OpenBLAS once QGIS's packages have installed it.
    torch calls it from inside its parallel loops (attention, for one), where OpenBLAS's threads, which
    spin while they wait, fight torch's for the cores. A plain Python process keeps numpy's BLAS out of
    that scope: there, and on Windows and macOS, None."""
    if not _openblas:
        lib = _global_scope()
        if lib is not None and all(hasattr(lib, name) for name in ("openblas_set_num_threads",
                                                                   "openblas_get_num_threads", "sgemm_")):
            lib.openblas_get_num_threads.restype = ctypes.c_int
            lib.openblas_set_num_threads.argtypes = [ctypes.c_int]
        else:
            lib = None
        _openblas.append(lib)
    return _openblas[0]


@contextlib.contextmanager
def torch_owns_the_cores():
    """While torch computes: the global OpenBLAS (``global_openblas``) single-threaded, so that torch's
    threads have the cores (on a 2-core CPU inside qgis_process, PanAdapter's inference of a 0.6 MP scene
    took 174 s without this and 11.5 s with it, as in a plain Python process; SSDiff's 211 s and 10 s).
    Nested and concurrent runs share one setting; the last to leave restores OpenBLAS's thread count, so
    numpy's linear algebra elsewhere in QGIS keeps its threads. A no-op where there is no such library."""
    lib = global_openblas()
    if lib is None:
        yield
        return
    with _openblas_lock:
        if _openblas_users[0] == 0:
            _openblas_users[1] = lib.openblas_get_num_threads()
            lib.openblas_set_num_threads(1)
        _openblas_users[0] += 1
    try:
        yield
    finally:
        with _openblas_lock:
            _openblas_users[0] -= 1
            if _openblas_users[0] == 0:
                lib.openblas_set_num_threads(_openblas_users[1])


def is_cuda_oom(exc: BaseException) -> bool:
    torch = import_torch()
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "CUDA out of memory" in str(exc)
