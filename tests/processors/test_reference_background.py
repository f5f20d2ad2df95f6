"""Reference backgrounds: jwst WFSS test numbers, the legacy robust mean, Liger/IRIS master.

The WFSS cases are jwst's ``background/tests/test_background_wfss.py`` (ALGORITHMS.md §1.6),
rebuilt with the same generator, seeds and tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io.fits import Header

from processors import DQ, Exposure
from processors.reference_background import (
    _percentile_cuts,
    err_weighted_mean,
    reference_on_science_grid,
    robust_mean,
    scale_reference_background,
    subtract_reference_background,
    sufficient_background,
)

BKG_SCALING = 0.123
DETECTOR_SHAPE = (2048, 2048)
INITIAL_NAN_FRACTION = 1e-4
INITIAL_OUTLIER_FRACTION = 1e-3


@pytest.fixture(scope="module")
def known_bkg() -> np.ndarray:
    """jwst's reference background: a saddle gradient around 1."""
    ny, nx = DETECTOR_SHAPE
    y, x = np.mgrid[:ny, :nx]
    gradient = x * y / (nx * ny)
    return (gradient - np.mean(gradient) + 1).astype(np.float32)


@pytest.fixture(scope="module")
def mock_data(known_bkg: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """jwst's mock WFSS exposure: N(0, 1), NaNs, outliers, 0.123 x the reference."""
    rng = np.random.default_rng(seed=42)
    data = rng.normal(0, 1, DETECTOR_SHAPE)
    err = 0.05 * (1 + rng.normal(0, 1, DETECTOR_SHAPE) ** 2)
    nan_indices = np.unravel_index(
        rng.choice(data.size, int(data.size * INITIAL_NAN_FRACTION)), data.shape
    )
    data[nan_indices] = np.nan
    err[nan_indices] = np.nan
    original_data_mean = float(np.nanmean(data))
    n_outliers = int(data.size * INITIAL_OUTLIER_FRACTION)
    outliers = np.unravel_index(rng.choice(data.size, n_outliers), data.shape)
    data[outliers] = rng.normal(100, 1, n_outliers)
    data[nan_indices] = np.nan
    err[nan_indices] = np.nan
    data += known_bkg * BKG_SCALING
    return data, err, original_data_mean


@pytest.fixture(scope="module")
def weighted_case(mock_data, known_bkg) -> tuple[Exposure, np.ndarray, float]:
    """test_weighted_mean's inputs: 0.1 % zero variances, outliers above 50 set to NaN."""
    data, err, original_data_mean = mock_data
    var = err**2
    rng = np.random.default_rng(seed=42)
    bad = rng.choice(var.size - 1, int(var.size / 1000))
    var[np.unravel_index(bad, var.shape)] = 0.0
    sci = data.copy()
    sci[sci > 50] = np.nan
    return Exposure(sci, err=np.sqrt(var)), known_bkg, original_data_mean


def test_weighted_mean_recovers_the_scaling(weighted_case) -> None:
    science, ref, original_mean = weighted_case
    var = np.square(science.err)
    factor = err_weighted_mean(science.sci, ref, var)
    assert factor == pytest.approx(BKG_SCALING + original_mean, abs=1e-3)


@pytest.mark.parametrize("niter", [1, 2, 5])
@pytest.mark.parametrize("percent", [2, 0.5, 0.1])
def test_iterated_rejection_keeps_the_factor_and_bounds_the_mask(
    weighted_case, niter: int, percent: float
) -> None:
    science, ref, original_mean = weighted_case
    result = scale_reference_background(science, ref, maxiter=niter, outlier_percent=percent)
    assert result.status == "COMPLETE" and result.iterations == niter
    assert result.factor == pytest.approx(BKG_SCALING + original_mean, abs=1e-3)
    mask_fraction = result.rejected.mean()
    assert mask_fraction <= percent * niter * 2 + INITIAL_NAN_FRACTION
    assert mask_fraction > INITIAL_NAN_FRACTION
    # each iteration drops about 2 p % of the pixels still in use (exact percentile cuts)
    assert mask_fraction == pytest.approx(1 - (1 - 2 * percent / 100) ** niter, rel=0.02)


def test_rms_stopping_criterion_stops_before_maxiter(weighted_case) -> None:
    science, ref, _ = weighted_case
    result = scale_reference_background(
        science, ref, maxiter=10, outlier_percent=100 * INITIAL_OUTLIER_FRACTION / 2,
        rms_stop=1e-4, dispersion_axis=1,
    )  # fmt: skip
    assert result.iterations < 10


def test_maxiter_zero_is_the_plain_weighted_mean(weighted_case) -> None:
    science, ref, _ = weighted_case
    result = scale_reference_background(science, ref, maxiter=0)
    assert not result.rejected.any()
    assert result.factor == err_weighted_mean(science.sci, ref, np.square(science.err))


@pytest.mark.parametrize("axis", [5, None])
def test_rms_stop_needs_a_dispersion_axis(weighted_case, axis) -> None:
    science, ref, _ = weighted_case
    with pytest.raises(ValueError, match="dispersion_axis"):
        scale_reference_background(science, ref, rms_stop=1.0, dispersion_axis=axis)


def test_subtraction_leaves_the_original_mean(mock_data, known_bkg) -> None:
    """jwst shared_tests: the mean of the result is the noise's mean to 1 % of its std."""
    data, err, original_mean = mock_data
    science = Exposure(data, err=err)
    scaling = scale_reference_background(science, known_bkg)
    result = subtract_reference_background(
        science, Exposure(known_bkg), scale=scaling, errors="jwst"
    )
    sci = result.sci.astype(np.float64)
    # rejecting outliers while fitting the factor must not blank any pixel
    assert np.isnan(sci).mean() == pytest.approx(INITIAL_NAN_FRACTION, rel=1e-2)
    sci[sci > 50] = np.nan
    assert np.nanmean(sci) == pytest.approx(original_mean, abs=0.01 * np.nanstd(sci))
    assert result.header["BKGD_SCL"] == pytest.approx(scaling.factor)
    assert result.header["S_BKDSUB"] == "COMPLETE"
    assert result.header["BKGSCMTH"] == "jwst"
    np.testing.assert_array_equal(result.err, science.err)  # JWST: ERR unchanged


# -- sufficiency (test_sufficient_background_pixels*) -------------------------------------


def test_sufficient_background_pixels() -> None:
    dq = np.zeros(DETECTOR_SHAPE, dtype=np.uint32)
    refpix = int(DQ.DO_NOT_USE | DQ.REFERENCE_PIXEL)
    dq[:4, :] = dq[-4:, :] = refpix
    dq[:, :4] = dq[:, -4:] = refpix
    bkg = np.ones(DETECTOR_SHAPE)
    mask = np.ones(DETECTOR_SHAPE, dtype=bool)
    assert sufficient_background(dq, mask, bkg)
    mask[4:-4, :] = False
    mask[:, 4:-4] = False
    assert not sufficient_background(dq, mask, bkg)


def test_sufficient_background_pixels_nonoverlapping() -> None:
    dq = np.zeros(DETECTOR_SHAPE, dtype=np.uint32)
    mask = np.zeros(DETECTOR_SHAPE, dtype=bool)
    bkg = np.zeros(DETECTOR_SHAPE)
    mask[:1024, :1024] = True
    bkg[1024:, 1024:] = 1.0
    assert not sufficient_background(dq, mask, bkg)


def test_user_mask_of_do_not_use_pixels_fails_with_factor_zero() -> None:
    science = Exposure(np.ones((64, 64)), err=np.ones((64, 64)), dq=np.ones((64, 64), int))
    result = scale_reference_background(science, np.ones((64, 64)), np.ones((64, 64), bool))
    assert result.status == "FAILED" and result.factor == 0.0
    out = subtract_reference_background(science, Exposure(np.ones((64, 64))), scale=result)
    assert out.header["S_BKDSUB"] == "FAILED" and out.header["BKGD_SCL"] == 0.0
    np.testing.assert_array_equal(out.sci, science.sci)


def test_infinite_factor_fails_with_factor_zero() -> None:
    science = Exposure(np.ones((64, 64)), err=np.ones((64, 64)))
    result = scale_reference_background(science, np.zeros((64, 64)))
    assert result.status == "FAILED" and result.factor == 0.0
    assert "finite" in result.reason


# -- legacy robust mean (jwst <= 1.16) -------------------------------------------------------


def test_robust_mean_is_the_mean_between_the_quartiles() -> None:
    values = np.random.default_rng(1).normal(5.0, 2.0, 10_001)
    values[:50] = np.nan
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, (25, 75))
    assert robust_mean(values) == np.mean(finite[(finite >= lo) & (finite <= hi)])


