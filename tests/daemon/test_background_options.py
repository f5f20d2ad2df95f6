"""Background model options from the configuration, end to end on real folders: the
source-masked two-pass model (and its DQ bit), coverage masks with fill values, the MMM
estimator, RMS estimators and unclipped boxes (against photutils run live), and the
real Spitzer image that photutils refuses with the default boxes."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io.fits import Header
from astropy.stats import SigmaClip
from photutils.background import (
    Background2D,
    MADStdBackgroundRMS,
    MMMBackground,
    SExtractorBackground,
)

from daemon.app.settings import Settings
from daemon.fileio.fits_io import read_exposure
from processors import DQ, Exposure, bad_pixel_mask, simulate_exposure
from tests.conftest import (
    drop_fits,
    products_in,
    running,
    test_settings,
    wait_for_count,
    wait_until,
)

SOURCE_BIT = int(DQ.OTHER_BAD_PIXEL)
#: The fast engine's order statistics are within 1/100 sigma of the exact ones (by design:
#: interpolated in a fine histogram); sextractor and mmm take 2.5 and 3 medians.
FAST_AGREEMENT = 0.03


def _header() -> Header:
    header = Header()
    header["INSTRUME"], header["DETECTOR"], header["FILTER"] = "SIMCAM", "SIM1", "J"
    return header


async def _product(settings: Settings, name: str, exposure: Exposure | None) -> Exposure:
    """Run the daemon on one file (``exposure``, or ``name`` already in the inbox)."""
    out = settings.output.directory
    async with running(settings):
        if exposure is not None:
            drop_fits(settings.source.directory.path, name, exposure)
        await wait_until(lambda: len(products_in(out)) == 1)
    return read_exposure(out / name.replace(".fits", "_bsub.fits"))


def _sidecar(settings: Settings, name: str) -> dict[str, Any]:
    path = settings.output.directory / name.replace(".fits", "_bsub.json")
    return dict(json.loads(path.read_text()))


def _photutils(data: np.ndarray, **kwargs: Any) -> Background2D:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boxes emptied by clipping, NaN input
        return Background2D(data, **kwargs)


# -- two passes with the sources masked ------------------------------------------------------


def _galaxy_field() -> tuple[Exposure, np.ndarray, np.ndarray]:
    """A tilted sky, noise 6 and a large exponential disk galaxy (scale 22 px)."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:320, 0:384]
    sky = 200 + 0.02 * xx + 0.01 * yy
    galaxy = 80 * np.exp(-np.hypot(xx - 170, (yy - 150) / 0.8) / 22)
    data = (sky + galaxy + rng.normal(0, 6.0, sky.shape)).astype(np.float32)
    exposure = Exposure(data, err=np.full(sky.shape, 6.0, np.float32), header=_header())
    return exposure, sky, galaxy


@pytest.mark.asyncio
async def test_two_pass_model_halves_the_error_under_a_galaxy_and_marks_it_in_dq(
    tmp_path: Path,
) -> None:
    exposure, sky, galaxy = _galaxy_field()
    under = galaxy > 0.6  # a tenth of the noise
    options = {"box_size": 64, "nsigma": 2.0, "npixels": 10, "dilate": 15.0}
    products, sidecars = {}, {}
    for passes in (1, 2):
        settings = test_settings(
            tmp_path / f"p{passes}",
            background={**options, "passes": passes, "source_dq": "OTHER_BAD_PIXEL"},
        )
        products[passes] = await _product(settings, "galaxy.fits", exposure)
        sidecars[passes] = _sidecar(settings, "galaxy.fits")
    error = {
        passes: float(np.median(np.abs((exposure.sci - product.sci) - sky)[under]))
        for passes, product in products.items()
    }
    assert error[1] > 0.2 * 6.0  # the galaxy lifts the one-pass model
    assert error[2] <= 0.5 * error[1]
    one, two = products[1], products[2]
    assert not (one.dq & SOURCE_BIT).any() and "BKGSRCFR" not in one.header
    sources = (two.dq & SOURCE_BIT) != 0
    assert sources[150, 170]  # the galaxy's centre
    assert not sources[10:40, 330:370].any()  # empty sky far from it
    assert two.header["BKGSRCFR"] == pytest.approx(float(sources.mean()))
    assert (two.header["BKGPASS"], two.header["BKGDETSG"], two.header["BKGDILAT"]) == (
        2,
        2.0,
        15.0,
    )
    params = sidecars[2]["background_params"]
    assert (params["passes"], params["nsigma"], params["npixels"]) == (2, 2.0, 10)


