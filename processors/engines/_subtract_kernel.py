"""Background subtraction in place: SCI and ERR each updated in one pass, nothing allocated."""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["subtract_in_place"]


@nb.njit(nogil=True, cache=True)
def subtract_in_place(sci, err, background, background_err):
    """``sci -= background`` and ``err = sqrt(err**2 + background_err**2)``, in place.

    ``sci`` and ``err`` are ``(planes, P)`` float32 (the integrations of a cube share one
    background), ``background`` and ``background_err`` ``(P,)`` float32; an empty
    ``background_err`` (or ``err``) leaves ERR alone. The float32 operations are numpy's,
    one rounding each, so the result equals the allocating numpy expressions bit for bit.
    """
    quadrature = background_err.shape[0] > 0 and err.shape[0] > 0
    for plane in range(sci.shape[0]):
        values = sci[plane]
        for p in range(values.shape[0]):
            values[p] -= background[p]
        if quadrature:
            sigmas = err[plane]
            for p in range(sigmas.shape[0]):
                e = sigmas[p]
                b = background_err[p]
                sigmas[p] = np.sqrt(e * e + b * b)