def test_robust_mean_factor_is_the_ratio_of_robust_means() -> None:
    rng = np.random.default_rng(2)
    ref = (1.0 + rng.random((200, 300))).astype(np.float32)
    ref[0, :10] = np.nan  # read as 0 by the legacy code
    sci = (2.5 * np.nan_to_num(ref) + rng.normal(0, 0.05, ref.shape)).astype(np.float32)
    mask = np.ones(ref.shape, bool)
    mask[50:80, 50:80] = False
    result = scale_reference_background(Exposure(sci), ref, mask, method="robust-mean")
    expected = robust_mean(sci[mask]) / robust_mean(np.nan_to_num(ref[mask]))
    assert result.factor == pytest.approx(expected, rel=1e-12)
    assert result.factor == pytest.approx(2.5, abs=0.01)


def test_robust_mean_needs_more_than_100_good_pixels() -> None:
    science = Exposure(np.ones((20, 20)), dq=np.zeros((20, 20), int))
    mask = np.zeros((20, 20), bool)
    mask.flat[:100] = True
    skipped = scale_reference_background(science, np.ones((20, 20)), mask, method="robust-mean")
    assert skipped.status == "SKIPPED" and skipped.factor == 0.0
    mask.flat[:101] = True
    done = scale_reference_background(science, np.ones((20, 20)), mask, method="robust-mean")
    assert done.status == "COMPLETE" and done.factor == 1.0


