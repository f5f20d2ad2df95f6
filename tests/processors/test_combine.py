"""Background combination: JWST test cases, astropy reference, robust rules, rolling stack."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io.fits import Header
from astropy.stats import sigma_clip

from processors import (
    DQ,
    Exposure,
    RollingStack,
    collapse_integrations,
    combine_backgrounds,
    estimate_background,
    rolling_sky_background,
    sky_member,
    subtract_background,
    to_science_grid,
)


def _frame(shape: tuple[int, ...], value: float) -> Exposure:
    header = Header()
    header["SUBSTRT1"], header["SUBSTRT2"] = 1, 1
    header["SUBSIZE1"], header["SUBSIZE2"] = shape[-1], shape[-2]
    return Exposure(np.full(shape, value), err=np.full(shape, 0.1), header=header)


def _jwst_background_step(science: Exposure, backgrounds: list[Exposure]) -> Exposure:
    """The JWST step's flow: collapse rateints, place on the science grid, combine, subtract."""
    placed = []
    for background in backgrounds:
        if background.is_cube:
            collapsed = collapse_integrations(background.sci, background.err, background.dq)
            background = collapsed.with_changes(header=background.header)
        placed.append(to_science_grid(background, science.image_shape, science.header))
    combined = combine_backgrounds(
        np.stack([p.sci for p in placed]), np.stack([p.err for p in placed]),
        np.stack([p.dq for p in placed]),
    )  # fmt: skip
    return subtract_background(science, combined, errors="jwst", method="stack")


# Ported from jwst/background/tests/test_background.py (ALGORITHMS.md §1.6).
@pytest.mark.parametrize(
    ("sci_shape", "bkg_shape"),
    [((10, 10), (10, 10)), ((10, 10), (20, 20)), ((2, 10, 10), (2, 10, 10)),
     ((2, 10, 10), (2, 20, 20)), ((2, 10, 10), (3, 10, 10)), ((2, 10, 10), (3, 20, 20)),
     ((3, 10, 10), (2, 10, 10)), ((3, 10, 10), (2, 20, 20))],
)  # fmt: skip
def test_full_overlap_subtracts_everywhere(sci_shape, bkg_shape) -> None:
    science = _frame(sci_shape, 10.0)
    result = _jwst_background_step(science, [_frame(bkg_shape, 1.0)])
    np.testing.assert_array_equal(result.sci, 9.0)
    assert result.header["S_BKDSUB"] == "COMPLETE"
    assert result is not science
    np.testing.assert_array_equal(science.sci, 10.0)


@pytest.mark.parametrize(
    ("sci_shape", "bkg_shape"),
    [((20, 20), (10, 10)), ((2, 20, 20), (2, 10, 10)), ((3, 20, 20), (2, 10, 10)),
     ((2, 20, 20), (3, 10, 10))],
)  # fmt: skip
def test_partial_overlap_subtracts_only_the_overlap(sci_shape, bkg_shape) -> None:
    result = _jwst_background_step(_frame(sci_shape, 10.0), [_frame(bkg_shape, 1.0)])
    np.testing.assert_array_equal(result.sci[..., :10, :10], 9.0)
    np.testing.assert_array_equal(result.sci[..., 10:, :], 10.0)
    np.testing.assert_array_equal(result.sci[..., :, 10:], 10.0)


def test_the_same_background_twice_is_fine() -> None:
    background = _frame((10, 10), 1.0)
    result = _jwst_background_step(_frame((10, 10), 10.0), [background, background])
    np.testing.assert_array_equal(result.sci, 9.0)


def test_unplaceable_subarray_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot place this subarray"):
        to_science_grid(Exposure(np.ones((7, 7))), (10, 10), _frame((10, 10), 1).header)


