"""2-D sky background models of one image (the Liger/IRIS "calculate background" step)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from processors._validation import NoValidPixelsError, as_image, as_pair
from processors.dq import bad_pixel_mask
from processors.engines import EngineOutput, MeshParameters
from processors.engines.fast import fast_background
from processors.engines.lsst import lsst_background
from processors.engines.photutils_engine import photutils_background

__all__ = ["ENGINES", "ESTIMATORS", "BackgroundResult", "estimate_background"]

Estimator = Literal["sextractor", "biweight", "median", "mean", "mode"]
Engine = Literal["fast", "photutils", "lsst"]

ESTIMATORS: tuple[str, ...] = ("sextractor", "biweight", "median", "mean", "mode")
ENGINES: tuple[str, ...] = ("fast", "photutils", "lsst")
CENTRES: tuple[str, ...] = ("median", "mean")


@dataclass(frozen=True, eq=False)
class BackgroundResult:
    """A full-resolution background model and its noise.

    Attributes
    ----------
    background : ndarray
        Background map, same shape as the input image (float32 for float32 input).
    mesh, rms_mesh : ndarray
        The low-resolution statistics the map was made from (after fill and filter).
    level : float
        Scalar background level: median of the mesh (mesh engines) or mean of the model
        (``lsst``, LSST's ``BGMEAN``).
    rms_level : float
        Median of the RMS mesh.
    error_scale : float
        ``1/sqrt(n)`` with ``n`` the median number of good pixels per cell, so that
        `error` approximates the standard error of each cell's statistic.
    params : mapping
        Engine and parameters actually used (``box_size`` clamped to the image, a reduced
        polynomial order).
    """

    background: np.ndarray
    mesh: np.ndarray
    rms_mesh: np.ndarray
    level: float
    rms_level: float
    error_scale: float
    params: Mapping[str, Any] = field(default_factory=dict)
    _rms_map: Callable[[], np.ndarray] = field(default=lambda: np.empty(0), repr=False)
    _error_map: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    @property
    def rms(self) -> np.ndarray:
        """Per-pixel sky noise map (computed on each access, as photutils does)."""
        return self._rms_map()

    @property
    def error(self) -> np.ndarray:
        """Uncertainty of the background estimate per pixel (``rms * error_scale``).

        This, not `rms`, is what adds in quadrature to the science ERR on subtraction:
        the sky noise is already in the science pixels. Models built from other frames
        (rolling sky) carry their own error map instead.
        """
        if self._error_map is not None:
            return self._error_map()
        rms = np.asarray(self.rms, dtype=np.float32)  # a fresh map on every access
        rms *= np.float32(self.error_scale)
        return rms


@lru_cache(maxsize=32)
def _bad_bits(dqbits: int | str | None) -> int:
    """The DQ bits that make a pixel bad under ``dqbits`` (a per-bit rule)."""
    single_bits = np.array([1 << bit for bit in range(32)], dtype=np.uint32)
    bad = bad_pixel_mask(single_bits, dqbits)
    return int(single_bits[bad].sum(dtype=np.uint64))


def _flags(
    shape: tuple[int, ...], mask: np.ndarray | None, dq: np.ndarray | None, dqbits: Any
) -> tuple[np.ndarray, int]:
    """One integer flag array and the bits in it that mark a bad pixel."""
    if mask is not None:
        bad = np.asarray(mask, dtype=bool)
        if bad.shape != shape:
            raise ValueError(f"mask shape {bad.shape} does not match data shape {shape}")
        if dq is not None:
            bad = bad | bad_pixel_mask(dq, dqbits)
        return bad.view(np.uint8), 1
    if dq is not None:
        return np.ascontiguousarray(dq, dtype=np.uint32), _bad_bits(dqbits)
    return np.zeros(shape, dtype=np.uint8), 1


def estimate_background(
    data: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    dq: np.ndarray | None = None,
    dqbits: int | str | None = 0,
    box_size: int | tuple[int, int] = 64,
    filter_size: int | tuple[int, int] = 3,
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    maxiters: int | None = 10,
    cenfunc: Literal["median", "mean"] = "median",
    estimator: Estimator = "sextractor",
    exclude_percentile: float = 10.0,
    filter_threshold: float | None = None,
    engine: Engine = "fast",
    bin_size: int = 128,
    order: int = 6,
    weighting: bool = True,
    threads: int = 1,
) -> BackgroundResult:
    """Estimate a 2-D background map of one image.

    Mesh engines (``fast``, ``photutils``) cut the image into ``box_size`` boxes; each box
    is sigma clipped (``cenfunc`` centre, ``sigma_low``/``sigma_high``, ``maxiters``) and
    reduced with ``estimator``; boxes with too few good pixels are excluded and filled;
    the mesh is median filtered with ``filter_size`` and interpolated back to full
    resolution with a bicubic spline. The ``lsst`` engine fits a Chebyshev surface of
    ``order`` to MEANCLIP statistics of ``bin_size`` superpixels instead. Masked, flagged
    and non-finite pixels never enter the statistics.

    Parameters
    ----------
    data : ndarray
        2-D image.
    mask : ndarray of bool, optional
        True where a pixel must be excluded.
    dq : ndarray of int, optional
        DQ flags; pixels with a bit not ignored by ``dqbits`` are excluded.
    dqbits : int, str or None, optional
        Bits of ``dq`` to ignore (see `processors.bad_pixel_mask`); ``0`` excludes any
        flagged pixel.
    box_size : int or (int, int), optional
        Mesh box size ``(ny, nx)``; clamped to the image shape.
    filter_size : int or (int, int), optional
        Odd size of the median filter applied to the mesh; 1 disables it.
    sigma_low, sigma_high : float, optional
        Lower and upper clipping thresholds in standard deviations.
    maxiters : int or None, optional
        Clipping iterations; None iterates until nothing more is rejected.
    cenfunc : {'median', 'mean'}, optional
        Centre of the clipping interval.
    estimator : {'sextractor', 'biweight', 'median', 'mean', 'mode'}, optional
        Per-box background statistic.
    exclude_percentile : float, optional
        A box is excluded when more than this percentage of its pixels is masked or
        clipped (photutils compares with the full box area even for the partial boxes at
        the top and right edges; the ``fast`` engine uses their own area, so they count).
    filter_threshold : float or None, optional
        Only mesh cells above this value are median filtered; None filters all.
    engine : {'fast', 'photutils', 'lsst'}, optional
        ``fast``: compiled kernel with photutils semantics (default); ``photutils``:
        `photutils.background.Background2D` itself; ``lsst``: the LSST model.
    bin_size : int, optional
        ``lsst``: superpixel size (cells are near-equal partitions of about this size).
    order : int, optional
        ``lsst``: Chebyshev order (reduced on small grids).
    weighting : bool, optional
        ``lsst``: weight cells by the inverse variance of their MEANCLIP.
    threads : int, optional
        ``fast``: threads that share this one image (bands of boxes and of output rows;
        identical results). 1 leaves the other cores to other exposures.

    Returns
    -------
    BackgroundResult
        Background map (float32 for float32 input), lazily computed RMS map, meshes,
        scalar levels and the parameters used.

    Raises
    ------
    ValueError
        For an invalid parameter, naming it.
    NoValidPixelsError
        If masks and non-finite values leave no usable box.

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
    if cenfunc not in CENTRES:
        raise ValueError(f"cenfunc must be one of {CENTRES}, got {cenfunc!r}")
    if not 0.0 <= exclude_percentile <= 100.0:
        raise ValueError(f"exclude_percentile must be in [0, 100], got {exclude_percentile}")
    if sigma_low <= 0 or sigma_high <= 0:
        raise ValueError(
            f"sigma_low and sigma_high must be positive, got {sigma_low}, {sigma_high}"
        )
    if maxiters is not None and maxiters < 1:
        raise ValueError(f"maxiters must be >= 1 or None, got {maxiters}")
    if bin_size < 1:
        raise ValueError(f"bin_size must be a positive integer, got {bin_size}")
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if dq is not None and np.shape(dq) != image.shape:
        raise ValueError(f"dq shape {np.shape(dq)} does not match data shape {image.shape}")

    flags, badbits = _flags(image.shape, mask, dq, dqbits)
    mesh = MeshParameters(
        box=box,
        filter_size=filt,
        sigma_low=float(sigma_low),
        sigma_high=float(sigma_high),
        maxiters=maxiters,
        cenfunc=cenfunc,
        estimator=estimator,
        exclude_percentile=float(exclude_percentile),
        filter_threshold=filter_threshold,
    )
    mesh_params = {k: v for k, v in asdict(mesh).items() if k != "box"}
    out: EngineOutput
    if engine == "photutils":
        bad = (flags & flags.dtype.type(badbits)).astype(bool) | ~np.isfinite(image)
        if bad.all():
            raise NoValidPixelsError("no unmasked finite pixels in the image")
        out = photutils_background(image, bad, mesh)
        params: dict[str, Any] = {"engine": engine, "box_size": box, **mesh_params}
    else:
        work = np.ascontiguousarray(image, dtype=np.float32)
        if engine == "fast":
            out = fast_background(work, flags, badbits, mesh, threads=threads)
            params = {"engine": engine, "box_size": box, **mesh_params}
        else:
            out = lsst_background(
                work, flags, badbits, bin_size=bin_size, order=order, weighting=weighting
            )
            params = {"engine": engine, "bin_size": bin_size, "weighting": weighting}
    params.update(out.params)
    good = out.ngood[out.ngood > 0]
    if good.size == 0:
        raise NoValidPixelsError("no unmasked finite pixels in the image")
    level = float(np.mean(out.background)) if engine == "lsst" else float(np.median(out.mesh))
    return BackgroundResult(
        background=out.background,
        mesh=out.mesh,
        rms_mesh=out.rms_mesh,
        level=level,
        rms_level=float(np.nanmedian(out.rms_mesh)),
        error_scale=float(1.0 / np.sqrt(np.median(good))),
        params=MappingProxyType(params),
        _rms_map=out.rms_map,
    )
