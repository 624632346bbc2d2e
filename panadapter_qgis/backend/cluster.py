"""Tiles computed by the workers of an existing Dask distributed cluster (``SCHEDULER``), written here.

Dask is optional and imported only when a scheduler address is given. Before any tile, the workers are
checked (the same backend version, torch importable, of this machine's major.minor for the deep models, the
inputs readable: every worker reads its own windows from paths all of them see). The job's whole-image
statistics (a classical method's coefficients, a deep model's scale and base coefficients) and the model's
weights travel once per worker (``scatter(broadcast=True)``); each worker thread rebuilds the job from them
once and keeps it (``_jobs``). Results come back in tile order to the one writer, with at most ``in_flight``
tiles computed or waiting, so that memory stays bounded and the GeoTIFF is the one an in-process run writes.
"""
import concurrent.futures
import collections
import configparser
import os
import secrets
import threading
from contextlib import contextmanager

from .errors import Cancelled, PansharpenError

CONNECT_TIMEOUT = 10    # seconds to reach the scheduler (and for it to have a worker) before giving up
PROBE_TIMEOUT = 60    # seconds for the workers to answer the start-of-run check
INSTALL = 'pip install "dask[distributed]"'
GUIDE = "docs/USER_GUIDE.md, 'Running on a cluster'"
LOST_RETRIES = 3        # times the tiles not yet written are submitted again after the scheduler forgot them
_JOBS_KEPT = 8          # worker-side jobs kept per worker process (a few runs' worth of threads)


def backend_version() -> str:
    """The plugin version of this backend (``metadata.txt`` beside it)."""
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "metadata.txt"),
                  encoding="utf-8")
    return metadata.get("general", "version", fallback="unknown")


def worker_report(paths=()):
    """What the client checks on every worker: backend version, torch version (or the import error) and
    the inputs it cannot open ({path: reason})."""
    from . import raster

    report = dict(version=backend_version(), torch=None, torch_error=None, unreadable={})
    try:
        import torch
        report["torch"] = torch.__version__
    except Exception as exc:  # noqa: BLE001 - a broken install raises more than ImportError
        report["torch_error"] = f"{type(exc).__name__}: {exc}"
    for path in paths:
        try:
            raster.open_raster(path, "input")
        except PansharpenError as exc:
            report["unreadable"][path] = str(exc)
    return report


def _major_minor(version):
    return ".".join(str(version).split("+")[0].split(".")[:2])


@contextmanager
def connect(address, log=None, paths=(), deep=False):
    """The ``Cluster`` at the scheduler ``address``, checked and closed on exit; None (this machine) when
    ``address`` is empty, without importing dask."""
    address = (address or "").strip()
    if not address:
        yield None
        return
    cluster = Cluster(address, log, paths, deep)
    try:
        yield cluster
    finally:
        cluster.close()


