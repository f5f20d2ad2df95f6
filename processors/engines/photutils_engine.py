"""The reference engine: photutils ``Background2D`` with the same parameters."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.stats import SigmaClip
from photutils.background import (
    Background2D,
    BiweightLocationBackground,
    BiweightScaleBackgroundRMS,
    MADStdBackgroundRMS,
    MeanBackground,
    MedianBackground,
    MMMBackground,
    ModeEstimatorBackground,
    SExtractorBackground,
    StdBackgroundRMS,
)

from processors._validation import NoValidPixelsError
from processors.engines import EngineOutput, MeshParameters

__all__ = ["photutils_background"]

_ESTIMATORS = {
    "sextractor": SExtractorBackground,
    "biweight": BiweightLocationBackground,
    "median": MedianBackground,
    "mean": MeanBackground,
    "mode": ModeEstimatorBackground,
    "mmm": MMMBackground,
}
_RMS_ESTIMATORS = {
    "std": StdBackgroundRMS,
    "mad-std": MADStdBackgroundRMS,
    "biweight": BiweightScaleBackgroundRMS,
}


def photutils_background(
    image: np.ndarray,
    bad: np.ndarray,
    mesh: MeshParameters,
    coverage_mask: np.ndarray | None = None,
    fill_value: float = 0.0,
) -> EngineOutput:
    """Run photutils ``Background2D`` (maps cast to the image's float type).

    ``bad`` need not include ``coverage_mask``, which photutils takes separately: its
    pixels are excluded too, and get ``fill_value`` in the maps.
    ``mesh.edge_fraction`` does not apply: this is photutils itself.

    Raises
    ------
    NoValidPixelsError
        If photutils excludes every box.
    """
    clip = (
        SigmaClip(
            sigma_lower=mesh.sigma_low,
            sigma_upper=mesh.sigma_high,
            maxiters=mesh.maxiters,
            cenfunc=mesh.cenfunc,
        )
        if mesh.sigma_clip
        else None
    )
    try:
        with warnings.catch_warnings():
            # Boxes emptied by clipping are excluded and filled by design.
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            bkg = Background2D(
                image,
                mesh.box,
                mask=bad,
                coverage_mask=coverage_mask,
                fill_value=fill_value,
                filter_size=mesh.filter_size,
                filter_threshold=mesh.filter_threshold,
                sigma_clip=clip,
                bkg_estimator=_ESTIMATORS[mesh.estimator](sigma_clip=None),
                bkg_rms_estimator=_RMS_ESTIMATORS[mesh.rms_estimator](sigma_clip=None),
                exclude_percentile=mesh.exclude_percentile,
            )
            background = np.asarray(bkg.background, dtype=image.dtype)
    except ValueError as exc:
        if "unmasked" in str(exc) or "All boxes" in str(exc) or "are masked" in str(exc):
            raise NoValidPixelsError(str(exc)) from exc
        raise
    return EngineOutput(
        background=background,
        rms_map=lambda: np.asarray(bkg.background_rms, dtype=image.dtype),
        mesh=np.asarray(bkg.background_mesh),
        rms_mesh=np.asarray(bkg.background_rms_mesh),
        ngood=np.asarray(bkg.n_pixels_mesh),
    )
