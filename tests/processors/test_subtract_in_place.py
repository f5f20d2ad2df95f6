"""Subtraction in place gives the allocating subtraction's planes, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from processors import (
    DQ,
    BackgroundResult,
    Exposure,
    estimate_background,
    rolling_sky_background,
    sky_member,
    subtract_background,
)


def _exposure(shape: tuple[int, ...], seed: int) -> Exposure:
    rng = np.random.default_rng(seed)
    sci = rng.normal(100, 5, shape).astype(np.float32)
    err = rng.uniform(1, 3, shape).astype(np.float32)
    dq = rng.choice(np.array([0, int(DQ.JUMP_DET)], np.uint32), shape)
    return Exposure(sci, err=err, dq=dq)


def _copy(exposure: Exposure) -> Exposure:
    assert exposure.err is not None
    return Exposure(exposure.sci.copy(), err=exposure.err.copy(), dq=exposure.dq.copy())


def _background(kind: str, exposure: Exposure) -> BackgroundResult | Exposure:
    image = exposure.sci[-1] if exposure.is_cube else exposure.sci
    if kind == "model":
        return estimate_background(image, box_size=16)
    if kind == "flat model":  # every mesh cell equal: a constant surface
        return estimate_background(np.full_like(image, 7.0), box_size=16)
    if kind == "model with coverage":  # its error is a map (zero outside the coverage)
        coverage = np.zeros(image.shape, bool)
        coverage[:, :20] = True
        return estimate_background(image, box_size=16, coverage_mask=coverage)
    if kind == "rolling sky":
        models = [estimate_background(image * np.float32(1 + k / 10), box_size=16)
                  for k in range(4)]  # fmt: skip
        return rolling_sky_background(models[0], [sky_member(m) for m in models[1:]])
    frame = _exposure(image.shape, seed=2)
    return frame.with_changes(dq=np.full(image.shape, int(DQ.SATURATED), np.uint32))


SURFACES = {"model": True, "flat model": True, "rolling sky": True, "model with coverage": False}


@pytest.mark.parametrize("shape", [(64, 96), (3, 64, 96)])
@pytest.mark.parametrize("errors", ["quadrature", "jwst"])
@pytest.mark.parametrize("kind", [*SURFACES, "frame"])
@pytest.mark.parametrize("threads", [1, 2])
def test_in_place_equals_the_allocating_subtraction(shape, errors, kind, threads) -> None:
    exposure = _exposure(shape, seed=1)
    background = _background(kind, exposure)
    lazy = isinstance(background, BackgroundResult) and SURFACES[kind]
    if isinstance(background, BackgroundResult):  # the in-place pass makes its error rows
        assert (background.error_surface is not None) == SURFACES[kind]
        assert (background.background_surface is not None) == lazy
    work = _copy(exposure)
    sci, err, dq = work.sci, work.err, work.dq
    result = subtract_background(work, background, errors=errors, in_place=True,
                                 threads=threads)  # fmt: skip
    if lazy:  # ... and its background rows: the map was never made
        assert isinstance(background, BackgroundResult)
        assert background.background_surface is not None
    expected = subtract_background(exposure, background, errors=errors)
    assert result.sci is sci and result.err is err  # no new planes
    assert result.dq is dq or kind != "frame"
    for ours, theirs in ((result.sci, expected.sci), (result.err, expected.err),
                         (result.dq, expected.dq)):  # fmt: skip
        assert ours is not None and theirs is not None
        assert ours.tobytes() == theirs.tobytes()
    assert result.header["BKGERRMD"] == expected.header["BKGERRMD"]


def test_read_only_planes_are_copied_not_written() -> None:
    exposure = _copy(_exposure((32, 32), seed=3))
    exposure.sci.flags.writeable = False
    before = exposure.sci.copy()
    result = subtract_background(exposure, np.ones((32, 32), np.float32), in_place=True)
    np.testing.assert_array_equal(exposure.sci, before)
    np.testing.assert_array_equal(result.sci, before - 1)
