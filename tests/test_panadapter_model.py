"""PanAdapter modules: shapes for any band count and ratio, the zero-initialised injector, the parameter
groups of the two stages, and loading official EDSR/IPT files by key and shape."""
import pytest
import torch

from panadapter_qgis.backend.models.panadapter import PRESETS, create_model
from panadapter_qgis.backend.models.panadapter.official import load_official


def _inputs(bands, ratio, size=32, batch=2):
    torch.manual_seed(0)
    ms = torch.rand(batch, bands, size // ratio, size // ratio)
    lms = torch.nn.functional.interpolate(ms, scale_factor=ratio, mode="bilinear", align_corners=False)
    return ms, lms, torch.rand(batch, 1, size, size)


@pytest.mark.parametrize("bands, ratio", [(3, 2), (4, 4), (8, 4), (6, 2), (4, 3)])
@pytest.mark.parametrize("stage", [1, 2])
def test_any_band_count_and_ratio(bands, ratio, stage):
    model = create_model(bands).eval()
    size = 48 if ratio == 3 else 32
    ms, lms, pan = _inputs(bands, ratio, size)
    with torch.no_grad():
        out = model(ms, lms, pan, ratio, stage=stage)
    assert out.shape == lms.shape and torch.isfinite(out).all()


def test_untrained_injector_leaves_the_vit_unchanged():
    """CTI's scale starts at 0: adding adapters to a frozen ViT does not change its tokens at first."""
    model = create_model(4).eval()
    tokens = torch.rand(1, 64, model.config.vit_dim)
    spa = torch.rand(1, 64, model.config.adapter_k)
    spe = torch.rand(1, 64, model.config.adapter_k)
    out, spa2, spe2 = model.adapters[0](tokens, spa, spe)
    assert torch.equal(out, tokens)
    assert not torch.equal(spa2, spa) and not torch.equal(spe2, spe)


def test_parameter_groups_of_the_two_stages():
    model = create_model(8)
    stage1 = {n for n, p in model.named_parameters() if n.startswith(model.STAGE1)}
    stage2 = {n for n, p in model.named_parameters() if n.startswith(model.STAGE2)}
    assert stage1 and stage2 and not stage1 & stage2
    assert not any(n.startswith("vit.") for n in stage1 | stage2)  # the ViT stays frozen
    trainable = model.set_trainable(model.ADAPT)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < sum(p.numel() for p in trainable) < 0.2 * total
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith(("vit.", "sspen.")))


def test_stage2_gradients_reach_only_the_trainable_parameters():
    model = create_model(4)
    model.set_trainable(model.STAGE2)
    ms, lms, pan = _inputs(4, 4)
    model(ms, lms, pan, 4).abs().mean().backward()
    for name, p in model.named_parameters():
        if name.startswith(model.STAGE2):
            assert p.grad is not None, name
        else:
            assert p.grad is None, name


def test_paper_preset_has_the_paper_scale():
    cfg = PRESETS["paper"]
    assert (cfg.vit_dim, cfg.vit_heads, cfg.vit_layers, cfg.adapter_k, cfg.cnn_blocks, cfg.cnn_feats) == \
        (576, 12, 12, 96, 16, 64)
    n_adapters = 2 * cfg.vit_layers // cfg.adapter_every
    assert n_adapters == 6


def _fake_edsr(feats, blocks):
    """A state dict with the keys and shapes of EDSR-PyTorch's edsr_baseline_x2 (n_colors 3)."""
    state = {"sub_mean.weight": torch.rand(3, 3, 1, 1), "head.0.weight": torch.rand(feats, 3, 3, 3),
             "head.0.bias": torch.rand(feats), "tail.0.0.weight": torch.rand(4 * feats, feats, 3, 3)}
    for i in range(blocks):
        for j in (0, 2):
            state[f"body.{i}.body.{j}.weight"] = torch.rand(feats, feats, 3, 3)
            state[f"body.{i}.body.{j}.bias"] = torch.rand(feats)
    state[f"body.{blocks}.weight"] = torch.rand(feats, feats, 3, 3)
    state[f"body.{blocks}.bias"] = torch.rand(feats)
    return state


def _fake_ipt(dim, layers, hidden, grid):
    """Keys and shapes of IPT_pretrain.pt's ``body`` (bias-free attention, pre-norm layers) plus a head."""
    state = {"body.linear_encoding.weight": torch.rand(dim, dim), "body.linear_encoding.bias": torch.rand(dim),
             "body.position_encoding.pe.weight": torch.rand(grid * grid, dim),
             "body.query_embed.weight": torch.rand(6, dim * grid * grid),  # IPT has 6 task queries
             "body.mlp_head.0.weight": torch.rand(hidden, dim), "body.mlp_head.0.bias": torch.rand(hidden),
             "body.mlp_head.3.weight": torch.rand(dim, hidden), "body.mlp_head.3.bias": torch.rand(dim),
             "head.0.0.weight": torch.rand(64, 3, 3, 3)}
    for part, attns, norms in (("encoder", ("self_attn",), 2), ("decoder", ("self_attn", "multihead_attn"), 3)):
        for i in range(layers):
            p = f"body.{part}.layers.{i}."
            for a in attns:
                state[p + a + ".in_proj_weight"] = torch.rand(3 * dim, dim)
                state[p + a + ".out_proj.weight"] = torch.rand(dim, dim)
            state[p + "linear1.weight"], state[p + "linear1.bias"] = torch.rand(hidden, dim), torch.rand(hidden)
            state[p + "linear2.weight"], state[p + "linear2.bias"] = torch.rand(dim, hidden), torch.rand(dim)
            for n in range(1, norms + 1):
                state[p + f"norm{n}.weight"], state[p + f"norm{n}.bias"] = torch.rand(dim), torch.rand(dim)
    return state