class Cluster:
    """A Dask client on ``address`` whose workers were checked for this run (``connect``)."""

    def __init__(self, address, log=None, paths=(), deep=False):
        try:
            import distributed
        except ImportError:
            raise PansharpenError(f"SCHEDULER is set ({address}) but Dask distributed is not installed in this "
                                  f"Python: {INSTALL} (or leave SCHEDULER empty to run on this machine).") from None
        self.address = address
        try:
            self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise PansharpenError(f"The Dask scheduler '{address}' could not be reached within {CONNECT_TIMEOUT} s "
                                  f"({type(exc).__name__}: {exc}). Check the address (tcp://host:8786) and that "
                                  "'dask scheduler' runs there and is reachable from this machine.") from None
        try:
            self._check(paths, deep, log or (lambda msg: None))
        except BaseException:
            self.close()
            raise

    def _check(self, paths, deep, log):
        try:
            self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except TimeoutError:
            raise PansharpenError(f"The Dask scheduler '{self.address}' has no worker: start some with "
                                  f"'dask worker {self.address}' ({GUIDE}).") from None

        def probe(paths):   # nested, so that it travels by value: the worker may lack the backend
            import importlib
            try:
                cluster = importlib.import_module("panadapter_qgis.backend.cluster")
            except Exception as exc:  # noqa: BLE001
                return dict(error=f"{type(exc).__name__}: {exc}")
            return cluster.worker_report(paths)

        # Client.run has no timeout of its own: a worker that is restarting can keep it waiting
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            asked = pool.submit(self.client.run, probe, list(paths))
            try:
                reports = asked.result(timeout=PROBE_TIMEOUT)
            except concurrent.futures.TimeoutError:
                raise PansharpenError(f"The Dask workers of '{self.address}' did not answer the start-of-run check "
                                      f"within {PROBE_TIMEOUT} s (a worker restarting or overloaded?); run "
                                      "again.") from None
        version = backend_version()
        local_torch = None
        if deep:
            import torch
            local_torch = _major_minor(torch.__version__)
        for worker, report in sorted(reports.items()):
            if "error" in report:
                raise PansharpenError(f"The Dask worker {worker} cannot import the PanAdapter backend "
                                      f"({report['error']}): start it with PYTHONPATH set to the folder that "
                                      f"holds panadapter_qgis ({GUIDE}).")
            if report["version"] != version:
                raise PansharpenError(f"The Dask worker {worker} has PanAdapter {report['version']}, this machine "
                                      f"{version}: give the workers the same plugin version.")
            if report["torch"] is None:
                raise PansharpenError(f"The Dask worker {worker} cannot import PyTorch ({report['torch_error']}): "
                                      "install torch on the workers.")
            if local_torch and _major_minor(report["torch"]) != local_torch:
                raise PansharpenError(f"The Dask worker {worker} has torch {report['torch']}, this machine "
                                      f"{local_torch}: the deep models need the same torch major.minor "
                                      "version on every worker.")
            for path, reason in report["unreadable"].items():
                raise PansharpenError(f"The Dask worker {worker} cannot open the input '{path}' ({reason}). "
                                      "The workers read the inputs themselves: put them on a path every worker "
                                      "sees (a shared file system, or /vsis3/, /vsicurl/...).")
        try:
            workers = self.client.scheduler_info(n_workers=-1)["workers"]   # some versions list 5 by default
        except TypeError:
            workers = self.client.scheduler_info()["workers"]
        self.threads = sum(w.get("nthreads", 1) for w in workers.values())
        memory = sum(w.get("memory_limit") or 0 for w in workers.values()) / 2**30
        self.in_flight = max(2, 2 * self.threads)
        self.label = f"Dask cluster {self.address} ({len(workers)} workers, {self.threads} threads)"
        log(f"Dask cluster {self.address}: {len(workers)} workers, {self.threads} threads, {memory:.1f} GiB "
            f"memory; every worker has PanAdapter {version}"
            + (f" and torch {local_torch}." if local_torch else " and torch."))

    def close(self):
        self.client.close()

    def run_tiles(self, items, task, write=None, progress=None, is_cancelled=None):
        """``write(item, task(item))`` for each item in order, ``task`` computed by the workers (at most
        ``in_flight`` at a time); stops within one poll when ``is_cancelled()`` turns true, cancelling the
        cluster's tasks. A worker that dies has its tasks recomputed by the others (Dask); where the scheduler
        forgets them instead (the dead worker held the task's scattered copy), the task is scattered again and
        the tiles not yet written are submitted again under new keys (``LOST_RETRIES`` times at most): a tile's
        result does not depend on where it ran, so the output is the same."""
        from distributed.comm import CommClosedError

        items = list(items)
        n = len(items)
        task.token = secrets.token_hex(8)
        shared, pending, submitted, lost = None, collections.deque(), 0, 0
        try:
            shared = self.client.scatter(task, broadcast=True, hash=False)
            i = 0
            while i < n:
                while submitted < n and len(pending) < self.in_flight:
                    pending.append(self.client.submit(_run, shared, items[submitted],
                                                      key=f"panadapter-{task.token}-{lost}-{submitted}"))
                    submitted += 1
                try:
                    out = self._result(pending[0], i, n, is_cancelled)
                except concurrent.futures.CancelledError as exc:   # distributed's FutureCancelledError
                    lost += 1
                    if lost > LOST_RETRIES:
                        raise PansharpenError(f"The Dask cluster {self.address} dropped tile {i + 1} of {n} "
                                              f"{lost} times ({exc}); workers dying? Run again.") from None
                    self.client.cancel(list(pending), force=True)
                    pending.clear()
                    shared.release()
                    shared = None
                    shared = self.client.scatter(task, broadcast=True, hash=False)
                    submitted = i
                    continue
                pending.popleft().release()
                if write is not None:
                    write(items[i], out)
                i += 1
                if progress is not None:
                    progress(i / n)
        except CommClosedError as exc:
            raise PansharpenError(f"The connection to the Dask cluster {self.address} was lost ({exc}).") from None
        finally:
            if pending:
                self.client.cancel(list(pending), force=True)
            if shared is not None:
                shared.release()

    @staticmethod
    def _result(future, i, n, is_cancelled):
        """The result of ``future`` (tile ``i`` of ``n``), polling ``is_cancelled`` while it computes."""
        import distributed

        try:
            while not future.done():
                if is_cancelled is not None and is_cancelled():
                    raise Cancelled()
                try:
                    return future.result(timeout=0.2)
                except TimeoutError:
                    continue
            return future.result()
        except distributed.KilledWorker as exc:
            raise PansharpenError(f"Tile {i + 1} of {n} ended the Dask workers that ran it, one after the "
                                  f"other ({exc}); out of memory? Lower TILE_SIZE.") from None


