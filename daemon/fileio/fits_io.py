"""FITS files in and out: completeness checks, validated reading, atomic writing."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from daemon.errors import InputChanged, InvalidInput, QuarantineReason, input_read_error
from daemon.fileio.fits_pixels import read_pixels
from daemon.fileio.fits_walk import DEFAULT_MAX_EXPOSURE_BYTES, FitsState, walk_fits
from daemon.fileio.fits_writer import write_image_hdus
from processors import Exposure

__all__ = [
    "DEFAULT_MAX_EXPOSURE_BYTES",
    "FitsState",
    "check_fits_complete",
    "read_exposure",
    "read_primary_header",
    "remove_stale_temporaries",
    "write_bytes",
    "write_exposure",
    "write_json",
]

_TMP_MARK = ".tmp-"
_STRUCTURAL = {
    "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "EXTNAME",
    "EXTVER", "BSCALE", "BZERO", "CHECKSUM", "DATASUM", "BLANK", "INHERIT",
}  # fmt: skip
#: What astropy raises on a header or data layout it cannot make sense of. Its own OSErrors
#: carry no errno; those that do are real I/O errors.
_ASTROPY_FAILURES = (ValueError, TypeError, KeyError, IndexError, fits.VerifyError)
_NOT_A_FILE = "not a regular file (a directory, FIFO, socket or device)"


@contextlib.contextmanager
def _regular_file(path: Path) -> Iterator[IO[bytes] | None]:
    """Open a file for reading, or None if it is not a regular file.

    Opened without blocking, so a FIFO with no writer cannot hang the caller; a
    directory, FIFO, socket or device is never read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        yield None
        return
    with os.fdopen(fd, "rb") as handle:
        yield handle


def check_fits_complete(
    path: Path, *, max_bytes: int = DEFAULT_MAX_EXPOSURE_BYTES
) -> tuple[FitsState, str]:
    """Tell whether a file is a complete, structurally valid FITS file, without its data.

    The bounded header walk of `daemon.fileio.fits_walk`: ``complete``, ``incomplete``
    (may still become complete: a writer is at work, or it was cut), or a refusal that no
    later byte can change (``not_fits``, ``invalid_header``, ``too_large``,
    ``not_a_file``), each of which is also the quarantine reason.

    Parameters
    ----------
    path : Path
        File to check.
    max_bytes : int, optional
        Largest accepted exposure (the ``input.max_exposure_bytes`` setting).

    Returns
    -------
    state : FitsState
        The verdict.
    detail : str
        Why, in words.

    Raises
    ------
    OSError
        If the file cannot be opened or read.
    """
    with _regular_file(path) as handle:
        if handle is None:
            return "not_a_file", _NOT_A_FILE
        return walk_fits(handle, max_bytes=max_bytes)


def _parsed(header: fits.Header) -> fits.Header:
    """``header`` once every card's value parses.

    Astropy parses values only when asked; an unparsable card must fail here, as
    ``invalid_header``, rather than later in whatever reads that keyword.
    """
    for card in header.cards:
        _ = card.value
    return header


def _strip_structural(header: fits.Header) -> fits.Header:
    clean = header.copy(strip=True)
    for key in list(clean.keys()):
        if key in _STRUCTURAL:
            del clean[key]
    return clean


def _walked(path: Path, handle: IO[bytes] | None, max_bytes: int) -> IO[bytes]:
    """``handle`` once its file walked complete; else raise the file's quarantine reason."""
    if handle is None:
        raise InvalidInput("not_a_file", f"{path.name}: {_NOT_A_FILE}")
    state, detail = walk_fits(handle, max_bytes=max_bytes)
    if state == "complete":
        return handle
    if state == "incomplete":  # it was complete when its source took it
        raise InputChanged("truncated", f"{path.name}: {detail}")
    reason: QuarantineReason = state
    raise InvalidInput(reason, f"{path.name}: {detail}")