# Against astropy: sigma_clip(axis=0, sigma=3, maxiters=None) + the JWST ERR/DQ rules.
@pytest.mark.parametrize("n_members", [2, 3, 4, 5, 7, 8, 9, 16, 32])
@pytest.mark.filterwarnings("ignore:Input data contains invalid values")
def test_jwst_combine_matches_astropy(n_members: int) -> None:
    rng = np.random.default_rng(n_members)
    data = rng.normal(100, 5, (n_members, 40, 50)).astype(np.float32)
    err = rng.uniform(1, 3, data.shape).astype(np.float32)
    dq = rng.choice(np.array([0, 1, 4, 512], np.uint32), data.shape)
    data[rng.random(data.shape) < 0.05] += rng.uniform(50, 5000)  # outliers
    data[rng.random(data.shape) < 0.03] = np.nan
    data[:, 0, 0] = np.nan  # a pixel with no valid member
    result = combine_backgrounds(data, err, dq)

    clipped = sigma_clip(data, axis=0, sigma=3, maxiters=None)
    used = ~np.ma.getmaskarray(clipped)
    count = used.sum(axis=0)
    expected = np.where(count > 0, clipped.mean(axis=0).filled(0), 0)
    expected_err = np.sqrt(np.where(used, err.astype(np.float64) ** 2, 0).sum(0))
    expected_err = np.divide(expected_err, count, out=np.zeros_like(expected_err),
                             where=count > 0)  # fmt: skip
    np.testing.assert_allclose(result.sci, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(result.err, expected_err, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.dq, np.bitwise_or.reduce(dq, axis=0))
    assert (result.sci[0, 0], result.err[0, 0]) == (0.0, 0.0)


def test_rateints_backgrounds_are_averaged_over_integrations_first() -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(5, 1, (3, 4, 12, 12)).astype(np.float32)  # 3 exposures x 4 ints
    data[1, 2, 5, 5] = 500.0
    err = rng.uniform(0.5, 1, data.shape).astype(np.float32)
    result = combine_backgrounds(data, err)
    per_exposure = sigma_clip(data, axis=1, sigma=3, maxiters=None).mean(axis=1)
    variance = sigma_clip(err.astype(np.float64) ** 2, axis=1, sigma=3, maxiters=None).mean(1)
    across = sigma_clip(per_exposure, axis=0, sigma=3, maxiters=None)
    np.testing.assert_allclose(result.sci, across.mean(axis=0), rtol=1e-5)
    used = ~np.ma.getmaskarray(across)
    expected_err = np.sqrt(np.where(used, variance, 0).sum(0)) / used.sum(0)
    np.testing.assert_allclose(result.err, expected_err, rtol=1e-5)


@pytest.mark.parametrize("n_members", [4, 7])
def test_jwst_rule_cannot_clip_one_outlier_below_eight_members(n_members) -> None:
    data = np.zeros((n_members, 3, 3))
    data[-1] = 100.0
    assert combine_backgrounds(data).sci[1, 1] == pytest.approx(100.0 / n_members)


@pytest.mark.parametrize("combine", ["median", "biweight", "error-clip"])
def test_robust_combiners_remove_a_cosmic_ray_at_four_members(combine) -> None:
    rng = np.random.default_rng(11)
    data = rng.normal(50, 1, (4, 30, 30)).astype(np.float32)
    err = np.ones_like(data)
    data[2, 10:12, 10:12] += 3000.0  # a cosmic ray in one member
    result = combine_backgrounds(data, err, combine=combine)
    assert abs(result.sci[10:12, 10:12] - 50).max() < 3.0
    jwst = combine_backgrounds(data, err)
    assert jwst.sci[10, 10] > 700.0  # the JWST rule keeps it


def test_median_error_is_root_pi_over_two_times_the_mean_error() -> None:
    data = np.arange(5.0)[:, None, None] * np.ones((5, 2, 2))
    result = combine_backgrounds(data, np.full(data.shape, 2.0), combine="median")
    assert result.sci[0, 0] == 2.0
    assert result.err[0, 0] == pytest.approx(np.sqrt(np.pi / 2) * 2.0 / np.sqrt(5), rel=1e-6)


def test_combine_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="combine must be one of"):
        combine_backgrounds(np.ones((3, 2, 2)), combine="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs err"):
        combine_backgrounds(np.ones((3, 2, 2)), combine="error-clip")
    with pytest.raises(ValueError, match=r"data must be \(N, ny, nx\)"):
        combine_backgrounds(np.ones((2, 2)))
    with pytest.raises(ValueError, match="err shape"):
        combine_backgrounds(np.ones((3, 2, 2)), np.ones((2, 2, 2)))


# The rolling stack.


def _members(count: int, seed: int) -> list[Exposure]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        sci = rng.normal(20, 2, (24, 32)).astype(np.float32)
        sci[rng.random(sci.shape) < 0.02] += 400
        frames.append(Exposure(sci, err=rng.uniform(1, 2, sci.shape),
                               dq=rng.choice(np.array([0, 2], np.uint32), sci.shape)))  # fmt: skip
    return frames


@pytest.mark.parametrize("combine", ["jwst", "median", "biweight", "error-clip"])
def test_incremental_equals_batch_after_any_sequence(combine) -> None:
    frames = _members(12, seed=5)
    stack = RollingStack((24, 32), max_members=5, max_age=6.0, combine=combine)
    rng = np.random.default_rng(9)
    clock = 0.0
    for index, frame in enumerate(frames):
        clock += float(rng.uniform(0.5, 2.5))
        stack.add(f"m{index}", frame, obs_time=clock)
        if rng.random() < 0.3:
            stack.remove(stack.member_ids[0])
        stack.expire(clock)
        if stack.depth == 0:
            continue
        members = [frames[int(m[1:])] for m in stack.member_ids]
        batch = combine_backgrounds(
            np.stack([m.sci for m in members]), np.stack([m.err for m in members]),
            np.stack([m.dq for m in members]), combine=combine,
        )  # fmt: skip
        incremental = stack.combined()
        np.testing.assert_array_equal(incremental.sci, batch.sci)
        np.testing.assert_array_equal(incremental.err, batch.err)
        np.testing.assert_array_equal(incremental.dq, batch.dq)
        assert stack.depth <= 5
        assert all(clock - stack.obs_time(m) <= 6.0 for m in stack.member_ids)


