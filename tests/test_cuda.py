"""The CUDA path gives the CPU path's pixels (issue 29, item 3), within float16 autocast's tolerance. Runs only
where PyTorch sees a CUDA GPU (``make bench-gpu`` machines); skipped elsewhere."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@pytest.mark.parametrize("model", ["panadapter", "ssdiff"])
def test_cuda_and_cpu_give_the_same_pixels(data_dir, tmp_path, model):
    from conftest import fusebox_crop
    from panadapter_qgis.backend.adapt import deep_job

    pan, ms = fusebox_crop(data_dir, tmp_path, "scene_10", pan_size=256, bands=(1, 2, 3, 4, 5, 6))
    outs = {}
    for device in ("cpu", "cuda"):
        job = deep_job(model, pan, ms, sensor=8, device=device, steps=4)
        outs[device], _ = job.fuse_window(0, 256, 0, 256)
    a, b = outs["cpu"], outs["cuda"]
    span = float(np.nanmax(a) - np.nanmin(a))
    assert np.nanmax(np.abs(a - b)) <= 2e-2 * span
    assert np.nanmean(np.abs(a - b)) <= 2e-3 * span
