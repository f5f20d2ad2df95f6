"""An image HDU's pixels read straight into a native array, without intermediate copies.

astropy reads a plane into a big-endian array and then converts it (and an unsigned
integer plane through a signed temporary and an offset subtraction); the exposure then
copies it once more into native floats. Here the bytes go from the file into the array
they end up in, a cache-sized chunk at a time, and are byte-swapped there while the chunk
is still in the cache; the ``BZERO = 2**(bits-1)`` offset of unsigned integers is a flip
of the sign bit in the same pass. Anything else (scaled data, ``BLANK``) is left to
astropy.
"""

from __future__ import annotations

import os
from typing import IO

import numpy as np
from astropy.io import fits

from daemon.errors import InputChanged
from processors.engines._byteorder import from_big_endian

__all__ = ["read_pixels"]

_FLOATS = {-32: np.float32, -64: np.float64}
_INTEGERS = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64}
_CHUNK_BYTES = 1 << 20


def _native_type(header: fits.Header) -> tuple[np.dtype, bool] | None:
    """The array type of the stored pixels and whether the sign bit must flip; None: astropy."""
    bitpix = header["BITPIX"]
    bscale = header.get("BSCALE", 1)
    bzero = header.get("BZERO", 0)
    if bscale != 1 or "BLANK" in header:
        return None
    if bitpix in _FLOATS:
        return (np.dtype(_FLOATS[bitpix]), False) if bzero == 0 else None
    stored = np.dtype(_INTEGERS[bitpix])
    if bzero == 0:
        return stored, False
    if bitpix > 8 and bzero == 2 ** (bitpix - 1):
        return np.dtype(f"u{stored.itemsize}"), True
    return None


def read_pixels(handle: IO[bytes], hdu: fits.PrimaryHDU | fits.ImageHDU, name: str) -> np.ndarray:
    """The pixels of ``hdu``, read from ``handle`` (the file ``name`` it was opened from).

    Read at the data's offset (``pread``): the handle's position does not move.

    Values are those astropy gives (unsigned integers for the ``BZERO`` convention), in
    native byte order, in a new writable array the caller owns.

    Raises
    ------
    InputChanged
        If the file ends before the data does (it changed after it was walked).
    """
    # Once astropy has decoded the data, its header describes the decoded array.
    kind = None if hdu._data_loaded else _native_type(hdu.header)
    if kind is None:
        return np.array(hdu.data)
    dtype, flip = kind
    pixels = np.empty(hdu.shape, dtype=dtype)
    flat = pixels.reshape(-1)
    raw = flat.view(np.uint8).data
    start = hdu.fileinfo()["datLoc"]
    # Chunks that fit in the cache: each is converted while its bytes are still there.
    step = max(_CHUNK_BYTES // dtype.itemsize, 1) * dtype.itemsize
    for done in range(0, raw.nbytes, step):
        chunk = raw[done : done + step]
        got = 0
        while got < chunk.nbytes:
            count = os.preadv(handle.fileno(), [chunk[got:]], start + done + got)
            if not count:
                missing = raw.nbytes - done - got
                raise InputChanged(
                    "truncated",
                    f"{name}: it shrank while it was read (it ended {missing} bytes before "
                    f"the data of {hdu.name})",
                )
            got += count
        first = done // dtype.itemsize
        from_big_endian(flat[first : first + step // dtype.itemsize], flip_sign=flip)
    return pixels
