"""The fast and LSST engines against photutils, sep, analytic truths, and across threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import sep
from astropy.io import fits
from astropy.stats import SigmaClip
from photutils.background import Background2D, BiweightScaleBackgroundRMS, MADStdBackgroundRMS
from scipy.ndimage import zoom

from processors import NoValidPixelsError, estimate_background, simulate_exposure
from processors.engines._mesh import upsample
from processors.engines.lsst import cell_edges

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
    # At the edges the engines may differ (binned statistics, the edge-box floor), but by
    # no more than sep and photutils differ on the same image.
    sep_map = sep.Background(
        np.where(np.isfinite(data), data, 0).astype(np.float32),
        mask=mask | ~np.isfinite(data), bw=np.atleast_1d(box)[-1], bh=np.atleast_1d(box)[0],
    ).back()  # fmt: skip
    edge = _edges(shape, 10)
    assert np.percentile(delta[edge], 95) <= np.percentile(
        np.abs(sep_map - ref.background)[edge], 95
    )
    np.testing.assert_allclose(fast.rms_level, ref.rms_level, rtol=0.02)


@pytest.mark.parametrize("estimator", ["sextractor", "biweight", "median", "mean", "mode", "mmm"])
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


# -- edge boxes: photutils' exclusion rule, and no map from slivers ---------------------------


def test_partial_edge_box_is_judged_against_the_full_box_as_photutils_does() -> None:
    data = np.full((100, 110), 5.0, np.float32)
    data[:, 100:] = 9.0  # a 10-px strip: a partial box of 250 pixels with box 25
    for engine in ("fast", "photutils"):
        result = estimate_background(data, box_size=25, filter_size=1, estimator="mean",
                                     engine=engine)  # fmt: skip
        assert result.mesh.shape == (4, 5)
        # 250 good pixels <= 0.9 x 625: excluded and filled from its neighbours
        np.testing.assert_allclose(result.mesh[:, -1], 5.0)


@pytest.mark.parametrize(("width", "expected"), [(10, 5.0), (15, 9.0)])
def test_partial_edge_box_needs_half_a_box_even_when_nothing_is_excluded(width, expected) -> None:
    data = np.full((100, 100 + width), 5.0, np.float32)
    data[:, 100:] = 9.0
    result = estimate_background(
        data, box_size=25, filter_size=1, estimator="mean", exclude_percentile=100
    )
    # 10/25 of a box is a sliver (photutils would use it); 15/25 is enough.
    np.testing.assert_allclose(result.mesh[:, -1], expected)
    lenient = estimate_background(
        data, box_size=25, filter_size=1, estimator="mean", exclude_percentile=100,
        edge_fraction=0.3,
    )  # fmt: skip
    np.testing.assert_allclose(lenient.mesh[:, -1], 9.0)


def test_exclusion_is_photutils_less_or_equal() -> None:
    data = np.ones((100, 100))
    mask = np.zeros(data.shape, bool)
    mask[10:20, :20] = True  # box (0, 0) of 20 x 20 keeps 200 of 400 pixels: exactly half
    data[:10, :20] = 3.0
    kwargs = {"mask": mask, "box_size": 20, "filter_size": 1, "estimator": "mean"}
    for engine in ("fast", "photutils"):
        at = estimate_background(data, exclude_percentile=50, engine=engine, **kwargs)
        assert at.mesh[0, 0] == pytest.approx(1.0)  # 200 <= 0.5 x 400: excluded, filled
        above = estimate_background(data, exclude_percentile=50.1, engine=engine, **kwargs)
        assert above.mesh[0, 0] == pytest.approx(3.0)


def test_exclude_percentile_zero_keeps_boxes_without_bad_pixels() -> None:
    data = np.ones((100, 100))
    mask = np.zeros(data.shape, bool)
    mask[10, 10] = True
    data[:25, :25] = 7.0
    result = estimate_background(
        data, mask=mask, box_size=25, filter_size=1, estimator="mean", exclude_percentile=0
    )
    # photutils 3.0 excludes every box here (fixed upstream in #2363); the one box with
    # a masked pixel is excluded and filled, the others are kept.
    np.testing.assert_allclose(result.mesh[0, 0], 1.0)
    np.testing.assert_allclose(np.delete(result.mesh.ravel(), 0), 1.0)


def test_every_full_box_excluded_raises_photutils_error_not_a_sliver_map() -> None:
    data = np.full((101, 101), np.nan, np.float32)
    data[100, :] = 2.0  # only the 1-pixel top edge has data
    data[:, 100] = 2.0
    with pytest.raises(NoValidPixelsError, match=r"All boxes contain <= 562.5"):
        estimate_background(data, box_size=25, exclude_percentile=10)
    with pytest.raises(NoValidPixelsError, match="All boxes contain"):
        estimate_background(data, box_size=25, exclude_percentile=100)
    with pytest.raises(NoValidPixelsError, match="All boxes contain"):
        estimate_background(data, box_size=25, engine="photutils")


def test_spitzer_with_defaults_gives_photutils_error_and_agrees_at_50_percent(
    spitzer_path,
) -> None:
    data = fits.getdata(spitzer_path).astype(np.float32)
    nan = ~np.isfinite(data)
    with pytest.raises(ValueError, match="All boxes contain") as reference:
        Background2D(data, 64, mask=nan)
    with pytest.raises(NoValidPixelsError, match=r"All boxes contain <= 3686\.4") as ours:
        estimate_background(data, box_size=64, engine="fast")
    assert str(ours.value).split(" unmasked")[0] == str(reference.value).split(" unmasked")[0]
    fast = estimate_background(data, box_size=64, exclude_percentile=50)
    ref = Background2D(data, 64, mask=nan, exclude_percentile=50)
    assert fast.level == pytest.approx(float(ref.background_median), abs=0.01 * fast.rms_level)
    assert np.median(np.abs(fast.background - ref.background)) <= 0.01 * fast.rms_level
    # The slivers at the top and right (1 pixel wide) are not used: photutils' mesh there
    # is filled too, and the two meshes agree to the binning error of the statistics.
    np.testing.assert_allclose(fast.mesh, ref.background_mesh, atol=0.05 * fast.rms_level)


def test_photutils_nonconstant_data_case() -> None:
    """photutils test_background_nonconstant_data, with its numbers, on both engines."""
    data = np.ones((100, 100))
    data[25:50, 50:75] = 10.0
    expected = np.ones((4, 4))
    expected[1, 2] = 10.0
    for engine in ("fast", "photutils"):
        result = estimate_background(data, box_size=25, filter_size=1, engine=engine)
        np.testing.assert_allclose(result.mesh, expected)
    rng = np.random.default_rng(0)
    data = rng.normal(1.0, 0.1, (121, 289))
    mask = np.zeros(data.shape, dtype=bool)
    mask[50:100, 50:100] = True
    ref = Background2D(data, (25, 25), mask=mask)
    fast = estimate_background(data, mask=mask, box_size=25)
    assert np.mean(fast.background) < 1.0
    assert np.mean(fast.rms) < 1.0
    assert fast.level < 1.0
    assert fast.rms_level < 0.1
    assert fast.mesh.shape == (5, 12)
    assert fast.level == pytest.approx(float(ref.background_median), abs=2e-4)
    np.testing.assert_allclose(fast.mesh, ref.background_mesh, atol=0.005)


def test_lsst_cells_are_never_slivers() -> None:
    for length in (129, 513, 1025, 4097, 191):
        sizes = np.diff(cell_edges(length, 128))
        assert sizes.min() >= 64 and sizes.max() <= 128
        assert sizes.max() - sizes.min() <= 1


def test_lsst_drops_cells_with_a_single_good_pixel() -> None:
    image = np.random.default_rng(3).normal(20.0, 1.0, (256, 256)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[:128, :128] = True
    mask[5, 5] = False
    image[5, 5] = 1e4  # the one survivor of its cell: no variance, must not dominate
    result = estimate_background(image, mask=mask, engine="lsst", bin_size=128)
    assert np.isnan(result.mesh[0, 0])
    assert np.abs(result.background - 20.0).max() < 0.5


# -- photutils parity options -----------------------------------------------------------------


@pytest.mark.parametrize("rms_estimator", ["std", "mad-std", "biweight"])
@pytest.mark.parametrize("cenfunc", ["median", "mean"])
def test_rms_estimators_agree_with_photutils(rms_estimator, cenfunc) -> None:
    data, mask, _ = _hard_image((384, 512), seed=11)
    kwargs = {"mask": mask, "box_size": 64, "rms_estimator": rms_estimator, "cenfunc": cenfunc}
    fast = estimate_background(data, **kwargs)
    ref = estimate_background(data, engine="photutils", **kwargs)
    np.testing.assert_allclose(fast.rms_mesh, ref.rms_mesh, rtol=0.01)
    assert fast.rms_level == pytest.approx(ref.rms_level, rel=0.005)
    # the background itself does not depend on the RMS estimator
    np.testing.assert_array_equal(fast.mesh, estimate_background(data, mask=mask,
                                  box_size=64, cenfunc=cenfunc).mesh)  # fmt: skip


@pytest.mark.parametrize("rms_estimator", ["mad-std", "biweight"])
def test_rms_estimators_on_gaussian_data(rms_estimator) -> None:
    """photutils test_core: robust RMS estimators with SigmaClip(3) within 0.007 of 0.42."""
    data = np.random.default_rng(0).normal(12.4, 0.42, (100, 100))
    result = estimate_background(data, box_size=100, filter_size=1, rms_estimator=rms_estimator)
    assert result.rms_level == pytest.approx(0.42, abs=0.007)
    clipped = SigmaClip(sigma=3.0, maxiters=10)(data, masked=False)
    expected = (MADStdBackgroundRMS if rms_estimator == "mad-std" else
                BiweightScaleBackgroundRMS)(sigma_clip=None)(clipped)  # fmt: skip
    assert result.rms_level == pytest.approx(float(expected), rel=1e-5)  # float32 pixels


def test_rms_of_a_constant_box_is_zero_for_every_estimator() -> None:
    for rms_estimator in ("mad-std", "biweight"):
        result = estimate_background(np.ones((50, 50)), box_size=25, rms_estimator=rms_estimator)
        np.testing.assert_array_equal(result.rms_mesh, 0.0)


def test_mmm_estimator_is_photutils_mmm_background() -> None:
    data, mask, sigma = _hard_image((384, 512), seed=5)
    fast = estimate_background(data, mask=mask, box_size=64, estimator="mmm")
    ref = estimate_background(data, mask=mask, box_size=64, estimator="mmm", engine="photutils")
    assert np.median(np.abs(fast.background - ref.background)) <= 0.05 * sigma
    flat = np.arange(100.0).reshape(10, 10)  # photutils' doctest: MMMBackground = 49.5
    result = estimate_background(flat, box_size=10, filter_size=1, estimator="mmm",
                                 engine="photutils")  # fmt: skip
    assert result.level == pytest.approx(49.5)


def test_no_sigma_clipping_as_photutils_sigma_clip_none() -> None:
    """photutils test_no_sigma_clipping: without clipping the outlier raises the mean."""
    data = np.ones((100, 100))
    data[10, 10] = 100.0
    for engine in ("fast", "photutils"):
        clipped = estimate_background(data, box_size=25, filter_size=1, estimator="mean",
                                      engine=engine)  # fmt: skip
        unclipped = estimate_background(data, box_size=25, filter_size=1, estimator="mean",
                                        sigma_clip=False, engine=engine)  # fmt: skip
        assert clipped.mesh[0, 0] == pytest.approx(1.0)
        assert unclipped.mesh[0, 0] == pytest.approx(1.0 + 99.0 / 625)
        assert unclipped.params["sigma_clip"] is False


def test_rms_estimator_and_sigma_clip_are_mesh_engine_options() -> None:
    with pytest.raises(ValueError, match="mesh engines"):
        estimate_background(np.ones((64, 64)), engine="lsst", rms_estimator="mad-std")
    with pytest.raises(ValueError, match="mesh engines"):
        estimate_background(np.ones((64, 64)), engine="lsst", sigma_clip=False)


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


@pytest.mark.parametrize("estimator", ["sextractor", "biweight", "median", "mean", "mode", "mmm"])
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


@pytest.mark.parametrize("rms_estimator", ["mad-std", "biweight"])
def test_robust_rms_on_several_threads_gives_the_single_thread_result(rms_estimator) -> None:
    exposure = simulate_exposure(5, size=(333, 517), seed=6)
    kwargs = {"dq": exposure.dq, "box_size": (40, 48), "rms_estimator": rms_estimator}
    one = estimate_background(exposure.sci, **kwargs)
    many = estimate_background(exposure.sci, threads=3, **kwargs)
    np.testing.assert_array_equal(many.rms_mesh, one.rms_mesh)
    np.testing.assert_array_equal(many.rms, one.rms)
