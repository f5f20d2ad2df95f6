"""Checks shared by the processors; each error names the offending parameter."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NoValidPixelsError", "as_pair", "as_image"]


class NoValidPixelsError(ValueError):
    """Raised when masks and non-finite values leave no pixel to compute a statistic on."""


def as_pair(name: str, value: Any, *, odd: bool = False) -> tuple[int, int]:
    """Return ``value`` as a ``(ny, nx)`` pair of positive integers.

    Parameters
    ----------
    name : str
        Parameter name, used in error messages.
    value : int or sequence of two ints
        A scalar applies to both axes.
    odd : bool, optional
        Require both values to be odd.

    Returns
    -------
    tuple of int
        The pair ``(ny, nx)``.

    Raises
    ------
    ValueError
        If the value is not one or two positive integers (odd when required).
    """
    arr = np.atleast_1d(np.asarray(value))
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.shape != (2,) or not np.all(np.equal(np.mod(arr, 1), 0)):
        raise ValueError(f"{name} must be one or two integers, got {value!r}")
    pair = (int(arr[0]), int(arr[1]))
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if odd and not (pair[0] % 2 and pair[1] % 2):
        raise ValueError(f"{name} must be odd, got {value!r}")
    return pair


def as_image(name: str, data: Any) -> np.ndarray:
    """Return ``data`` as a 2-D floating-point array (integers become float32).

    Raises
    ------
    ValueError
        If the array is not 2-D.
    """
    arr = np.asanyarray(data)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    return np.asarray(arr)