@contextlib.contextmanager
def _open(path: Path, max_bytes: int, **kwargs: Any) -> Iterator[tuple[IO[bytes], fits.HDUList]]:
    """Open a FITS file once: walk its structure, then hand the same descriptor to astropy.

    Yields the descriptor (for the pixels) and astropy's view of the headers. Every
    failure until the block ends, astropy's included, becomes a quarantine reason, so no
    structural defect surfaces as an unexpected error.
    """
    try:
        with _regular_file(path) as opened:
            handle = _walked(path, opened, max_bytes)
            handle.seek(0)
            with fits.open(handle, memmap=False, **kwargs) as hdul:
                yield handle, hdul
    except InvalidInput:
        raise
    except OSError as exc:
        if exc.errno is None:  # astropy's own complaint about the layout
            raise InvalidInput("invalid_header", f"{path.name}: {exc}") from exc
        raise input_read_error(path.name, exc) from exc
    except _ASTROPY_FAILURES as exc:
        raise InvalidInput("invalid_header", f"{path.name}: {type(exc).__name__}: {exc}") from exc


def read_primary_header(path: Path, *, max_bytes: int = DEFAULT_MAX_EXPOSURE_BYTES) -> fits.Header:
    """Read the primary header merged with the ``SCI`` extension header, if any.

    Parameters
    ----------
    path : Path
        FITS file.
    max_bytes : int, optional
        Largest accepted exposure (the ``input.max_exposure_bytes`` setting).

    Raises
    ------
    InvalidInput
        If the file is unreadable, not a regular file, not FITS, structurally invalid, too
        large, or incomplete (``truncated``).
    Retriable
        On a storage hiccup (``EIO``, ``ESTALE``, ...): read it again later.
    """
    with _open(path, max_bytes, lazy_load_hdus=True) as (_, hdul):
        header = _strip_structural(hdul[0].header)
        if "SCI" in hdul:
            header.update(_strip_structural(hdul["SCI"].header))
        return _parsed(header)


def _image_hdu(hdul: fits.HDUList) -> fits.ImageHDU | fits.PrimaryHDU | None:
    if "SCI" in hdul:
        return hdul["SCI"]
    for hdu in hdul:
        if isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU) and hdu.size > 0:
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


def _plane(
    handle: IO[bytes],
    hdul: fits.HDUList,
    name: str,
    shape: tuple[int, ...],
    path: Path,
    max_bytes: int,
) -> Any:
    if name not in hdul or hdul[name].size == 0:
        return None
    hdu = hdul[name]
    if hdu.shape != shape:
        raise InvalidInput(
            "shape_mismatch", f"{path.name}: {name} shape {hdu.shape} != SCI shape {shape}"
        )
    return _pixels(handle, hdu, path, max_bytes)


def _pixels(
    handle: IO[bytes], hdu: fits.ImageHDU | fits.PrimaryHDU, path: Path, max_bytes: int
) -> np.ndarray:
    """The pixels of an image HDU; a tile-compressed one (fpack) decompressed by astropy.

    The walk bounded the bytes on disk; a compressed plane is also bounded by what it
    decompresses to (``max_bytes``), so a small file cannot unfold into a huge one.
    """
    if not isinstance(hdu, fits.CompImageHDU):
        return read_pixels(handle, hdu, path.name)
    size = int(np.prod(hdu.shape, dtype=np.int64)) * abs(int(hdu.header["BITPIX"])) // 8
    if size > max_bytes:
        raise InvalidInput(
            "too_large",
            f"{path.name}: {hdu.name} decompresses to {size} bytes, over the limit of "
            f"{max_bytes} (input.max_exposure_bytes)",
        )
    try:
        return np.array(hdu.data)
    except Exception as exc:  # the codecs (cfitsio's among them) raise types of their own
        raise InvalidInput(
            "corrupt_data",
            f"{path.name}: {hdu.name}: its compressed pixels cannot be decoded "
            f"({type(exc).__name__}: {exc})",
        ) from exc


