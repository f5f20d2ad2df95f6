"""FITS files in and out: completeness checks, validated reading, atomic writing."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from daemon.errors import InvalidInput
from daemon.fileio.fits_writer import write_image_hdus
from processors import Exposure

__all__ = [
    "FitsState",
    "check_fits_complete",
    "read_exposure",
    "read_primary_header",
    "remove_stale_temporaries",
    "write_exposure",
    "write_json",
]

BLOCK = 2880
CARD = 80
FitsState = Literal["complete", "incomplete", "not_fits"]
_TMP_MARK = ".tmp-"
_STRUCTURAL = {
    "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "EXTNAME",
    "EXTVER", "BSCALE", "BZERO", "CHECKSUM", "DATASUM", "BLANK", "INHERIT",
}  # fmt: skip


def _header_cards(handle: IO[bytes], offset: int, size: int) -> tuple[dict[str, str], int] | None:
    """Read one header from ``offset``; return its cards and length, or None if cut short."""
    cards: dict[str, str] = {}
    position = offset
    while position + BLOCK <= size:
        handle.seek(position)
        block = handle.read(BLOCK)
        position += BLOCK
        for start in range(0, BLOCK, CARD):
            card = block[start : start + CARD].decode("ascii", errors="replace")
            keyword = card[:8].rstrip()
            if keyword == "END":
                return cards, position - offset
            if card[8:10] == "= ":
                cards.setdefault(keyword, card[10:].split("/", 1)[0].strip())
    return None


def _data_bytes(cards: dict[str, str]) -> int:
    naxis = int(cards.get("NAXIS", "0"))
    if naxis == 0:
        return 0
    count = 1
    for axis in range(1, naxis + 1):
        count *= int(cards[f"NAXIS{axis}"])
    pcount = int(cards.get("PCOUNT", "0"))
    gcount = int(cards.get("GCOUNT", "1"))
    nbytes = abs(int(cards["BITPIX"])) // 8 * gcount * (pcount + count)
    return -(-nbytes // BLOCK) * BLOCK


def check_fits_complete(path: Path) -> tuple[FitsState, str]:
    """Tell whether a file is a complete FITS file, without reading its data.

    The file size must be a multiple of 2880 bytes, every header must end with an ``END``
    card, and each HDU's data size (``BITPIX``, ``NAXISn``, ``PCOUNT``, ``GCOUNT``) must
    fit in the file, with the last HDU ending exactly at the end of the file.

    Parameters
    ----------
    path : Path
        File to check.

    Returns
    -------
    state : {'complete', 'incomplete', 'not_fits'}
        ``incomplete`` may still become complete (a writer is at work, or it was cut).
    detail : str
        Why, in words.

    Raises
    ------
    OSError
        If the file cannot be opened or read.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(CARD)
        if len(head) < 30:
            return "incomplete", f"only {size} bytes so far"
        if not head.startswith(b"SIMPLE  =") or head[10:30].strip() != b"T":
            return "not_fits", "does not start with a SIMPLE = T card"
        offset = 0
        hdus = 0
        while offset < size:
            if hdus and not (handle.seek(offset) or handle.read(9) == b"XTENSION="):
                return "not_fits", f"bytes after HDU {hdus} are not an extension"
            parsed = _header_cards(handle, offset, size)
            if parsed is None:
                return "incomplete", f"header of HDU {hdus} has no END card yet"
            cards, header_len = parsed
            try:
                offset += header_len + _data_bytes(cards)
            except (KeyError, ValueError):
                return "not_fits", f"HDU {hdus} has unreadable NAXIS/BITPIX cards"
            hdus += 1
            if offset > size:
                return "incomplete", f"HDU {hdus - 1} data ends at {offset} > size {size}"
    return "complete", f"{hdus} HDU(s), {size} bytes"


def _strip_structural(header: fits.Header) -> fits.Header:
    clean = header.copy(strip=True)
    for key in list(clean.keys()):
        if key in _STRUCTURAL:
            del clean[key]
    return clean


@contextlib.contextmanager
def _open(path: Path, **kwargs: Any) -> Iterator[fits.HDUList]:
    """Open a FITS file, mapping failures onto quarantine reasons."""
    state, detail = _checked_state(path)
    if state == "not_fits":
        raise InvalidInput("not_fits", f"{path.name}: {detail}")
    if state == "incomplete":
        raise InvalidInput("truncated", f"{path.name}: {detail}")
    try:
        hdul = fits.open(path, memmap=False, **kwargs)
    except OSError as exc:
        raise InvalidInput("not_fits", f"{path.name}: {exc}") from exc
    try:
        yield hdul
    finally:
        hdul.close()


def _checked_state(path: Path) -> tuple[FitsState, str]:
    try:
        return check_fits_complete(path)
    except OSError as exc:
        raise InvalidInput("unreadable", f"{path.name}: {exc.strerror or exc}") from exc


