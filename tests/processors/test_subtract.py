"""Subtraction rules with exact numbers (JWST background tests, ALGORITHMS.md §1.6)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io.fits import Header

from processors import (
    DQ,
    Exposure,
    __version__,
    estimate_background,
    skip_background,
    subtract_background,
)


def _sci(shape: tuple[int, ...], value: float = 10.0, err: float | None = 3.0) -> Exposure:
    header = Header()
    header["INSTRUME"] = "MIRI"
    return Exposure(
        np.full(shape, value),
        err=None if err is None else np.full(shape, err),
        dq=np.full(shape, int(DQ.JUMP_DET)),
        header=header,
    )


@pytest.mark.parametrize("shape", [(10, 10), (2, 10, 10), (3, 10, 10)])
def test_sci_minus_background_is_nine_everywhere(shape: tuple[int, ...]) -> None:
    science = _sci(shape)
    out = subtract_background(science, np.ones((10, 10)), errors="jwst")
    np.testing.assert_array_equal(out.sci, np.full(shape, 9.0))
    assert out.header["S_BKDSUB"] == "COMPLETE"
    assert out.shape == shape


def test_output_is_not_input_and_input_is_untouched() -> None:
    science = _sci((10, 10))
    before = (science.sci.copy(), science.err.copy(), science.dq.copy(), science.header.copy())
    out = subtract_background(science, np.ones((10, 10)))
    assert out is not science
    assert out.sci is not science.sci
    np.testing.assert_array_equal(science.sci, before[0])
    np.testing.assert_array_equal(science.err, before[1])
    np.testing.assert_array_equal(science.dq, before[2])
    assert "S_BKDSUB" not in science.header


def test_jwst_mode_leaves_err_unchanged_and_ors_dq() -> None:
    background = Exposure(
        np.ones((10, 10)), err=np.full((10, 10), 4.0), dq=np.full((10, 10), int(DQ.HOT))
    )
    out = subtract_background(_sci((2, 10, 10)), background, errors="jwst", method="stack")
    np.testing.assert_array_equal(out.err, 3.0)
    np.testing.assert_array_equal(out.dq, int(DQ.JUMP_DET | DQ.HOT))
    assert out.header["BKGMETH"] == "stack"
    assert out.header["BKGERRMD"] == "jwst"


def test_quadrature_mode_adds_background_error() -> None:
    background = Exposure(np.ones((10, 10)), err=np.full((10, 10), 4.0))
    out = subtract_background(_sci((10, 10)), background, errors="quadrature")
    np.testing.assert_array_equal(out.err, 5.0)  # sqrt(3**2 + 4**2)


def test_quadrature_with_a_model_uses_its_estimate_error() -> None:
    model = estimate_background(
        np.random.default_rng(1).normal(1.0, 2.0, (10, 10)), box_size=5, estimator="mean"
    )
    out = subtract_background(_sci((10, 10)), model)
    np.testing.assert_allclose(out.err, np.sqrt(9.0 + model.error**2), rtol=1e-6)
    assert out.header["BKGLEVEL"] == pytest.approx(model.level)
    assert out.header["BKGBOX"] == "(5, 5)"
    assert out.header["BKGENGIN"] == "fast"


def test_unknown_err_stays_unknown() -> None:
    out = subtract_background(_sci((10, 10), err=None), np.ones((10, 10)))
    assert out.err is None
    assert "ERR unknown" in out.header["BKGERRMD"]


def test_unknown_background_error_leaves_err_and_says_so() -> None:
    out = subtract_background(_sci((10, 10)), np.ones((10, 10)), errors="quadrature")
    np.testing.assert_array_equal(out.err, 3.0)
    assert "background error unknown" in out.header["BKGERRMD"]


def test_header_cards_and_provenance() -> None:
    out = subtract_background(_sci((10, 10)), np.full((10, 10), 2.5), level=2.5)
    h = out.header
    assert (h["S_BKDSUB"], h["BKGSUB"], h["BKGMETH"], h["BKGLEVEL"]) == ("COMPLETE", True,
                                                                        "model", 2.5)  # fmt: skip
    assert h["SKYSTVER"] == __version__
    assert h["INSTRUME"] == "MIRI"
    assert any("skystream" in str(card) for card in h["HISTORY"])


def test_rejects_shape_mismatch_and_unknown_mode() -> None:
    with pytest.raises(ValueError, match=r"background shape \(20, 20\) does not match"):
        subtract_background(_sci((10, 10)), np.ones((20, 20)))
    with pytest.raises(ValueError, match="errors must be one of"):
        subtract_background(_sci((10, 10)), np.ones((10, 10)), errors="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="background exposure must be 2-D"):
        subtract_background(_sci((10, 10)), Exposure(np.ones((2, 10, 10))))


def test_source_mask_of_a_two_pass_model_can_be_kept_as_a_dq_bit() -> None:
    data = np.random.default_rng(3).normal(100.0, 2.0, (128, 128)).astype(np.float32)
    data[60:70, 60:70] += 500.0
    model = estimate_background(data, box_size=32, passes=2, dilate=2)
    assert model.source_mask is not None
    science = Exposure(data, err=np.full(data.shape, 2.0))
    kept = subtract_background(science, model, source_dq=int(DQ.OTHER_BAD_PIXEL))
    np.testing.assert_array_equal(kept.dq == int(DQ.OTHER_BAD_PIXEL), model.source_mask)
    assert kept.header["BKGSRCFR"] == pytest.approx(float(model.source_mask.mean()))
    assert kept.header["BKGPASS"] == 2 and kept.header["BKGDILAT"] == 2
    untouched = subtract_background(science, model)
    np.testing.assert_array_equal(untouched.dq, 0)


def test_scale_and_reference_cards() -> None:
    out = subtract_background(
        _sci((10, 10)), np.ones((10, 10)), scale=0.25, reference="bkg_master_F200W.fits"
    )
    assert out.header["BKGD_SCL"] == 0.25
    assert out.header["MASTERBG"] == "bkg_master_F200W.fits"


def test_failed_status_records_a_zero_scale_and_leaves_the_pixels() -> None:
    science = _sci((10, 10))
    out = skip_background(science, method="reference", reason="no factor", status="FAILED",
                          scale=0.0)  # fmt: skip
    assert out.header["S_BKDSUB"] == "FAILED"
    assert out.header["BKGD_SCL"] == 0.0
    assert out.header["BKGSUB"] is False
    np.testing.assert_array_equal(out.sci, science.sci)
    with pytest.raises(ValueError, match="status must be"):
        skip_background(science, method="reference", reason="x", status="DONE")  # type: ignore[arg-type]
