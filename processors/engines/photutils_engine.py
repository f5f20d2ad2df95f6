"""The reference engine: photutils ``Background2D`` with the same parameters."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.stats import SigmaClip
from photutils.background import (
    Background2D,
    BiweightLocationBackground,
    MeanBackground,
    MedianBackground,
    ModeEstimatorBackground,
    SExtractorBackground,
)

from processors._validation import NoValidPixelsError
from processors.engines import EngineOutput

__all__ = ["photutils_background"]

_ESTIMATORS = {
    "sextractor": SExtractorBackground,
    "biweight": BiweightLocationBackground,
    "median": MedianBackground,
    "mean": MeanBackground,
    "mode": ModeEstimatorBackground,
}


def photutils_background(
    image: np.ndarray,
    bad: np.ndarray,
    *,
    box: tuple[int, int],
    filter_size: tuple[int, int],
    sigma_low: float,
    sigma_high: float,
    maxiters: int | None,
    cenfunc: str,
    estimator: str,
    exclude_percentile: float,
    filter_threshold: float | None,
) -> EngineOutput:
    """Run photutils ``Background2D`` (maps cast to the image's float type).

    Raises
    ------
    NoValidPixelsError
        If photutils excludes every box.
    """
    clip = SigmaClip(
        sigma_lower=sigma_low, sigma_upper=sigma_high, maxiters=maxiters, cenfunc=cenfunc
    )
    try:
        with warnings.catch_warnings():
            # Boxes emptied by clipping are excluded and filled by design.
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            bkg = Background2D(
                image,
                box,
                mask=bad,
                filter_size=filter_size,
                filter_threshold=filter_threshold,
                sigma_clip=clip,
                bkg_estimator=_ESTIMATORS[estimator](sigma_clip=None),
                exclude_percentile=exclude_percentile,
            )
            background = np.asarray(bkg.background, dtype=image.dtype)
    except ValueError as exc:
        if "unmasked" in str(exc) or "All boxes" in str(exc):
            raise NoValidPixelsError(str(exc)) from exc
        raise
    return EngineOutput(
        background=background,
        rms_map=lambda: np.asarray(bkg.background_rms, dtype=image.dtype),
        mesh=np.asarray(bkg.background_mesh),
        rms_mesh=np.asarray(bkg.background_rms_mesh),
        ngood=np.asarray(bkg.n_pixels_mesh),
    )