def read_primary_header(path: Path) -> fits.Header:
    """Read the primary header merged with the ``SCI`` extension header, if any.

    Raises
    ------
    InvalidInput
        If the file is unreadable, not FITS, or incomplete.
    """
    with _open(path, lazy_load_hdus=True) as hdul:
        header = _strip_structural(hdul[0].header)
        if "SCI" in hdul:
            header.update(_strip_structural(hdul["SCI"].header))
        return header


def _image_hdu(hdul: fits.HDUList) -> fits.ImageHDU | fits.PrimaryHDU | None:
    if "SCI" in hdul:
        return hdul["SCI"]
    for hdu in hdul:
        if isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU) and hdu.data is not None:
            return hdu
    return None


def _wcs_of(header: fits.Header) -> WCS | None:
    if "CTYPE1" not in header:
        return None
    try:
        # fix=False: astropy's header "fixes" only warn, and warning filters are
        # process-global state that worker threads must not fight over.
        wcs = WCS(header, naxis=2, fix=False)
    except (ValueError, KeyError, MemoryError):
        return None
    return wcs if wcs.has_celestial else None


def _plane(hdul: fits.HDUList, name: str, shape: tuple[int, ...], path: Path) -> Any:
    if name not in hdul or hdul[name].data is None:
        return None
    data = hdul[name].data
    if data.shape != shape:
        raise InvalidInput(
            "shape_mismatch", f"{path.name}: {name} shape {data.shape} != SCI shape {shape}"
        )
    return data


def read_exposure(path: Path, *, allow_cubes: bool = True) -> Exposure:
    """Read and validate one exposure (JWST SCI/ERR/DQ layout or a plain image).

    Parameters
    ----------
    path : Path
        FITS file.
    allow_cubes : bool, optional
        Accept 3-D ``(nints, ny, nx)`` science data.

    Returns
    -------
    Exposure
        SCI as float32, ERR float32 or None when absent, DQ uint32 (zeros when absent), the
        primary header merged with the SCI header, and the celestial WCS if there is one.

    Raises
    ------
    InvalidInput
        With reason ``unreadable``, ``not_fits``, ``truncated``, ``no_image_data``,
        ``wrong_shape``, ``shape_mismatch`` or ``no_valid_pixels``.
    """
    with _open(path) as hdul:
        hdu = _image_hdu(hdul)
        if hdu is None or hdu.data is None:
            raise InvalidInput("no_image_data", f"{path.name}: no SCI or image data in any HDU")
        sci = np.asarray(hdu.data, dtype=np.float32)
        dims = (2, 3) if allow_cubes else (2,)
        if sci.ndim not in dims:
            raise InvalidInput(
                "wrong_shape",
                f"{path.name}: SCI has shape {sci.shape}; accepted dimensions: {dims}",
            )
        err = _plane(hdul, "ERR", sci.shape, path)
        dq = _plane(hdul, "DQ", sci.shape, path)
        if dq is not None and not np.issubdtype(dq.dtype, np.integer):
            raise InvalidInput("wrong_shape", f"{path.name}: DQ has non-integer type {dq.dtype}")
        if not np.isfinite(sci).any():
            raise InvalidInput("no_valid_pixels", f"{path.name}: SCI has no finite pixel")
        header = _strip_structural(hdul[0].header)
        if hdu is not hdul[0]:
            header.update(_strip_structural(hdu.header))
        return Exposure(sci=sci, err=err, dq=dq, header=header, wcs=_wcs_of(hdu.header))


@contextlib.contextmanager
def _atomic(path: Path, *, fsync: bool) -> Iterator[IO[bytes]]:
    """Write to a temporary sibling, flush and fsync it, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def write_exposure(exposure: Exposure, path: Path, *, fsync: bool = True) -> None:
    """Write an exposure atomically in the JWST layout (PRIMARY + SCI [+ ERR] + DQ).

    The file appears under ``path`` only once complete; a crash leaves at most a hidden
    temporary file, which `remove_stale_temporaries` deletes at the next start.
    """
    sci_header = exposure.wcs.to_header() if exposure.wcs is not None else fits.Header()
    images = [("SCI", exposure.sci, sci_header)]
    if exposure.err is not None:
        images.append(("ERR", exposure.err, fits.Header()))
    images.append(("DQ", exposure.dq, fits.Header()))
    with _atomic(path, fsync=fsync) as handle:
        write_image_hdus(handle, _strip_structural(exposure.header), images)


def write_json(document: Any, path: Path, *, fsync: bool = True) -> None:
    """Write a JSON document atomically (same rules as `write_exposure`)."""
    payload = (json.dumps(document, indent=2, sort_keys=True, default=str) + "\n").encode()
    with _atomic(path, fsync=fsync) as handle:
        handle.write(payload)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporary files left by an interrupted atomic write; return how many."""
    removed = 0
    for leftover in folder.glob(f".*{_TMP_MARK}*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed
