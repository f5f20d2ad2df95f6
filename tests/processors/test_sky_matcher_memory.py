"""A streaming mosaic group keeps what its pair statistics need, not its images."""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from processors import Exposure, skymatch
from processors.sky_matcher import SkyMatcher
from processors.skystats import SkyStatistic

SCALE = 0.1 / 3600


def _wcs(size: int, ra: float, dec: float, angle: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    wcs.wcs.crval = [ra, dec]
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    wcs.wcs.cd = SCALE * np.array([[-c, s], [s, c]])
    wcs.wcs.set()
    return wcs


def test_a_4096_member_costs_under_ten_mebibytes_and_no_pixel_is_kept() -> None:
    size = 4096
    rng = np.random.default_rng(0)
    sci = rng.normal(10, 1, (size, size)).astype(np.float32)
    dq = np.zeros((size, size), np.uint32)
    dq[:, :7] = 1  # DO_NOT_USE columns
    exposure = Exposure(sci, dq=dq, wcs=_wcs(size, 10.0, 0.0, 0.0))
    matcher = SkyMatcher(stat=SkyStatistic("median"))
    matcher.add("big", exposure)
    assert matcher.nbytes <= 10 * 2**20
    image = matcher.members["big"].image
    assert not np.shares_memory(image.samples, exposure.sci)
    assert np.isnan(image.samples[:, 0]).all() and not np.isnan(image.samples[:, 1]).any()
    assert image.usable(np.array([5, 5]), np.array([6, 7])).tolist() == [False, True]


def test_streaming_levels_equal_the_batch_for_rotated_offset_dithers() -> None:
    size, offsets = 512, [0.0, 1.5, -2.0, 4.0]
    rng = np.random.default_rng(1)
    step = 0.35 * size * SCALE
    exposures = []
    for k, offset in enumerate(offsets):
        sci = (20 + offset + rng.normal(0, 0.2, (size, size))).astype(np.float32)
        wcs = _wcs(size, 10 + (k % 2) * step, (k // 2) * step, 5.0 * k)
        exposures.append(Exposure(sci, wcs=wcs))
    matcher = SkyMatcher(stat=SkyStatistic("median"))
    for k, exposure in enumerate(exposures):
        matcher.add(str(k), exposure)
    streamed = matcher.solve()
    batch = skymatch(exposures, skymethod="match", skystat="median")
    np.testing.assert_allclose(streamed.levels, batch.levels, atol=1e-9)  # pair order only
    assert streamed.images == []
    levels = np.array(batch.levels, dtype=float)
    np.testing.assert_allclose(levels - levels.min(), np.array(offsets) - min(offsets), atol=0.02)
