"""The deep-model tile loop: halo, normalisation, batching and georeference, checked with an untrained
PanAdapter, whose zero-initialised tails make it return exactly the interpolated MS (``upsample``)."""
import numpy as np
import pytest
import torch
from osgeo import gdal

from panadapter_qgis.backend.deep import DeepJob, uniform_tiles
from panadapter_qgis.backend.errors import Cancelled
from panadapter_qgis.backend.models.panadapter import create_model
from panadapter_qgis.backend.pipeline import pansharpen


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory, data_dir):
    """A 200 x 160 PAN crop of the Istanbul scene (real georeference, MS warped half a pixel)."""
    scene = data_dir / "pansharpening" / "landsat8_istanbul"
    d = tmp_path_factory.mktemp("istanbul_crop")
    pan, ms = str(d / "pan.tif"), str(d / "ms.tif")
    gdal.Translate(pan, str(scene / "pan.tif"), srcWin=[100, 60, 200, 160])
    gdal.Translate(ms, str(scene / "ms.tif"), srcWin=[48, 28, 106, 86])
    return pan, ms


def test_uniform_tiles_cover_the_grid_with_equal_tiles():
    tiles = uniform_tiles(70, 45, 32)
    assert {(t.rows, t.cols) for t in tiles} == {(32, 32)}
    covered = np.zeros((70, 45), bool)
    for t in tiles:
        covered[t.r0:t.r1, t.c0:t.c1] = True
    assert covered.all()


def test_a_grid_smaller_than_the_tile_gets_one_tile_rounded_up():
    assert uniform_tiles(35, 36, 64, multiple=4) == [uniform_tiles(36, 36, 64)[0]]
    tiles = uniform_tiles(35, 70, 32, multiple=4)
    assert {(t.rows, t.cols) for t in tiles} == {(32, 32)} and max(t.c1 for t in tiles) == 70


@pytest.mark.parametrize("tile_size, ensemble", [(64, 1), (64, 8), (1024, 2)])
def test_untrained_panadapter_reproduces_upsample_through_the_tile_loop(small_pair, tmp_path, tile_size,
                                                                        ensemble):
    """Also with the self-ensemble (each flip/transposition must be undone exactly) and with one tile larger
    than the grid (read padded, written cropped)."""
    pan, ms = small_pair
    job = DeepJob(pan, ms, create_model(3), name="panadapter", sensor=8, device="cpu", ensemble=ensemble)
    out = str(tmp_path / "deep.tif")
    result = job.write(out, float32=True, tile_size=tile_size, batch=3)
    ref = str(tmp_path / "up.tif")
    pansharpen(pan, ms, ref, "upsample", sensor=8, float32=True)
    a, b = gdal.Open(out), gdal.Open(ref)
    assert a.GetGeoTransform() == b.GetGeoTransform() and result["bands"] == 3
    x, y = a.ReadAsArray(), b.ReadAsArray()
    assert np.abs(x - y).max() <= 1e-5 * np.abs(y).max()
    assert a.GetMetadataItem("PANSHARPENING_METHOD") == "panadapter"


def test_deep_run_cancel_leaves_nothing(small_pair, tmp_path):
    pan, ms = small_pair
    job = DeepJob(pan, ms, create_model(3), sensor=8, device="cpu")
    out = str(tmp_path / "deep.tif")
    with pytest.raises(Cancelled):
        job.write(out, tile_size=64, batch=1, is_cancelled=lambda: True)
    assert not list(tmp_path.iterdir())


class _SmallBatchesOnly(torch.nn.Module):
    """Behaves like a GPU that runs out of memory for batches of more than one tile; returns the LMS."""

    bands = 3

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, ms, lms, pan, ratio):
        self.batches.append(ms.shape[0])
        if ms.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return lms


