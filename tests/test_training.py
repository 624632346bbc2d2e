"""Training data and the training loop: PanCollection layout, Wald crops of real scenes, loss decrease,
resumable checkpoints, cancel."""
import json

import numpy as np
import pytest
from osgeo import gdal
import torch

from panadapter_qgis.backend import mtf
from panadapter_qgis.backend.errors import Cancelled, PansharpenError
from panadapter_qgis.backend.models.panadapter import create_model
from panadapter_qgis.backend.training.datasets import PanCollectionH5, SceneCrops
from panadapter_qgis.backend.training.trainer import l1_step, spectral_angle, train


def test_pancollection_layout(data_dir):
    path = data_dir / "pansharpening" / "wv3_patches_pancollection.h5"
    if not path.exists():
        pytest.skip("no PanCollection sample")
    ds = PanCollectionH5(str(path))
    assert (len(ds), ds.bands, ds.ratio) == (100, 8, 4)
    b = ds.batch([3, 1], rng=np.random.default_rng(0))
    assert b["gt"].shape == (2, 8, 64, 64) and b["ms"].shape == (2, 8, 16, 16) and b["pan"].shape == (2, 1, 64, 64)
    assert 0 < float(b["gt"].max()) <= 1.0  # DN / 2047


def test_scene_crops_follow_walds_protocol(data_dir):
    scene = data_dir / "pansharpening" / "landsat7_fusebox" / "scene_07"
    crops = SceneCrops(str(scene / "pan.tif"), str(scene / "ms.tif"), sensor=8, patch=32, window=128,
                       budget=128 * 128 * 3)
    assert len(crops.windows) == 3  # the budget bounds the memory, not the raster size
    b = crops.batch(4, np.random.default_rng(1))
    assert b["gt"].shape == (4, 6, 32, 32) and b["ms"].shape == (4, 6, 16, 16)
    assert b["lms"].shape == (4, 6, 32, 32) and b["pan"].shape == (4, 1, 32, 32)
    # the inputs are the degraded reference: lms is close to gt but smoother, and the MS keeps its mean
    assert float((b["lms"] - b["gt"]).abs().mean()) < 0.1 * float(b["gt"].abs().mean())
    assert float(b["ms"].mean()) == pytest.approx(float(b["gt"].mean()), rel=0.05)
    # lms really is the 23-tap interpolation of ms (away from the crop border)
    lms = mtf.upsample_image(b["ms"].double(), 2)
    assert torch.allclose(lms[..., 12:-12, 12:-12].float(), b["lms"][..., 12:-12, 12:-12], atol=2e-3)


def test_full_resolution_patches_are_the_pair_itself(data_dir):
    """FullResolutionPatches: the original (not degraded) MS and PAN of a central window, aligned (the PAN
    patch covers the MS patch's pixels), lms = the 23-tap interpolation of the MS; and the spectral
    consistency term is zero for an image whose degradation is the MS, positive when shifted by one MS pixel."""
    from panadapter_qgis.backend import raster
    from panadapter_qgis.backend.sensors import sensor_by_index
    from panadapter_qgis.backend.training.datasets import FullResolutionPatches, spectral_consistency

    scene = data_dir / "pansharpening" / "landsat7_fusebox" / "scene_07"
    info = raster.inspect_pair(str(scene / "pan.tif"), str(scene / "ms.tif"))
    full = FullResolutionPatches(info, 255.0, patch=32, window=100)
    reader = raster.PairReader(info)
    r0 = (info.rows - 100) // 2
    c0 = (info.cols - 100) // 2
    assert torch.equal(full.data["ms"], torch.from_numpy(reader.read_ms(r0, r0 + 100, c0, c0 + 100)) / 255.0)
    assert torch.equal(full.data["pan"], torch.from_numpy(reader.read_pan(2 * r0, 2 * r0 + 200, 2 * c0, 2 * c0 + 200)) / 255.0)
    b = full.batch(3, np.random.default_rng(0))
    assert b["ms"].shape == (3, 6, 16, 16) and b["lms"].shape == (3, 6, 32, 32) and b["pan"].shape == (3, 1, 32, 32)
    lms = mtf.upsample_image(b["ms"].double(), 2)
    assert torch.allclose(lms[..., 12:-12, 12:-12].float(), b["lms"][..., 12:-12, 12:-12], atol=2e-3)

    gains = sensor_by_index(8).gains_for(info.ms_bands, band_count=6)
    hr = full.data["lms"][None, :, :64, :64]
    ms = mtf.degrade_image(hr, [mtf.mtf_kernel_1d(float(g), 2) for g in gains], 2)
    assert float(spectral_consistency(hr, ms, 2, gains)) < 1e-6
    assert float(spectral_consistency(torch.roll(hr, 2, dims=-1), ms, 2, gains)) > 1e-3
    with pytest.raises(PansharpenError, match="multiple of the ratio"):
        FullResolutionPatches(info, 1.0, patch=31)


