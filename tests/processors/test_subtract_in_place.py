"""Subtraction in place gives the allocating subtraction's planes, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from processors import DQ, Exposure, estimate_background, subtract_background


def _exposure(shape: tuple[int, ...], seed: int) -> Exposure:
    rng = np.random.default_rng(seed)
    sci = rng.normal(100, 5, shape).astype(np.float32)
    err = rng.uniform(1, 3, shape).astype(np.float32)
    dq = rng.choice(np.array([0, int(DQ.JUMP_DET)], np.uint32), shape)
    return Exposure(sci, err=err, dq=dq)


def _copy(exposure: Exposure) -> Exposure:
    assert exposure.err is not None
    return Exposure(exposure.sci.copy(), err=exposure.err.copy(), dq=exposure.dq.copy())


@pytest.mark.parametrize("shape", [(64, 96), (3, 64, 96)])
@pytest.mark.parametrize("errors", ["quadrature", "jwst"])
@pytest.mark.parametrize("kind", ["model", "frame"])
def test_in_place_equals_the_allocating_subtraction(shape, errors, kind) -> None:
    exposure = _exposure(shape, seed=1)
    if kind == "model":
        background = estimate_background(exposure.sci[-1] if len(shape) == 3 else exposure.sci,
                                         box_size=16)  # fmt: skip
    else:
        frame = _exposure(shape[-2:], seed=2)
        background = frame.with_changes(dq=np.full(shape[-2:], int(DQ.SATURATED), np.uint32))
    expected = subtract_background(exposure, background, errors=errors)
    work = _copy(exposure)
    sci, err, dq = work.sci, work.err, work.dq
    result = subtract_background(work, background, errors=errors, in_place=True)
    assert result.sci is sci and result.err is err  # no new planes
    assert result.dq is dq or kind == "model"
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
