"""Sky statistics and sky matching: stcal/jwst truth tables, geometry, real-sky tiles."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from processors import DQ, Exposure
from processors.skymatch import SkyMatchWarning, skymatch
from processors.skystats import SkyStatistic, sky_statistic


def _wcs(shape=(10, 10), ra=10.0, dec=0.0, rotation=0.0, scale_arcsec=1.0) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    wcs.wcs.crval = [ra, dec]
    theta = np.radians(rotation)
    wcs.wcs.cd = (
        scale_arcsec
        / 3600
        * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    )
    wcs.wcs.set()
    return wcs


# stcal tests/skymatch/test_skystats.py (ALGORITHMS.md §2.9)
@pytest.mark.parametrize("skystat", ["mean", "median", "mode", "midpt"])
def test_constant_image_statistics(skystat) -> None:
    assert sky_statistic(np.ones((10, 10)), SkyStatistic(skystat)) == (1.0, 100)


def test_midpt_of_four_values_is_imagestats_biased_value() -> None:
    value, npix = sky_statistic(np.array([0.0, 1.0, 2.0, 3.0]), SkyStatistic("midpt"))
    assert value == pytest.approx(1.032796, rel=1e-6)
    assert npix == 4


def test_hard_cuts_select_the_tens() -> None:
    data = np.concatenate([np.zeros(50), np.full(50, 10.0)])
    assert sky_statistic(data, SkyStatistic("mean", lower=5, upper=15)) == (10.0, 50)


def test_clipping_is_around_the_mean() -> None:
    data = np.concatenate([np.random.default_rng(0).normal(100, 1, 10_000), [1e4] * 20])
    value, npix = sky_statistic(data, SkyStatistic("mean", nclip=3, lsigma=3, usigma=3))
    assert value == pytest.approx(100, abs=0.05)
    assert npix < 10_000


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"skystat": "max"}, "skystat must be one of"), ({"nclip": -1}, "nclip must be"),
    ({"binwidth": 0}, "binwidth must be positive"), ({"lsigma": 0}, "lsigma and usigma"),
])  # fmt: skip
def test_statistic_parameters_are_validated(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        SkyStatistic(**kwargs)


# stcal tests/skymatch/test_skymatch.py: two fully overlapping images of 21 and 42.
@pytest.mark.parametrize(("method", "match_down", "expected"), [
    ("local", True, [21, 42]), ("match", True, [0, 21]), ("match", False, [-21, 0]),
    ("global", True, [21, 21]), ("global+match", True, [21, 42]),
    ("localmin", True, [21, 42]), ("globalmin", True, [21, 21]),
    ("globalmin+match", True, [21, 42]),
])  # fmt: skip
@pytest.mark.parametrize("subtract", [False, True])
def test_stcal_truth_table(method, match_down, expected, subtract) -> None:
    images = [Exposure(np.full((10, 10), v), wcs=_wcs()) for v in (21.0, 42.0)]
    result = skymatch(images, skymethod=method, skystat="mean", match_down=match_down,
                      subtract=subtract)  # fmt: skip
    np.testing.assert_allclose(result.levels, expected, atol=1e-9)
    for image, fill, level in zip(result.images, (21.0, 42.0), expected, strict=True):
        assert image.header["S_SKYMAT"] == "COMPLETE"
        assert image.header["BKGSUB"] is subtract
        np.testing.assert_allclose(image.sci, fill - level if subtract else fill)


def _jwst_scene(grouped: bool):
    """jwst skymatch/tests/test_skymatch.py::test_skymatch, with astropy WCS.

    The same 96x96 frames, bad pixels and noise draws (legacy seed 1, the noise added on
    top of the bad values) as the jwst test, so its 0.01 tolerance applies as is.
    """
    legacy = np.random.RandomState(1)
    levels = [9.12, 8.28, 2.56]
    frames = []
    for saturated, bad in ((1e6, 1e9), (5e6, 3e9), (7e6, 1e8)):
        sci = np.zeros((96, 96))
        dq = np.zeros((96, 96), np.uint32)
        for ys, xs in (
            (slice(0, 5), slice(0, 5)),
            (slice(-5, None), slice(0, 5)),
            (slice(-5, None), slice(-5, None)),
            (slice(0, 5), slice(-5, None)),
        ):
            sci[ys, xs] = saturated
            dq[ys, xs] = int(DQ.SATURATED)  # fmt: skip
        sci[43:53, 43:53] = bad
        dq[43:53, 43:53] = int(DQ.DO_NOT_USE)
        frames.append((sci, dq))
    images = []
    for (sci, dq), level in zip(frames, levels, strict=True):
        sci = sci + legacy.normal(loc=level, scale=0.1, size=sci.shape)
        images.append(Exposure(sci, dq=dq, wcs=_wcs((96, 96), scale_arcsec=0.03)))
    return images, levels, ([0, 0, 0] if grouped else None)


@pytest.mark.parametrize("skystat", ["mean", "median", "mode", "midpt"])
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("method", ["local", "global", "match", "global+match"])
def test_jwst_three_image_scenario(skystat, grouped, method) -> None:
    images, levels, group_ids = _jwst_scene(grouped)
    result = skymatch(images, skymethod=method, skystat=skystat, nclip=0, binwidth=0.2,
                      dqbits="~DO_NOT_USE+SATURATED", group_ids=group_ids)  # fmt: skip
    if grouped and method == "match":  # one group: nothing to match it against
        assert result.valid == [False] * 3
        return
    lowest = min(levels)
    expected = {
        "local": [lowest] * 3 if grouped else levels,
        "global": [lowest] * 3,
        "match": [v - lowest for v in levels],
        "global+match": [lowest] * 3 if grouped else levels,
    }[method]
    np.testing.assert_allclose(result.levels, expected, atol=0.01)


def test_one_group_cannot_be_matched_and_is_skipped() -> None:
    images, _, group_ids = _jwst_scene(True)
    result = skymatch(images, skymethod="match", skystat="mean", nclip=0,
                      dqbits="~DO_NOT_USE+SATURATED", group_ids=group_ids)  # fmt: skip
    assert result.valid == [False] * 3
    assert all(i.header["S_SKYMAT"] == "SKIPPED" for i in result.images)
    assert all("BKGLEVEL" not in i.header for i in result.images)


def test_match_up_uses_the_highest_sky() -> None:
    images, levels, _ = _jwst_scene(False)
    result = skymatch(images, skymethod="match", skystat="mean", match_down=False, nclip=0,
                      dqbits="~DO_NOT_USE+SATURATED")  # fmt: skip
    np.testing.assert_allclose(result.levels, [v - max(levels) for v in levels], atol=0.01)


def test_a_group_is_measured_as_the_pixel_weighted_mean_of_its_members() -> None:
    images, levels, _ = _jwst_scene(False)
    result = skymatch(images, skymethod="match", skystat="mean", nclip=0,
                      dqbits="~DO_NOT_USE+SATURATED", group_ids=[0, 1, 1])  # fmt: skip
    pair_mean = (levels[1] + levels[2]) / 2
    np.testing.assert_allclose(result.levels, [levels[0] - pair_mean, 0, 0], atol=0.01)


def test_rotated_and_offset_frames_leave_saturated_corners_out() -> None:
    """jwst test_skymatch_overlap: 5 images, 3 groups, rotated/offset frames."""
    rng = np.random.default_rng(7)
    levels = [9.12, 9.12, 8.28, 8.28, 2.56]
    rotations = [0, 30, 0, 60, 0]
    offsets = [0.0, 0.0, 0.1 / 3600 * 30, 0.0, 0.1 / 3600 * 20]
    images = []
    for level, rotation, offset in zip(levels, rotations, offsets, strict=True):
        sci = level + rng.normal(0, 0.1, (96, 96))
        dq = np.zeros((96, 96), np.uint32)
        sci[:8, :8] = 1e6  # flagged only as SATURATED, which dqbits does not exclude
        dq[:8, :8] = int(DQ.SATURATED)
        images.append(
            Exposure(
                sci,
                dq=dq,
                wcs=_wcs((96, 96), ra=10.0 + offset, rotation=rotation, scale_arcsec=0.1),
            )
        )
    result = skymatch(images, skymethod="match", skystat="mean", dqbits="~DO_NOT_USE",
                      group_ids=[0, 0, 1, 1, 2])  # fmt: skip
    np.testing.assert_allclose(result.levels, [v - 2.56 for v in levels], atol=0.01)


def test_partial_overlap_with_identical_pointing_pairs() -> None:
    rng = np.random.default_rng(3)
    images = [
        Exposure(5.0 + rng.normal(0, 0.05, (64, 64)), wcs=_wcs((64, 64), ra=ra))
        for ra in (10.0, 10.0, 10.0 + 20 / 3600)  # two identical pointings, one offset
    ]
    images[1] = images[1].with_changes(sci=images[1].sci + 3.0)
    images[2] = images[2].with_changes(sci=images[2].sci + 1.0)
    result = skymatch(images, skymethod="match", skystat="median")
    np.testing.assert_allclose(result.levels, [0.0, 3.0, 1.0], atol=0.02)


def test_an_image_with_no_overlap_is_skipped_not_an_error() -> None:
    images = [Exposure(np.full((16, 16), v), wcs=_wcs((16, 16), ra=ra))
              for v, ra in ((1.0, 10.0), (2.0, 10.001), (3.0, 50.0))]  # fmt: skip
    result = skymatch(images, skymethod="match", skystat="mean")
    assert result.valid == [True, True, False]
    assert result.levels[2] is None
    assert result.images[2].header["S_SKYMAT"] == "SKIPPED"


def test_disconnected_subsets_are_matched_within_themselves_with_a_warning() -> None:
    images = [Exposure(np.full((16, 16), v), wcs=_wcs((16, 16), ra=ra))
              for v, ra in ((1.0, 10.0), (4.0, 10.0), (7.0, 60.0), (9.0, 60.0))]  # fmt: skip
    with pytest.warns(SkyMatchWarning, match="disconnected"):
        result = skymatch(images, skymethod="match", skystat="mean")
    deltas = np.array(result.levels)
    assert deltas[1] - deltas[0] == pytest.approx(3.0)
    assert deltas[3] - deltas[2] == pytest.approx(2.0)


def test_rerun_refuses_a_flipped_subtract_and_accumulates_levels() -> None:
    images = [Exposure(np.full((10, 10), v), wcs=_wcs()) for v in (21.0, 42.0)]
    first = skymatch(images, skymethod="match", skystat="mean", subtract=True)
    second = skymatch(first.images, skymethod="match", skystat="mean", subtract=True)
    np.testing.assert_allclose(second.levels, [0.0, 21.0], atol=1e-9)
    with pytest.raises(ValueError, match="refusing subtract=False"):
        skymatch(first.images, skymethod="match", skystat="mean", subtract=False)


def test_needs_a_wcs() -> None:
    with pytest.raises(ValueError, match="celestial WCS"):
        skymatch([Exposure(np.ones((4, 4)))])


def test_spitzer_tiles_with_known_offsets_are_recovered(spitzer_path) -> None:
    with fits.open(spitzer_path) as hdul:
        data = hdul[0].data.astype(np.float32)
        wcs = WCS(hdul[0].header)
    rng = np.random.default_rng(2)
    tiles, offsets = [], []
    for y0, x0 in ((0, 0), (0, 300), (150, 150), (213, 450), (200, 700)):
        offset = float(rng.uniform(-5, 5))
        cut = data[y0 : y0 + 300, x0 : x0 + 325] + np.float32(offset)
        tile_wcs = wcs.deepcopy()
        tile_wcs.wcs.crpix = tile_wcs.wcs.crpix - np.array([x0, y0])
        tiles.append(Exposure(cut, wcs=tile_wcs))
        offsets.append(offset)
    result = skymatch(tiles, skymethod="match", skystat="median", nclip=3, lsigma=3, usigma=3)
    recovered = np.array(result.levels) - result.levels[0]
    truth = np.array(offsets) - offsets[0]
    noise = float(np.nanstd(data[300:400, 100:200]))
    error = np.abs(recovered - truth)
    assert error.max() < 0.1 * noise, (error, noise)