def read_exposure(
    path: Path, *, allow_cubes: bool = True, max_bytes: int = DEFAULT_MAX_EXPOSURE_BYTES
) -> Exposure:
    """Read and validate one exposure (JWST SCI/ERR/DQ layout or a plain image).

    Parameters
    ----------
    path : Path
        FITS file.
    allow_cubes : bool, optional
        Accept 3-D ``(nints, ny, nx)`` science data.
    max_bytes : int, optional
        Largest accepted exposure (the ``input.max_exposure_bytes`` setting).

    Returns
    -------
    Exposure
        SCI as float32, ERR float32 or None when absent, DQ uint32 (zeros when absent), the
        primary header merged with the SCI header, and the celestial WCS if there is one.

    Raises
    ------
    InvalidInput
        With reason ``unreadable``, ``not_a_file``, ``not_fits``, ``invalid_header``,
        ``too_large``, ``truncated``, ``no_image_data``, ``wrong_shape``,
        ``shape_mismatch``, ``no_valid_pixels`` or ``corrupt_data``.
    Retriable
        On a storage hiccup (``EIO``, ``ESTALE``, ...): read it again later.
    """
    with _open(path, max_bytes) as (handle, hdul):
        hdu = _image_hdu(hdul)
        if hdu is None or hdu.size == 0:
            raise InvalidInput("no_image_data", f"{path.name}: no SCI or image data in any HDU")
        dims = (2, 3) if allow_cubes else (2,)
        if len(hdu.shape) not in dims:
            raise InvalidInput(
                "wrong_shape",
                f"{path.name}: SCI has shape {hdu.shape}; accepted dimensions: {dims}",
            )
        with np.errstate(over="ignore"):  # beyond float32: +-inf, excluded like NaN
            sci = np.asarray(_pixels(handle, hdu, path, max_bytes), dtype=np.float32)
        err = _plane(handle, hdul, "ERR", sci.shape, path, max_bytes)
        dq = _plane(handle, hdul, "DQ", sci.shape, path, max_bytes)
        if dq is not None and not np.issubdtype(dq.dtype, np.integer):
            raise InvalidInput("wrong_shape", f"{path.name}: DQ has non-integer type {dq.dtype}")
        if dq is not None and np.issubdtype(dq.dtype, np.signedinteger):
            # Bit flags stored in a signed type: its bits, not a sign-extended value.
            dq = dq.view(f"u{dq.dtype.itemsize}")
        flat = sci.reshape(-1)
        if not (np.isfinite(flat[:4096]).any() or np.isfinite(flat).any()):
            raise InvalidInput("no_valid_pixels", f"{path.name}: SCI has no finite pixel")
        header = _strip_structural(hdul[0].header)
        if hdu is not hdul[0]:
            header.update(_strip_structural(hdu.header))
        with np.errstate(over="ignore"):
            return Exposure(
                sci=sci, err=err, dq=dq, header=_parsed(header), wcs=_wcs_of(hdu.header)
            )


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


def write_exposure(
    exposure: Exposure,
    path: Path,
    *,
    fsync: bool = True,
    extensions: Sequence[tuple[str, np.ndarray, fits.Header]] = (),
) -> None:
    """Write an exposure atomically in the JWST layout (PRIMARY + SCI [+ ERR] + DQ).

    The file appears under ``path`` only once complete; a crash leaves at most a hidden
    temporary file, which `remove_stale_temporaries` deletes at the next start.
    ``extensions`` (name, data, header) follow DQ (a saved background).
    """
    sci_header = exposure.wcs.to_header() if exposure.wcs is not None else fits.Header()
    images = [("SCI", exposure.sci, sci_header)]
    if exposure.err is not None:
        images.append(("ERR", exposure.err, fits.Header()))
    images.append(("DQ", exposure.dq, fits.Header()))
    images.extend(extensions)
    with _atomic(path, fsync=fsync) as handle:
        write_image_hdus(handle, _strip_structural(exposure.header), images)


def write_bytes(payload: bytes, path: Path, *, fsync: bool = True) -> None:
    """Write bytes atomically (same rules as `write_exposure`)."""
    with _atomic(path, fsync=fsync) as handle:
        handle.write(payload)


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
