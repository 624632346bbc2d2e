"""Deep-model inference on a whole scene: the same pair checks, tile loop and writer as the classical methods.

Each tile is read with a halo (``context`` MS pixels of image around it, plus what the interpolator needs),
the model sees ``ms``, ``lms`` (23-tap interpolation) and ``pan`` normalised by one scene-wide constant, and
only the tile interior is kept, so there are no seams. Tiles have one size (the last row and column of
tiles are moved back inside the grid), which lets them be stacked into batches. On CUDA the model runs
under autocast (float16) and a CUDA out-of-memory error halves the batch and tries again.
"""
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

from . import mtf, raster
from .device import (channels_last, cpu_lanes, describe, import_torch, is_cuda_oom, map_lanes, select_device,
                     torch_owns_the_cores)
from .errors import PansharpenError, user_errors
from .pipeline import TileSource
from .sensors import sensor_by_index
from .tiling import Tile, run_tiles
from .training.datasets import robust_scale


def token_stride(model):
    """PAN pixels of a side of the model's ViT tokens (a PanAdapter's ``config.token_stride``), or None."""
    return getattr(getattr(model, "config", None), "token_stride", None)


def tile_multiple(model, ratio, multiple=4):
    """The MS pixels a tile's size must be a multiple of: ``multiple``, times what it takes for the PAN tile to
    be a multiple of the model's token stride (PanAdapter's ``fast`` preset: 8 PAN pixels; at ratio 3, 8 MS
    pixels)."""
    stride = token_stride(model) or 1
    m = multiple
    while (m * ratio) % stride:
        m += multiple
    return m


def default_tile(model, fallback=128):
    """PAN pixels of a tile side where a PanAdapter runs fastest on a CPU: 32 ViT tokens a side (the attention
    grows with the square of the tokens, the halo's share shrinks with the tile): 128 for the 4-pixel tokens of
    the small and universal presets, 256 for the fast preset's 8-pixel ones (docs/BENCHMARKS.md); ``fallback``
    for a model without tokens."""
    stride = token_stride(model)
    return 32 * int(stride) if stride else int(fallback)


def default_context(model, fallback=8):
    """MS pixels of image context around a tile: 4 for a PanAdapter (a model with ViT tokens; with 8, the
    output of the 15 test scenes has the same ERGAS and SAM to four digits, and takes 7-26 % longer:
    docs/BENCHMARKS.md), ``fallback`` for other models."""
    return 4 if token_stride(model) else int(fallback)