def test_official_files_load_by_key_and_shape(tmp_path):
    cfg = PRESETS["small"]
    model = create_model(8)
    edsr, ipt = tmp_path / "edsr_baseline_x2.pt", tmp_path / "IPT_pretrain.pt"
    edsr_state = _fake_edsr(cfg.cnn_feats, cfg.cnn_blocks)
    ipt_state = _fake_ipt(cfg.vit_dim, cfg.vit_layers, cfg.vit_hidden, cfg.grid)
    ipt_state["body.query_embed.weight"] = torch.rand(1, cfg.vit_dim * cfg.grid ** 2)
    torch.save(edsr_state, edsr)
    torch.save({"state_dict": ipt_state}, ipt)
    report = load_official(model, str(edsr), str(ipt))
    own = model.state_dict()
    for branch in ("spectral", "spatial"):
        assert torch.equal(own[f"sspen.{branch}.cnn.body.0.body.2.weight"], edsr_state["body.0.body.2.weight"])
    assert torch.equal(own["vit.decoder.layers.1.multihead_attn.in_proj_weight"],
                       ipt_state["body.decoder.layers.1.multihead_attn.in_proj_weight"])
    assert torch.equal(own["vit.position_encoding.pe.weight"], ipt_state["body.position_encoding.pe.weight"])
    # every backbone tensor of the small model came from the files; the heads had no counterpart
    vit_keys = [k for k in own if k.startswith("vit.")]
    assert set(vit_keys) <= set(report["loaded"])
    assert len([k for k in report["loaded"] if k.startswith("sspen.")]) == 2 * (4 * cfg.cnn_blocks + 2)
    assert not any(k.startswith(("head.", "tail.", "sub_mean")) for k in report["loaded"])


@pytest.mark.parametrize("preset,stage", [("small", 1), ("small", 2), ("universal", 2), ("fast", 2)])
def test_cropping_inside_the_model_gives_the_cropped_output(preset, stage):
    """``crop`` (issue 29): the per-pixel tails run only on the kept pixels, and the result is exactly the
    output cropped afterwards (the tails see one pixel at a time)."""
    torch.manual_seed(0)
    net = create_model(4, preset).eval()
    for p in net.parameters():    # non-zero tails, so the check is not about zeros
        p.data.add_(0.01 * torch.randn_like(p))
    ms, pan = torch.rand(1, 4, 24, 24), torch.rand(1, 1, 96, 96)
    lms = torch.nn.functional.interpolate(ms, scale_factor=4, mode="bicubic", align_corners=False)
    extra = {"base": lms + 0.01} if net.universal else {}
    with torch.no_grad():
        full = net(ms, lms, pan, 4, stage=stage, **extra)
        cropped = net(ms, lms, pan, 4, stage=stage, crop=16, **extra)
    assert cropped.shape[-2:] == (64, 64)
    torch.testing.assert_close(cropped, full[..., 16:-16, 16:-16], rtol=1e-5, atol=1e-5)


def test_inference_shortcuts_give_the_same_pixels():
    """Issue 29: the per-pixel tails evaluated by chunks of rows in inference (``inr.by_rows``, activations in the
    cache) give what the whole batch gives, and the band-set convolution on the band mean of its inputs gives
    the mean of its per-band convolutions (it is linear)."""
    from panadapter_qgis.backend.models.panadapter import cnn, inr

    torch.manual_seed(0)
    band_tail, siren = inr.BandTail(10, 3, 16).eval(), inr.SirenTail(10, 32, 5).eval()
    for tail in (band_tail, siren):
        for p in tail.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    shared, own = torch.rand(2, 10, 40, 24), torch.rand(2, 5, 3, 40, 24)
    with torch.no_grad():
        whole = band_tail(shared, own), siren(shared)
        saved, inr.CHUNK = inr.CHUNK, 2000     # a few rows at a time
        try:
            chunked = band_tail(shared, own), siren(shared)
        finally:
            inr.CHUNK = saved
    for a, b in zip(whole, chunked):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)

    setconv = cnn.SetConv(3, 8)
    x = torch.rand(2, 6, 3, 20, 20)
    per_band = setconv.conv(x.reshape(12, 3, 20, 20)).reshape(2, 6, 8, 20, 20).mean(1)
    with torch.no_grad():
        torch.testing.assert_close(setconv(x), per_band, rtol=1e-5, atol=1e-6)
