"""The toolbox filters and the interpolator: closed-form properties that a shift or a wrong gain breaks."""
import numpy as np
import pytest
import torch

from panadapter_qgis.backend import mtf


def _response(kernel_1d, freq):
    t = np.arange(len(kernel_1d)) - (len(kernel_1d) - 1) / 2
    return float(np.sum(kernel_1d * np.cos(2 * np.pi * freq * t)))


@pytest.mark.parametrize("gnyq", [0.15, 0.22, 0.3, 0.365])
@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_mtf_gain_at_ms_nyquist(gnyq, ratio):
    """genMTF.m: unit DC gain and amplitude GNyq at the MS Nyquist frequency. The toolbox places it on its
    41-point frequency grid at bin (N-1)/(2 ratio), i.e. (N-1)/(2 ratio N) cycles per pixel."""
    k2d = mtf.mtf_kernel_2d(gnyq, ratio)
    assert k2d.shape == (41, 41)
    assert k2d.sum() == pytest.approx(1.0, abs=1e-12)
    k = mtf.mtf_kernel_1d(gnyq, ratio)
    assert _response(k, 0.0) == pytest.approx(1.0, abs=1e-9)
    assert _response(k, 40 / (2 * ratio * 41)) == pytest.approx(gnyq, abs=0.005)
    assert _response(k, 1 / (2 * ratio)) < gnyq


def test_separable_factor_is_faithful_to_the_2d_design():
    for gnyq in (0.11, 0.3, 0.365):
        for ratio in (2, 4):
            assert mtf.separable_factor(mtf.mtf_kernel_2d(gnyq, ratio))[1] < 1e-3
    assert mtf.separable_factor(mtf.lpfilter_gauss_kernel_2d(4))[1] < 1e-3


def test_cdf23_is_the_toolbox_half_band_filter():
    h = mtf.cdf23_kernel()
    assert len(h) == 23 and np.allclose(h, h[::-1])
    assert h.sum() == pytest.approx(2.0, abs=1e-9)
    assert h[11] == 1.0
    assert all(h[11 + d] == 0 for d in (2, 4, 6, 8, 10))  # half-band: the original samples pass unchanged


@pytest.mark.parametrize("ratio", [2, 3, 4, 6])
def test_upsample_preserves_constants(ratio):
    x = torch.full((1, 2, 12, 9), 7.5, dtype=torch.float64)
    assert torch.allclose(mtf.upsample_image(x, ratio), torch.tensor(7.5, dtype=torch.float64))


def _upsample_by_definition(x, ratio, halo):
    """out[p] = sum_i ms[i] K[p - r i - m_min] on each axis, summed pixel by pixel in numpy."""
    k, m_min = mtf.interp_kernel(ratio)
    x = x.numpy()
    h, w = x.shape[2] - 2 * halo, x.shape[3] - 2 * halo

    def weights(n_out, n_in):
        m = np.zeros((n_out, n_in))
        for p in range(n_out):
            for i in range(-halo, n_in - halo):
                t = p - ratio * i - m_min
                if 0 <= t < len(k):
                    m[p, i + halo] = k[t]
        return m
    rows, cols = weights(ratio * h, h + 2 * halo), weights(ratio * w, w + 2 * halo)
    return np.einsum("pi,bcij,qj->bcpq", rows, x, cols)