def test_out_of_memory_halves_the_batch_and_goes_on(small_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("PANADAPTER_LANES", "1")   # a GPU's path: one batch, no CPU lanes
    pan, ms = small_pair
    model, messages = _SmallBatchesOnly(), []
    job = DeepJob(pan, ms, model, sensor=8, device="cpu", log=messages.append)
    out = str(tmp_path / "deep.tif")
    job.write(out, float32=True, tile_size=64, batch=4)
    ref = str(tmp_path / "up.tif")
    pansharpen(pan, ms, ref, "upsample", sensor=8, float32=True)
    x, y = gdal.Open(out).ReadAsArray(), gdal.Open(ref).ReadAsArray()
    assert np.abs(x - y).max() <= 1e-5 * np.abs(y).max()
    assert model.batches[:3] == [4, 2, 1] and set(model.batches[3:]) == {1}
    assert any("going on with batches of 1" in m for m in messages)


def test_cpu_lanes_follow_torch_threads_the_tiles_and_the_cap(monkeypatch):
    from panadapter_qgis.backend.device import cpu_lanes

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        monkeypatch.delenv("PANADAPTER_LANES", raising=False)
        assert cpu_lanes("cpu", 4) == 3 and cpu_lanes("cpu", 2) == 2 and cpu_lanes("cpu", 1) == 1
        assert cpu_lanes("cuda", 4) == 1   # one device: a batch, not lanes
        monkeypatch.setenv("PANADAPTER_LANES", "1")
        assert cpu_lanes("cpu", 4) == 1
        monkeypatch.setenv("PANADAPTER_LANES", "2")
        assert cpu_lanes("cpu", 4) == 2
    finally:
        torch.set_num_threads(threads)


def test_tiles_in_lanes_give_the_pixels_of_one_lane_and_leave_the_threads_as_they_were(data_dir, tmp_path,
                                                                                      monkeypatch):
    """A PanAdapter with non-zero tails (so each tile's output is its own) on a real WorldView-3 crop: the
    tiles of a batch shared among two lanes of one thread each come back in their places (the pixels of a
    run in one lane within float rounding), and torch's thread count, in this thread and in a thread started
    afterwards, is what it was."""
    import threading

    pan_src = data_dir / "pansharpening" / "wv3_cristianics"
    pan, ms = str(tmp_path / "pan.tif"), str(tmp_path / "ms.tif")
    gdal.Translate(pan, str(pan_src / "pan.tif"), srcWin=[0, 0, 384, 320])
    gdal.Translate(ms, str(pan_src / "ms.tif"), srcWin=[0, 0, 96, 80])
    torch.manual_seed(0)
    net = create_model(8, "fast").eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    threads = torch.get_num_threads()
    outs = []
    try:
        torch.set_num_threads(2)
        for lanes in ("1", "2"):
            monkeypatch.setenv("PANADAPTER_LANES", lanes)
            out = str(tmp_path / f"lanes_{lanes}.tif")
            DeepJob(pan, ms, net, sensor=2, device="cpu", base_method="mtf_glp_hpm").write(
                out, float32=True, tile_size=128, batch=4)
            outs.append(gdal.Open(out).ReadAsArray())
        assert torch.get_num_threads() == 2
        seen = []
        worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        worker.start()
        worker.join()
        assert seen == [2]
    finally:
        torch.set_num_threads(threads)
    pansharpen(pan, ms, str(tmp_path / "base.tif"), "mtf_glp_hpm", sensor=2, float32=True)
    base = gdal.Open(str(tmp_path / "base.tif")).ReadAsArray()
    assert np.abs(outs[0] - base).max() > 1e-3 * np.abs(base).max()   # the tails act
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5 * np.abs(base).max())


class _ThreadRecorder(torch.nn.Module):
    """Returns the LMS and records, for each call, its batch size, torch's thread count in its thread and
    whether that thread is a lane's."""

    bands = 3

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, ms, lms, pan, ratio):
        import threading
        self.calls.append((ms.shape[0], torch.get_num_threads(),
                           threading.current_thread().name.startswith("pan-lane")))
        return lms


@pytest.mark.parametrize("batch, lanes, share", [(2, 2, 2), (4, 4, 1)])
def test_lanes_share_torchs_threads(small_pair, tmp_path, monkeypatch, batch, lanes, share):
    """With 4 torch threads, a batch of 2 tiles runs in 2 lanes of 2 threads and a batch of 4 in 4 lanes of 1:
    no core is left idle on a CPU with more cores than the batch has tiles."""
    monkeypatch.delenv("PANADAPTER_LANES", raising=False)
    pan, ms = small_pair
    model = _ThreadRecorder()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        DeepJob(pan, ms, model, sensor=8, device="cpu").write(str(tmp_path / "f.tif"), tile_size=64, batch=batch)
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(threads)
    in_lanes = [c for c in model.calls if c[2]]   # (a last batch of one tile runs in this thread)
    assert len(in_lanes) >= lanes and all(c[:2] == (1, share) for c in in_lanes)