def test_khan_form_of_spectral_consistency_is_hqnr_d_lambda_comparison(data_dir):
    """spectral_consistency with ``lms``: the fused patch low-passed by the sensor MTF at the PAN scale (the
    filter of HQNR's D_lambda, metrics.mtf_lowpass_filter) against the interpolated MS, L1 inside a border of
    margin * ratio PAN pixels; the fused image that minimises it is not the one Wald's form prefers: the
    interpolated MS scores 0 on neither, and a shifted copy is worse on both; the gradient reaches the input."""
    from panadapter_qgis.backend import metrics, raster
    from panadapter_qgis.backend.sensors import sensor_by_index
    from panadapter_qgis.backend.training.datasets import FullResolutionPatches, spectral_consistency

    scene = data_dir / "pansharpening" / "landsat7_fusebox" / "scene_07"
    info = raster.inspect_pair(str(scene / "pan.tif"), str(scene / "ms.tif"))
    full = FullResolutionPatches(info, 255.0, patch=64, window=100)
    b = full.batch(2, np.random.default_rng(5))
    gains = sensor_by_index(8).gains_for(info.ms_bands, band_count=6)
    fused = b["lms"].double() + 0.3 * (b["pan"].double() - b["pan_lp"].double())
    low = np.stack([metrics.mtf_lowpass_filter(gains, 2)(f) for f in fused.numpy()])
    expected = np.abs(low - b["lms"].double().numpy())[..., 4:-4, 4:-4].mean()
    khan = float(spectral_consistency(fused, b["ms"].double(), 2, gains, lms=b["lms"].double()))
    assert khan == pytest.approx(float(expected), rel=1e-6)
    assert khan != pytest.approx(float(spectral_consistency(fused, b["ms"].double(), 2, gains)), rel=1e-3)
    shifted = torch.roll(fused, 3, dims=-1)
    assert float(spectral_consistency(shifted, b["ms"].double(), 2, gains, lms=b["lms"].double())) > khan
    x = fused.clone().requires_grad_(True)
    spectral_consistency(x, b["ms"].double(), 2, gains, lms=b["lms"].double()).backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_spatial_consistency_is_d_s_on_the_patches(data_dir):
    """FullResolutionPatches.data["pan_lp"] is D_s's low-resolution PAN (``interp23tap(imresize(P, 1/r))`` as the
    full-resolution assessment computes it), and spatial_consistency is D_s of the batch (the metric's Q on
    32 x 32 blocks, per band the mean over all blocks, then mean |Q(F_b, P) - Q(MS_b, P_LP)| over the bands)
    less its tolerance, never below 0; MS with the PAN's details injected by regression gains scores better
    than the plain interpolated MS."""
    from panadapter_qgis.backend import assess, metrics, raster
    from panadapter_qgis.backend.training.datasets import FullResolutionPatches, spatial_consistency

    scene = data_dir / "pansharpening" / "landsat7_fusebox" / "scene_07"
    info = raster.inspect_pair(str(scene / "pan.tif"), str(scene / "ms.tif"))
    full = FullResolutionPatches(info, 255.0, patch=64, window=100)
    r0, c0 = (info.rows - 100) // 2, (info.cols - 100) // 2
    reference = assess._FullResolutionTiles(info).pan_lowres_up(2 * r0, 2 * r0 + 200, 2 * c0, 2 * c0 + 200)
    assert np.allclose(full.data["pan_lp"][0].double().numpy() * 255.0, reference, atol=0.05)

    b = full.batch(4, np.random.default_rng(3))
    lms, pan, pan_lp = b["lms"].double(), b["pan"].double(), b["pan_lp"].double()
    # the PAN's details injected with each band's regression gain on the low-passed PAN (as GSA does)
    centred = [v - v.mean(dim=(-2, -1), keepdim=True) for v in (lms, pan_lp)]
    gain = (centred[0] * centred[1]).mean(dim=(-2, -1), keepdim=True) / centred[1].pow(2).mean(dim=(-2, -1), keepdim=True)
    injected = lms + gain * (pan - pan_lp)

    def d_s(fused):
        q_high = metrics.q_block_map(fused.numpy(), pan.numpy(), 32).mean(axis=(0, 2, 3))
        q_low = metrics.q_block_map(lms.numpy(), pan_lp.numpy(), 32).mean(axis=(0, 2, 3))
        return float(np.abs(q_high - q_low).mean())

    for fused in (lms, injected):
        assert float(spatial_consistency(fused, lms, pan, pan_lp)) == pytest.approx(d_s(fused), abs=1e-5)
        tolerance = 0.5 * d_s(fused)
        assert float(spatial_consistency(fused, lms, pan, pan_lp, tolerance=tolerance)) == pytest.approx(
            d_s(fused) - tolerance, abs=1e-5)
        assert float(spatial_consistency(fused, lms, pan, pan_lp, tolerance=2 * d_s(fused))) == 0.0
    assert float(spatial_consistency(injected, lms, pan, pan_lp)) < float(spatial_consistency(lms, lms, pan, pan_lp))
    fused = lms.clone().requires_grad_(True)
    spatial_consistency(fused, lms, pan, pan_lp).backward()
    assert torch.isfinite(fused.grad).all() and float(fused.grad.abs().sum()) > 0
    within = lms.clone().requires_grad_(True)  # within the tolerance: no gradient at all
    spatial_consistency(within, lms, pan, pan_lp, tolerance=1.0).backward()
    assert float(within.grad.abs().sum()) == 0.0


