"""Compiled evaluation of a separable cubic B-spline, four taps per output row."""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(nogil=True, cache=True, inline="always")
def spline_row(
    rows: np.ndarray,
    taps: np.ndarray,
    weights: np.ndarray,
    i: int,
    low: float,
    high: float,
    line: np.ndarray,
) -> None:
    """``line = clip(sum_a weights[i, a] * rows[taps[i, a]], low, high)``: output row ``i``.

    ``rows`` holds the spline already evaluated along x at every output column, one line
    per coefficient row; each output row mixes four of them. A flat surface
    (``low == high``) is that value everywhere.
    """
    if low == high:
        line[:] = low
        return
    r0 = rows[taps[i, 0]]
    r1 = rows[taps[i, 1]]
    r2 = rows[taps[i, 2]]
    r3 = rows[taps[i, 3]]
    w0 = weights[i, 0]
    w1 = weights[i, 1]
    w2 = weights[i, 2]
    w3 = weights[i, 3]
    # Clipping in float32 against the rounded bounds rounds as clipping in float64 and
    # rounding would (rounding is monotonic), and keeps the loop in one vectorised type.
    low32 = np.float32(low)
    high32 = np.float32(high)
    for j in range(line.shape[0]):
        value = w0 * r0[j] + w1 * r1[j] + w2 * r2[j] + w3 * r3[j]
        line[j] = min(max(value, low32), high32)


@nb.njit(nogil=True, cache=True)
def spline_rows(
    rows: np.ndarray,
    taps: np.ndarray,
    weights: np.ndarray,
    low: float,
    high: float,
    out: np.ndarray,
    first: int,
) -> np.ndarray:
    """Output rows ``first, first + 1, ...`` of the surface into ``out`` (one per line).

    Releases the GIL.
    """
    for i in range(out.shape[0]):
        spline_row(rows, taps, weights, first + i, low, high, out[i])
    return out
