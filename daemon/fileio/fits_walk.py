"""A strict, bounded walk over a FITS file's headers: complete, still growing, or refused.

The walk reads headers only (never data), in 2880-byte blocks, and obeys hard bounds so
that no file can make it loop, stall or allocate without limit: at most `MAX_HDUS` HDUs,
at most `MAX_HEADER_CARDS` cards per header, and every step advances by at least one
block. Sizes are Python integers (exact, no overflow), and a product of axis lengths stops
as soon as it passes the size limit, so a header claiming ``NAXISn = 10**60`` costs nothing.

The verdicts, and which of them may still change while a writer is at work:

``complete``
    Every HDU is whole and the last one ends exactly at the end of the file.
``incomplete``
    What is there is valid FITS, but more bytes are needed (a header without its ``END``
    card yet, data cut short, a partial block, data without its padding to a whole
    block). Only this verdict waits for the incomplete timeout; when it runs out, the
    file is ``truncated``.
``not_fits``
    The file does not begin with a ``SIMPLE = T`` card (ten bytes of junk are not FITS;
    only a prefix of that card is still ``incomplete``).
``invalid_header``
    A header breaks the FITS standard in a way no appended byte can repair: ``BITPIX``
    outside {8, 16, 32, 64, -32, -64}; ``NAXIS`` outside 0..999; a negative or
    non-integer ``NAXISn``, ``PCOUNT`` or ``GCOUNT``; a missing mandatory keyword; a
    structural keyword given twice; text after ``END``; no ``END`` within
    `MAX_HEADER_CARDS` cards, or none before binary (non-ASCII) bytes reach the end of the
    file (the ``END`` card is missing and data follows); bytes after the last HDU that do
    not start an extension; more than `MAX_HDUS` HDUs. ``NAXISn = 0`` is legal and means
    no data. A header that is all text and simply stops at the end of the file is
    ``incomplete`` instead: it may still be being written.
``too_large``
    The file, or the size its headers announce, exceeds the ``max_bytes`` limit: refused
    as soon as the header says so, without waiting for the data.
``not_a_file``
    A directory, FIFO, socket or device: never walked, never read (given by
    `daemon.fileio.fits_io.check_fits_complete`, which opens the file).
"""

from __future__ import annotations

import os
import re
from typing import IO, Literal

__all__ = [
    "DEFAULT_MAX_EXPOSURE_BYTES",
    "FitsState",
    "MAX_HDUS",
    "MAX_HEADER_CARDS",
    "walk_fits",
]

BLOCK = 2880
CARD = 80
MAX_HDUS = 1000
MAX_HEADER_CARDS = 100_000
DEFAULT_MAX_EXPOSURE_BYTES = 4 * 2**30
FitsState = Literal[
    "complete", "incomplete", "not_fits", "invalid_header", "too_large", "not_a_file"
]

_BITPIX = frozenset({8, 16, 32, 64, -32, -64})
_MAX_NAXIS = 999
_PRIMARY = b"SIMPLE  ="
_EXTENSION = b"XTENSION="
_END = b"END     "
_INTEGER = re.compile(rb"[+-]?[0-9]+")
_AXIS = re.compile(rb"NAXIS[1-9][0-9]{0,2}")
#: A value region holding a FITS character string (text, ``''`` for a quote) and a comment.
_STRING = re.compile(rb" *'(?:[ -&(-~]|'')*' *(?:/.*)?", re.DOTALL)

_STRUCTURAL = frozenset(
    {b"SIMPLE", b"XTENSION", b"BITPIX", b"NAXIS", b"PCOUNT", b"GCOUNT", b"GROUPS"}
)
_TEXT = bytes(range(0x20, 0x7F))  # the only bytes a FITS header may hold


class _Verdict(Exception):
    """Ends the walk early with a verdict other than ``complete``."""

    def __init__(self, state: FitsState, detail: str) -> None:
        super().__init__(detail)
        self.state: FitsState = state
        self.detail = detail


def _value(region: bytes) -> bytes:
    """The value of a card's value region (columns 11-80) without its comment."""
    return region.split(b"/", 1)[0].strip(b" ")