# -- source masking and cubes ----------------------------------------------------------------


def _field_with_sources(seed: int) -> tuple[Exposure, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:512, 0:512]
    ref = (1 + 0.3 * np.sin(xx / 80.0) + 0.2 * yy / 512).astype(np.float32)
    sci = 40.0 * ref + rng.normal(0, 2, ref.shape)
    for _ in range(40):
        y, x = rng.integers(0, 512, 2)
        sci += 30 * np.exp(-np.hypot(yy - y, xx - x) / 8)
    return Exposure(sci, err=np.full(sci.shape, 2.0)), ref


@pytest.mark.parametrize("method", ["jwst", "robust-mean"])
def test_masking_detected_sources_halves_the_bias(method: str) -> None:
    science, ref = _field_with_sources(1)
    one = scale_reference_background(science, ref, method=method)
    two = scale_reference_background(science, ref, method=method, passes=2)
    assert abs(one.factor - 40.0) > 0.5
    assert abs(two.factor - 40.0) <= 0.5 * abs(one.factor - 40.0)
    assert 0.7 < two.background_mask.mean() < 0.95


def test_dq_flagged_pixels_can_be_left_out() -> None:
    science, ref = _field_with_sources(2)
    dq = np.zeros(ref.shape, np.uint32)
    dq[science.sci > 45 * ref] = DQ.OTHER_BAD_PIXEL
    flagged = science.with_changes(dq=dq)
    result = scale_reference_background(flagged, ref, dqbits="~OTHER_BAD_PIXEL")
    assert not result.background_mask[dq > 0].any()
    assert abs(result.factor - 40.0) < abs(scale_reference_background(science, ref).factor - 40)


def test_cube_is_collapsed_before_fitting() -> None:
    rng = np.random.default_rng(3)
    ref = (1.0 + rng.random((64, 64))).astype(np.float32)
    planes = 7.0 * ref + rng.normal(0, 0.1, (3, 64, 64))
    result = scale_reference_background(Exposure(planes, err=np.full(planes.shape, 0.1)), ref)
    assert result.factor == pytest.approx(7.0, abs=0.01)