def uniform_tiles(rows, cols, tile, multiple=1, overlap=0):
    """Equal tiles of ``tile`` x ``tile`` covering the grid, ``overlap`` pixels shared by neighbours; the last
    ones overlap their neighbours more instead of being cut. A grid smaller than ``tile`` gets one tile of
    its size rounded up to ``multiple`` (a model's size constraint), which then reaches past the grid: the
    reader pads it, the writer crops it."""
    def up(n):
        return -(-n // multiple) * multiple
    th, tw = min(tile, up(rows)), min(tile, up(cols))
    sh, sw = max(1, th - overlap), max(1, tw - overlap)
    r_starts = sorted(set(list(range(0, rows - th, sh)) + [max(0, rows - th)]))
    c_starts = sorted(set(list(range(0, cols - tw, sw)) + [max(0, cols - tw)]))
    return [Tile(r, r + th, c, c + tw) for r in r_starts for c in c_starts]


def blend_weights(rows, cols, ramp):
    """Feathering weights of a tile (rows x cols): rising linearly over ``ramp`` pixels from each edge,
    never zero, so that a weighted mean of overlapping tiles fades each one out towards its edges."""
    def axis(n):
        i = np.arange(n, dtype=np.float32)
        return np.minimum(np.minimum(i + 1, n - i) / max(1, ramp), 1.0)
    return np.outer(axis(rows), axis(cols))


class _Blender:
    """Weighted sum of overlapping fused tiles over a band of rows, written out (as the mean) once no
    later tile can reach them: memory is a few tile rows times the output width."""

    def __init__(self, writer, info, ramp):
        self.writer, self.info, self.ramp = writer, info, ramp
        self.row0 = 0
        bands = len(info.ms_bands)
        self.num = np.zeros((bands, 0, info.out_cols), np.float32)
        self.den = np.zeros((0, info.out_cols), np.float32)
        self.ok = np.ones((0, info.out_cols), bool)

    def add(self, r0, c0, fused, valid):
        c, h, w = fused.shape
        end = r0 + h
        grow = end - (self.row0 + self.den.shape[0])
        if grow > 0:
            self.num = np.concatenate([self.num, np.zeros((c, grow, self.info.out_cols), np.float32)], 1)
            self.den = np.concatenate([self.den, np.zeros((grow, self.info.out_cols), np.float32)], 0)
            self.ok = np.concatenate([self.ok, np.ones((grow, self.info.out_cols), bool)], 0)
        wgt = blend_weights(h, w, self.ramp)
        rs = slice(r0 - self.row0, end - self.row0)
        self.num[:, rs, c0:c0 + w] += fused * wgt
        self.den[rs, c0:c0 + w] += wgt
        if valid is not None:
            self.ok[rs, c0:c0 + w] &= valid

    def flush(self, upto):
        """Write the rows before ``upto`` (output rows) and drop them from the buffer."""
        n = min(upto, self.row0 + self.den.shape[0]) - self.row0
        if n <= 0:
            return
        fused = self.num[:, :n] / self.den[:n]
        valid = None if self.ok[:n].all() else self.ok[:n]
        self.writer.write(self.writer.to_output(fused, valid), self.row0, 0)
        self.num, self.den, self.ok = self.num[:, n:], self.den[n:], self.ok[n:]
        self.row0 += n


def scene_scale(reader: raster.PairReader, info: raster.PairInfo) -> float:
    """Normalisation constant (99.9th percentile of the MS) from at most ~1 MP sampled on a regular grid."""
    step = max(1, int(np.ceil(np.sqrt(info.rows * info.cols / 2**20))))
    rows = range(0, info.rows, step)
    parts = [reader.read_ms(r, r + 1, 0, info.cols)[:, 0, ::step] for r in rows]
    values = np.concatenate(parts, 1)
    return robust_scale(values[:, ~raster.invalid_mask(values[:, None], info.ms_nodata)[0]])


class DeepJob:
    """A PAN/MS pair and a model ``f(ms, lms, pan, ratio) -> hrms`` (normalised tensors)."""

    @user_errors
    def __init__(self, pan_path, ms_path, model, *, name="deep model", sensor=0, ms_bands=None, device="auto",
                 context=None, multiple=4, scale=None, ensemble=1, overlap=0, guide_bands=False,
                 tile_size=256, base_method=None, base_params=None, log: Optional[Callable] = None):
        torch = import_torch()
        self.info = raster.inspect_pair(pan_path, ms_path, ms_bands, guide_bands=guide_bands)
        self.log = log or (lambda msg: None)
        for note in self.info.notes:
            self.log(note)
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.channels_last = isinstance(self.model, torch.nn.Module) and channels_last(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.name = name
        if ensemble not in (1, 2, 4, 8):
            raise PansharpenError("The self-ensemble size must be 1, 2, 4 or 8.")
        self.ensemble = ensemble
        self.batch_limit = None  # lowered by a CUDA out-of-memory error
        bands = len(self.info.ms_bands)
        if not getattr(model, "universal", False) and getattr(model, "bands", bands) != bands:
            raise PansharpenError(f"The model was built for {model.bands} bands; the MS has {bands} selected.")
        r = self.info.ratio
        self.multiple = multiple = tile_multiple(model, r, multiple)
        context = default_context(model) if context is None else int(context)
        self.context = -(-context // multiple) * multiple           # MS pixels of image context per side
        self.overlap = int(overlap)   # MS pixels shared by neighbouring tiles, blended (0: interiors only)
        self.tile_size = int(tile_size)  # PAN pixels: the default of write() and fuse_window()
        self.needs_origin = bool(getattr(model, "needs_origin", False))
        self.crops = bool(getattr(model, "accepts_crop", False))   # the model drops the context itself
        self.interp_halo = mtf.interp_halo(r)
        sens = sensor_by_index(sensor)
        count = raster.open_raster(ms_path, "MS").RasterCount
        self.gains, self.pan_gain = sens.gains_for(self.info.ms_bands, band_count=count), sens.pan_gain
        # the classical base that a universal model adds its residual to: its coefficients from the whole
        # image (as the classical algorithm computes them), its pixels per tile with the tile's halo
        # (``base_params``: those coefficients when already computed, as a cluster worker gets them)
        self.base_method, self.base_params = None, None
        if getattr(model, "needs_base", False) and base_method:
            from .classical import create_method
            from .pipeline import FusionJob

            if base_params is None:
                base_params = FusionJob(pan_path, ms_path, base_method, sensor=sensor, ms_bands=ms_bands,
                                        device=device).fit()
            self.base_method, self.base_params = create_method(base_method), base_params
            self.interp_halo = max(self.interp_halo, self.base_method.halo(r))
        self.source = TileSource(self.info, self.context + self.interp_halo, self.device, self.gains,
                                 self.pan_gain)
        self.scale = float(scale) if scale else scene_scale(self.source.reader, self.info)
        self.torch = torch
        # what a cluster worker rebuilds this job from (``cluster.DeepTiles``), whole-image values included
        self.args = dict(pan_path=pan_path, ms_path=ms_path, name=name, sensor=sensor, ms_bands=ms_bands,
                         device=device, context=context, multiple=multiple, scale=self.scale, ensemble=ensemble,
                         overlap=overlap, guide_bands=guide_bands, tile_size=tile_size, base_method=base_method,
                         base_params=self.base_params)

    def _inputs(self, data):
        """numpy (pan, ms) with the full halo -> normalised (ms, lms, pan, base) tensors with ``context`` halo
        (``base``: the classical base method's result, or None without one)."""
        torch, r, ih = self.torch, self.info.ratio, self.interp_halo
        pan, ms = data
        base = None
        if self.base_method is not None:
            from .classical.base import TileContext

            raw_pan = torch.from_numpy(pan).to(self.device)[None]
            raw_ms = torch.from_numpy(ms).to(self.device)[None]
            ctx = TileContext(raw_pan, raw_ms, ih, r, self.gains, self.pan_gain)
            base = self.base_method.apply(ctx, self.base_params).float() / self.scale
            base = torch.nan_to_num(base)
        ms_t = torch.from_numpy(ms).to(self.device)[None] / self.scale
        lms = mtf.upsample(ms_t, r, ih)
        pan_t = torch.from_numpy(pan).to(self.device)[None] / self.scale
        pan_t = pan_t[:, :, r * ih:pan_t.shape[2] - r * ih, r * ih:pan_t.shape[3] - r * ih]
        return ms_t[:, :, ih:ms_t.shape[2] - ih, ih:ms_t.shape[3] - ih], lms, pan_t, base

    def _forward(self, batch):
        """The model on a batch; with ``ensemble`` > 1, the mean over that many elements of the dihedral
        group (flips, transposition: the transforms training augments with), each undone on the output."""
        torch = self.torch
        ms, lms, pan = (torch.cat(x) for x in zip(*[b[:3] for b in batch]))
        base = torch.cat([b[3] for b in batch]) if batch[0][3] is not None else None
        if self.channels_last:
            ms, lms, pan = (x.contiguous(memory_format=torch.channels_last) for x in (ms, lms, pan))
            base = None if base is None else base.contiguous(memory_format=torch.channels_last)
        extra = {"origin": [b[4] for b in batch]} if self.needs_origin else {}
        if self.crops:
            extra["crop"] = self.info.ratio * self.context
        transforms = [(dims, t) for t in (False, True) for dims in ((), (-1,), (-2,), (-1, -2))]
        transforms = transforms[:1] + transforms[4:5] + transforms[1:4] + transforms[5:]  # 2: identity, transpose
        total = None
        for dims, transpose in transforms[:self.ensemble]:
            def fwd(x):
                x = x.flip(dims) if dims else x
                return x.transpose(-1, -2) if transpose else x

            def inv(x):
                x = x.transpose(-1, -2) if transpose else x
                return x.flip(dims) if dims else x
            args = (fwd(ms), fwd(lms), fwd(pan), self.info.ratio)
            if base is not None:
                extra["base"] = fwd(base)
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    out = inv(self.model(*args, **extra).float())
            else:
                out = inv(self.model(*args, **extra))
            total = out if total is None else total + out
        return total / self.ensemble

    def fuse_tiles(self, tiles, datas):
        """Fused interiors (C, r*rows, r*cols) float32 numpy, in physical units, of same-size tiles. On a CPU
        with several threads the tiles are shared among lanes (``cpu_lanes``), each with its share of torch's
        threads."""
        torch = self.torch
        lanes = cpu_lanes(self.device, len(tiles))
        if lanes == 1:
            return self._fuse_part(tiles, datas)
        threads = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(lanes, thread_name_prefix="pan-lane") as pool:
                outs = map_lanes(pool, lambda a, b: self._fuse_part(tiles[a:b], datas[a:b]), len(tiles), lanes,
                                 threads)
        finally:
            torch.set_num_threads(threads)   # the default that threads started later take
        return [f for out in outs for f in out]

    def _fuse_part(self, tiles, datas):
        torch, r, c = self.torch, self.info.ratio, self.context
        inputs = [self._inputs(d) + ((r * (t.r0 - c), r * (t.c0 - c)),) for t, d in zip(tiles, datas)]
        outs, start, batch = [], 0, min(len(inputs), self.batch_limit or len(inputs))
        with torch.inference_mode(), torch_owns_the_cores():
            while start < len(inputs):
                try:
                    out = self._forward(inputs[start:start + batch])
                except RuntimeError as exc:
                    if is_cuda_oom(exc) and batch > 1:
                        torch.cuda.empty_cache()
                        batch = self.batch_limit = max(1, batch // 2)  # kept for the next tiles
                        self.log(f"CUDA out of memory: going on with batches of {batch} tiles.")
                        continue
                    raise
                outs.append(out)
                start += batch
        out = torch.cat(outs)
        if not self.crops:
            out = out[:, :, r * c:-r * c or None, r * c:-r * c or None]
        out = out * self.scale
        return [o.float().cpu().numpy() for o in out]

    def _tiles(self, tile_size):
        """(tiles of the whole grid, overlap in MS pixels) for ``tile_size`` PAN pixels: one tiling, so that
        a window (``fuse_window``) gets the pixels of the whole-scene run (``write``)."""
        r = self.info.ratio
        tile_ms = max(self.multiple, int(tile_size) // r // self.multiple * self.multiple)
        overlap = min(self.overlap, tile_ms // 2) // self.multiple * self.multiple
        return uniform_tiles(self.info.rows, self.info.cols, tile_ms, self.multiple, overlap), overlap

    def _interior(self, tile, fused, valid):
        """The fused tile (C, r*rows, r*cols) and its mask, cut where the tile reaches past the grid."""
        info, r = self.info, self.info.ratio
        h, w = r * (min(tile.r1, info.rows) - tile.r0), r * (min(tile.c1, info.cols) - tile.c0)
        return fused[:, :h, :w], None if valid is None else valid[:h, :w]

    @user_errors
    def write(self, output_path, *, float32=False, tile_size=None, batch=4, progress=None, is_cancelled=None,
              executor=None):
        """Sharpen the whole scene into ``output_path`` (a GeoTIFF renamed into place only on success);
        ``executor``: a ``cluster.Cluster`` whose workers fuse the tiles (None: this process)."""
        t0 = time.perf_counter()
        info, r = self.info, self.info.ratio
        tiles, overlap = self._tiles(tile_size or self.tile_size)
        groups = [tiles[i:i + batch] for i in range(0, len(tiles), batch)]
        where = executor.label if executor is not None else describe(self.device)
        self.log(f"{self.name}: ratio {r}, output {info.out_cols} x {info.out_rows} x {len(info.ms_bands)}, "
                 f"{len(tiles)} tiles on {where}"
                 + (f", neighbours blended over {overlap * r} pixels." if overlap else "."))
        writer = raster.GeoTiffWriter(output_path, info, float32, self.name)
        try:
            if overlap:
                self._write_blended(tiles, groups, writer, overlap * r, progress, is_cancelled, executor)
                writer.commit()
                return self._summary(output_path, t0, executor)
            def read(group):
                return [self.source.read(t) for t in group]

            def process(group, datas):
                return self.fuse_group(group, datas, writer.to_output)

            def write(group, outs):
                for tile, o in zip(group, outs):
                    writer.write(o, tile.r0 * r, tile.c0 * r)

            run_tiles(groups, read, process, write, progress, is_cancelled, prefetch=1, executor=executor,
                      task=None if executor is None else self._cluster_task(writer, blended=False))
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return self._summary(output_path, t0, executor)

    def fuse_group(self, tiles, datas, to_output=None):
        """What the writer needs of a group of tiles: each one's interior in the output type (``to_output``,
        the writer's), or, to be blended (``to_output=None``), each whole fused tile and its validity mask."""
        fused = self.fuse_tiles(tiles, datas)
        if to_output is None:
            return [(f, self._valid(t, d)) for t, f, d in zip(tiles, fused, datas)]
        return [to_output(*self._interior(t, f, self._valid(t, d))) for t, f, d in zip(tiles, fused, datas)]

    def _cluster_task(self, writer, blended):
        from .cluster import DeepTiles
        return DeepTiles(self, writer, blended)

    @user_errors
    def fuse_window(self, row0, row1, col0, col1, *, tile_size=None, batch=4, progress=None, is_cancelled=None):
        """Float32 (C, row1-row0, col1-col0) of the output grid (PAN pixels), NaN where nodata: the pixels
        that ``write`` gives there with the same ``tile_size`` (the tiles of the whole grid that reach the
        window are fused, pasted in the same order or blended with the same weights). The window is clipped
        to the output grid; returns (array, geotransform of the window). For the map preview."""
        info, r = self.info, self.info.ratio
        row0, col0 = max(0, int(row0)), max(0, int(col0))
        row1, col1 = min(info.out_rows, int(row1)), min(info.out_cols, int(col1))
        if row1 <= row0 or col1 <= col0:
            raise PansharpenError("The requested window is outside the PAN/MS overlap.")
        tiles, overlap = self._tiles(tile_size or self.tile_size)
        tiles = [t for t in tiles if t.r0 * r < row1 and min(t.r1, info.rows) * r > row0
                 and t.c0 * r < col1 and min(t.c1, info.cols) * r > col0]
        height, width = row1 - row0, col1 - col0
        num = np.zeros((len(info.ms_bands), height, width), np.float32)
        den = np.zeros((height, width), np.float32)
        ok = np.ones((height, width), bool)
        for start in range(0, len(tiles), batch):
            if is_cancelled is not None and is_cancelled():
                from .errors import Cancelled
                raise Cancelled("The preview was cancelled.")
            group = tiles[start:start + batch]
            datas = [self.source.read(t) for t in group]
            for tile, f, data in zip(group, self.fuse_tiles(group, datas), datas):
                f, valid = self._interior(tile, f, self._valid(tile, data))
                a0, b0 = tile.r0 * r, tile.c0 * r      # the tile's place on the output grid
                rs = slice(max(row0, a0), min(row1, a0 + f.shape[1]))
                cs = slice(max(col0, b0), min(col1, b0 + f.shape[2]))
                src = (slice(None), slice(rs.start - a0, rs.stop - a0), slice(cs.start - b0, cs.stop - b0))
                dst = (slice(None), slice(rs.start - row0, rs.stop - row0), slice(cs.start - col0, cs.stop - col0))
                if overlap:   # _Blender's weighted mean
                    wgt = blend_weights(f.shape[1], f.shape[2], overlap * r)[src[1:]]
                    num[dst] += f[src] * wgt
                    den[dst[1:]] += wgt
                else:         # write()'s order: a later tile overwrites the one before
                    num[dst] = f[src]
                    den[dst[1:]] = 1.0
                if overlap and valid is not None:
                    ok[dst[1:]] &= valid[src[1:]]
                elif not overlap:
                    ok[dst[1:]] = True if valid is None else valid[src[1:]]
            if progress is not None:
                progress(min(1.0, (start + len(group)) / len(tiles)))
        fused = num / den if overlap else num
        fused[:, ~ok] = np.nan
        gt = info.out_geotransform
        return fused, (gt[0] + col0 * gt[1], gt[1], 0.0, gt[3] + row0 * gt[5], 0.0, gt[5])

    def _summary(self, output_path, t0, executor=None):
        info = self.info
        return dict(output=output_path, ratio=info.ratio, width=info.out_cols, height=info.out_rows,
                    bands=len(info.ms_bands), seconds=time.perf_counter() - t0,
                    device=executor.label if executor is not None else str(self.device), method=self.name)

    def _write_blended(self, tiles, groups, writer, ramp, progress, is_cancelled, executor=None):
        """Overlapping tiles, each fused whole, blended with feathering weights (``_Blender``)."""
        info, r = self.info, self.info.ratio
        blender = _Blender(writer, info, ramp)
        starts = [g[0].r0 for g in groups[1:]] + [info.rows]
        jobs = list(zip(groups, starts))

        def read(job):
            return [self.source.read(t) for t in job[0]]

        def process(job, datas):
            return self.fuse_group(job[0], datas)

        def write(job, outs):
            for tile, (f, valid) in zip(job[0], outs):
                blender.add(tile.r0 * r, tile.c0 * r, *self._interior(tile, f, valid))
            blender.flush(job[1] * r)   # later tiles start at this row: everything above is final

        run_tiles(jobs, read, process, write, progress, is_cancelled, prefetch=1, executor=executor,
                  task=None if executor is None else self._cluster_task(writer, blended=True))
        blender.flush(info.out_rows)

    def _valid(self, tile, data):
        """PAN-scale validity mask of the tile interior (numpy bool) or None when nothing is nodata."""
        full, _ = self.source.valid_masks(data, tile)
        return None if full is None else full.cpu().numpy()
