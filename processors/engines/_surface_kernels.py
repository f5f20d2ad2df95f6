"""Compiled kernels of spline surfaces: rows of a zoomed mesh, and subtraction in place.

The subtraction makes a model's background and error rows where it uses them. The two
share one file because numba's on-disk cache does not notice a change in another file's
function that a cached kernel calls: `subtract_rows_in_place` inlines `spline_row`.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["spline_row", "spline_rows", "subtract_rows_in_place"]


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
    # Clipping in float32 against the rounded bounds gives the values clipping in float64
    # and then rounding would (rounding is monotonic; only the sign of a zero may differ,
    # for bounds below float32's range), and keeps the loop in one vectorised type.
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


@nb.njit(nogil=True, cache=True)
def subtract_rows_in_place(sci, err, level, level_surface, error, error_surface, scale,
                           first_row, last_row):  # fmt: skip
    """``sci -= level`` and ``err = sqrt(err**2 + error**2)`` on rows ``first_row:last_row``.

    ``sci`` and ``err`` are ``(planes, ny, nx)`` float32 (the integrations of a cube share
    one background); an empty ``err`` leaves ERR alone. ``level`` and ``error`` are
    ``(ny, nx)`` float32 maps, or empty: then each row is made where it is used from
    ``level_surface`` / ``error_surface`` (the ``rows, taps, weights, low, high`` of a
    `processors.engines._mesh.SplineSurface`, the error's times ``float32(scale)``); an
    error surface whose rows have no columns means no error to add. Every value is rounded as the
    numpy expressions on the evaluated maps would round it: the same bits, without
    writing and rereading full maps.
    """
    nx = sci.shape[2]
    level_line = np.empty(nx, np.float32)
    error_line = np.empty(nx, np.float32)
    factor = np.float32(scale)
    error_rows = error_surface[0]
    from_error_map = error.shape[0] > 0
    quadrature = err.shape[0] > 0 and (from_error_map or error_rows.shape[1] > 0)
    from_level_map = level.shape[0] > 0
    for i in range(first_row, last_row):
        if not from_level_map:
            spline_row(level_surface[0], level_surface[1], level_surface[2], i,
                       level_surface[3], level_surface[4], level_line)  # fmt: skip
        if quadrature and not from_error_map:
            spline_row(error_rows, error_surface[1], error_surface[2], i, error_surface[3],
                       error_surface[4], error_line)  # fmt: skip
            _scale_row(error_line, factor)
        for plane in range(sci.shape[0]):
            _subtract_row(sci[plane, i], level[i] if from_level_map else level_line)
            if quadrature:
                _quadrature_row(err[plane, i], error[i] if from_error_map else error_line)


@nb.njit(nogil=True, cache=True)
def _scale_row(line, factor):
    for j in range(line.shape[0]):
        line[j] *= factor


@nb.njit(nogil=True, cache=True)
def _subtract_row(values, levels):
    for j in range(values.shape[0]):
        values[j] -= levels[j]


@nb.njit(nogil=True, cache=True)
def _quadrature_row(sigmas, extra):
    for j in range(sigmas.shape[0]):
        e = sigmas[j]
        b = extra[j]
        sigmas[j] = np.sqrt(e * e + b * b)
