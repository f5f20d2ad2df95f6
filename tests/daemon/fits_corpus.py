"""A seeded corpus of hostile FITS files: card mutations, cuts, junk, odd names.

Every case carries the verdicts of `check_fits_complete` it may have: one verdict where
the FITS rules decide it (``BITPIX = 7`` is ``invalid_header``, any cut that is not an HDU
boundary is ``incomplete``), several where a mutation may or may not matter (a flipped
header byte, ``NAXIS1 = 0``). Valid exposures are in the corpus too, and must be read.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from tests.conftest import small_exposure

CARD = 80
BLOCK = 2880
ANY_VERDICT = frozenset({"complete", "incomplete", "not_fits", "invalid_header", "too_large"})


@dataclass(frozen=True)
class Case:
    """One corpus file: its name, its bytes, the verdicts allowed, whether it must be read."""

    name: str
    data: bytes
    verdicts: frozenset[str]
    valid: bool = False  # a good exposure: complete, and read without error
    what: str = ""


def _to_bytes(hdus: list[fits.hdu.base.ExtensionHDU]) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


def templates() -> dict[str, bytes]:
    """Valid exposures of several layouts, as bytes."""
    jwst = small_exposure(size=32)
    cube = small_exposure(size=24, nints=2)
    header = fits.Header({"INSTRUME": "SIMCAM", "DETECTOR": "SIM1", "FILTER": "J"})
    rng = np.random.default_rng(3)
    plain = fits.PrimaryHDU(rng.normal(100, 5, (24, 20)).astype(">f8"), header=header)
    scaled = fits.PrimaryHDU(rng.integers(0, 1000, (18, 22)).astype(np.int16), header=header)
    scaled.header["BSCALE"], scaled.header["BZERO"] = 0.5, 10.0
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="level", format="E", array=np.arange(4, dtype=np.float32))]
    )
    return {
        "jwst": _to_bytes([
            fits.PrimaryHDU(header=jwst.header),
            fits.ImageHDU(jwst.sci, name="SCI"),
            fits.ImageHDU(jwst.err, name="ERR"),
            fits.ImageHDU(jwst.dq, name="DQ"),
        ]),
        "cube": _to_bytes([fits.PrimaryHDU(header=cube.header),
                           fits.ImageHDU(cube.sci, name="SCI")]),
        "plain": _to_bytes([plain]),
        "scaled": _to_bytes([scaled]),
        "table": _to_bytes([fits.PrimaryHDU(header=header),
                            fits.ImageHDU(jwst.sci, name="SCI"), table]),
    }  # fmt: skip


def hdu_spans(data: bytes) -> list[tuple[int, int, int]]:
    """(header start, data start, end) of every HDU, as astropy sees them."""
    with fits.open(io.BytesIO(data)) as hdul:
        spans = []
        for index in range(len(hdul)):
            info = hdul.fileinfo(index)
            start, data_at = info["hdrLoc"], info["datLoc"]
            spans.append((start, data_at, data_at + info["datSpan"]))
        return spans


def _cards(data: bytes, hdu: int) -> Iterator[tuple[int, bytes]]:
    start, data_at, _ = hdu_spans(data)[hdu]
    for at in range(start, data_at, CARD):
        yield at, data[at : at + CARD]


def card_at(data: bytes, hdu: int, keyword: str) -> int | None:
    """Offset of the first card of ``keyword`` in a header, or None."""
    for at, card in _cards(data, hdu):
        if card[:8].rstrip() == keyword.encode():
            return at
    return None


def with_card(data: bytes, at: int, card: str | bytes) -> bytes:
    """``data`` with the 80-byte card at ``at`` replaced (padded with blanks)."""
    raw = card.encode("latin-1") if isinstance(card, str) else card
    return data[:at] + raw[:CARD].ljust(CARD, b" ") + data[at + CARD :]


def value_card(keyword: str, value: object) -> str:
    """A fixed-format card; ``value`` is written as given (its ``str``)."""
    return f"{keyword:<8}= {value!s:>20}"


def set_value(data: bytes, hdu: int, keyword: str, value: object) -> bytes | None:
    """Change the value of an existing card; None if the header has no such card."""
    at = card_at(data, hdu, keyword)
    return None if at is None else with_card(data, at, value_card(keyword, value))


def _naxis(data: bytes, hdu: int) -> list[int]:
    with fits.open(io.BytesIO(data)) as hdul:
        header = hdul[hdu].header
        return [header[f"NAXIS{i}"] for i in range(1, header["NAXIS"] + 1)]


# -- mutations: each returns (bytes, allowed verdicts, what) or None when it does not apply


Made = tuple[bytes, frozenset[str], str]
Mutation = Callable[[random.Random, bytes], Made | None]
_INVALID = frozenset({"invalid_header"})
_DEPENDS = frozenset({"complete", "incomplete", "invalid_header"})


def _made(mutated: bytes | None, verdicts: frozenset[str], what: str) -> Made | None:
    return None if mutated is None else (mutated, verdicts, what)


def _bad_bitpix(rng: random.Random, data: bytes) -> Made | None:
    hdu = rng.randrange(len(hdu_spans(data)))
    value = rng.choice([7, 0, 1, 24, -8, -16, 128, "'16'", "16.0", "T", "", "1E1", "--8"])
    mutated = set_value(data, hdu, "BITPIX", value)
    return _made(mutated, _INVALID, f"HDU {hdu} BITPIX = {value}")


def _other_bitpix(rng: random.Random, data: bytes) -> Made | None:
    hdu = rng.randrange(len(hdu_spans(data)))
    value = rng.choice([8, 16, 32, 64, -32, -64])
    mutated = set_value(data, hdu, "BITPIX", value)
    return _made(mutated, _DEPENDS, f"HDU {hdu} BITPIX = {value}")


def _bad_naxis(rng: random.Random, data: bytes) -> Made | None:
    hdu = rng.randrange(len(hdu_spans(data)))
    value = rng.choice([-1, -2880, 1000, 99999, "'2'", "2.0", "x", ""])
    mutated = set_value(data, hdu, "NAXIS", value)
    return _made(mutated, _INVALID, f"HDU {hdu} NAXIS = {value}")


def _axes(data: bytes) -> list[int]:
    return [i for i in range(len(hdu_spans(data))) if _naxis(data, i)]


def _negative_axis(rng: random.Random, data: bytes) -> Made | None:
    hdu = rng.choice(_axes(data))
    axis = rng.randint(1, len(_naxis(data, hdu)))
    value = rng.choice([-1, -2880, -(10**12), "-0016"])
    mutated = set_value(data, hdu, f"NAXIS{axis}", value)
    return _made(mutated, _INVALID, f"HDU {hdu} NAXIS{axis} = {value}")


def _huge_axis(rng: random.Random, data: bytes) -> Made | None:
    hdu = rng.choice(_axes(data))
    axis = rng.randint(1, len(_naxis(data, hdu)))
    value = rng.choice([10**12, 2**63, 2**64 + 1, 10**60])
    mutated = set_value(data, hdu, f"NAXIS{axis}", value)
    return _made(mutated, frozenset({"too_large"}), f"HDU {hdu} NAXIS{axis} = {value}")


def _odd_axis(rng: random.Random, data: bytes) -> Made | None:
    hdu = rng.choice(_axes(data))
    axes = _naxis(data, hdu)
    axis = rng.randint(1, len(axes))
    value = rng.choice([0, 1, axes[axis - 1] - 1, axes[axis - 1] + 1, axes[axis - 1] * 40])
    mutated = set_value(data, hdu, f"NAXIS{axis}", value)
    return _made(mutated, _DEPENDS, f"HDU {hdu} NAXIS{axis} = {value}")


def _counts(rng: random.Random, data: bytes) -> Made | None:
    extensions = [i for i in _axes(data) if i > 0]
    if not extensions:
        return None
    hdu = rng.choice(extensions)
    keyword = rng.choice(["PCOUNT", "GCOUNT"])
    value, verdicts = rng.choice([
        (-1, _INVALID), (-5, _INVALID), ("1.5", _INVALID), (10**20, frozenset({"too_large"})),
        (2880, _DEPENDS), (0, _DEPENDS), (2, _DEPENDS),
    ])  # fmt: skip
    mutated = set_value(data, hdu, keyword, value)
    return _made(mutated, verdicts, f"HDU {hdu} {keyword} = {value}")


def _duplicate(rng: random.Random, data: bytes) -> Made | None:
    hdu = rng.randrange(len(hdu_spans(data)))
    keyword = rng.choice(["BITPIX", "NAXIS"])
    spare = [at for at, card in _cards(data, hdu)
             if card[:8].rstrip() in (b"INSTRUME", b"EXTNAME", b"EXTEND", b"FILTER")]  # fmt: skip
    if not spare:
        return None
    mutated = with_card(data, rng.choice(spare), value_card(keyword, 16))
    return mutated, _INVALID, f"HDU {hdu}: second {keyword} card"


def _no_end(rng: random.Random, data: bytes) -> Made | None:
    hdu = rng.randrange(len(hdu_spans(data)))
    at = card_at(data, hdu, "END")
    assert at is not None
    has_data = hdu_spans(data)[hdu][2] > hdu_spans(data)[hdu][1]
    verdicts = _INVALID if has_data else frozenset({"invalid_header", "incomplete"})
    return with_card(data, at, b""), verdicts, f"HDU {hdu}: END card blanked"


def _end_with_text(rng: random.Random, data: bytes) -> Made | None:
    hdu = rng.randrange(len(hdu_spans(data)))
    at = card_at(data, hdu, "END")
    assert at is not None
    return with_card(data, at, "END     junk"), _INVALID, f"HDU {hdu}: text after END"


def _bad_xtension(rng: random.Random, data: bytes) -> Made | None:
    if len(hdu_spans(data)) < 2:
        return None
    hdu = rng.randrange(1, len(hdu_spans(data)))
    card = rng.choice(["XTENSIOM= 'IMAGE   '", "SIMPLE  =                    T", ""])
    at = hdu_spans(data)[hdu][0]
    return with_card(data, at, card), _INVALID, f"HDU {hdu} first card {card!r}"


def _bad_simple(rng: random.Random, data: bytes) -> Made | None:
    card = rng.choice(["SIMPLE  =                    F", "SIMPLY  =                    T",
                       "simple  =                    T", "SIMPLE  = 'T'"])  # fmt: skip
    return with_card(data, 0, card), frozenset({"not_fits"}), f"first card {card!r}"


def _cut(rng: random.Random, data: bytes) -> Made | None:
    ends = {end for _, _, end in hdu_spans(data)}
    at = rng.choice([rng.randrange(len(data)), rng.randrange(0, len(data), BLOCK),
                     rng.randrange(90)])  # fmt: skip
    verdicts = frozenset({"complete" if at in ends else "incomplete"})
    return data[:at], verdicts, f"cut at byte {at}"


def _appended(rng: random.Random, data: bytes) -> Made | None:
    tail, verdicts = rng.choice([
        (b"\0" * BLOCK, _INVALID), (b"junk" * 5, _INVALID), (b"XTENS", frozenset({"incomplete"})),
        (bytes(rng.randrange(1, 256) for _ in range(rng.randint(1, 4000))), _INVALID),
    ])  # fmt: skip
    if tail[:1] == b"X" and verdicts is _INVALID:
        return None
    return data + tail, verdicts, f"{len(tail)} bytes appended"


def _header_flips(rng: random.Random, data: bytes) -> Made | None:
    start, data_at, _ = rng.choice(hdu_spans(data))
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        mutated[rng.randrange(start, data_at)] = rng.randrange(256)
    return bytes(mutated), ANY_VERDICT, "header bytes flipped"


def _data_flips(rng: random.Random, data: bytes) -> Made | None:
    spans = [span for span in hdu_spans(data) if span[2] > span[1]]
    _, data_at, end = rng.choice(spans)
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 20)):
        mutated[rng.randrange(data_at, end)] = rng.randrange(256)
    return bytes(mutated), frozenset({"complete"}), "data bytes flipped"


MUTATIONS: tuple[Mutation, ...] = (
    _bad_bitpix, _other_bitpix, _bad_naxis, _negative_axis, _huge_axis, _odd_axis, _counts,
    _duplicate, _no_end, _end_with_text, _bad_xtension, _bad_simple, _cut, _cut, _appended,
    _header_flips, _header_flips, _data_flips,
)  # fmt: skip


def _junk(rng: random.Random) -> Made:
    kind = rng.choice(["random", "text", "zeros", "simple_f", "empty", "prefix"])
    if kind == "random":
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6000)))
        raw = (b"\0" + raw[1:]) if raw[:1] == b"S" else raw
        return raw, frozenset({"not_fits"}), "random bytes"
    if kind == "text":
        return b"PNG pretending to be FITS " * rng.randint(1, 300), frozenset({"not_fits"}), kind
    if kind == "zeros":
        return b"\0" * rng.choice([10, 80, BLOCK, 3 * BLOCK]), frozenset({"not_fits"}), kind
    if kind == "simple_f":
        return value_card("SIMPLE", "F").ljust(BLOCK).encode(), frozenset({"not_fits"}), kind
    if kind == "empty":
        return b"", frozenset({"incomplete"}), "empty file"
    return b"SIMPLE  ="[: rng.randint(1, 9)], frozenset({"incomplete"}), "first bytes of SIMPLE"


#: Names a producer may legally use; each still has to become a valid exposure id.
_ODD_STEMS = (
    "plain", "with space", "tab\there", "new\nline", "cr\rfeed", "del\x7fchar", "esc\x1b[31m",
    "uni\u00e9\u4e2d", "sep\u2028line", "bidi\u202eevil", "back\\slash", "-dash", "per%20cent",
    "x" * 230, "\u00e9" * 110, "trailing.", "many.dots.in.name", "emoji\U0001f52d",
)  # fmt: skip


def _name(rng: random.Random, index: int) -> str:
    stem = rng.choice(_ODD_STEMS) if rng.random() < 0.3 else "case"
    suffix = rng.choice([".fits", ".fits", ".fit", ".FTS"])
    budget = 250 - len(suffix.encode()) - len(f"-{index:04d}".encode())
    stem = stem.encode()[:budget].decode("utf-8", "ignore")
    return f"{stem}-{index:04d}{suffix}"


def corpus(count: int = 320, seed: int = 2024) -> list[Case]:
    """``count`` hostile cases plus every template untouched (valid exposures)."""
    rng = random.Random(seed)
    bases = templates()
    cases = [Case(f"valid-{name}.fits", data, frozenset({"complete"}), valid=True, what=name)
             for name, data in bases.items()]  # fmt: skip
    while len(cases) < count + len(bases):
        index = len(cases)
        if rng.random() < 0.1:
            data, verdicts, what = _junk(rng)
            cases.append(Case(_name(rng, index), data, verdicts, what=what))
            continue
        base = rng.choice(sorted(bases))
        made = rng.choice(MUTATIONS)(rng, bases[base])
        if made:
            data, verdicts, what = made
            cases.append(Case(_name(rng, index), data, verdicts, what=f"{base}: {what}"))
    return cases
