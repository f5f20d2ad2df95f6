"""The strict FITS walk: each structural defect has its reason, at once; nothing can loop."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from daemon.errors import QUARANTINE_REASONS, InvalidInput
from daemon.fileio.fits_io import check_fits_complete, read_exposure, read_primary_header
from daemon.fileio.fits_walk import MAX_HDUS, MAX_HEADER_CARDS
from tests.daemon.fits_corpus import BLOCK, card_at, hdu_spans, set_value, templates, with_card


@pytest.fixture(scope="module")
def jwst() -> bytes:
    return templates()["jwst"]


def _file(tmp_path: Path, data: bytes, name: str = "x.fits") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refused_as(path: Path, reason: str, **kwargs: int) -> str:
    """The walk and the read path give the same reason; returns the walk's detail."""
    state, detail = check_fits_complete(path, **kwargs)
    assert (state, detail) != ("complete", "")
    assert state == reason, detail
    with pytest.raises(InvalidInput) as info:
        read_exposure(path, **kwargs)
    assert info.value.reason == reason
    with pytest.raises(InvalidInput) as info:
        read_primary_header(path, **kwargs)
    assert info.value.reason == reason
    return detail


def test_new_reasons_are_quarantine_reasons() -> None:
    for reason in ("not_fits", "invalid_header", "too_large", "truncated", "not_a_file"):
        assert reason in QUARANTINE_REASONS


def test_the_extension_that_looped_forever_is_refused(tmp_path: Path) -> None:
    # Measured on main: BITPIX = 8, NAXIS1 = -2880 in an extension spun at 50 % CPU.
    header = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", 8), ("NAXIS", 1), ("NAXIS1", 0),
                          ("PCOUNT", 0), ("GCOUNT", 1)])  # fmt: skip
    data = fits.PrimaryHDU().header.tostring().encode() + header.tostring().encode()
    data = set_value(data, 1, "NAXIS1", -2880)
    assert data is not None
    detail = _refused_as(_file(tmp_path, data), "invalid_header")
    assert detail == "HDU 1: NAXIS1 = -2880 is negative"


@pytest.mark.parametrize(
    ("keyword", "value", "detail"),
    [("BITPIX", 7, "HDU 1: BITPIX = 7 is not a FITS pixel type"),
     ("BITPIX", "'16'", "HDU 1: BITPIX = \"'16'\" is not an integer"),
     ("NAXIS", 1000, "HDU 1: NAXIS = 1000 is outside 0..999"),
     ("NAXIS1", -1, "HDU 1: NAXIS1 = -1 is negative"),
     ("NAXIS2", "16.0", None), ("PCOUNT", -1, None), ("GCOUNT", -3, None)],
)  # fmt: skip
def test_bad_structural_values_are_invalid_headers_at_once(
    tmp_path: Path, jwst: bytes, keyword: str, value: object, detail: str | None
) -> None:
    data = set_value(jwst, 1, keyword, value)
    assert data is not None
    found = _refused_as(_file(tmp_path, data), "invalid_header")
    assert detail is None or found == detail


def test_naxisn_zero_is_legal_and_means_no_data(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.ones((4, 5), np.float32)).writeto(buffer)
    data = set_value(buffer.getvalue(), 0, "NAXIS1", 0)
    assert data is not None
    data = data[:BLOCK]  # the header; with NAXIS1 = 0 there is no data to follow
    path = _file(tmp_path, data)
    assert check_fits_complete(path) == ("complete", f"1 HDU(s), {BLOCK} bytes")
    with pytest.raises(InvalidInput) as info:
        read_exposure(path)
    assert info.value.reason == "no_image_data"


def test_missing_end_card_before_data_is_invalid_at_once(tmp_path: Path, jwst: bytes) -> None:
    at = card_at(jwst, 1, "END")
    assert at is not None
    detail = _refused_as(_file(tmp_path, with_card(jwst, at, b"")), "invalid_header")
    assert detail.startswith("HDU 1: XTENSION is given twice (non-text bytes from byte 86")
    assert detail.endswith("on: the END card is missing)")
    header_and_data = with_card(jwst, at, b"")[: hdu_spans(jwst)[1][2]]
    assert _refused_as(_file(tmp_path, header_and_data, "cut.fits"), "invalid_header") == (
        "HDU 1: no END card in the file (non-text bytes from byte 8642 on: the END card is "
        "missing)"
    )


def test_header_that_just_stops_may_still_grow(tmp_path: Path) -> None:
    # All text and no END yet: a writer may be between two header blocks.
    header = fits.PrimaryHDU().header.tostring().encode()
    at = card_at(header, 0, "END")
    assert at is not None
    path = _file(tmp_path, with_card(header, at, b""))
    assert check_fits_complete(path) == ("incomplete", "header of HDU 0 has no END card yet")