@pytest.mark.asyncio
async def test_rolling_sky_products_keep_their_own_frames_source_mask(tmp_path: Path) -> None:
    exposure, _, _ = _galaxy_field()
    background: dict[str, Any] = {
        "method": "rolling-sky", "rolling_sky": {"min_members": 1}, "box_size": 64,
        "passes": 2, "nsigma": 2.0, "npixels": 10, "dilate": 15.0, "source_dq": SOURCE_BIT,
    }  # fmt: skip
    settings = test_settings(tmp_path, background=background)
    inbox, out = settings.source.directory.path, settings.output.directory
    async with running(settings):
        drop_fits(inbox, "first.fits", exposure)
        await wait_until(lambda: len(products_in(out)) == 1)
        drop_fits(inbox, "second.fits", exposure.with_changes(sci=exposure.sci[:, ::-1].copy()))
        await wait_until(lambda: len(products_in(out)) == 2)
    second = read_exposure(out / "second_bsub.fits")
    assert second.header["BKGMETH"] == "rolling-sky"
    sources = (second.dq & SOURCE_BIT) != 0
    assert sources[150, 383 - 170]  # the mirrored galaxy's centre
    assert not sources[10:40, 14:54].any()
    assert second.header["BKGSRCFR"] == pytest.approx(float(sources.mean()))


# -- coverage mask and fill value ------------------------------------------------------------


def _partly_covered() -> tuple[Exposure, np.ndarray]:
    """A simulated frame whose left 6 columns and top 5 rows have no data (NON_SCIENCE)."""
    exposure = simulate_exposure(1, size=(256, 320), seed=4)
    uncovered = np.zeros(exposure.shape, bool)
    uncovered[:, :6] = True
    uncovered[-5:, :] = True
    sci, dq = exposure.sci.copy(), exposure.dq.copy()
    sci[uncovered] = 0.0
    dq[uncovered] |= np.uint32(DQ.NON_SCIENCE)
    return exposure.with_changes(sci=sci, dq=dq), uncovered


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("engine", "fill_value", "agreement"),
    [("photutils", 0.0, 0.0), ("fast", 0.0, FAST_AGREEMENT), ("fast", math.nan, FAST_AGREEMENT)],
)
async def test_coverage_dq_gives_the_fill_value_where_there_is_no_data(
    tmp_path: Path, engine: str, fill_value: float, agreement: float
) -> None:
    exposure, uncovered = _partly_covered()
    tolerance = agreement * exposure.header["TRUENOIS"]
    background: dict[str, Any] = {
        "engine": engine, "box_size": 64, "exclude_percentile": 25.0,
        "coverage_dq": "NON_SCIENCE", "fill_value": fill_value,
    }  # fmt: skip
    settings = test_settings(tmp_path, background=background)
    product = await _product(settings, "edge.fits", exposure)
    reference = _photutils(
        exposure.sci, box_size=64, mask=bad_pixel_mask(exposure.dq, 0),
        coverage_mask=uncovered, fill_value=fill_value, filter_size=3,
        sigma_clip=SigmaClip(sigma=3.0, maxiters=10), bkg_estimator=SExtractorBackground(),
        exclude_percentile=25.0,
    )  # fmt: skip
    expected = np.subtract(exposure.sci, reference.background, dtype=np.float32)
    np.testing.assert_allclose(product.sci, expected, rtol=0, atol=tolerance)
    if math.isnan(fill_value):
        assert np.isnan(product.sci[uncovered]).all()
        assert np.isfinite(product.sci[~uncovered]).all()
    else:
        np.testing.assert_array_equal(product.sci[uncovered], exposure.sci[uncovered])
    # nothing was estimated there, so nothing was added to ERR either
    np.testing.assert_array_equal(product.err[uncovered], exposure.err[uncovered])  # type: ignore[index]
    assert (product.err[~uncovered] > exposure.err[~uncovered]).all()  # type: ignore[index]


# -- estimators and clipping against photutils -----------------------------------------------


