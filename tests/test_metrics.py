"""Quality indices (backend/metrics.py) against hand-computed values, independent implementations and a real scene.

Pure pytest: no qgis. The reference implementations here are written differently from the module on
purpose (explicit loops, tuples, scipy), following the toolbox's MATLAB files (METHODS.md §3.2-3.3).
"""
from math import ceil, log2
from pathlib import Path

import numpy as np
import pytest

from panadapter_qgis.backend import metrics as M
from panadapter_qgis.backend.errors import PansharpenError

EPS = np.finfo(np.float64).eps
WV3_SCENE = Path("/work/shared/data/pansharpening/wv3_cristianics")
WV3_GAINS = (0.325, 0.355, 0.360, 0.350, 0.365, 0.360, 0.335, 0.315)


def noisy_pair(bands=8, rows=96, cols=80, sigma=40.0, seed=0):
    """A smooth 11-bit-like reference and a noisy copy, (C, H, W)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = np.stack([600 + 300 * np.sin(xx / (7 + b)) * np.cos(yy / (5 + b)) + 40 * b for b in range(bands)])
    ref = base + rng.uniform(0, 200, base.shape)
    fus = ref + rng.normal(0, sigma, base.shape)
    return ref, fus


# ----------------------------------------------------------------------------------------------------------
# Border cut and uint16 cast

def test_cut_border_keeps_matlab_rows_21_to_end_minus_21():
    x = np.arange(2 * 256 * 100, dtype=float).reshape(2, 256, 100)
    cut = M.cut_border(x, 21)
    # MATLAB I(21:end-21): 1-based rows 21..235 -> 0-based 20..234, 215 rows (20 off the top, 21 off the bottom)
    assert cut.shape == (2, 215, 59)
    assert cut[1, 0, 0] == x[1, 20, 20]
    assert cut[1, -1, -1] == x[1, 234, 78]
    assert M.cut_border(x, 0).shape == x.shape
    with pytest.raises(PansharpenError):
        M.cut_border(x[:, :40], 21)


def test_mismatched_images_are_refused_with_a_sentence():
    with pytest.raises(PansharpenError, match="same shape"):
        M.sam(np.ones((3, 8, 8)), np.ones((4, 8, 8)))
    with pytest.raises(PansharpenError, match="multiples of the block size"):
        M.d_s(np.ones((3, 40, 64)), np.ones((3, 40, 64)), np.ones((40, 64)), np.ones((40, 64)))


def test_uint16_cast_rounds_half_away_from_zero_and_saturates_like_matlab():
    values = np.array([-3.0, -0.5, 0.49, 0.5, 1.5, 2.5, 2.4999, 65534.5, 65535.4, 70000.0, np.nan, np.inf])
    expected = np.array([0, 0, 0, 1, 2, 3, 2, 65535, 65535, 65535, 0, 65535], dtype=float)
    np.testing.assert_array_equal(M.to_uint16_matlab(values), expected)


# ----------------------------------------------------------------------------------------------------------
# Identities

@pytest.mark.parametrize("bands", [1, 3, 4, 8])
def test_reference_against_itself_is_perfect(bands):
    ref, _ = noisy_pair(bands=bands, rows=70, cols=90)
    assert M.sam(ref, ref) == pytest.approx(0.0, abs=1e-6)
    assert M.ergas(ref, ref, 4) == 0.0
    assert M.q2n(ref, ref) == pytest.approx(1.0, abs=1e-12)
    assert M.q2n(ref / 2047.0, ref / 2047.0, cast_uint16=False) == pytest.approx(1.0, abs=1e-12)
    assert M.q_avg(ref, ref) == pytest.approx(1.0, abs=1e-12)
    assert M.scc(ref, ref) == pytest.approx(1.0, abs=1e-12)
    assert M.psnr(ref, ref, 2047.0) == np.inf


def test_constant_and_nodata_blocks_of_identical_images_score_one():
    ref, _ = noisy_pair(bands=8, rows=64, cols=96)
    ref[:, :32, :32] = 0.0  # no-data block: every band zero
    ref[:, 32:, 64:] = 700.0  # saturated block: every band constant
    assert M.q2n(ref, ref) == pytest.approx(1.0, abs=1e-12)
    assert M.q2n(ref * 1e-3, ref * 1e-3, cast_uint16=False) == pytest.approx(1.0, abs=1e-12)
    assert M.q_avg(ref * 1e-3, ref * 1e-3) == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# SAM

def test_sam_of_known_two_band_vectors():
    # pixels: (1,0)|(1,1) -> 45 deg, (1,0)|(0,2) -> 90 deg, (3,4)|(6,8) -> 0 deg, (1,1)|(0,0) excluded
    ref = np.array([[[1.0, 1.0], [3.0, 1.0]], [[0.0, 0.0], [4.0, 1.0]]])
    fus = np.array([[[1.0, 0.0], [6.0, 0.0]], [[1.0, 2.0], [8.0, 0.0]]])
    assert M.sam(ref, fus) == pytest.approx((45.0 + 90.0 + 0.0) / 3.0, abs=1e-12)


def test_sam_ignores_a_positive_scale_and_is_symmetric():
    ref, fus = noisy_pair()
    assert M.sam(ref, 3.7 * fus) == pytest.approx(M.sam(ref, fus), rel=1e-12)
    assert M.sam(fus, ref) == pytest.approx(M.sam(ref, fus), rel=1e-12)


# ----------------------------------------------------------------------------------------------------------
# ERGAS

def test_ergas_of_a_constant_offset_by_hand():
    rng = np.random.default_rng(1)
    ref = np.stack([100 + rng.normal(0, 5, (16, 16)), 200 + rng.normal(0, 5, (16, 16))])
    ref -= ref.mean(axis=(1, 2), keepdims=True) - np.array([100.0, 200.0])[:, None, None]  # means exactly 100, 200
    fus = ref + 10.0
    expected = (100 / 4) * np.sqrt(((10 / 100) ** 2 + (10 / 200) ** 2) / 2)
    assert M.ergas(ref, fus, 4) == pytest.approx(expected, rel=1e-12)
    assert M.ergas(ref, fus, 2) == pytest.approx(2 * expected, rel=1e-12)


def test_ergas_is_normalised_by_the_reference_means():
    ref, fus = noisy_pair(bands=4)
    # same errors, reference twice as bright: each band's relative error halves, so ERGAS halves
    shift = ref.mean(axis=(1, 2), keepdims=True)
    assert M.ergas(ref + shift, fus + shift, 4) == pytest.approx(M.ergas(ref, fus, 4) / 2, rel=1e-12)
    # a common scale changes nothing; swapping the arguments does (the normalisation is the reference's)
    assert M.ergas(5 * ref, 5 * fus, 4) == pytest.approx(M.ergas(ref, fus, 4), rel=1e-12)
    assert M.ergas(fus, ref, 4) != pytest.approx(M.ergas(ref, fus, 4), rel=1e-6)


# ----------------------------------------------------------------------------------------------------------
# PSNR

def test_psnr_by_hand():
    ref = np.zeros((2, 8, 8))
    fus = np.stack([np.full((8, 8), 0.1), np.full((8, 8), 0.01)])
    assert M.psnr(ref, fus, 1.0) == pytest.approx((20.0 + 40.0) / 2, rel=1e-12)
    assert M.psnr(ref * 2047, fus * 2047, 2047.0) == pytest.approx(30.0, rel=1e-12)


# ----------------------------------------------------------------------------------------------------------
# Q (sliding windows)

def uiqi(a, b):
    c = np.cov(a.ravel(), b.ravel())
    ma, mb = a.mean(), b.mean()
    return 4 * c[0, 1] * ma * mb / ((c[0, 0] + c[1, 1]) * (ma ** 2 + mb ** 2))


def test_q_of_an_offset_checkerboard_by_hand():
    x = np.where((np.add.outer(np.arange(32), np.arange(32)) % 2) == 0, 10.0, 20.0)
    # y = x + 5: equal variances and covariance, so Q = 2 mx my / (mx^2 + my^2) = 2*15*20 / (15^2 + 20^2)
    assert M.q_index(x, x + 5) == pytest.approx(600 / 625, rel=1e-12)
    # constant windows (img_qi.m's special case): 2 mx my / (mx^2 + my^2)
    assert M.q_index(np.full((32, 32), 10.0), np.full((32, 32), 20.0)) == pytest.approx(0.8, rel=1e-12)
    assert M.q_index(np.zeros((32, 32)), np.zeros((32, 32))) == 1.0


def test_q_slides_a_32_window_and_is_symmetric():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 100, (40, 45))
    y = x + rng.normal(0, 10, x.shape)
    brute = np.mean([uiqi(x[r:r + 32, c:c + 32], y[r:r + 32, c:c + 32]) for r in range(9) for c in range(14)])
    assert M.q_index(x, y) == pytest.approx(brute, rel=1e-10)
    assert M.q_index(y, x) == pytest.approx(M.q_index(x, y), rel=1e-12)
    ref, fus = noisy_pair(bands=3, rows=40, cols=36)
    assert M.q_avg(ref, fus) == pytest.approx(np.mean([M.q_index(ref[b], fus[b]) for b in range(3)]), rel=1e-12)


# ----------------------------------------------------------------------------------------------------------
# Hypercomplex product and Q2n against an independent implementation

def conj(t):
    return (t[0],) + tuple(-v for v in t[1:])


def cd_product(x, y):
    """Cayley-Dickson product on tuples, with onion_mult.m's doubling (a,b)(c,d) = (ac - d*b, a*d* + cb*).

    The entries can be floats or per-pixel numpy arrays.
    """
    if len(x) == 1:
        return (x[0] * y[0],)
    h = len(x) // 2
    a, b, c, d = x[:h], x[h:], y[:h], y[h:]
    first = tuple(p - q for p, q in zip(cd_product(a, c), cd_product(conj(d), b)))
    second = tuple(p + q for p, q in zip(cd_product(conj(a), conj(d)), cd_product(c, conj(b))))
    return first + second


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_vectorised_hypercomplex_product_matches_the_recursive_one(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        x, y = rng.normal(size=n), rng.normal(size=n)
        np.testing.assert_allclose(M.hypercomplex_product(x, y), cd_product(tuple(x), tuple(y)), atol=1e-12)
        if n <= 8:  # composition algebras: the norm is multiplicative up to the octonions
            assert np.linalg.norm(M.hypercomplex_product(x, y)) == pytest.approx(
                np.linalg.norm(x) * np.linalg.norm(y), rel=1e-12)
    if n == 2:
        np.testing.assert_allclose(M.hypercomplex_product([1, 2], [3, 4]), [-5, 10])  # (1+2i)(3+4i)


def onions_quality_reference(r, f):
    """|q| of one block, as onions_quality.m: r, f (N, b, b) with N a power of two."""
    n_bands, n = r.shape[0], r[0].size
    x, y = [], []
    for i in range(n_bands):
        s = r[i].mean()
        t = r[i].std(ddof=1)
        if t == 0:
            t = EPS
        x.append((r[i] - s) / t + 1)
        yi = f[i] - s + 1 if s == 0 else (f[i] - s) / t + 1
        y.append(yi if i == 0 else -yi)
    m1 = np.array([v.mean() for v in x])
    m2 = np.array([v.mean() for v in y])
    unbias = n / (n - 1)
    var_sum = unbias * (np.mean(sum(v ** 2 for v in x)) + np.mean(sum(v ** 2 for v in y))) \
        - unbias * (m1 @ m1 + m2 @ m2)
    mean_bias = 2 * np.linalg.norm(m1) * np.linalg.norm(m2) / (m1 @ m1 + m2 @ m2)
    if var_sum == 0:
        return abs(mean_bias)
    qu = cd_product(tuple(x), tuple(y))
    qm = cd_product(tuple(m1), tuple(m2))
    q = np.array([unbias * u.mean() - unbias * v for u, v in zip(qu, qm)]) * mean_bias * 2 / var_sum
    return np.linalg.norm(q)


def q2n_reference(ref, fus, block=32, cast=True):
    """q2n.m block by block: MATLAB mirror indices, uint16 cast, zero bands up to a power of two."""
    c, h, w = ref.shape
    est1, est2 = ceil(h / block) * block - h, ceil(w / block) * block - w
    cols = np.r_[np.arange(w), w - 1 - np.arange(est2)]  # ia(:, N2+1:N2+est2) = ia(:, N2:-1:N2-est2+1)
    rows = np.r_[np.arange(h), h - 1 - np.arange(est1)]
    ref, fus = ref[:, :, cols][:, rows], fus[:, :, cols][:, rows]
    if cast:
        ref = np.clip(np.floor(np.nan_to_num(ref) + 0.5), 0, 65535)
        fus = np.clip(np.floor(np.nan_to_num(fus) + 0.5), 0, 65535)
    n_bands = 2 ** ceil(log2(c)) if c > 1 else 1
    zeros = np.zeros((n_bands - c,) + ref.shape[1:])
    ref, fus = np.concatenate([ref, zeros]), np.concatenate([fus, zeros])
    q_map = np.zeros((ref.shape[1] // block, ref.shape[2] // block))
    for j in range(q_map.shape[0]):
        for i in range(q_map.shape[1]):
            win = (slice(None), slice(j * block, (j + 1) * block), slice(i * block, (i + 1) * block))
            q_map[j, i] = onions_quality_reference(ref[win], fus[win])
    return q_map.mean(), q_map


@pytest.mark.parametrize("bands", [3, 4, 8])
@pytest.mark.parametrize("cast", [True, False])
def test_q2n_matches_the_block_by_block_reference(bands, cast):
    # 70 rows: the last block row has 6 rows and mirrors 26, reaching back into the previous block row
    ref, fus = noisy_pair(bands=bands, rows=70, cols=100, sigma=60, seed=bands)
    if not cast:
        ref, fus = ref / 2047.0, fus / 2047.0
    value, q_map = M.q2n(ref, fus, cast_uint16=cast, return_map=True)
    expected_value, expected_map = q2n_reference(ref, fus, cast=cast)
    assert q_map.shape == (3, 4)
    np.testing.assert_allclose(q_map, expected_map, atol=1e-6)
    assert value == pytest.approx(expected_value, abs=1e-6)


def test_q2n_special_blocks_match_the_reference():
    ref, fus = noisy_pair(bands=4, rows=64, cols=96, sigma=60, seed=7)
    ref, fus = np.round(ref), np.round(fus)
    ref[:, :32, :32] = 0.0
    fus[:, :32, :32] = 0.0            # both zero: vx + vy = 0 -> q = mean term = 1
    ref[:, 32:, :32] = 500.0          # constant reference (std -> eps), varying fused
    ref[2, :32, 32:64] = 0.0          # one zero band (mean 0): shifted, not divided
    ref[:, 32:, 64:] = 300.0
    fus[:, 32:, 64:] = 300.0          # identical constant blocks
    value, q_map = M.q2n(ref, fus, return_map=True)
    expected_value, expected_map = q2n_reference(ref, fus)
    np.testing.assert_allclose(q_map, expected_map, atol=1e-6)
    assert q_map[0, 0] == 1.0 and q_map[1, 2] == 1.0


def test_q2n_one_band_offset_checkerboard_by_hand():
    r = np.where((np.add.outer(np.arange(32), np.arange(32)) % 2) == 0, 10.0, 20.0)[None]
    # normalised x = (r - 15)/t + 1 has mean 1; y = x + 5/t with t the (n-1) std: Q = 2 m1 m2 / (m1^2 + m2^2)
    t = np.std(r, ddof=1)
    m2 = 1 + 5 / t
    assert M.q2n(r, r + 5) == pytest.approx(2 * m2 / (1 + m2 ** 2), rel=1e-12)
    # constant reference (std -> eps) against another constant: only the mean term is left
    y = (50.0 - 100.0) / EPS + 1
    assert M.q2n(np.full((1, 32, 32), 100.0), np.full((1, 32, 32), 50.0)) == pytest.approx(
        2 * abs(y) / (1 + y ** 2), rel=1e-12)


def test_q2n_decreases_with_noise_and_rejects_bad_shift():
    ref, _ = noisy_pair(bands=4, rows=64, cols=64)
    rng = np.random.default_rng(3)
    noise = rng.normal(size=ref.shape)
    values = [M.q2n(ref, ref + s * noise) for s in (5, 20, 80)]
    assert values[0] > values[1] > values[2]
    with pytest.raises(PansharpenError):
        M.q2n(ref, ref, block=32, shift=64)


# ----------------------------------------------------------------------------------------------------------
# SCC

def test_scc_of_two_tiny_images_by_hand():
    # 4x4 images: only the 2x2 interior counts; its gradients see zeros around it (MATLAB imfilter padding).
    # interior [[1,0],[0,0]] -> |grad| = [[0,2],[2,sqrt2]]; interior [[0,0],[0,1]] -> [[sqrt2,2],[2,0]]
    rng = np.random.default_rng(4)
    ref = rng.uniform(0, 9, (1, 4, 4))
    fus = rng.uniform(0, 9, (1, 4, 4))
    ref[0, 1:3, 1:3] = [[1, 0], [0, 0]]
    fus[0, 1:3, 1:3] = [[0, 0], [0, 1]]
    assert M.scc(ref, fus) == pytest.approx(8 / 10, rel=1e-12)


def test_scc_matches_scipy_sobel_on_the_cropped_interior():
    ndimage = pytest.importorskip("scipy.ndimage")
    ref, fus = noisy_pair(bands=3, rows=30, cols=41)

    def magnitude(img):
        inner = img[:, 1:-1, 1:-1]
        gy = np.stack([ndimage.sobel(b, axis=0, mode="constant", cval=0.0) for b in inner])
        gx = np.stack([ndimage.sobel(b, axis=1, mode="constant", cval=0.0) for b in inner])
        return np.hypot(gx, gy)

    g_ref, g_fus = magnitude(ref), magnitude(fus)
    expected = (g_ref * g_fus).sum() / np.linalg.norm(g_ref) / np.linalg.norm(g_fus)
    assert M.scc(ref, fus) == pytest.approx(expected, rel=1e-12)
    assert M.scc(ref, 2.5 * fus) == pytest.approx(expected, rel=1e-12)  # scale-free
    assert M.scc(fus, ref) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------------------------------------
# Row-strip accumulation

def whole_image(ref, fus, cast=True):
    return {"sam": M.sam(ref, fus), "ergas": M.ergas(ref, fus, 4), "psnr": M.psnr(ref, fus, 2047.0),
            "scc": M.scc(ref, fus), "q_avg": M.q_avg(ref, fus), "q2n": M.q2n(ref, fus, cast_uint16=cast)}


@pytest.mark.parametrize("rows, heights", [
    (150, [1, 7, 32, 45, 65]),
    (150, [64, 64, 22]),
    (150, [2, 1, 3, 31, 33, 80]),
    (150, [150]),
    (96, [32, 32, 32]),
    (70, [40, 30]),
    (20, [5, 15]),  # smaller than one Q2n block: mirrored several times
    (150, [7] * 21 + [3]),  # strips shorter than a Q window: the kept rows grow past half a window
])
def test_running_indices_equal_the_whole_image(rows, heights):
    assert sum(heights) == rows
    ref, fus = noisy_pair(bands=5, rows=rows, cols=75, sigma=50, seed=rows)
    running = M.RunningIndices(ratio=4, data_range=2047.0)
    top = 0
    for h in heights:
        running.update(ref[:, top:top + h], fus[:, top:top + h])
        top += h
    got = running.result()
    expected = whole_image(ref, fus)
    for key, value in expected.items():
        if np.isnan(value):
            assert np.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, rel=1e-9), key


def test_running_indices_without_cast_and_result_keeps_state():
    ref, fus = noisy_pair(bands=8, rows=100, cols=64, seed=11)
    ref, fus = ref / 2047.0, fus / 2047.0
    running = M.RunningIndices(data_range=1.0, cast_uint16=False)
    running.update(ref[:, :50], fus[:, :50])
    running.result()  # an intermediate result must not disturb the accumulation
    running.update(ref[:, 50:], fus[:, 50:])
    got = running.result()
    assert got["q2n"] == pytest.approx(M.q2n(ref, fus, cast_uint16=False), rel=1e-9)
    assert got["scc"] == pytest.approx(M.scc(ref, fus), rel=1e-9)
    assert got["psnr"] == pytest.approx(M.psnr(ref, fus, 1.0), rel=1e-9)
    with pytest.raises(PansharpenError):
        running.update(ref[:, :4, :10], fus[:, :4, :10])


@pytest.mark.parametrize("rows, heights, cast", [
    (150, [1, 7, 32, 45, 65], True),
    (150, [2, 1, 3, 31, 33, 80], True),
    (150, [7] * 21 + [3], False),
    (96, [32, 32, 32], True),
    (20, [5, 15], True),
])
def test_strips_computed_apart_give_the_same_numbers_bit_for_bit(rows, heights, cast):
    """What a cluster worker does for one strip (``resume`` from the rows above it, feed the strip, drop the
    rows kept unless it is the last), absorbed in order, gives exactly the numbers of feeding the strips to
    one state: no sum is regrouped. No-data pixels (here a block) are part of both."""
    ref, fus = noisy_pair(bands=5, rows=rows, cols=75, sigma=50, seed=rows + len(heights))
    invalid = np.zeros((rows, 75), bool)
    invalid[rows // 3:rows // 3 + 9, 10:30] = True
    options = dict(ratio=4, data_range=2047.0, cast_uint16=cast)
    whole, apart = M.RunningIndices(**options), M.RunningIndices(**options)
    whole_ssim, apart_ssim = M.RunningSSIM(2047.0), M.RunningSSIM(2047.0)
    top = 0
    for i, h in enumerate(heights):
        strip = slice(top, top + h)
        whole.update(ref[:, strip], fus[:, strip], invalid[strip])
        whole_ssim.update(ref[:, strip], fus[:, strip])
        seed = slice(top - min(top, 32), top)
        part = M.RunningIndices.resume(top, ref[:, seed], fus[:, seed], invalid[seed], **options)
        part_ssim = M.RunningSSIM.resume(ref[:, seed] if top else None, fus[:, seed], 2047.0)
        part.update(ref[:, strip], fus[:, strip], invalid[strip])
        part_ssim.update(ref[:, strip], fus[:, strip])
        if i < len(heights) - 1:
            part.drop_tails()
            part_ssim.tail = None
        apart.absorb(part)
        apart_ssim.absorb(part_ssim)
        top += h
    expected, got = whole.result(), apart.result()
    assert expected.keys() == got.keys()
    for key in expected:
        assert got[key] == expected[key] or (np.isnan(got[key]) and np.isnan(expected[key])), key
    assert np.isfinite(got["q2n"]) and 0 < got["q2n"] < 1
    assert apart_ssim.result() == whole_ssim.result()
    with pytest.raises(PansharpenError, match="needs the 32 rows above"):
        M.RunningIndices.resume(40, ref[:, 30:40], fus[:, 30:40], **options)


# ----------------------------------------------------------------------------------------------------------
# Full resolution

def gaussian_filter(sigma):
    ndimage = pytest.importorskip("scipy.ndimage")
    return lambda x: np.stack([ndimage.gaussian_filter(b, sigma, mode="nearest") for b in x])


def test_d_lambda_khan_is_zero_when_the_ms_is_the_filtered_fused_image():
    fus, _ = noisy_pair(bands=4, rows=64, cols=96)
    blur = gaussian_filter(1.5)
    ms_up = blur(fus)
    assert M.d_lambda_khan(fus, ms_up, mtf_filter=blur) == pytest.approx(0.0, abs=1e-12)
    # spectral distortion: band gains further from 1 give a larger D_lambda
    distortions = [M.d_lambda_khan(fus * np.array([1, 1 + g, 1 - g, 1])[:, None, None], ms_up, mtf_filter=blur)
                   for g in (0.05, 0.2, 0.5)]
    assert 0 < distortions[0] < distortions[1] < distortions[2]
    assert distortions[0] == pytest.approx(1 - M.q2n(ms_up, blur(fus * np.array([1, 1.05, 0.95, 1])[:, None, None])))
    with pytest.raises(PansharpenError):
        M.d_lambda_khan(fus[:, :60], ms_up[:, :60], mtf_filter=blur)


def test_d_lambda_khan_uses_the_sensor_mtf_of_the_mtf_module():
    pytest.importorskip("torch")
    fus, _ = noisy_pair(bands=8, rows=64, cols=64)
    ms_up = M.mtf_lowpass_filter(WV3_GAINS, 4)(fus)
    assert ms_up.shape == fus.shape and not np.allclose(ms_up, fus)
    assert M.d_lambda_khan(fus, ms_up, WV3_GAINS, 4) == pytest.approx(0.0, abs=1e-12)
    assert M.d_lambda_khan(fus[::-1], ms_up, WV3_GAINS, 4) > 0.01  # bands in the wrong order


def test_d_s_and_qnr_d_lambda_by_definition():
    rng = np.random.default_rng(5)
    pan = 500 + 100 * rng.random((64, 96))
    pan_lp = gaussian_filter(2.0)(pan[None])[0]
    fus = np.stack([pan, 0.5 * pan + 30, pan ** 1.1])
    ms_up = np.stack([pan_lp, 0.5 * pan_lp + 30, pan_lp ** 1.05])

    def block_q(a, b):
        return np.mean([uiqi(a[r:r + 32, c:c + 32], b[r:r + 32, c:c + 32])
                        for r in range(0, 64, 32) for c in range(0, 96, 32)])

    q_diff = [abs(block_q(fus[b], pan) - block_q(ms_up[b], pan_lp)) for b in range(3)]
    assert M.d_s(fus, ms_up, pan, pan_lp) == pytest.approx(np.mean(q_diff), rel=1e-10)
    assert M.d_s(fus, ms_up, pan[None], pan_lp, q=2) == pytest.approx(np.sqrt(np.mean(np.square(q_diff))), rel=1e-10)
    # the PAN itself in every band, the low-passed PAN in the MS: no spatial distortion
    assert M.d_s(np.stack([pan] * 3), np.stack([pan_lp] * 3), pan, pan_lp) == pytest.approx(0.0, abs=1e-12)

    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = np.mean([abs(block_q(fus[i], fus[j]) - block_q(ms_up[i], ms_up[j])) for i, j in pairs])
    assert M.d_lambda_qnr(fus, ms_up) == pytest.approx(expected, rel=1e-10)
    assert M.d_lambda_qnr(ms_up, ms_up) == 0.0
    assert M.hqnr(0.1, 0.2) == pytest.approx(0.72)
    assert M.qnr(0.1, 0.2) == pytest.approx(0.72)


def test_full_resolution_indices_combine_the_parts():
    rng = np.random.default_rng(6)
    pan = 500 + 100 * rng.random((64, 64))
    blur = gaussian_filter(2.0)
    pan_lp = blur(pan[None])[0]
    fus = np.stack([pan * 0.9, pan * 1.1, pan])
    ms_up = blur(fus) + rng.normal(0, 2, fus.shape)
    out = M.full_resolution_indices(fus, ms_up, pan, pan_lp, mtf_filter=blur)
    assert out["d_lambda"] == pytest.approx(M.d_lambda_khan(fus, ms_up, mtf_filter=blur))
    assert out["d_s"] == pytest.approx(M.d_s(fus, ms_up, pan, pan_lp))
    assert out["hqnr"] == pytest.approx((1 - out["d_lambda"]) * (1 - out["d_s"]))


# ----------------------------------------------------------------------------------------------------------
# A real scene

def test_noise_degrades_every_index_on_a_worldview3_scene():
    if not (WV3_SCENE / "ms.tif").exists():
        pytest.skip("WorldView-3 sample scene not available")
    gdal = pytest.importorskip("osgeo.gdal")
    ms = gdal.Open(str(WV3_SCENE / "ms.tif")).ReadAsArray().astype(np.float64)  # (8, 143, 144)
    noise = np.random.default_rng(0).normal(size=ms.shape)
    peak = float(ms.max())
    results = [M.reduced_resolution_indices(ms, ms + sigma * noise, ratio=4, data_range=peak)
               for sigma in (0.5, 1.0, 2.0, 4.0, 8.0)]
    for key, direction in (("ergas", 1), ("sam", 1), ("q2n", -1), ("psnr", -1), ("q_avg", -1), ("scc", -1)):
        values = np.array([r[key] for r in results])
        assert np.all(direction * np.diff(values) > 0), (key, values)
    assert results[0]["q2n"] < 1.0 and results[-1]["q2n"] > 0.0


def test_ssim_in_strips_equals_the_whole_image():
    """The running SSIM of the assessment (strips of rows) is the whole-image SSIM, whatever the strips."""
    rng = np.random.default_rng(3)
    ref = rng.random((3, 70, 40)) * 1000
    fus = ref + rng.normal(0, 50, ref.shape)
    whole = M.ssim(ref, fus, 1000.0)
    for strips in ((70,), (32, 38), (5, 5, 20, 40)):
        running, top = M.RunningSSIM(1000.0), 0
        for n in strips:
            running.update(ref[:, top:top + n], fus[:, top:top + n])
            top += n
        assert running.result() == pytest.approx(whole, rel=1e-12)
    assert 0 < whole < 1 and M.ssim(ref, ref, 1000.0) == pytest.approx(1.0)
