"""skymethod='user': JWST's skylist levels, recorded and (optionally) subtracted."""

from __future__ import annotations

import numpy as np
import pytest

from processors import Exposure
from processors.skymatch import skymatch

LEVELS = [9.12, 8.28, 2.56]  # the levels of jwst's skymatch tests


def _images() -> list[Exposure]:
    rng = np.random.default_rng(1)
    return [Exposure(rng.normal(level, 0.1, (40, 50))) for level in LEVELS]


@pytest.mark.parametrize("subtract", [False, True])
def test_user_levels_are_recorded_and_subtracted(subtract: bool) -> None:
    images = _images()
    result = skymatch(images, skymethod="user", user_sky=LEVELS, subtract=subtract)
    assert result.levels == LEVELS and result.valid == [True, True, True]
    for before, after, level in zip(images, result.images, LEVELS, strict=True):
        h = after.header
        assert (h["BKGLEVEL"], h["BKGSUB"], h["BKGMETH"]) == (level, subtract, "user")
        assert h["S_SKYMAT"] == "COMPLETE"
        expected = before.sci - np.float32(level) if subtract else before.sci
        np.testing.assert_array_equal(after.sci, expected)
        assert abs(float(np.mean(after.sci)) - (0.0 if subtract else level)) < 0.01
        assert after is not before


def test_no_wcs_is_needed_for_user_levels() -> None:
    images = _images()
    assert all(image.wcs is None for image in images)
    with pytest.raises(ValueError, match="celestial WCS"):
        skymatch(images, skymethod="local")
    assert skymatch(images, skymethod="user", user_sky=LEVELS).method == "user"


def test_a_second_run_subtracts_only_what_is_left() -> None:
    first = skymatch(_images(), skymethod="user", user_sky=LEVELS, subtract=True)
    second = skymatch(first.images, skymethod="user", user_sky=[10.0, 8.28, 3.0], subtract=True)
    assert second.levels == [10.0, 8.28, 3.0]
    for before, after, level in zip(_images(), second.images, second.levels, strict=True):
        np.testing.assert_allclose(after.sci, before.sci - np.float32(level), atol=1e-5)
        assert after.header["BKGLEVEL"] == level
    np.testing.assert_array_equal(second.images[1].sci, first.images[1].sci)  # same level


def test_flipping_subtract_is_refused() -> None:
    first = skymatch(_images(), skymethod="user", user_sky=LEVELS, subtract=True)
    with pytest.raises(ValueError, match="refusing subtract=False"):
        skymatch(first.images, skymethod="user", user_sky=LEVELS, subtract=False)


@pytest.mark.parametrize(
    ("user_sky", "message"),
    [
        (None, "needs user_sky"),
        ([1.0, 2.0], "2 user_sky levels for 3 images"),
        ([1.0, np.nan, 2.0], "must be finite"),
    ],
)
def test_missing_or_bad_levels_raise(user_sky, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        skymatch(_images(), skymethod="user", user_sky=user_sky)
