"""The fast and LSST engines against photutils, sep, analytic truths, and across threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import sep
from astropy.io import fits
from scipy.ndimage import zoom

from processors import estimate_background, simulate_exposure
from processors.engines._mesh import upsample

# -- fast engine vs photutils Background2D -------------------------------------------------


def _hard_image(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Gradient + stars + cosmic rays + a masked region + NaNs, noise sigma 5."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    data = 100.0 + 0.02 * xx + 0.01 * yy + rng.normal(0, 5.0, shape)
    for _ in range(shape[0] * shape[1] // 1500):  # stars
        y, x = rng.integers(0, ny), rng.integers(0, nx)
        data += rng.uniform(50, 2000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.5)
    hits = rng.integers(0, ny * nx, ny * nx // 2000)
    data.flat[hits] += rng.uniform(200, 5000, hits.size)  # cosmic rays
    mask = np.zeros(shape, bool)
    mask[ny // 3 : ny // 3 + 40, nx // 2 : nx // 2 + 60] = True
    data[rng.integers(0, ny, 50), rng.integers(0, nx, 50)] = np.nan
    return data.astype(np.float32), mask, 5.0


def _edges(shape: tuple[int, int], width: int) -> np.ndarray:
    edge = np.zeros(shape, bool)
    edge[:width] = edge[-width:] = True
    edge[:, :width] = edge[:, -width:] = True
    return edge


@pytest.mark.parametrize(
    ("shape", "box"),
    [((512, 512), 64), ((601, 457), 64), ((400, 300), (48, 37)), ((1000, 1000), 100)],
)
def test_fast_agrees_with_photutils_on_hard_images(shape, box) -> None:
    data, mask, sigma = _hard_image(shape, seed=shape[0])
    fast = estimate_background(data, mask=mask, box_size=box, engine="fast")
    ref = estimate_background(data, mask=mask, box_size=box, engine="photutils")
    delta = np.abs(fast.background - ref.background)
    assert np.median(delta) <= 0.05 * sigma
    # At the edges the engines may differ (partial boxes are used by the fast engine), but
    # by no more than sep and photutils differ on the same image.
    sep_map = sep.Background(
        np.where(np.isfinite(data), data, 0).astype(np.float32),
        mask=mask | ~np.isfinite(data), bw=np.atleast_1d(box)[-1], bh=np.atleast_1d(box)[0],
    ).back()  # fmt: skip
    edge = _edges(shape, 10)
    assert np.percentile(delta[edge], 95) <= np.percentile(
        np.abs(sep_map - ref.background)[edge], 95
    )
    np.testing.assert_allclose(fast.rms_level, ref.rms_level, rtol=0.02)


@pytest.mark.parametrize("estimator", ["sextractor", "biweight", "median", "mean", "mode"])
@pytest.mark.parametrize("cenfunc", ["median", "mean"])
def test_fast_estimators_and_centres_agree_with_photutils(estimator, cenfunc) -> None:
    data, mask, sigma = _hard_image((384, 512), seed=7)
    kwargs = {"mask": mask, "box_size": 64, "estimator": estimator, "cenfunc": cenfunc}
    fast = estimate_background(data, engine="fast", **kwargs)
    ref = estimate_background(data, engine="photutils", **kwargs)
    interior = ~_edges(data.shape, 64)
    assert np.median(np.abs(fast.background - ref.background)[interior]) <= 0.05 * sigma
    assert abs(fast.level - ref.level) <= 0.05 * sigma


def test_fast_agrees_with_photutils_with_asymmetric_liger_clipping() -> None:
    data, mask, sigma = _hard_image((512, 512), seed=3)
    kwargs = {"mask": mask, "box_size": 101, "sigma_low": 6, "sigma_high": 2, "maxiters": 100,
              "estimator": "biweight", "filter_size": 3}  # fmt: skip
    fast = estimate_background(data, engine="fast", **kwargs)
    ref = estimate_background(data, engine="photutils", exclude_percentile=100, **kwargs)
    interior = ~_edges(data.shape, 101)
    assert np.median(np.abs(fast.background - ref.background)[interior]) <= 0.05 * sigma


def test_fast_agrees_with_photutils_on_the_real_spitzer_image(spitzer_path) -> None:
    data = fits.getdata(spitzer_path).astype(np.float32)
    fast = estimate_background(data, box_size=64, exclude_percentile=50, engine="fast")
    ref = estimate_background(data, box_size=64, exclude_percentile=50, engine="photutils")
    noise = ref.rms_level
    assert np.median(np.abs(fast.background - ref.background)) <= 0.05 * noise


def test_partial_edge_boxes_are_used() -> None:
    data = np.full((100, 110), 5.0, np.float32)
    data[:, 100:] = 9.0  # a 10-px strip: a partial box of its own with box 25
    fast = estimate_background(data, box_size=25, filter_size=1, estimator="mean")
    assert fast.mesh.shape == (4, 5)
    np.testing.assert_allclose(fast.mesh[:, -1], 9.0)


@pytest.mark.parametrize(
    ("mesh_shape", "box", "shape"),
    [((7, 9), (16, 12), (100, 101)), ((1, 3), (8, 8), (8, 20)), ((2, 3), (5, 7), (10, 21)),
     ((64, 64), (64, 64), (4096, 4096)), ((3, 40), (2, 2), (6, 80))],
)  # fmt: skip
def test_upsampling_reproduces_photutils_zoom(mesh_shape, box, shape) -> None:
    mesh = np.random.default_rng(2).normal(100, 3, mesh_shape)
    expected = zoom(mesh, box, order=3, mode="reflect", grid_mode=True)[: shape[0], : shape[1]]
    expected = np.clip(expected, mesh.min(), mesh.max())
    np.testing.assert_allclose(upsample(mesh, box, shape), expected, atol=1e-4)


# -- estimator cases ported from photutils/background/tests/test_core.py -------------------


@pytest.mark.parametrize("estimator", ["sextractor", "biweight", "median", "mean", "mode"])
def test_estimators_on_gaussian_data(estimator) -> None:
    data = np.random.default_rng(0).normal(12.4, 0.42, (100, 100))
    result = estimate_background(data, box_size=100, filter_size=1, estimator=estimator)
    assert result.level == pytest.approx(12.4, abs=0.017)
    assert result.rms_level == pytest.approx(0.42, abs=0.007)


def test_sextractor_of_constant_is_the_constant() -> None:
    result = estimate_background(np.ones((100, 100)), box_size=100, filter_size=1)
    assert result.level == 1.0


def test_sextractor_of_skewed_data_is_the_median() -> None:
    data = np.arange(100.0)
    data[70:] = 1e7
    result = estimate_background(data.reshape(10, 10), box_size=10, filter_size=1, maxiters=1)
    assert result.level == pytest.approx(np.median(data))


def test_clipped_mean_ignores_outliers() -> None:
    data = np.ones((100, 100))
    data.flat[np.random.default_rng(1).choice(10_000, 25, replace=False)] = 1000.0
    result = estimate_background(data, box_size=100, filter_size=1, estimator="mean")
    assert result.level == pytest.approx(1.0, abs=0.01)


# -- LSST engine (ALGORITHMS.md §5.4) --------------------------------------------------------


def test_lsst_ramp_is_reproduced_to_six_decimals() -> None:
    yy, xx = np.mgrid[0:512, 0:512]
    ramp = (0.1 * xx + 0.2 * yy + 10_000).astype(np.float32)
    result = estimate_background(ramp, engine="lsst", bin_size=86)  # 6 x 6 cells
    assert result.mesh.shape == (6, 6)
    for y, x in [(0, 0), (0, 511), (511, 0), (511, 511), (0, 256), (256, 0), (256, 256)]:
        assert result.background[y, x] / ramp[y, x] == pytest.approx(1.0, abs=1e-6)


def test_lsst_parabola_within_half_a_count_at_cell_centres() -> None:
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float64)
    parabola = 1e-4 * xx**2 + 1e-4 * yy**2 + 0.1 * xx + 0.2 * yy + 10
    result = estimate_background(parabola.astype(np.float32), engine="lsst", bin_size=22)
    centres = (np.arange(24) * 512 / 24 + 512 / 48).astype(int)
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    assert np.abs(result.background[cy, cx] - parabola[cy, cx]).max() < 0.5


def test_lsst_constant_sky_with_poisson_noise_and_a_source() -> None:
    rng = np.random.default_rng(5)
    image = rng.poisson(2000.0, (1024, 1024)).astype(np.float32)
    yy, xx = np.mgrid[0:1024, 0:1024]
    source = (2e4 * np.exp(-((yy - 500) ** 2 + (xx - 300) ** 2) / 8.0)).astype(np.float32)
    result = estimate_background(image + source, engine="lsst")
    assert result.params["order"] == 6
    assert float(np.mean(result.background)) == pytest.approx(2000.0, abs=0.1)
    subtracted = image + source - result.background
    assert float(np.mean(subtracted - source)) == pytest.approx(0.0, abs=0.1)


def test_lsst_reduces_the_order_on_small_grids() -> None:
    result = estimate_background(np.full((300, 300), 7.0, np.float32), engine="lsst")
    assert result.params["order"] == 2  # 3 x 3 cells
    np.testing.assert_allclose(result.background, 7.0, rtol=1e-6)


def test_lsst_ignores_flagged_pixels_and_weights_by_variance() -> None:
    image = np.random.default_rng(1).normal(50, 2, (512, 512)).astype(np.float32)
    dq = np.zeros(image.shape, np.uint32)
    image[100:200, 100:200] = 5000.0
    dq[100:200, 100:200] = 2  # SATURATED
    result = estimate_background(image, dq=dq, dqbits=0, engine="lsst")
    assert np.abs(result.background - 50.0).max() < 0.5
    unweighted = estimate_background(image, dq=dq, engine="lsst", weighting=False)
    assert unweighted.params["weighting"] is False


# -- thread safety --------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["fast", "lsst"])
def test_concurrent_calls_give_the_serial_results(engine) -> None:
    images = [simulate_exposure(i, size=512, seed=9) for i in range(4)]
    serial = [estimate_background(e.sci, dq=e.dq, engine=engine).background for e in images]
    barrier = threading.Barrier(len(images))
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        barrier.wait()
        exposure = images[index]
        results[index] = estimate_background(
            exposure.sci, dq=exposure.dq, engine=engine
        ).background

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, expected in enumerate(serial):
        np.testing.assert_array_equal(results[index], expected)


@pytest.mark.parametrize(
    ("shape", "box"), [((512, 512), 64), ((333, 517), (40, 48)), ((70, 900), 64)]
)
@pytest.mark.parametrize("threads", [2, 3, 8])
def test_bands_on_several_threads_give_the_single_thread_result(shape, box, threads) -> None:
    exposure = simulate_exposure(3, size=shape, seed=4)
    one = estimate_background(exposure.sci, dq=exposure.dq, box_size=box)
    many = estimate_background(exposure.sci, dq=exposure.dq, box_size=box, threads=threads)
    np.testing.assert_array_equal(many.background, one.background)
    np.testing.assert_array_equal(many.rms, one.rms)
    np.testing.assert_array_equal(many.mesh, one.mesh)


def test_concurrent_calls_that_each_use_bands_give_the_serial_results() -> None:
    images = [simulate_exposure(i, size=384, seed=2) for i in range(4)]
    serial = [estimate_background(e.sci, dq=e.dq).background for e in images]
    barrier = threading.Barrier(len(images))
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        barrier.wait()
        results[index] = estimate_background(
            images[index].sci, dq=images[index].dq, threads=2
        ).background

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for index, expected in enumerate(serial):
        np.testing.assert_array_equal(results[index], expected)


def test_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threads must be >= 1"):
        estimate_background(np.ones((64, 64), np.float32), threads=0)
