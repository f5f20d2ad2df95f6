"""Exposure normalisation, DQ flags and masks, simulator truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from processors import DQ, Exposure, bad_pixel_mask, simulate_exposure, simulate_night


def test_exposure_normalises_types() -> None:
    exp = Exposure(np.ones((4, 5), dtype=np.int16), err=np.ones((4, 5)), dq=np.ones((4, 5), int))
    assert exp.sci.dtype == np.float32 and exp.err.dtype == np.float32
    assert exp.dq.dtype == np.uint32
    assert Exposure(np.ones((3, 4, 5))).dq.shape == (3, 4, 5)
    assert Exposure(np.ones((4, 5))).err is None
    assert Exposure(np.ones((3, 4, 5))).image_shape == (4, 5)


def test_exposure_is_frozen() -> None:
    exp = Exposure(np.ones((4, 5)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.sci = np.zeros((4, 5))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sci": np.ones(5)}, "sci must be 2-D or 3-D"),
        ({"sci": np.ones((4, 5)), "err": np.ones((5, 4))}, "err shape"),
        ({"sci": np.ones((4, 5)), "dq": np.ones((4, 4), int)}, "dq shape"),
    ],
)
def test_exposure_rejects_bad_shapes(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Exposure(**kwargs)


def test_dq_values_are_the_jwst_table() -> None:
    assert (DQ.DO_NOT_USE, DQ.SATURATED, DQ.JUMP_DET, DQ.NON_SCIENCE) == (1, 2, 4, 512)
    assert (DQ.HOT, DQ.REFERENCE_PIXEL, DQ.OTHER_BAD_PIXEL) == (2048, 2**31, 2**30)


@pytest.mark.parametrize(
    ("dqbits", "expected"),
    [
        (0, [False, True, True, True, True]),
        (None, [False] * 5),
        ("~DO_NOT_USE+NON_SCIENCE", [False, True, False, True, True]),
        ("~DO_NOT_USE,NON_SCIENCE", [False, True, False, True, True]),
        ("SATURATED", [False, True, False, True, True]),
        (2, [False, True, False, True, True]),
    ],
)
def test_bad_pixel_mask_follows_astropy_bit_flag_syntax(dqbits, expected) -> None:
    dq = np.array([0, 1, 2, 512, 1 | 2], dtype=np.uint32)
    assert bad_pixel_mask(dq, dqbits).tolist() == expected


def test_bad_pixel_mask_names_a_bad_expression() -> None:
    with pytest.raises(ValueError, match="dqbits 'NOT_A_FLAG' is not a valid"):
        bad_pixel_mask(np.zeros(3, np.uint32), "NOT_A_FLAG")


def test_simulator_is_seeded_and_carries_its_truth() -> None:
    a = simulate_exposure(2, size=128, seed=5)
    b = simulate_exposure(2, size=128, seed=5)
    np.testing.assert_array_equal(a.sci, b.sci)
    assert a.header["TRUESKY"] == b.header["TRUESKY"]
    ny, nx = a.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    sky = a.header["TRUESKY"] + a.header["TRUEGX"] * (xx - (nx - 1) / 2)
    sky = sky + a.header["TRUEGY"] * (yy - (ny - 1) / 2)
    assert sky.mean() == pytest.approx(a.header["TRUESKY"])
    good = a.dq == 0
    pull = (a.sci - sky)[good] / a.err[good]
    assert np.median(pull) == pytest.approx(0.0, abs=0.05)  # stars are a minority of pixels
    assert (a.dq & DQ.REFERENCE_PIXEL).astype(bool)[:4].all()
    assert a.wcs is not None and a.wcs.has_celestial


def test_simulated_night_is_dithered_over_one_field() -> None:
    night = simulate_night(3, size=128, seed=5)
    centres = [exp.wcs.pixel_to_world_values(63.5, 63.5) for exp in night]
    assert len({round(float(c[0]), 6) for c in centres}) == 3
    assert max(abs(float(c[1]) - 2.2) for c in centres) < 0.01
    cube = simulate_exposure(0, size=64, seed=5, nints=4)
    assert cube.shape == (4, 64, 64) and cube.is_cube