def test_invariance_error_is_the_d_s_of_the_ms_one_scale_down(data_dir):
    """The tolerance of the D_s-like term: Wald's protocol on the window (sensor-MTF degradation of both by
    the ratio), then D_s with the MS itself as the fused image, against the PAN degraded once, computed
    here with the metrics module's Q; in (0, 1) on real scenes."""
    from panadapter_qgis.backend import metrics, mtf, raster, wald
    from panadapter_qgis.backend.sensors import sensor_by_index
    from panadapter_qgis.backend.training.datasets import FullResolutionPatches

    scene = data_dir / "pansharpening" / "landsat8_istanbul"
    info = raster.inspect_pair(str(scene / "pan.tif"), str(scene / "ms.tif"))
    full = FullResolutionPatches(info, 1000.0, patch=64, window=128)
    sens = sensor_by_index(8)
    gains, pan_gain = sens.gains_for(info.ms_bands, band_count=3), sens.pan_gain
    error = full.invariance_error(gains, pan_gain)

    ms, pan = full.data["ms"].double().numpy(), full.data["pan"].double().numpy()
    pan_rr, ms_rr = wald.degrade_arrays(pan, ms, 2, gains, pan_gain)
    lms = mtf.upsample_image(torch.from_numpy(ms_rr)[None], 2)[0].numpy()
    pan_low = mtf.degrade_image(torch.from_numpy(pan_rr)[None], mtf.bicubic_decimation_kernel_1d(2), 2)
    pan_lp = mtf.upsample_image(pan_low, 2)[0].numpy()
    truth = metrics.q_block_map(ms, pan_rr, 32).mean(axis=(1, 2))
    target = metrics.q_block_map(lms, pan_lp, 32).mean(axis=(1, 2))
    assert error == pytest.approx(float(np.abs(truth - target).mean()), abs=1e-6)
    assert 0.0 < error < 1.0


