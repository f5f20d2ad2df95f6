"""Which sampled pixels of one image land on usable pixels of another, in one compiled pass."""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["quadratic_hits"]


@nb.njit(nogil=True, cache=True)
def quadratic_hits(samples, y0, y1, x0, x1, step, coef_x, coef_y, sx, sy, good, ny, nx, out):
    """Flat indices into ``samples`` of the finite samples that hit a usable pixel.

    The samples of rows ``y0:y1`` and columns ``x0:x1`` sit at pixel ``(i * step, j *
    step)``; a quadratic in the scaled coordinates (terms ``1, x, y, x², xy, y²`` of
    ``x * sx``, ``y * sy``) maps them onto the other image (``ny`` x ``nx``), whose usable
    pixels are the bits of ``good`` (packed along rows). Writes the indices into ``out``
    (large enough for the window) and returns how many.
    """
    count = 0
    cols = samples.shape[1]
    for iy in range(y0, y1):
        yt = iy * step * sy
        row_x = coef_x[0] + coef_x[2] * yt + coef_x[5] * yt * yt
        row_y = coef_y[0] + coef_y[2] * yt + coef_y[5] * yt * yt
        for ix in range(x0, x1):
            if not np.isfinite(samples[iy, ix]):
                continue
            xt = ix * step * sx
            mx = row_x + coef_x[1] * xt + coef_x[3] * xt * xt + coef_x[4] * xt * yt
            my = row_y + coef_y[1] * xt + coef_y[3] * xt * xt + coef_y[4] * xt * yt
            jx = np.rint(mx)
            jy = np.rint(my)
            if not (jx >= 0.0 and jy >= 0.0 and jx < nx and jy < ny):
                continue
            kx = int(jx)
            ky = int(jy)
            if (good[ky, kx >> 3] >> (7 - (kx & 7))) & 1:
                out[count] = iy * cols + ix
                count += 1
    return count
