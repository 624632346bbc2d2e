"""SSDiff: the network, its diffusion, L-BAF and EMA, and the tiled, seeded sampler (backend level)."""
import numpy as np
import pytest
import torch
from osgeo import gdal

from conftest import fusebox_crop
from panadapter_qgis.backend.adapt import finetune_scene, ssdiff_scene
from panadapter_qgis.backend.errors import PansharpenError
from panadapter_qgis.backend.models.ssdiff import SSDiffSampler, create_model, diffusion_loss, noise_field
from panadapter_qgis.backend.models.ssdiff.diffusion import ALPHAS_CUMPROD, ddim_timesteps
from panadapter_qgis.backend.training.ssdiff import sampled_estimate, train_ssdiff


def _batch(bands=5, size=32, ratio=4, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    lms = torch.rand(n, bands, size, size, generator=g)
    return dict(gt=lms + 0.1 * torch.randn(n, bands, size, size, generator=g), lms=lms,
                pan=torch.rand(n, 1, size, size, generator=g),
                ms=torch.rand(n, bands, size // ratio, size // ratio, generator=g))


def test_untrained_network_predicts_the_lms():
    """Zero-initialised output layers: x0 = 0, so DDIM returns the upsampled MS exactly (any band count)."""
    b = _batch(bands=7, size=24, ratio=3)
    out = SSDiffSampler(create_model(7), steps=3)(b["ms"], b["lms"], b["pan"], 3, [(0, 0), (24, 0)])
    assert out.shape == b["lms"].shape
    assert torch.equal(out, b["lms"])


def test_cosine_schedule_and_ddim_timesteps():
    ab = ALPHAS_CUMPROD
    assert len(ab) == 1000 and ab[0] > 0.999 and ab[-1] < 1e-4
    assert bool((ab[1:] < ab[:-1]).all())
    assert ddim_timesteps(10)[0] == 999 and ddim_timesteps(10)[-1] == 0 and len(ddim_timesteps(10)) == 10
    assert ddim_timesteps(1) == [999]
    with pytest.raises(ValueError):
        ddim_timesteps(0)


def test_noise_is_anchored_to_scene_pixels():
    """The same pixel gets the same noise from any window; the values are standard normal."""
    a = noise_field(7, 3, 10, 20, 16, 16)
    b = noise_field(7, 3, 14, 25, 8, 8)
    assert torch.equal(a[:, 4:12, 5:13], b)
    assert not torch.equal(a, noise_field(8, 3, 10, 20, 16, 16))
    big = noise_field(0, 4, 0, 0, 256, 256).flatten()
    assert abs(float(big.mean())) < 0.01 and abs(float(big.std()) - 1) < 0.01
    assert abs(float((big > 1.96).float().mean()) - 0.025) < 0.003


def _grads(net, mode):
    net.set_trainable(("",))
    net.set_lbaf(mode)
    net.zero_grad()
    diffusion_loss(net, _batch()).backward()
    net.set_lbaf(None)
    return {n: (p.grad is not None and float(p.grad.abs().sum()) > 0) for n, p in net.named_parameters()}


def test_lbaf_detaches_the_other_branch_cross_term():
    """Spectral step: T^spa is detached, so the spatial attention key projection (T_b) gets no gradient; the
    spatial step detaches T^spe, so the spectral key projection (T_d) gets none. Without L-BAF both learn."""
    torch.manual_seed(0)
    net = create_model(5)
    for p in net.parameters():  # leave the zero initialisation, so every path carries a gradient
        torch.nn.init.normal_(p, std=0.05)
    full, spectral, spatial = _grads(net, None), _grads(net, "spectral"), _grads(net, "spatial")
    for i in range(5):
        assert full[f"apfm.{i}.sa2.weight"] and full[f"apfm.{i}.se2.weight"]
        assert not spectral[f"apfm.{i}.sa2.weight"] and spectral[f"apfm.{i}.se2.weight"]
        assert not spatial[f"apfm.{i}.se2.weight"] and spatial[f"apfm.{i}.sa2.weight"]


def test_lbaf_schedule_alternates_and_leaves_shared_modules_alone():
    torch.manual_seed(0)
    net = create_model(4)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    data = _batch(bands=4, size=16, ratio=2, n=2)
    result, trained, phases = train_ssdiff(net, lambda rng: data, 20, lbaf_switch=5, lr=1e-3)
    assert result.iterations == 20
    assert phases == [(0, "spectral"), (5, "spatial"), (10, "spectral"), (15, "spatial")]
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert not any(n.startswith(("down.", "up.", "time_mlp.", "in_emb.")) for n in changed)
    assert any(n.startswith("spa_blocks.") for n in changed) and any(".se1." in n for n in changed)
    assert changed <= trained


def test_ema_weights_are_what_training_leaves(monkeypatch):
    """After training, the network holds the moving average, not the last optimiser step."""
    from panadapter_qgis.backend.training import ssdiff as module

    torch.manual_seed(0)
    net = create_model(3)
    data = _batch(bands=3, size=16, ratio=2, n=2)
    last = {}
    original = module.EMA.copy_to

    def spy(self, target):
        last.update({n: p.detach().clone() for n, p in target.named_parameters()})
        original(self, target)
    monkeypatch.setattr(module.EMA, "copy_to", spy)
    train_ssdiff(net, lambda rng: data, 30, lr=1e-2)
    name = "spa_in.weight"
    final = dict(net.named_parameters())[name]
    assert not torch.equal(final, last[name])   # the EMA differs from the raw last step ...
    assert float((final - last[name]).abs().max()) < 0.2   # ... but follows it


@pytest.fixture(scope="module")
def crop(tmp_path_factory, data_dir):
    return fusebox_crop(data_dir, tmp_path_factory.mktemp("ssdiff_crop"), "scene_17", pan_size=192)


@pytest.fixture(scope="module")
def adapter(crop, tmp_path_factory):
    pan, ms = crop
    path = str(tmp_path_factory.mktemp("ssdiff_adapter") / "a.pt")
    # the diffusion loss alone: this adapter feeds the tile-loop tests (seed, seams, wrong model); the
    # full-resolution terms have their own test below
    card = finetune_scene(pan, ms, path, model="ssdiff", sensor=8, iterations=30, base_weights=None, patch=32,
                          batch=4, device="cpu", consistency=0.0)
    return path, card


def test_finetune_ssdiff_writes_an_ssdiff_adapter(adapter):
    path, card = adapter
    payload = torch.load(path, weights_only=True)
    assert payload["model"] == "ssdiff" and payload["bands"] == 4 and payload["ratio"] == 2
    # from random initialisation: half the iterations train everything, the rest is L-BAF
    assert card["stage_iterations"] == [15, 15] and card["lbaf_phases"] == 1
    assert card["sam_weight"] == 0.0   # SSDiff's default: no spectral-angle term (adapt.SAM_WEIGHT)


def test_sampled_estimate_is_a_chain_step_with_gradients_through_one_forward():
    """The full-resolution losses see LMS + x0 of one DDIM step: t drawn from the 10-step chain, the noisy input
    built from the network's own detached first estimate; gradients reach the weights through that step."""
    torch.manual_seed(0)
    net = create_model(5, "small")
    b = _batch(n=3)
    seen = []
    hook = net.register_forward_pre_hook(lambda m, args: seen.append(args[1].tolist()))
    fused = sampled_estimate(net, b["ms"], b["lms"], b["pan"])
    hook.remove()
    assert fused.shape == b["lms"].shape and fused.requires_grad
    assert seen[0] == [999, 999, 999] and set(seen[1]) <= set(ddim_timesteps(10))
    fused.abs().mean().backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.parameters())


def test_full_resolution_terms_change_what_ssdiff_learns(crop, tmp_path):
    """As for PanAdapter: consistency=0 is the diffusion loss alone; the spectral and D_s-like full-resolution
    terms each add to the first loss (same seed, same first batch); the card says which were used."""
    pan, ms = crop
    states, cards = [], []
    for consistency, spatial in ((0.0, 0.0), (1.0, 0.0), (1.0, 0.3)):
        out = str(tmp_path / f"c{consistency}_{spatial}.pt")
        cards.append(finetune_scene(pan, ms, out, model="ssdiff", sensor=8, iterations=2, base_weights=None,
                                    patch=32, batch=2, device="cpu", consistency=consistency, spatial=spatial))
        states.append(torch.load(out, weights_only=True)["state"])
    assert [(c["consistency"], c["spatial"]) for c in cards] == [(0.0, 0.0), (1.0, 0.0), (1.0, 0.3)]
    assert cards[0]["first_loss"] < cards[1]["first_loss"] < cards[2]["first_loss"]
    for a, b in ((0, 1), (1, 2)):
        assert any(not torch.equal(states[a][k], states[b][k]) for k in states[a])


def _run(crop, out, adapter, **kw):
    pan, ms = crop
    ssdiff_scene(pan, ms, str(out), adapter=adapter, sensor=8, float32=True, device="cpu", **kw)
    return gdal.Open(str(out)).ReadAsArray()


def test_same_seed_same_image_whatever_the_batch(adapter, crop, tmp_path):
    path, _ = adapter
    a = _run(crop, tmp_path / "a.tif", path, steps=3, seed=4, batch=8)
    b = _run(crop, tmp_path / "b.tif", path, steps=3, seed=4, batch=1)
    c = _run(crop, tmp_path / "c.tif", path, steps=3, seed=5)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    assert np.abs(a - c).mean() > 1e-3
    ds, pan = gdal.Open(str(tmp_path / "a.tif")), gdal.Open(crop[0])
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (192, 192, 4)
    assert ds.GetGeoTransform() == pan.GetGeoTransform()


def _column_profile(img, reference):
    """Mean |img - reference| per column, over its median: a seam is a column that stands out."""
    d = np.abs(img.astype(np.float64) - reference).mean((0, 1))
    return d / np.median(d)


def test_blending_leaves_no_seams(adapter, crop, tmp_path):
    """Against one tile covering the whole crop (no seam by construction): tiles of 32 PAN pixels cut hard
    (no overlap) differ most at their edges, columns 32, 64, ...; the same tiles blended over 8 pixels do not
    stand out at any column."""
    path, _ = adapter
    whole = _run(crop, tmp_path / "w.tif", path, steps=2, tile_size=192, overlap=0).astype(np.float64)
    plain = _column_profile(_run(crop, tmp_path / "p.tif", path, steps=2, tile_size=32, overlap=0), whole)
    blended = _column_profile(_run(crop, tmp_path / "b.tif", path, steps=2, tile_size=32, overlap=8), whole)
    edges = list(range(32, 192, 32))
    assert min(plain[e] for e in edges) > 2.5            # the measure sees hard tile edges ...
    assert blended.max() < 2.5 and blended.max() < 0.6 * plain.max()   # ... and finds none once blended


def test_ssdiff_refuses_a_panadapter_adapter(crop, tmp_path):
    pan, ms = crop
    other = str(tmp_path / "pa.pt")
    finetune_scene(pan, ms, other, model="panadapter", sensor=8, iterations=2, base_weights=None, device="cpu")
    with pytest.raises(PansharpenError, match="made for PanAdapter"):
        ssdiff_scene(pan, ms, str(tmp_path / "x.tif"), adapter=other, device="cpu")
    assert not (tmp_path / "x.tif").exists()


def test_weights_of_another_band_count_start_every_band_from_their_mean(tmp_path):
    """6-band weights loaded into an 8-band network (as scene adaptation does): the shared layers are
    copied, and each new band's input weights are the mean band's, rescaled so that the sum over bands is
    kept: a band-uniform input gives the same first features as in the 6-band network."""
    from panadapter_qgis.backend.adapt import _load_base

    torch.manual_seed(0)
    six, eight = create_model(6), create_model(8)
    for p in six.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "six.pt"
    torch.save({"model": six.state_dict()}, path)
    _load_base(eight, str(path))
    assert torch.equal(eight.apfm[2].se1.weight, six.apfm[2].se1.weight)
    x6, x8, pan = torch.full((1, 6, 8, 8), 0.3), torch.full((1, 8, 8, 8), 0.3), torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(eight.spa_in(torch.cat([x8, pan], 1)), six.spa_in(torch.cat([x6, pan], 1)))
        torch.testing.assert_close(eight.spe_in(torch.cat([x8, x8], 1)), six.spe_in(torch.cat([x6, x6], 1)))
    torch.testing.assert_close(eight.to_hrms.weight[3], six.to_hrms.weight.mean(0))