def _shown(raw: bytes) -> str:
    """A header value as text safe for a log line or a reason file."""
    return repr(raw.decode("ascii", errors="backslashreplace"))


def _end_hint(binary_at: int | None) -> str:
    if binary_at is None:
        return ""
    return f" (non-text bytes from byte {binary_at} on: the END card is missing)"


def _read_header(
    handle: IO[bytes], offset: int, size: int, hdu: int
) -> tuple[dict[bytes, bytes], int]:
    """The structural cards of the header at ``offset`` and its length in bytes."""
    cards: dict[bytes, bytes] = {}
    position = offset
    binary_at: int | None = None
    count = 0
    while position + BLOCK <= size:
        handle.seek(position)
        block = handle.read(BLOCK)
        if len(block) < BLOCK:  # the file shrank under us: judge it again later
            raise _Verdict("incomplete", f"header of HDU {hdu} could not be read whole")
        if binary_at is None and block.translate(None, _TEXT):
            binary_at = position + next(i for i, b in enumerate(block) if b not in _TEXT)
        for start in range(0, BLOCK, CARD):
            card = block[start : start + CARD]
            count += 1
            if card[:8] == _END:
                if card[8:].strip(b" "):
                    raise _Verdict("invalid_header", f"HDU {hdu}: text after the END card")
                return cards, position + BLOCK - offset
            keyword = card[:8].rstrip(b" ")
            if keyword in _STRUCTURAL or _AXIS.fullmatch(keyword):
                name = keyword.decode()
                if card[8:10] != b"= ":
                    problem = f"{name} card has no '= '"
                elif keyword in cards:
                    problem = f"{name} is given twice"
                else:
                    cards[keyword] = card[10:]
                    continue
                raise _Verdict("invalid_header", f"HDU {hdu}: {problem}{_end_hint(binary_at)}")
        position += BLOCK
        if count >= MAX_HEADER_CARDS:
            raise _Verdict(
                "invalid_header", f"HDU {hdu}: no END card in the first {MAX_HEADER_CARDS} cards"
            )
    if binary_at is not None:
        raise _Verdict(
            "invalid_header", f"HDU {hdu}: no END card in the file{_end_hint(binary_at)}"
        )
    raise _Verdict("incomplete", f"header of HDU {hdu} has no END card yet")


def _integer(cards: dict[bytes, bytes], keyword: str, hdu: int, default: int | None = None) -> int:
    region = cards.get(keyword.encode())
    if region is None:
        if default is None:
            raise _Verdict("invalid_header", f"HDU {hdu}: no {keyword} card")
        return default
    raw = _value(region)
    if not _INTEGER.fullmatch(raw):
        raise _Verdict("invalid_header", f"HDU {hdu}: {keyword} = {_shown(raw)} is not an integer")
    return int(raw)