@pytest.mark.parametrize("ratio", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("shape", [(1, 1), (7, 70), (37, 19)])
def test_upsample_is_the_polyphase_definition(ratio, shape):
    """The block matrix products give the interpolator's sums, whatever the size (partial last blocks)."""
    halo = mtf.interp_halo(ratio)
    x = torch.rand(2, 3, shape[0] + 2 * halo, shape[1] + 2 * halo, dtype=torch.float64,
                   generator=torch.Generator().manual_seed(ratio))
    out = mtf.upsample(x, ratio, halo)
    assert out.shape == (2, 3, ratio * shape[0], ratio * shape[1])
    np.testing.assert_allclose(out.numpy(), _upsample_by_definition(x, ratio, halo), rtol=0, atol=1e-12)
    # a narrower halo: the MS pixels beyond it count as zeros
    narrow = mtf.upsample(x[:, :, 2:-2, 2:-2], ratio, halo - 2)
    zeroed = x.clone()
    zeroed[:, :, :2], zeroed[:, :, -2:], zeroed[:, :, :, :2], zeroed[:, :, :, -2:] = 0, 0, 0, 0
    np.testing.assert_allclose(narrow.numpy(), _upsample_by_definition(zeroed, ratio, halo), rtol=0, atol=1e-12)


def _correlate_by_definition(x, kernels, stride, offset):
    x = x.numpy()[:, :, offset:, offset:]
    kernels = np.atleast_2d(kernels)
    length = kernels.shape[1]
    n_out = kernels.shape[0] if kernels.shape[0] > 1 else x.shape[1]
    rows = (x.shape[2] - length) // stride + 1
    cols = (x.shape[3] - length) // stride + 1
    out = np.zeros((x.shape[0], n_out, rows, cols))
    for ch in range(n_out):
        k = kernels[ch if kernels.shape[0] > 1 else 0]
        src = x[:, 0 if x.shape[1] == 1 else ch]
        for i in range(rows):
            for j in range(cols):
                patch = src[:, i * stride:i * stride + length, j * stride:j * stride + length]
                out[:, ch, i, j] = np.einsum("bij,i,j->b", patch, k, k)
    return out


@pytest.mark.parametrize("channels, n_kernels", [(3, 1), (3, 3), (1, 3)])
@pytest.mark.parametrize("stride, offset", [(1, 0), (1, 2), (4, 3)])
@pytest.mark.parametrize("batch", [1, 2])
def test_filter_valid_is_the_separable_correlation(channels, n_kernels, stride, offset, batch):
    """One shared kernel, one per channel, or one channel through several kernels; plain or decimating."""
    kernels = [mtf.mtf_kernel_1d(g, 4) for g in (0.29, 0.3, 0.36)][:n_kernels]
    kernels = kernels[0] if n_kernels == 1 else kernels
    x = torch.rand(batch, channels, 41 + 70 + offset, 41 + 9 + offset, dtype=torch.float64,
                   generator=torch.Generator().manual_seed(stride))
    out = mtf.filter_valid(x, kernels, stride=stride, offset=offset)
    expected = _correlate_by_definition(x, kernels, stride, offset)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_degrade_then_upsample_a_ramp_is_shift_free(ratio):
    """MS pixel i sits at the centre of its ratio x ratio PAN block: a ramp survives a degradation and an
    interpolation exactly (a half-pixel convention error would shift it by (ratio-1)/2 pixels)."""
    n = 48 * ratio
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    ramp = torch.tensor(0.3 * xx + 0.7 * yy)[None, None]
    lr = mtf.degrade_image(ramp, mtf.mtf_kernel_1d(0.3, ratio), ratio)
    centre = (ratio - 1) / 2
    i = np.arange(n // ratio) * ratio + centre
    expected = 0.3 * i[None, :] + 0.7 * i[:, None]
    m = 12  # away from the replicated borders
    assert np.allclose(lr[0, 0, m:-m, m:-m].numpy(), expected[m:-m, m:-m], atol=1e-9)
    up = mtf.upsample_image(lr, ratio)
    b = m * ratio
    assert np.allclose(up[0, 0, b:-b, b:-b].numpy(), ramp[0, 0, b:-b, b:-b].numpy(), atol=1e-6)


def test_atrous_lowpass_kernel():
    k = mtf.atrous_lowpass_kernel_1d(4)
    assert k.sum() == pytest.approx(1.0) and np.allclose(k, k[::-1])
    assert len(k) == 1 + 4 + 8  # levels 1 and 2 of the B3 spline


def test_bicubic_decimation_matches_imresize_weights_for_ratio_2():
    """imresize(x, 1/2) bicubic with antialiasing: kernel taps at +-0.25, 0.75, 1.25, 1.75 of the
    stretched Keys cubic."""
    k = mtf.bicubic_decimation_kernel_1d(2)
    t = np.abs(np.arange(8) - 3.5) / 2
    keys = np.where(t <= 1, 1.5 * t**3 - 2.5 * t**2 + 1, -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2)
    assert np.allclose(k, keys / keys.sum())


def test_wald_degrade_shapes_and_mean():
    torch.manual_seed(0)
    pan = torch.rand(1, 1, 64, 64, dtype=torch.float64) + 1
    ms = torch.rand(1, 4, 16, 16, dtype=torch.float64) + 1
    pan_lr, ms_lr = mtf.wald_degrade(pan, ms, 4, [0.34, 0.32, 0.3, 0.22], 0.15)
    assert pan_lr.shape == (1, 1, 16, 16) and ms_lr.shape == (1, 4, 4, 4)
    assert float(pan_lr.mean()) == pytest.approx(float(pan.mean()), rel=0.02)
    pan_bc, _ = mtf.wald_degrade(pan, ms, 4, [0.3] * 4, 0.15, pan_mode="bicubic")
    assert pan_bc.shape == (1, 1, 16, 16)
    with pytest.raises(ValueError):
        mtf.wald_degrade(pan, ms, 4, [0.3] * 4, 0.15, pan_mode="nearest")
