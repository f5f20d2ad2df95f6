"""2-D sky background models of one image (the Liger/IRIS "calculate background" step)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

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

from processors._validation import NoValidPixelsError, as_image, as_pair

__all__ = ["ENGINES", "ESTIMATORS", "BackgroundResult", "estimate_background"]

Estimator = Literal["sextractor", "biweight", "median", "mean", "mode"]
Engine = Literal["photutils"]

ESTIMATORS: tuple[str, ...] = ("sextractor", "biweight", "median", "mean", "mode")
ENGINES: tuple[str, ...] = ("photutils",)

_PHOTUTILS_ESTIMATORS = {
    "sextractor": SExtractorBackground,
    "biweight": BiweightLocationBackground,
    "median": MedianBackground,
    "mean": MeanBackground,
    "mode": ModeEstimatorBackground,
}


@dataclass(frozen=True, eq=False)
class BackgroundResult:
    """A full-resolution background model and its noise.

    Attributes
    ----------
    background : ndarray
        Background map, same shape as the input image.
    rms : ndarray
        Per-pixel sky noise (standard deviation of the clipped box values, interpolated).
    level : float
        Scalar background level: median of the filtered low-resolution mesh.
    rms_level : float
        Median of the filtered RMS mesh.
    error_scale : float
        ``1/sqrt(n)`` with ``n`` the median number of good pixels per box, so that
        `error` approximates the standard error of each box statistic.
    params : mapping
        Engine and parameters actually used (after clamping ``box_size`` to the image).
    """

    background: np.ndarray
    rms: np.ndarray
    level: float
    rms_level: float
    error_scale: float
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> np.ndarray:
        """Uncertainty of the background estimate per pixel (``rms * error_scale``).

        This, not `rms`, is what adds in quadrature to the science ERR on subtraction:
        the sky noise is already in the science pixels.
        """
        return (self.rms * np.float32(self.error_scale)).astype(np.float32, copy=False)


def estimate_background(
    data: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    box_size: int | tuple[int, int] = 64,
    filter_size: int | tuple[int, int] = 3,
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    maxiters: int | None = 10,
    estimator: Estimator = "sextractor",
    exclude_percentile: float = 10.0,
    filter_threshold: float | None = None,
    engine: Engine = "photutils",
) -> BackgroundResult:
    """Estimate a 2-D background map of one image.

    The image is cut into ``box_size`` boxes; each box is sigma clipped (median centre,
    ``sigma_low``/``sigma_high``, ``maxiters``) and reduced with ``estimator``; boxes with
    too few good pixels are excluded and filled; the mesh is median filtered with
    ``filter_size`` and interpolated back to full resolution with a bicubic spline.
    Masked and non-finite pixels never enter the statistics.

    Parameters
    ----------
    data : ndarray
        2-D image.
    mask : ndarray of bool, optional
        True where a pixel must be excluded (e.g. from `processors.bad_pixel_mask`).
    box_size : int or (int, int), optional
        Mesh box size ``(ny, nx)``; clamped to the image shape.
    filter_size : int or (int, int), optional
        Odd size of the median filter applied to the mesh; 1 disables it.
    sigma_low, sigma_high : float, optional
        Lower and upper clipping thresholds in standard deviations.
    maxiters : int or None, optional
        Clipping iterations; None iterates until nothing more is rejected.
    estimator : {'sextractor', 'biweight', 'median', 'mean', 'mode'}, optional
        Per-box background statistic.
    exclude_percentile : float, optional
        A box is excluded when more than this percentage of its pixels is masked or
        clipped.
    filter_threshold : float or None, optional
        Only mesh cells above this value are median filtered; None filters all.
    engine : {'photutils'}, optional
        Implementation; ``'photutils'`` runs `photutils.background.Background2D`.

    Returns
    -------
    BackgroundResult
        Background and RMS maps (float32 for float32 input), scalar levels, parameters.

    Raises
    ------
    ValueError
        For an invalid parameter, naming it.
    NoValidPixelsError
        If masks and non-finite values leave no box with enough good pixels.

    Examples
    --------
    >>> import numpy as np
    >>> result = estimate_background(np.full((100, 100), 5.0, np.float32), box_size=25)
    >>> float(result.level), result.background.shape
    (5.0, (100, 100))
    """
    image = as_image("data", data)
    box = as_pair("box_size", box_size)
    box = (min(box[0], image.shape[0]), min(box[1], image.shape[1]))
    filt = as_pair("filter_size", filter_size, odd=True)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not 0.0 <= exclude_percentile <= 100.0:
        raise ValueError(f"exclude_percentile must be in [0, 100], got {exclude_percentile}")
    if sigma_low <= 0 or sigma_high <= 0:
        raise ValueError(
            f"sigma_low and sigma_high must be positive, got {sigma_low}, {sigma_high}"
        )
    if maxiters is not None and maxiters < 1:
        raise ValueError(f"maxiters must be >= 1 or None, got {maxiters}")

    bad = ~np.isfinite(image)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} does not match data shape {image.shape}")
        bad |= mask
    if bad.all():
        raise NoValidPixelsError("no unmasked finite pixels in the image")

    params = MappingProxyType(
        {
            "engine": engine,
            "box_size": box,
            "filter_size": filt,
            "sigma_low": float(sigma_low),
            "sigma_high": float(sigma_high),
            "maxiters": maxiters,
            "estimator": estimator,
            "exclude_percentile": float(exclude_percentile),
            "filter_threshold": filter_threshold,
        }
    )
    clip = SigmaClip(sigma_lower=sigma_low, sigma_upper=sigma_high, maxiters=maxiters)
    try:
        with warnings.catch_warnings():
            # Boxes left empty by clipping are excluded and filled by design.
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            bkg = Background2D(
                image,
                box,
                mask=bad,
                filter_size=filt,
                filter_threshold=filter_threshold,
                sigma_clip=clip,
                bkg_estimator=_PHOTUTILS_ESTIMATORS[estimator](sigma_clip=None),
                exclude_percentile=exclude_percentile,
            )
            background = bkg.background
            rms = bkg.background_rms
    except ValueError as exc:
        if "unmasked" in str(exc) or "All boxes" in str(exc):
            raise NoValidPixelsError(str(exc)) from exc
        raise
    good_per_box = np.asarray(bkg.n_pixels_mesh, dtype=np.float64)
    n_typical = float(np.median(good_per_box[good_per_box > 0]))
    return BackgroundResult(
        background=np.asarray(background, dtype=image.dtype),
        rms=np.asarray(rms, dtype=image.dtype),
        level=float(bkg.background_median),
        rms_level=float(bkg.background_rms_median),
        error_scale=1.0 / np.sqrt(n_typical),
        params=params,
    )