def test_spectral_angle_loss_is_sam_in_radians_and_ignores_brightness(data_dir):
    """The loss term is the per-pixel angle between spectra, averaged: the index SAM (in degrees) measures.
    Real FuseBox spectra: a brightness change leaves it at zero, a band swap does not, and l1_step adds it with
    its weight."""
    from panadapter_qgis.backend.metrics import sam

    ms = gdal.Open(str(data_dir / "pansharpening" / "landsat7_fusebox" / "scene_10" / "ms.tif")).ReadAsArray()
    gt = torch.from_numpy(ms[:, :32, :32].astype(np.float32) / 255)[None]
    other = gt.clone()
    other[:, [0, 3]] = gt[:, [3, 0]]       # red and NIR swapped
    assert float(spectral_angle(gt * 1.7, gt)) < 2e-3
    angle = float(spectral_angle(other, gt))
    assert angle > 0.1
    assert np.isclose(np.degrees(angle), sam(gt[0].numpy(), other[0].numpy()), rtol=2e-2)

    class Echo(torch.nn.Module):
        def forward(self, ms, lms, pan, ratio, stage=None):
            return lms
    b = dict(gt=gt, lms=other, ms=other[..., ::2, ::2], pan=gt[:, :1])
    plain, weighted = l1_step()(Echo(), b), l1_step(sam_weight=3.0)(Echo(), b)
    assert np.isclose(float(weighted - plain), 3 * angle, rtol=1e-5)


def test_scene_too_small_and_bad_patch(data_dir, tmp_path):
    scene = data_dir / "pansharpening" / "landsat8_istanbul"
    with pytest.raises(PansharpenError, match="multiple of 4"):
        SceneCrops(str(scene / "pan.tif"), str(scene / "ms.tif"), patch=34)
    # a patch larger than the scene shrinks to the largest multiple of 4 (ratio 2, token stride 4) that fits
    crops = SceneCrops(str(scene / "pan.tif"), str(scene / "ms.tif"), patch=512, budget=2**16)
    assert crops.patch == 184 and crops.sample(np.random.default_rng(0))["gt"].shape[-1] == 184
    pan, ms = str(tmp_path / "pan.tif"), str(tmp_path / "ms.tif")
    gdal.Translate(pan, str(scene / "pan.tif"), srcWin=[0, 0, 24, 24])
    gdal.Translate(ms, str(scene / "ms.tif"), srcWin=[0, 0, 12, 12])
    with pytest.raises(PansharpenError, match="too small to learn from"):
        SceneCrops(pan, ms, patch=64)
    # ratio 3: the smallest patch is 24 (16 rounded up to a multiple of 12), and the message says so
    ali = data_dir / "hyperspectral" / "paris_hyperion_ali"
    gdal.Translate(pan, str(ali / "pan.tif"), srcWin=[0, 0, 66, 66])
    gdal.Translate(ms, str(ali / "ms.tif"), srcWin=[13, 0, 22, 22])
    with pytest.raises(PansharpenError, match=r"\(22 x 22 MS pixels\).*at least 24 x 24 .*multiple of 12"):
        SceneCrops(pan, ms, patch=60)


def _tiny_problem(data_dir):
    scene = data_dir / "pansharpening" / "landsat8_istanbul"
    crops = SceneCrops(str(scene / "pan.tif"), str(scene / "ms.tif"), sensor=8, patch=32)
    model = create_model(3)
    return crops, model


