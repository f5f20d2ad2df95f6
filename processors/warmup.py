"""Compile every numerical kernel ahead of the first exposure."""

from __future__ import annotations

import numpy as np

from processors.background import estimate_background
from processors.combine import combine_backgrounds
from processors.engines._byteorder import from_big_endian, to_big_endian
from processors.engines._overlap_kernel import quadratic_hits
from processors.exposure import Exposure
from processors.reference_background import scale_reference_background
from processors.subtract import subtract_background

__all__ = ["warm_up"]


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every numba kernel for the array kinds used.

    The daemon calls this before it reports ready, so the first exposure does not pay for
    compilation (seconds on a fresh install; the cache makes later starts fast).
    """
    ramp = np.add.outer(np.arange(64.0), np.arange(64.0)).astype(np.float32)  # a varying mesh
    dq = np.zeros(ramp.shape, dtype=np.uint32)
    for engine in ("fast", "lsst"):
        estimate_background(ramp, dq=dq, box_size=16, bin_size=16, engine=engine)
        estimate_background(ramp, mask=dq > 0, box_size=16, bin_size=16, engine=engine)
    # the robust RMS kernel (DQ and boolean flags), source detection and dilation
    source = ramp.copy()
    source[30:34, 30:34] += 1e3
    estimate_background(source, dq=dq, box_size=16, rms_estimator="mad-std", passes=2)
    estimate_background(ramp, mask=dq > 0, box_size=16, rms_estimator="biweight")
    scale_reference_background(Exposure(ramp, err=np.ones_like(ramp)), ramp + 1)
    stack = np.stack([ramp, ramp + 1, ramp - 1])
    combine_backgrounds(stack, np.ones_like(stack), np.zeros(stack.shape, np.uint32))
    combine_backgrounds(stack)
    # in place: from maps, and from a model's surfaces (read-only taps, as spline_factors')
    for background in (
        ramp,
        Exposure(ramp, err=np.ones_like(ramp)),
        estimate_background(ramp, box_size=16),
        estimate_background(ramp, box_size=16, coverage_mask=dq > 0),
    ):
        for errors in ("quadrature", "jwst"):
            for err in (np.ones_like(ramp), None):
                subtract_background(Exposure(ramp.copy(), err=err), background,
                                    errors=errors, in_place=True)  # fmt: skip
    coef = np.zeros(6)  # skymatch overlaps
    quadratic_hits(ramp[:2, :2].copy(), 0, 2, 0, 2, 1, coef, coef, 1.0, 1.0,
                   np.zeros((2, 1), np.uint8), 2, 2, np.empty(4, np.int64))  # fmt: skip
    for width in (2, 4, 8):  # FITS byte order, read and write
        words = np.zeros(4, dtype=f"u{width}")
        from_big_endian(words, flip_sign=True)
        to_big_endian(words, np.empty(words.nbytes, np.uint8), flip_sign=True)
