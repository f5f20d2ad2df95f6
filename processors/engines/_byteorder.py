"""Byte-order conversion between native arrays and FITS's big-endian bytes, at memory speed.

numpy's ``byteswap`` and byte-order casts run at a fraction of memory bandwidth; these
loops compile to vector shuffles. Each works on the unsigned-integer view of the pixels
(any 2-, 4- or 8-byte type) and can flip the sign bit in the same pass: FITS stores an
unsigned integer as the signed one ``BZERO = 2**(bits-1)`` below it, which is exactly that
flip. The GIL is released, so a file transfer can proceed meanwhile.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["from_big_endian", "to_big_endian"]


@nb.njit(nogil=True, cache=True, inline="always")
def _swap16(v):
    # numba widens integer arithmetic to 64 bits: truncate back to the word
    return np.uint16(((v >> 8) | (v << 8)) & 0xFFFF)


@nb.njit(nogil=True, cache=True, inline="always")
def _swap32(v):
    return np.uint32(
        ((v >> 24) & 0xFF) | ((v >> 8) & 0xFF00) | ((v << 8) & 0xFF0000) | ((v << 24) & 0xFF000000)
    )


@nb.njit(nogil=True, cache=True, inline="always")
def _swap64(v):
    low = np.uint64(_swap32(np.uint32(v & np.uint64(0xFFFFFFFF))))
    high = np.uint64(_swap32(np.uint32(v >> np.uint64(32))))
    return (low << np.uint64(32)) | high


@nb.njit(nogil=True, cache=True)
def _native16(words, flip):
    for i in range(words.shape[0]):
        words[i] = _swap16(words[i]) ^ flip


@nb.njit(nogil=True, cache=True)
def _native32(words, flip):
    for i in range(words.shape[0]):
        words[i] = _swap32(words[i]) ^ flip


@nb.njit(nogil=True, cache=True)
def _native64(words, flip):
    for i in range(words.shape[0]):
        words[i] = _swap64(words[i]) ^ flip


@nb.njit(nogil=True, cache=True)
def _big16(words, out, flip):
    for i in range(words.shape[0]):
        out[i] = _swap16(words[i] ^ flip)


@nb.njit(nogil=True, cache=True)
def _big32(words, out, flip):
    for i in range(words.shape[0]):
        out[i] = _swap32(words[i] ^ flip)


@nb.njit(nogil=True, cache=True)
def _big64(words, out, flip):
    for i in range(words.shape[0]):
        out[i] = _swap64(words[i] ^ flip)


_NATIVE = {2: _native16, 4: _native32, 8: _native64}
_BIG = {2: _big16, 4: _big32, 8: _big64}


def _words(values: np.ndarray) -> np.ndarray:
    return values.reshape(-1).view(f"u{values.dtype.itemsize}")


def _flip(words: np.ndarray, flip_sign: bool) -> np.unsignedinteger:
    return words.dtype.type(1 << (8 * words.dtype.itemsize - 1) if flip_sign else 0)


def from_big_endian(values: np.ndarray, *, flip_sign: bool = False) -> None:
    """Turn big-endian bytes, read into the native array ``values``, into their values.

    In place; ``values`` is contiguous, of a 1-, 2-, 4- or 8-byte type. ``flip_sign``
    also undoes FITS's unsigned-integer offset.
    """
    if values.dtype.itemsize == 1:
        return
    words = _words(values)
    if np.little_endian:
        _NATIVE[words.dtype.itemsize](words, _flip(words, flip_sign))
    elif flip_sign:
        words ^= _flip(words, flip_sign)


def to_big_endian(values: np.ndarray, out: np.ndarray, *, flip_sign: bool = False) -> None:
    """Write the big-endian bytes of ``values`` into ``out`` (a byte buffer as large).

    ``values`` is contiguous, of a 2-, 4- or 8-byte type; ``flip_sign`` applies FITS's
    unsigned-integer offset on the way.
    """
    words = _words(values)
    target = out.reshape(-1).view(words.dtype)[: words.shape[0]]
    if np.little_endian:
        _BIG[words.dtype.itemsize](words, target, _flip(words, flip_sign))
    else:
        np.bitwise_xor(words, _flip(words, flip_sign), out=target)