def test_full_stack_evicts_the_oldest_member() -> None:
    stack = RollingStack((2, 2), max_members=2)
    stack.add("a", Exposure(np.ones((2, 2))), obs_time=3.0)
    stack.add("b", Exposure(np.ones((2, 2))), obs_time=1.0)
    assert stack.add("c", Exposure(np.ones((2, 2))), obs_time=5.0) == ["b"]
    assert stack.member_ids == ["a", "c"]
    assert stack.nbytes == 2 * 4 * (4 + 4)  # SCI and ERR planes; DQ all zero: nothing


def test_member_without_err_makes_the_combined_err_unknown() -> None:
    stack = RollingStack((3, 3), max_members=3)
    stack.add("with", Exposure(np.ones((3, 3)), err=np.ones((3, 3))), obs_time=0)
    assert stack.combined().err is not None
    stack.add("without", Exposure(np.ones((3, 3))), obs_time=1)
    assert stack.combined().err is None


def test_wrong_shape_member_is_refused_with_the_shapes() -> None:
    stack = RollingStack((3, 3), max_members=3)
    with pytest.raises(ValueError, match=r"image shape \(4, 4\), the stack holds \(3, 3\)"):
        stack.add("x", Exposure(np.ones((4, 4))), obs_time=0)


def test_rateints_member_is_collapsed_on_arrival() -> None:
    stack = RollingStack((3, 3), max_members=2)
    cube = np.ones((4, 3, 3))
    cube[2] = 50.0  # one integration far off is not clipped among four: mean of all
    stack.add("cube", Exposure(cube, dq=np.full(cube.shape, int(DQ.JUMP_DET))), obs_time=0)
    expected = collapse_integrations(cube).sci
    np.testing.assert_allclose(stack.combined().sci, expected)
    assert stack.combined().dq[0, 0] == DQ.JUMP_DET


# Rolling sky on dithered frames with a known multiplicative sky pattern.


def _dithered_frame(scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:512, 0:512]
    truth = 300.0 * scale * (1.0 + 0.4 * (yy / 511 - 0.5) + 0.1 * (xx / 511 - 0.5))
    image = truth + rng.normal(0, 5.0, truth.shape)
    for _ in range(60):  # stars at dithered positions
        y, x = rng.integers(0, 512, 2)
        image += rng.uniform(200, 3000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 5.0)
    return image.astype(np.float32), truth


def test_rolling_sky_recovers_the_sky_without_the_liger_bias() -> None:
    scales = [0.5, 0.75, 1.25, 1.5]
    models = [estimate_background(_dithered_frame(s, i)[0]) for i, s in enumerate(scales)]
    current_image, truth = _dithered_frame(1.0, 99)
    current = estimate_background(current_image)
    result = rolling_sky_background(current, [sky_member(m) for m in models])
    residual = result.background - truth
    assert abs(np.median(residual)) < 0.05 * 5.0
    # Inside the outer ring of boxes (where any mesh model flattens a 40 % gradient, the
    # frame's own model just as much), the sky is recovered well below the noise.
    inner = np.abs(residual[64:-64, 64:-64])
    assert np.percentile(inner, 95) < 0.5 * 5.0
    own = np.abs(current.background - truth)[64:-64, 64:-64]
    assert np.percentile(inner, 95) < 1.2 * np.percentile(own, 95)
    assert result.params["method"] == "rolling-sky"
    assert result.params["members"] == 4
    assert np.isfinite(result.error).all()
    assert result.error.mean() < 0.1 * 5.0

    # Liger multiplies each map by s_i / mean(s): the template is inflated by mean(scale**2).
    levels = np.array([sky_member(m).level for m in models])
    scaled = [m.background * (lv / levels.mean()) for m, lv in zip(models, levels, strict=True)]
    liger = np.mean(scaled, axis=0)
    liger_bias = np.median(liger * (sky_member(current).level / levels.mean()) - truth)
    assert liger_bias > 0.1 * 300.0


def test_rolling_sky_refuses_a_different_mesh() -> None:
    small = estimate_background(np.ones((128, 128), np.float32) * 5)
    large = estimate_background(np.ones((256, 256), np.float32) * 5)
    with pytest.raises(ValueError, match="differs from the current frame"):
        rolling_sky_background(large, [sky_member(small)])
    with pytest.raises(ValueError, match="needs a mesh engine"):
        sky_member(estimate_background(np.ones((256, 256), np.float32), engine="lsst"))