_jobs = collections.OrderedDict()   # (task token, worker thread) -> that thread's job (its own GDAL handles)
_jobs_lock = threading.Lock()


def _run(task, item):
    """On a worker: ``task(job, item)`` with this thread's job of the task (built once)."""
    key = (task.token, threading.get_ident())
    try:
        with _jobs_lock:
            job = _jobs.get(key)
        if job is None:
            job = task.setup()
            with _jobs_lock:
                _jobs[key] = job
                while len(_jobs) > _JOBS_KEPT:
                    _jobs.popitem(last=False)
        return task(job, item)
    except PansharpenError as exc:
        from distributed import get_worker
        raise PansharpenError(f"On the Dask worker {get_worker().address}: {exc}") from None


class OutputType:
    """The writer's conversion to the output type (``GeoTiffWriter.to_output``) without its file: workers
    convert their tiles, so that output-typed pixels, not float32, cross the network."""

    def __init__(self, writer):
        self.np_type, self.vmin, self.vmax, self.nodata = writer.np_type, writer.vmin, writer.vmax, writer.nodata

    def to_output(self, fused, valid):
        from .raster import GeoTiffWriter
        return GeoTiffWriter.to_output(self, fused, valid)



class FusionTiles:
    """A classical job's tiles on the workers: its arguments and the coefficients fitted here once on the
    whole image (``FusionJob.fit``); each tile comes back in the output type."""

    def __init__(self, job, writer):
        self.args, self.params, self.output = job.args, job.params, OutputType(writer)

    def setup(self):
        from .pipeline import FusionJob

        job = FusionJob(**self.args)
        job.params = self.params
        return job

    def __call__(self, job, tile):
        from .device import import_torch, torch_owns_the_cores
        from .pipeline import _guard

        with import_torch().inference_mode(), _guard(job.method), torch_owns_the_cores():
            return self.output.to_output(*job.fuse_tile(tile, job.source.read(tile)))


class DeepTiles:
    """A deep job's groups of tiles on the workers: the model (its weights travel once per worker, on the
    CPU; each worker moves them to its own device), the job's arguments with its whole-image scale and base
    coefficients; a group comes back as ``DeepJob.fuse_group`` gives it."""

    def __init__(self, job, writer, blended):
        import copy

        # ``to``, not ``cpu``: the fixed stand-ins of the HSI baselines have only ``to`` (models.FixedModel)
        self.model = job.model if job.device.type == "cpu" else copy.deepcopy(job.model).to("cpu")
        self.args = job.args
        self.output = None if blended else OutputType(writer)

    def setup(self):
        from .deep import DeepJob

        return DeepJob(model=self.model, **self.args)

    def __call__(self, job, item):
        tiles = item if self.output is not None else item[0]   # blended: (group, first row of the next)
        datas = [job.source.read(t) for t in tiles]
        return job.fuse_group(tiles, datas, None if self.output is None else self.output.to_output)
