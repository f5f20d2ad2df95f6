"""The background model of a whole exposure: DQ masking and 3-D collapse around the mesh."""

from __future__ import annotations

from typing import Any

import numpy as np

from processors.background import BackgroundResult, estimate_background
from processors.dq import bad_pixel_mask
from processors.exposure import Exposure

__all__ = ["model_exposure_background"]


def model_exposure_background(
    exposure: Exposure, *, dqbits: int | str | None = 0, **params: Any
) -> BackgroundResult:
    """Estimate the 2-D background of an exposure from its own pixels.

    Pixels flagged by ``dqbits`` (see `processors.bad_pixel_mask`) and non-finite pixels
    are excluded. A 3-D exposure is first collapsed to the per-pixel median of its good
    integrations; a pixel bad in every integration stays excluded.

    Parameters
    ----------
    exposure : Exposure
        2-D or 3-D exposure.
    dqbits : int, str or None, optional
        DQ bits to ignore; ``0`` (default) excludes any flagged pixel.
    **params
        Passed to `processors.estimate_background`.

    Returns
    -------
    BackgroundResult
        The model, to be subtracted from every integration.
    """
    if not exposure.is_cube:
        return estimate_background(exposure.sci, dq=exposure.dq, dqbits=dqbits, **params)
    bad = bad_pixel_mask(exposure.dq, dqbits) | ~np.isfinite(exposure.sci)
    never_good = bad.all(axis=0)
    # A column bad in every integration is filled (then masked) so that nanmedian never
    # meets an all-NaN slice, which would warn from inside a worker thread.
    planes = np.where(bad & ~never_good[None], np.float32(np.nan), exposure.sci)
    planes[:, never_good] = 0.0
    image = np.nanmedian(planes, axis=0).astype(np.float32, copy=False)
    return estimate_background(image, mask=never_good, **params)