# -- Liger/IRIS master background ------------------------------------------------------------


def test_master_background_with_a_fixed_scale_adds_err_in_quadrature_and_ors_dq() -> None:
    science = Exposure(
        np.full((2, 8, 8), 10.0), err=np.full((2, 8, 8), 3.0),
        dq=np.full((2, 8, 8), int(DQ.JUMP_DET)),
    )  # fmt: skip
    dq = np.zeros((8, 8), np.uint32)
    dq[0, 0] = DQ.HOT
    master = Exposure(np.full((8, 8), 4.0), err=np.full((8, 8), 2.0), dq=dq)
    out = subtract_reference_background(
        science, master, scale=1.5, reference_name="liger_master_J.fits"
    )
    np.testing.assert_allclose(out.sci, 10.0 - 1.5 * 4.0)
    np.testing.assert_allclose(out.err, np.sqrt(3.0**2 + (1.5 * 2.0) ** 2))
    assert out.dq[1, 0, 0] == DQ.JUMP_DET | DQ.HOT and out.dq[1, 1, 1] == DQ.JUMP_DET
    h = out.header
    assert (h["BKGMETH"], h["BKGSCMTH"], h["BKGD_SCL"]) == ("reference", "fixed", 1.5)
    assert h["MASTERBG"] == "liger_master_J.fits"
    jwst = subtract_reference_background(science, master, scale=1.5, errors="jwst")
    np.testing.assert_array_equal(jwst.err, science.err)


def _subarray_header(xstart: int, ystart: int, xsize: int, ysize: int) -> Header:
    header = Header()
    header.update(SUBSTRT1=xstart, SUBSTRT2=ystart, SUBSIZE1=xsize, SUBSIZE2=ysize)
    return header


def test_full_frame_reference_is_cut_to_the_science_subarray() -> None:
    full = np.arange(2048 * 2048, dtype=np.float32).reshape(2048, 2048)
    reference = Exposure(full)
    science = Exposure(np.zeros((64, 2048)), header=_subarray_header(1, 1985, 2048, 64))
    cut = reference_on_science_grid(science, reference)
    np.testing.assert_array_equal(cut.sci, full[1984:2048, :])
    out = subtract_reference_background(science, reference, scale=1.0)
    np.testing.assert_array_equal(out.sci, -full[1984:2048, :])


def test_reference_that_does_not_cover_the_science_is_a_clear_error() -> None:
    reference = Exposure(np.ones((100, 100)), header=_subarray_header(1, 1, 100, 100))
    science = Exposure(np.ones((64, 64)), header=_subarray_header(60, 60, 64, 64))
    with pytest.raises(ValueError, match="does not cover the science subarray"):
        subtract_reference_background(science, reference)
    with pytest.raises(ValueError, match="SUBSTRT"):
        subtract_reference_background(Exposure(np.ones((64, 64))), Exposure(np.ones((70, 70))))
    with pytest.raises(ValueError, match="reference shape"):
        scale_reference_background(Exposure(np.ones((64, 64))), np.ones((70, 70)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "ratio"}, "method must be one of"),
        ({"maxiter": -1}, "maxiter must be >= 0"),
        ({"outlier_percent": 50}, "outlier_percent must be in"),
        ({"passes": 0}, "passes must be >= 1"),
    ],
)
def test_invalid_parameters_name_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scale_reference_background(Exposure(np.ones((8, 8))), np.ones((8, 8)), **kwargs)


@pytest.mark.parametrize("n", [1, 2, 3, 57, 20_001, 1_000_003])
@pytest.mark.parametrize("percent", [0.0, 0.05, 0.1, 1.0, 2.0, 49.9])
def test_rejection_cuts_are_numpy_percentiles_to_the_last_bit(n: int, percent: float) -> None:
    rng = np.random.default_rng(n)
    for values in (rng.normal(0, 1, n), rng.standard_cauchy(n), rng.integers(0, 5, n) * 1.0):
        expected = np.percentile(values, (percent, 100 - percent))
        assert _percentile_cuts(values, n, percent) == tuple(expected)