def test_training_lowers_the_loss_and_resumes(data_dir, tmp_path):
    crops, model = _tiny_problem(data_dir)
    ckpt = str(tmp_path / "stage1.pt")
    batches = lambda rng: crops.batch(4, rng)  # noqa: E731
    params = model.set_trainable(model.STAGE1)
    first = train(model, batches, l1_step(1), params, iterations=60, lr=1e-3, checkpoint=ckpt,
                  card={"stage": 1})
    assert np.mean(first.losses[-10:]) < np.mean(first.losses[:10])
    assert json.load(open(tmp_path / "stage1.json"))["iteration"] == 60
    more = train(model, batches, l1_step(1), params, iterations=70, lr=1e-3, checkpoint=ckpt, resume=True)
    assert more.iterations == 70 and len(more.losses) == 10


def test_training_can_be_cancelled(data_dir):
    crops, model = _tiny_problem(data_dir)
    calls = []
    with pytest.raises(Cancelled):
        train(model, lambda rng: crops.batch(2, rng), l1_step(1), model.set_trainable(model.STAGE1),
              iterations=100, is_cancelled=lambda: calls.append(1) or len(calls) > 3)
    assert len(calls) == 4


def test_lanes_give_the_gradient_of_the_whole_batch(data_dir):
    """A batch of real Wald crops shared among lanes of one torch thread each (``lane_gradients``): every
    trained tensor's gradient and the loss are those of one backward pass over the whole batch, within float
    rounding, with the spectral-angle term as with L1 alone; two runs give the same gradients exactly."""
    from concurrent.futures import ThreadPoolExecutor

    from panadapter_qgis.backend.training.trainer import lane_gradients

    crops, _ = _tiny_problem(data_dir)
    torch.manual_seed(0)
    model = create_model(3, "fast")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = crops.batch(6, np.random.default_rng(3))
    batch["base"] = batch["lms"] + 0.01
    params = model.set_trainable(model.STAGE1 + model.STAGE2)
    step = l1_step(2, sam_weight=3.0)
    assert step.per_sample_mean
    loss = step(model, batch)
    whole = torch.autograd.grad(loss, params, allow_unused=True)   # (stage 2 does not reach every tensor)
    threads = torch.get_num_threads()
    runs = []
    try:
        with ThreadPoolExecutor(3) as pool:
            for lanes in (2, 3, 3):
                for p in params:
                    p.grad = None
                runs.append((float(lane_gradients(model, step, batch, params, lanes, pool)),
                             [None if p.grad is None else p.grad.clone() for p in params]))
    finally:
        torch.set_num_threads(threads)
    for value, grads in runs:
        assert value == pytest.approx(float(loss.detach()), rel=1e-5)
        assert [g is None for g in grads] == [w is None for w in whole]
        for g, w in zip(grads, whole):
            if w is not None:
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6 * float(w.abs().max()) + 1e-9)
    assert all(a is None or torch.equal(a, b) for a, b in zip(runs[1][1], runs[2][1]))
    assert sum(float(g.abs().sum()) for g in whole if g is not None) > 0


def test_training_in_lanes_follows_training_in_one(data_dir, monkeypatch):
    """The training loop with lanes (two threads) and without (``PANADAPTER_LANES=1``) from the same start:
    the same first loss, then losses within a few per cent (Adam's first steps move a tensor by the learning
    rate whatever its gradient's size, so rounding differences grow: one thread against two, without lanes,
    differ as much), and torch's thread count as it was."""
    threads = torch.get_num_threads()
    runs = []
    try:
        torch.set_num_threads(2)
        for lanes in ("1", "2"):
            monkeypatch.setenv("PANADAPTER_LANES", lanes)
            crops, model = _tiny_problem(data_dir)
            torch.manual_seed(0)
            res = train(model, lambda rng: crops.batch(4, rng), l1_step(1), model.set_trainable(model.STAGE1),
                        iterations=15, lr=1e-3)
            runs.append(res.losses)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-5)
    np.testing.assert_allclose(runs[1], runs[0], rtol=0.05)