@pytest.mark.asyncio
async def test_mmm_estimator_mad_std_rms_and_no_clipping_match_photutils(tmp_path: Path) -> None:
    exposure = simulate_exposure(1, size=(256, 320), seed=4)
    background: dict[str, Any] = {
        "box_size": 64, "exclude_percentile": 20.0, "estimator": "mmm",
        "rms_estimator": "mad-std", "sigma_clip": False, "edge_fraction": 0.75,
    }  # fmt: skip
    settings = test_settings(tmp_path, background=background)
    product = await _product(settings, "plain.fits", exposure)
    reference = _photutils(
        exposure.sci, box_size=64, mask=bad_pixel_mask(exposure.dq, 0), filter_size=3,
        sigma_clip=None, bkg_estimator=MMMBackground(), bkgrms_estimator=MADStdBackgroundRMS(),
        exclude_percentile=20.0,
    )  # fmt: skip
    expected = np.subtract(exposure.sci, reference.background, dtype=np.float32)
    tolerance = FAST_AGREEMENT * exposure.header["TRUENOIS"]
    np.testing.assert_allclose(product.sci, expected, rtol=0, atol=tolerance)
    sidecar = _sidecar(settings, "plain.fits")
    assert sidecar["background_rms"] == pytest.approx(float(reference.background_rms_median))
    assert sidecar["background_level"] == pytest.approx(
        float(reference.background_median), abs=tolerance
    )
    header = product.header
    assert (header["BKGESTIM"], header["BKGRMSES"], header["BKGCLIP"], header["BKGEDGEF"]) == (
        "mmm",
        "mad-std",
        False,
        0.75,
    )


# -- the real Spitzer image ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_spitzer_image_is_refused_as_photutils_refuses_it_unless_boxes_may_be_half_masked(
    tmp_path: Path, spitzer_path: Path
) -> None:
    data = read_exposure(spitzer_path).sci
    with pytest.raises(ValueError, match="All boxes contain"):
        _photutils(data, box_size=64)
    refused = test_settings(tmp_path / "defaults", background={"box_size": 64})
    inbox = refused.source.directory.path
    inbox.mkdir(parents=True)
    shutil.copy(spitzer_path, inbox / "spitzer.fits")
    reason_file = refused.quarantine.directory / "spitzer.fits.reason.json"
    async with running(refused):
        await wait_until(reason_file.exists)
    record = json.loads(reason_file.read_text())
    assert record["reason"] == "no_valid_pixels"
    assert "All boxes contain <= 3686.4" in record["detail"]

    accepted = test_settings(
        tmp_path / "half", background={"box_size": 64, "exclude_percentile": 50.0}
    )
    accepted.source.directory.path.mkdir(parents=True)
    shutil.copy(spitzer_path, accepted.source.directory.path / "spitzer.fits")
    product = await _product(accepted, "spitzer.fits", None)
    reference = _photutils(data, box_size=64, exclude_percentile=50.0)
    rms = reference.background_rms
    level = _sidecar(accepted, "spitzer.fits")["background_level"]
    assert level == pytest.approx(float(reference.background_median), abs=0.01)  # 3.30
    expected = np.subtract(data, reference.background, dtype=np.float32)
    difference = np.abs(product.sci - expected)[np.isfinite(data)]
    assert (difference <= FAST_AGREEMENT * rms[np.isfinite(data)]).all()


# -- stack members of different NINTS --------------------------------------------------------


@pytest.mark.asyncio
async def test_stack_members_of_different_nints_are_each_collapsed_then_combined(
    tmp_path: Path,
) -> None:
    """Backgrounds of 2, 4 and 1 integrations (levels 10, 14, 12; ERR 1, 2, 3), as jwst."""
    shape = (64, 80)
    members = {
        "a_sky.fits": (10.0, 1.0, 2),
        "b_sky.fits": (14.0, 2.0, 4),
        "c_sky.fits": (12.0, 3.0, None),
    }
    settings = test_settings(
        tmp_path,
        background={"method": "stack", "stack": {"min_members": 3}},
        routing={"background_when": {"filename": ["*_sky*"]}},
    )
    science = Exposure(
        np.random.default_rng(3).normal(62.0, 1.0, shape).astype(np.float32),
        err=np.full(shape, 0.5, np.float32),
        header=_header(),
    )
    inbox, out = settings.source.directory.path, settings.output.directory
    async with running(settings) as service:
        for name, (level, err, nints) in members.items():
            full = shape if nints is None else (nints, *shape)
            frame = Exposure(np.full(full, level, np.float32), err=np.full(full, err, np.float32),
                             header=_header())  # fmt: skip
            drop_fits(inbox, name, frame)
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "background"}, 3)  # fmt: skip
        drop_fits(inbox, "target.fits", science)
        await wait_until(lambda: len(products_in(out)) == 1)
    product = read_exposure(out / "target_bsub.fits")
    assert product.header["BKGNINP"] == 3
    np.testing.assert_allclose(product.sci, science.sci - np.float32(12.0), atol=1e-5)
    combined_err = np.sqrt(1.0 + 4.0 + 9.0) / 3.0
    np.testing.assert_allclose(product.err, np.sqrt(0.5**2 + combined_err**2), rtol=1e-6)  # type: ignore[arg-type]
