"""Background subtraction in place: SCI and ERR each updated in one pass, nothing allocated."""

from __future__ import annotations

import numba as nb
import numpy as np

from processors.engines._spline_kernel import spline_row

__all__ = ["subtract_rows_in_place"]


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
