"""Background model: photutils reference, photutils test cases, simulator truth."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import SigmaClip
from photutils.background import Background2D, BiweightLocationBackground, MeanBackground
from photutils.segmentation import detect_sources as photutils_detect_sources

from processors import (
    NoValidPixelsError,
    bad_pixel_mask,
    estimate_background,
    model_exposure_background,
    simulate_exposure,
)


def test_photutils_engine_is_background2d_with_same_parameters(
    rng: np.random.Generator,
) -> None:
    data = (100 + rng.normal(0, 5, (300, 420))).astype(np.float32)
    data[50:60, 70:90] += 1000  # a bright source
    mask = np.zeros(data.shape, bool)
    mask[200:240, 10:50] = True
    data[mask] = np.nan  # masked pixels are non-finite too: both paths must ignore them
    ours = estimate_background(
        data, mask=mask, box_size=(50, 64), filter_size=5, sigma_low=2.5, sigma_high=3.5,
        maxiters=5, estimator="biweight", engine="photutils",
    )  # fmt: skip
    ref = Background2D(
        data, (50, 64), mask=mask | ~np.isfinite(data), filter_size=5,
        sigma_clip=SigmaClip(sigma_lower=2.5, sigma_upper=3.5, maxiters=5),
        bkg_estimator=BiweightLocationBackground(sigma_clip=None),
    )  # fmt: skip
    # photutils computes in float64; skystream stores float32 maps.
    np.testing.assert_allclose(ours.background, ref.background, rtol=1e-6)
    np.testing.assert_allclose(ours.rms, ref.background_rms, rtol=1e-6)
    assert ours.level == pytest.approx(float(ref.background_median))
    assert ours.background.dtype == np.float32


def test_recovers_simulated_sky_within_a_fraction_of_the_noise() -> None:
    exposure = simulate_exposure(3, size=512, seed=11)
    h = exposure.header
    ny, nx = exposure.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    truth = h["TRUESKY"] + h["TRUEGX"] * (xx - (nx - 1) / 2) + h["TRUEGY"] * (yy - (ny - 1) / 2)
    result = model_exposure_background(exposure, box_size=64, engine="photutils")
    residual = result.background - truth
    assert np.median(np.abs(residual)) < 0.05 * h["TRUENOIS"]
    assert abs(result.level - h["TRUESKY"]) < 0.05 * h["TRUENOIS"]
    assert result.rms_level == pytest.approx(h["TRUENOIS"], rel=0.1)


# Cases ported from photutils/background/tests/test_background_2d.py (ALGORITHMS.md §3.5),
# run on the reference engine and on the fast engine.
MESH_ENGINES = pytest.mark.parametrize("engine", ["fast", "photutils"])


@pytest.mark.parametrize("filter_size", [1, 3])
@MESH_ENGINES
def test_constant_image(filter_size: int, engine: str) -> None:
    result = estimate_background(
        np.ones((100, 100)), box_size=25, filter_size=filter_size, engine=engine
    )
    np.testing.assert_allclose(result.background, 1.0)
    np.testing.assert_allclose(result.rms, 0.0)
    assert result.level == 1.0


@pytest.mark.parametrize("dtype", [int, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("box", [(25, 25), (23, 22)])
@MESH_ENGINES
def test_dtypes_and_boxes_that_do_not_divide(
    dtype: type, box: tuple[int, int], engine: str
) -> None:
    result = estimate_background(np.ones((100, 100), dtype=dtype), box_size=box, engine=engine)
    assert np.issubdtype(result.background.dtype, np.floating)
    np.testing.assert_allclose(result.background, 1.0, rtol=1e-5)


@MESH_ENGINES
def test_box_of_one_pixel_reproduces_the_data(engine: str) -> None:
    data = np.arange(12.0).reshape(3, 4)
    result = estimate_background(
        data, box_size=1, filter_size=1, exclude_percentile=100, engine=engine
    )
    np.testing.assert_allclose(result.background, data, atol=0.005)
    assert result.level == 5.5


@MESH_ENGINES
def test_masked_block_is_ignored(engine: str) -> None:
    data = np.ones((100, 100))
    data[25:50, 25:50] = 100.0
    mask = np.zeros(data.shape, bool)
    mask[25:50, 25:50] = True
    result = estimate_background(
        data, mask=mask, box_size=(23, 22), estimator="mean", engine=engine
    )
    np.testing.assert_allclose(result.background, 1.0, rtol=2e-5)


@MESH_ENGINES
def test_unmasked_block_raises_its_box_with_filter_off(engine: str) -> None:
    data = np.ones((100, 100))
    data[25:50, 50:75] = 10.0
    result = estimate_background(data, box_size=25, filter_size=1, estimator="mean", engine=engine)
    assert result.background[37, 62] == pytest.approx(10.0)
    assert result.background[10, 10] == pytest.approx(1.0)


@MESH_ENGINES
def test_filter_threshold_keeps_cells_below_it(engine: str) -> None:
    data = np.ones((100, 100))
    data[25:50, 50:75] = 10.0
    filtered = estimate_background(
        data, box_size=25, filter_size=3, filter_threshold=9, engine=engine
    )
    kept = estimate_background(
        data, box_size=25, filter_size=3, filter_threshold=11, engine=engine
    )
    assert filtered.background[37, 62] == pytest.approx(1.0)
    assert kept.background[37, 62] == pytest.approx(10.0)


@MESH_ENGINES
def test_integer_input_is_not_truncated(engine: str) -> None:
    data = np.array([[1, 2], [1, 2]])
    result = estimate_background(
        data, box_size=2, filter_size=1, estimator="mean", maxiters=1, engine=engine
    )
    assert result.level == 1.5


@MESH_ENGINES
def test_non_finite_pixels_are_excluded_without_warnings(engine: str) -> None:
    data = np.full((100, 100), 4.0)
    data[:50, :50] = np.nan
    data[70, 70] = np.inf
    result = estimate_background(data, box_size=25, engine=engine)
    np.testing.assert_allclose(result.background, 4.0)


@MESH_ENGINES
def test_box_larger_than_image_is_clamped(engine: str) -> None:
    result = estimate_background(np.full((40, 30), 2.0), box_size=64, engine=engine)
    assert result.params["box_size"] == (40, 30)
    np.testing.assert_allclose(result.background, 2.0)


@MESH_ENGINES
def test_all_masked_raises_no_valid_pixels(engine: str) -> None:
    with pytest.raises(NoValidPixelsError, match="no unmasked finite pixels"):
        estimate_background(np.full((50, 50), np.nan), box_size=25, engine=engine)
    with pytest.raises(NoValidPixelsError):
        estimate_background(
            np.ones((50, 50)), mask=np.ones((50, 50), bool), box_size=25, engine=engine
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"box_size": 0}, "box_size must be positive"),
        ({"box_size": (1, 2, 3)}, "box_size must be one or two integers"),
        ({"filter_size": 2}, "filter_size must be odd"),
        ({"estimator": "magic"}, "estimator must be one of"),
        ({"engine": "gpu"}, "engine must be one of"),
        ({"exclude_percentile": 120}, "exclude_percentile must be in"),
        ({"sigma_low": 0}, "sigma_low and sigma_high must be positive"),
        ({"maxiters": 0}, "maxiters must be >= 1"),
        ({"mask": np.zeros((3, 3), bool)}, "mask shape"),
    ],
)
def test_invalid_parameters_name_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        estimate_background(np.ones((50, 50)), **kwargs)


def test_rejects_non_image_input() -> None:
    with pytest.raises(ValueError, match="data must be a 2-D image"):
        estimate_background(np.ones((2, 5, 5)))


def test_real_spitzer_image(spitzer_path) -> None:
    data = fits.getdata(spitzer_path).astype(np.float32)
    # Diffuse emission makes clipping reject ~17 % of each box: with photutils' default
    # exclude_percentile=10 every box is excluded, so real-sky users raise it.
    with pytest.raises(NoValidPixelsError, match="All boxes"):
        estimate_background(data, box_size=64, engine="photutils")
    result = estimate_background(data, box_size=64, exclude_percentile=50, engine="photutils")
    ref = Background2D(data, 64, mask=~np.isfinite(data), exclude_percentile=50)
    np.testing.assert_allclose(result.background, ref.background, rtol=1e-6)
    assert np.isfinite(result.background).all()


def test_cube_uses_median_of_good_integrations() -> None:
    cube = simulate_exposure(1, size=128, seed=3, nints=3)
    result = model_exposure_background(cube, box_size=32)
    bad = bad_pixel_mask(cube.dq, 0)
    planes = np.where(bad, np.nan, cube.sci)
    never = bad.all(axis=0)
    planes[:, never] = 0
    image = np.nanmedian(planes, axis=0)
    expected = estimate_background(image.astype(np.float32), mask=never, box_size=32)
    np.testing.assert_array_equal(result.background, expected.background)
    assert abs(result.level - cube.header["TRUESKY"]) < 0.1 * cube.header["TRUENOIS"]


def test_error_is_rms_over_root_n() -> None:
    result = estimate_background(
        np.random.default_rng(0).normal(10, 2, (100, 100)), box_size=25, estimator="mean"
    )
    assert result.error_scale == pytest.approx(1 / np.sqrt(625), rel=0.01)
    np.testing.assert_allclose(result.error, result.rms * result.error_scale, rtol=1e-6)


def test_mean_estimator_ignores_masked_outliers_like_photutils() -> None:
    data = np.ones((100, 100))
    data[25:50, 25:50] = 100.0
    ours = estimate_background(data, box_size=25, estimator="mean", filter_size=1)
    ref = Background2D(data, 25, filter_size=1, bkg_estimator=MeanBackground(sigma_clip=None))
    np.testing.assert_allclose(ours.background, ref.background, rtol=1e-5)


# -- coverage_mask and fill_value (photutils test_coverage_mask) ------------------------------


@pytest.mark.parametrize("fill_value", [0.0, np.nan, -1.0])
@MESH_ENGINES
def test_coverage_mask_gets_fill_value(fill_value: float, engine: str) -> None:
    data = np.ones((100, 100))
    data[:50, :50] = np.nan
    coverage = np.isnan(data)
    result = estimate_background(
        data, coverage_mask=coverage, fill_value=fill_value, box_size=25, filter_size=1,
        estimator="mean", engine=engine,
    )  # fmt: skip
    np.testing.assert_equal(result.background[:50, :50], fill_value)
    np.testing.assert_equal(result.rms[:50, :50], fill_value)
    np.testing.assert_allclose(result.background[50:, 50:], 1.0)
    np.testing.assert_array_equal(result.error[:50, :50], 0.0)  # nothing estimated there
    assert result.params["fill_value"] == pytest.approx(fill_value, nan_ok=True)


@MESH_ENGINES
def test_mask_plus_coverage_mask_is_the_same_mesh_as_coverage_alone(engine: str) -> None:
    """photutils test_coverage_mask, second part: the two masks combine."""
    data = np.ones((100, 100))
    data[:50, :50] = np.nan
    alone = estimate_background(
        data, coverage_mask=np.isnan(data), box_size=25, filter_size=1, estimator="mean",
        engine=engine,
    )  # fmt: skip
    mask = np.zeros(data.shape, dtype=bool)
    coverage = np.zeros(data.shape, dtype=bool)
    mask[:50, :25] = True
    coverage[:50, 25:50] = True
    both = estimate_background(
        data, mask=mask, coverage_mask=coverage, box_size=25, filter_size=1,
        estimator="mean", engine=engine,
    )  # fmt: skip
    np.testing.assert_allclose(both.mesh, alone.mesh)
    np.testing.assert_allclose(both.rms_mesh, alone.rms_mesh)


def test_coverage_mask_matches_photutils_with_a_gradient() -> None:
    yy, xx = np.mgrid[0:300, 0:400]
    data = (50 + 0.05 * xx + 0.02 * yy).astype(np.float32)
    data += np.random.default_rng(4).normal(0, 1, data.shape).astype(np.float32)
    coverage = (xx + yy) > 550  # a rotated-mosaic corner
    data[coverage] = 0.0  # finite but meaningless: only the coverage mask excludes it
    ours = estimate_background(data, coverage_mask=coverage, box_size=50, exclude_percentile=60)
    ref = Background2D(data, 50, coverage_mask=coverage, exclude_percentile=60)
    assert np.median(np.abs(ours.background - ref.background)) < 0.02
    np.testing.assert_array_equal(ours.background[coverage], 0.0)


def test_lsst_engine_fills_outside_coverage() -> None:
    data = np.random.default_rng(2).normal(30.0, 1.0, (256, 256)).astype(np.float32)
    coverage = np.zeros(data.shape, bool)
    coverage[:, :40] = True
    data[coverage] = -1e4
    result = estimate_background(data, coverage_mask=coverage, fill_value=np.nan, engine="lsst")
    assert np.isnan(result.background[coverage]).all()
    assert np.abs(result.background[~coverage] - 30.0).max() < 0.3
    assert result.level == pytest.approx(30.0, abs=0.05)


def test_invalid_coverage_mask_names_itself() -> None:
    with pytest.raises(ValueError, match="coverage_mask shape"):
        estimate_background(np.ones((50, 50)), coverage_mask=np.zeros((5, 5), bool))


# -- source-masked two-pass model (LSST DETECTED mask, photutils' recipe) -------------------


def _galaxy_field() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A tilted sky, noise sigma 5 and a large exponential disk galaxy (scale 25 px)."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:512, 0:512]
    sky = 100 + 0.01 * xx - 0.005 * yy
    galaxy = 60 * np.exp(-np.hypot(xx - 260, (yy - 250) / 0.7) / 25)
    noise = 5.0
    data = (sky + galaxy + rng.normal(0, noise, sky.shape)).astype(np.float32)
    return data, sky, galaxy, noise


@pytest.mark.parametrize("engine", ["fast", "photutils", "lsst"])
def test_two_pass_halves_the_error_under_a_large_galaxy(engine: str) -> None:
    data, sky, galaxy, noise = _galaxy_field()
    under = galaxy > 0.1 * noise
    one = estimate_background(data, box_size=64, engine=engine)
    two = estimate_background(
        data, box_size=64, engine=engine, passes=2, nsigma=2.0, npixels=10, dilate=15
    )
    error_one = np.median(np.abs(one.background - sky)[under])
    error_two = np.median(np.abs(two.background - sky)[under])
    assert error_one > 0.2 * noise  # the galaxy biases the one-pass model
    assert error_two <= 0.5 * error_one
    assert one.source_mask is None
    assert two.source_mask is not None and two.source_mask[250, 260]
    assert two.params["passes"] == 2 and two.params["dilate"] == 15


def test_second_pass_masks_what_photutils_detect_sources_finds() -> None:
    data, _, _, _ = _galaxy_field()
    one = estimate_background(data, box_size=64)
    two = estimate_background(data, box_size=64, passes=2, nsigma=3.0, npixels=5, dilate=0)
    residual = data - one.background
    segments = photutils_detect_sources(residual, 3.0 * one.rms, n_pixels=5)
    np.testing.assert_array_equal(two.source_mask, segments.data > 0)
    again = estimate_background(data, box_size=64, mask=segments.data > 0)
    np.testing.assert_array_equal(two.background, again.background)


def test_two_pass_on_a_cube_goes_through_the_collapsed_image() -> None:
    cube = simulate_exposure(2, size=128, seed=8, nints=3)
    result = model_exposure_background(cube, box_size=32, passes=2)
    assert result.source_mask is not None and result.source_mask.shape == (128, 128)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"passes": 0}, "passes must be >= 1"),
        ({"nsigma": 0}, "nsigma must be positive"),
        ({"npixels": 0}, "npixels must be >= 1"),
        ({"dilate": -1}, "dilate must be >= 0"),
        ({"rms_estimator": "iqr"}, "rms_estimator must be one of"),
        ({"edge_fraction": 0}, "edge_fraction must be in"),
    ],
)
def test_invalid_new_parameters_name_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        estimate_background(np.ones((50, 50)), **kwargs)


@MESH_ENGINES
def test_exclude_percentile_cases_of_photutils(engine: str) -> None:
    """photutils test_exclude_percentile, on the meshes both engines expose."""
    data = np.ones((100, 100))
    data[0:50, 0:50] = np.nan
    result = estimate_background(
        data, box_size=25, filter_size=1, exclude_percentile=100, engine=engine
    )
    np.testing.assert_allclose(result.mesh, 1.0)  # the empty boxes are filled
    result = estimate_background(
        np.ones((111, 121)), box_size=10, exclude_percentile=100, engine=engine
    )
    np.testing.assert_allclose(result.mesh, np.ones((12, 13)))
    data = np.full((111, 121), np.nan)
    data[0, 0] = 1.0
    with pytest.raises(NoValidPixelsError, match="All boxes contain"):
        estimate_background(data, box_size=10, engine=engine)