def _data_bytes(cards: dict[bytes, bytes], hdu: int, budget: int) -> int:
    """Bytes of data (padded to whole blocks) the header announces.

    Raises a ``too_large`` verdict as soon as they exceed ``budget``.
    """
    bitpix = _integer(cards, "BITPIX", hdu)
    if bitpix not in _BITPIX:
        raise _Verdict("invalid_header", f"HDU {hdu}: BITPIX = {bitpix} is not a FITS pixel type")
    naxis = _integer(cards, "NAXIS", hdu)
    if not 0 <= naxis <= _MAX_NAXIS:
        raise _Verdict("invalid_header", f"HDU {hdu}: NAXIS = {naxis} is outside 0..{_MAX_NAXIS}")
    axes = [_integer(cards, f"NAXIS{axis}", hdu) for axis in range(1, naxis + 1)]
    for axis, length in enumerate(axes, start=1):
        if length < 0:
            raise _Verdict("invalid_header", f"HDU {hdu}: NAXIS{axis} = {length} is negative")
    pcount = _integer(cards, "PCOUNT", hdu, default=0)
    gcount = _integer(cards, "GCOUNT", hdu, default=1)
    if pcount < 0 or gcount < 0:
        raise _Verdict(
            "invalid_header", f"HDU {hdu}: PCOUNT = {pcount}, GCOUNT = {gcount} (negative)"
        )
    if hdu > 0 and not _STRING.fullmatch(cards.get(b"XTENSION", b"")):
        shown = _shown(_value(cards.get(b"XTENSION", b"")))
        raise _Verdict("invalid_header", f"HDU {hdu}: XTENSION = {shown} is not a string")
    if naxis == 0:
        return 0
    groups = _value(cards.get(b"GROUPS", b"F"))
    if groups not in (b"T", b"F"):
        raise _Verdict("invalid_header", f"HDU {hdu}: GROUPS = {_shown(groups)} is not T or F")
    if hdu == 0 and groups == b"T" and axes[0] == 0:
        axes = axes[1:]  # random groups: NAXIS1 = 0 is a marker, not a length
    width = abs(bitpix) // 8
    limit = budget // width + 1  # the element count beyond which the budget is exceeded
    count = 1
    for length in axes:
        count *= length
        count = min(count, limit)  # keeps the product small; exceeding is all that matters
    nbytes = width * gcount * (pcount + count)
    padded = -(-nbytes // BLOCK) * BLOCK
    if count >= limit or padded > budget:
        raise _Verdict(
            "too_large",
            f"HDU {hdu} announces more data than the limit allows ({budget} bytes left)",
        )
    return padded


def _check_primary_card(handle: IO[bytes], size: int) -> None:
    handle.seek(0)
    head = handle.read(CARD)
    if len(head) < CARD:
        if _PRIMARY.startswith(head[: len(_PRIMARY)]):
            raise _Verdict("incomplete", f"only {size} bytes so far")
        raise _Verdict("not_fits", "does not start with a SIMPLE = T card")
    if not head.startswith(_PRIMARY):
        raise _Verdict("not_fits", "does not start with a SIMPLE = T card")
    value = head[10:].split(b"/", 1)[0].strip(b" ")
    if value != b"T":
        raise _Verdict("not_fits", f"SIMPLE = {_shown(value)}: not a standard FITS file")


def _walk(handle: IO[bytes], size: int, max_bytes: int) -> int:
    """Walk every HDU; return how many there are, or raise the verdict."""
    _check_primary_card(handle, size)
    if size > max_bytes:
        raise _Verdict("too_large", f"{size} bytes > max_exposure_bytes {max_bytes}")
    offset = 0
    for hdu in range(MAX_HDUS):
        cards, header_bytes = _read_header(handle, offset, size, hdu)
        offset += header_bytes + _data_bytes(cards, hdu, max_bytes - offset - header_bytes)
        if offset > size:
            raise _Verdict("incomplete", f"HDU {hdu} data ends at byte {offset} > size {size}")
        if offset == size:
            return hdu + 1
        handle.seek(offset)
        start = handle.read(len(_EXTENSION))
        if len(start) < len(_EXTENSION) and _EXTENSION.startswith(start):
            raise _Verdict("incomplete", f"header of HDU {hdu + 1} has only just begun")
        if start != _EXTENSION:
            raise _Verdict(
                "invalid_header",
                f"{size - offset} bytes after HDU {hdu} do not start an extension header",
            )
    raise _Verdict("invalid_header", f"more than {MAX_HDUS} HDUs")


def walk_fits(
    handle: IO[bytes], *, max_bytes: int = DEFAULT_MAX_EXPOSURE_BYTES
) -> tuple[FitsState, str]:
    """Judge the structure of an open FITS file without reading its data.

    Parameters
    ----------
    handle : IO[bytes]
        A regular file opened for reading in binary mode (any position; it is moved).
    max_bytes : int, optional
        Largest accepted file, and largest size its headers may announce.

    Returns
    -------
    state : FitsState
        The verdict (see the module docstring).
    detail : str
        Why, in words; never holds raw control characters from the file.

    Raises
    ------
    OSError
        If the file cannot be read.
    """
    size = os.fstat(handle.fileno()).st_size
    try:
        hdus = _walk(handle, size, max_bytes)
    except _Verdict as verdict:
        return verdict.state, verdict.detail
    return "complete", f"{hdus} HDU(s), {size} bytes"