def test_no_end_within_the_card_bound_is_invalid(tmp_path: Path) -> None:
    cards = MAX_HEADER_CARDS + 36
    data = fits.PrimaryHDU().header.tostring().encode()[: 3 * 80] + b" " * (cards * 80)
    data = data[: len(data) // BLOCK * BLOCK]
    state, detail = check_fits_complete(_file(tmp_path, data))
    assert (state, detail) == (
        "invalid_header", f"HDU 0: no END card in the first {MAX_HEADER_CARDS} cards"
    )  # fmt: skip


def test_text_after_end_and_duplicate_keywords(tmp_path: Path, jwst: bytes) -> None:
    at = card_at(jwst, 2, "END")
    assert at is not None
    detail = _refused_as(_file(tmp_path, with_card(jwst, at, "END     x")), "invalid_header")
    assert detail == "HDU 2: text after the END card"
    at = card_at(jwst, 1, "EXTNAME")
    assert at is not None
    twice = with_card(jwst, at, "NAXIS   =                    2")
    assert _refused_as(_file(tmp_path, twice, "y.fits"), "invalid_header") == (
        "HDU 1: NAXIS is given twice"
    )


def test_extension_type_must_be_a_string(tmp_path: Path, jwst: bytes) -> None:
    start = hdu_spans(jwst)[1][0]
    data = with_card(jwst, start, "XTENSION= IMAGE")
    assert _refused_as(_file(tmp_path, data), "invalid_header") == (
        "HDU 1: XTENSION = 'IMAGE' is not a string"
    )


def test_huge_size_claims_are_too_large_at_once(tmp_path: Path, jwst: bytes) -> None:
    data = set_value(jwst, 1, "NAXIS1", 10**60)
    assert data is not None
    detail = _refused_as(_file(tmp_path, data[: 3 * BLOCK]), "too_large")
    assert detail.startswith("HDU 1 announces more data than the limit allows")
    # The file itself over the limit: refused before any header is walked.
    _refused_as(_file(tmp_path, jwst, "big.fits"), "too_large", max_bytes=4 * BLOCK)
    assert check_fits_complete(tmp_path / "big.fits", max_bytes=len(jwst))[0] == "complete"


def test_headers_announcing_more_than_the_limit(tmp_path: Path, jwst: bytes) -> None:
    # Primary (2 blocks) and SCI header (1 block); its 32 x 32 float32 data, two blocks,
    # is not there yet. A limit one byte short of where that data would end refuses it.
    path = _file(tmp_path, jwst[: 3 * BLOCK])
    assert check_fits_complete(path)[0] == "incomplete"
    assert check_fits_complete(path, max_bytes=5 * BLOCK)[0] == "incomplete"
    assert check_fits_complete(path, max_bytes=5 * BLOCK - 1)[0] == "too_large"


def test_ten_bytes_of_junk_are_not_fits_but_a_prefix_is_incomplete(tmp_path: Path) -> None:
    assert check_fits_complete(_file(tmp_path, b"0123456789"))[0] == "not_fits"
    assert check_fits_complete(_file(tmp_path, b"SIMPLE ", "p.fits"))[0] == "incomplete"
    assert check_fits_complete(_file(tmp_path, b"", "e.fits"))[0] == "incomplete"
    simple_f = b"SIMPLE  =                    F".ljust(BLOCK)
    assert check_fits_complete(_file(tmp_path, simple_f, "f.fits")) == (
        "not_fits", "SIMPLE = 'F': not a standard FITS file"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("tail", "verdict"),
    [(b"\0" * BLOCK, "invalid_header"), (b"trailing junk", "invalid_header"),
     (b"XTENS", "incomplete")],
)  # fmt: skip
def test_bytes_after_the_last_hdu(tmp_path: Path, jwst: bytes, tail: bytes, verdict: str) -> None:
    assert check_fits_complete(_file(tmp_path, jwst + tail))[0] == verdict


def test_more_hdus_than_the_bound(tmp_path: Path) -> None:
    extension = fits.ImageHDU().header.tostring().encode()
    data = fits.PrimaryHDU().header.tostring().encode() + extension * MAX_HDUS
    assert check_fits_complete(_file(tmp_path, data)) == (
        "invalid_header", f"more than {MAX_HDUS} HDUs"
    )  # fmt: skip
    assert check_fits_complete(_file(tmp_path, data[:-BLOCK], "ok.fits"))[0] == "complete"


def test_random_groups_and_table_heaps_are_sized_by_the_standard(tmp_path: Path) -> None:
    groups = fits.GroupsHDU(
        fits.GroupData(
            np.ones((3, 1, 4, 2), np.float32),
            parnames=["u", "v"],
            pardata=[np.arange(3.0), np.arange(3.0)],
        )
    )
    heap = fits.BinTableHDU.from_columns(
        [
            fits.Column(
                name="v",
                format="PJ()",
                array=np.array([np.arange(900), np.arange(5)], dtype=object),
            )
        ]
    )
    for hdus in ([groups], [fits.PrimaryHDU(), heap]):
        path = tmp_path / "layout.fits"
        fits.HDUList(hdus).writeto(path, overwrite=True)
        data = path.read_bytes()
        assert check_fits_complete(path)[0] == "complete"
        ends = {end for _, _, end in hdu_spans(data)}
        for cut in range(BLOCK, len(data), BLOCK):  # block boundaries inside the data too
            path.write_bytes(data[:cut])
            expected = "complete" if cut in ends else "incomplete"
            assert check_fits_complete(path)[0] == expected, cut


def test_special_files_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.fits"
    os.mkfifo(fifo)
    verdicts: list[tuple[str, str]] = []
    worker = threading.Thread(
        target=lambda: verdicts.extend(check_fits_complete(p) for p in (fifo, tmp_path)),
        daemon=True,
    )
    worker.start()
    worker.join(10)  # a hang detector, not a speed assertion
    assert not worker.is_alive(), "the check blocked on a FIFO"
    assert [state for state, _ in verdicts] == ["not_a_file", "not_a_file"]
    assert verdicts[0][1].startswith("not a regular file")
    with pytest.raises(InvalidInput) as info:
        read_exposure(fifo)
    assert info.value.reason == "not_a_file"


def test_details_never_carry_control_characters(tmp_path: Path, jwst: bytes) -> None:
    at = card_at(jwst, 1, "BITPIX")
    assert at is not None
    data = with_card(jwst, at, b"BITPIX  = \n\x1b[31m fake log line")
    state, detail = check_fits_complete(_file(tmp_path, data))
    assert state == "invalid_header"
    assert detail.isprintable()
    assert "\\n\\x1b[31m fake log line" in detail
