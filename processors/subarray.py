"""Placing a background of another detector subarray onto a science exposure's grid."""

from __future__ import annotations

import numpy as np
from astropy.io.fits import Header

from processors.exposure import Exposure

__all__ = ["subarray_bounds", "to_science_grid"]

# Full-frame defaults when the subarray keywords are absent (JWST ImageSubsetArray).
_FULL_FRAMES = {(1024, 1032): (1, 1, 1032, 1024), (2048, 2048): (1, 1, 2048, 2048)}


def subarray_bounds(header: Header, image_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Detector bounds ``(ymin, ymax, xmin, xmax)`` (0-based, half-open) of an image.

    From ``SUBSTRT1/2`` and ``SUBSIZE1/2`` (1-based starts, as JWST writes them); without
    them only full frames (MIRI 1032x1024 and 2048x2048) have known bounds.

    Raises
    ------
    ValueError
        If the keywords are missing and the shape is not a known full frame.
    """
    keys = ("SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2")
    if all(key in header for key in keys):
        xstart, ystart, xsize, ysize = (int(header[key]) for key in keys)
    elif (image_shape[0], image_shape[1]) in _FULL_FRAMES:
        xstart, ystart, xsize, ysize = _FULL_FRAMES[(image_shape[0], image_shape[1])]
    else:
        raise ValueError(
            f"no SUBSTRT1/2, SUBSIZE1/2 keywords and shape {image_shape} is not a known full "
            "frame: cannot place this subarray on the detector"
        )
    return ystart - 1, ystart - 1 + ysize, xstart - 1, xstart - 1 + xsize


def to_science_grid(
    background: Exposure, science_shape: tuple[int, int], science_header: Header
) -> Exposure:
    """The part of a 2-D background that overlaps the science subarray, on its grid.

    Pixels of the science subarray outside the background are NaN (SCI, ERR) and 0 (DQ),
    so a combine treats them as missing, and a pixel with no background at all gets 0.
    Unlike JWST's ``ImageSubsetArray``, which pastes the overlap at the top-left corner,
    the overlap goes where it lies on the detector; the two agree whenever the science
    subarray starts at or beyond the background's origin (every JWST test case).
    """
    sy0, sy1, sx0, sx1 = subarray_bounds(science_header, science_shape)
    by0, by1, bx0, bx1 = subarray_bounds(background.header, background.image_shape)
    y0, y1, x0, x1 = max(sy0, by0), min(sy1, by1), max(sx0, bx0), min(sx1, bx1)
    sci = np.full(science_shape, np.nan, dtype=np.float32)
    err = None if background.err is None else np.full(science_shape, np.nan, np.float32)
    dq = np.zeros(science_shape, dtype=np.uint32)
    if y0 < y1 and x0 < x1:
        target = (slice(y0 - sy0, y1 - sy0), slice(x0 - sx0, x1 - sx0))
        source = (slice(y0 - by0, y1 - by0), slice(x0 - bx0, x1 - bx0))
        sci[target] = background.sci[source]
        if err is not None and background.err is not None:
            err[target] = background.err[source]
        dq[target] = background.dq[source]
    return Exposure(sci=sci, err=err, dq=dq, header=background.header.copy())
