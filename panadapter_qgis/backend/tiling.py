"""Tiles of the processing grid with a halo, and the one loop that reads, processes and writes them.

Reading runs one tile ahead in a background thread and writing runs behind in another (GDAL and torch
release the GIL), so I/O overlaps with computation; at most ``prefetch`` tiles are in flight, which keeps
memory independent of the raster size.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional

from .errors import Cancelled


@dataclass(frozen=True)
class Tile:
    """A window of the MS-resolution processing grid: rows r0..r1-1, cols c0..c1-1 (halo not included)."""
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def rows(self):
        return self.r1 - self.r0

    @property
    def cols(self):
        return self.c1 - self.c0


def tile_grid(rows: int, cols: int, tile: int) -> List[Tile]:
    """Row-major tiles of at most ``tile`` x ``tile`` MS pixels covering a rows x cols grid."""
    tile = max(1, int(tile))
    return [Tile(r, min(r + tile, rows), c, min(c + tile, cols))
            for r in range(0, rows, tile) for c in range(0, cols, tile)]


def run_tiles(tiles: Iterable[Tile], read: Callable, process: Callable, write: Optional[Callable] = None,
              progress: Optional[Callable] = None, is_cancelled: Optional[Callable] = None,
              prefetch: int = 2, executor=None, task: Optional[Callable] = None):
    """For each tile: ``data = read(tile)`` (I/O thread), ``out = process(tile, data)`` (this thread),
    ``write(tile, out)`` (writer thread). Stops within one tile when ``is_cancelled()`` turns true.

    ``executor`` (a ``cluster.Cluster``): ``task`` (picklable; it reads and processes a tile itself, giving
    what ``process`` gives) runs on the cluster's workers instead of ``read`` and ``process`` here."""
    if executor is not None:
        return executor.run_tiles(tiles, task, write, progress, is_cancelled)
    tiles = list(tiles)
    n = len(tiles)
    with ThreadPoolExecutor(1, thread_name_prefix="pan-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="pan-write") as writer:
        pending = [reader.submit(read, t) for t in tiles[:prefetch]]
        writes = []
        try:
            for i, tile in enumerate(tiles):
                if is_cancelled is not None and is_cancelled():
                    raise Cancelled()
                data = pending.pop(0).result()
                if i + prefetch < n:
                    pending.append(reader.submit(read, tiles[i + prefetch]))
                out = process(tile, data)
                if write is not None:
                    writes.append(writer.submit(write, tile, out))
                    while len(writes) > prefetch:
                        writes.pop(0).result()
                if progress is not None:
                    progress((i + 1) / n)
            for w in writes:
                w.result()
        finally:
            for f in pending:
                f.cancel()
