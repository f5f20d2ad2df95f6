"""2-D sky background models of one image (the Liger/IRIS "calculate background" step)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from processors._validation import NoValidPixelsError, as_image, as_pair
from processors.detection import detect_sources
from processors.dq import bad_pixel_mask
from processors.engines import EngineOutput, MeshParameters
from processors.engines._mesh import SplineSurface, as_map
from processors.engines.fast import fast_background
from processors.engines.lsst import lsst_background
from processors.engines.photutils_engine import photutils_background

__all__ = ["ENGINES", "ESTIMATORS", "RMS_ESTIMATORS", "BackgroundResult", "estimate_background"]

Estimator = Literal["sextractor", "biweight", "median", "mean", "mode", "mmm"]
RmsEstimator = Literal["std", "mad-std", "biweight"]
Engine = Literal["fast", "photutils", "lsst"]

ESTIMATORS: tuple[str, ...] = ("sextractor", "biweight", "median", "mean", "mode", "mmm")
RMS_ESTIMATORS: tuple[str, ...] = ("std", "mad-std", "biweight")
ENGINES: tuple[str, ...] = ("fast", "photutils", "lsst")
CENTRES: tuple[str, ...] = ("median", "mean")


@dataclass(frozen=True, eq=False)
class BackgroundResult:
    """A full-resolution background model and its noise.

    Attributes
    ----------
    background : ndarray
        Background map, same shape as the input image (float32 for float32 input). A
        mesh model keeps it as a spline surface until it is first asked for (then the map
        is made once and kept): a subtraction in place makes it row by row instead.
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
    source_mask : ndarray of bool or None
        The (dilated) sources masked for the last pass of a multi-pass model, else None.
    """

    _background: np.ndarray | SplineSurface
    mesh: np.ndarray
    rms_mesh: np.ndarray
    level: float
    rms_level: float
    error_scale: float
    params: Mapping[str, Any] = field(default_factory=dict)
    source_mask: np.ndarray | None = None
    _rms_map: Callable[[], np.ndarray] = field(default=lambda: np.empty(0), repr=False)
    _error_map: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    _error_surface: tuple[SplineSurface, float] | None = field(default=None, repr=False)

    @property
    def background(self) -> np.ndarray:
        """The background map (made from its surface on first access, then kept)."""
        stored = self._background
        if isinstance(stored, SplineSurface):
            stored = stored.evaluate()
            object.__setattr__(self, "_background", stored)  # a cache, not a new value
        return stored

    @property
    def background_surface(self) -> SplineSurface | None:
        """The map as a spline surface while it has not been made, else None."""
        return self._background if isinstance(self._background, SplineSurface) else None

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the background map."""
        shape = self._background.shape
        return (int(shape[0]), int(shape[1]))

    @property
    def error_surface(self) -> tuple[SplineSurface, float] | None:
        """`error` as a spline surface and a factor, when it is one (else None).

        `error` equals ``surface.evaluate() * float32(factor)``; a subtraction can make
        it row by row where it is used instead of writing and rereading a full map.
        """
        return self._error_surface

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
        if self._error_surface is not None:
            surface, factor = self._error_surface
            error = surface.evaluate()  # a fresh map on every access
        else:
            error, factor = np.asarray(self.rms, dtype=np.float32), self.error_scale
        error *= np.float32(factor)
        return error


@lru_cache(maxsize=32)
def _bad_bits(dqbits: int | str | None) -> int:
    """The DQ bits that make a pixel bad under ``dqbits`` (a per-bit rule)."""
    single_bits = np.array([1 << bit for bit in range(32)], dtype=np.uint32)
    bad = bad_pixel_mask(single_bits, dqbits)
    return int(single_bits[bad].sum(dtype=np.uint64))


def _flags(
    shape: tuple[int, ...],
    mask: np.ndarray | None,
    dq: np.ndarray | None,
    dqbits: Any,
    coverage: np.ndarray | None,
) -> tuple[np.ndarray, int]:
    """One integer flag array and the bits in it that mark a bad pixel."""
    if mask is None and coverage is None:
        if dq is not None:
            return np.ascontiguousarray(dq, dtype=np.uint32), _bad_bits(dqbits)
        return np.zeros(shape, dtype=np.uint8), 1
    bad = np.zeros(shape, dtype=bool)
    for name, extra in (("mask", mask), ("coverage_mask", coverage)):
        if extra is not None:
            extra = np.asarray(extra, dtype=bool)
            if extra.shape != shape:
                raise ValueError(f"{name} shape {extra.shape} does not match data shape {shape}")
            bad |= extra
    if dq is not None:
        bad |= bad_pixel_mask(dq, dqbits)
    return bad.view(np.uint8), 1


def _check_parameters(
    image: np.ndarray,
    dq: np.ndarray | None,
    *,
    engine: str,
    estimator: str,
    rms_estimator: str,
    cenfunc: str,
    exclude_percentile: float,
    sigma_low: float,
    sigma_high: float,
    sigma_clip: bool,
    maxiters: int | None,
    edge_fraction: float,
    bin_size: int,
    order: int,
    threads: int,
    passes: int,
    nsigma: float,
    npixels: int,
    dilate: float,
) -> None:
    """Raise a ValueError naming the first invalid parameter."""
    choices = (
        ("estimator", estimator, ESTIMATORS),
        ("rms_estimator", rms_estimator, RMS_ESTIMATORS),
        ("engine", engine, ENGINES),
        ("cenfunc", cenfunc, CENTRES),
    )
    for name, value, allowed in choices:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if engine == "lsst" and (rms_estimator != "std" or not sigma_clip):
        raise ValueError(
            "rms_estimator and sigma_clip=False apply to the mesh engines ('fast', "
            "'photutils'); the lsst engine always uses MEANCLIP and its clipped std"
        )
    if not 0.0 <= exclude_percentile <= 100.0:
        raise ValueError(f"exclude_percentile must be in [0, 100], got {exclude_percentile}")
    if sigma_low <= 0 or sigma_high <= 0:
        raise ValueError(
            f"sigma_low and sigma_high must be positive, got {sigma_low}, {sigma_high}"
        )
    if maxiters is not None and maxiters < 1:
        raise ValueError(f"maxiters must be >= 1 or None, got {maxiters}")
    if not 0.0 < edge_fraction <= 1.0:
        raise ValueError(f"edge_fraction must be in (0, 1], got {edge_fraction}")
    if bin_size < 1:
        raise ValueError(f"bin_size must be a positive integer, got {bin_size}")
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if nsigma <= 0:
        raise ValueError(f"nsigma must be positive, got {nsigma}")
    if npixels < 1:
        raise ValueError(f"npixels must be >= 1, got {npixels}")
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0, got {dilate}")
    if dq is not None and np.shape(dq) != image.shape:
        raise ValueError(f"dq shape {np.shape(dq)} does not match data shape {image.shape}")


def _run_engine(
    image: np.ndarray,
    flags: np.ndarray,
    badbits: int,
    *,
    engine: str,
    mesh: MeshParameters,
    coverage: np.ndarray | None,
    fill_value: float,
    bin_size: int,
    order: int,
    weighting: bool,
    threads: int,
) -> tuple[EngineOutput, dict[str, Any]]:
    """One model of the image by ``engine``, with the parameters it used."""
    mesh_params = {k: v for k, v in asdict(mesh).items() if k != "box"}
    if engine == "photutils":
        bad = (flags & flags.dtype.type(badbits)).astype(bool) | ~np.isfinite(image)
        if bad.all():
            raise NoValidPixelsError("no unmasked finite pixels in the image")
        out = photutils_background(image, bad, mesh, coverage, fill_value)
        params: dict[str, Any] = {"engine": engine, "box_size": mesh.box, **mesh_params}
    elif engine == "fast":
        work = np.ascontiguousarray(image, dtype=np.float32)
        out = fast_background(work, flags, badbits, mesh, threads=threads)
        params = {"engine": engine, "box_size": mesh.box, **mesh_params}
    else:
        work = np.ascontiguousarray(image, dtype=np.float32)
        out = lsst_background(
            work, flags, badbits, bin_size=bin_size, order=order, weighting=weighting
        )
        params = {"engine": engine, "bin_size": bin_size, "weighting": weighting}
    params.update(out.params)
    return out, params


def estimate_background(
    data: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    dq: np.ndarray | None = None,
    dqbits: int | str | None = 0,
    coverage_mask: np.ndarray | None = None,
    fill_value: float = 0.0,
    box_size: int | tuple[int, int] = 64,
    filter_size: int | tuple[int, int] = 3,
    sigma_clip: bool = True,
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    maxiters: int | None = 10,
    cenfunc: Literal["median", "mean"] = "median",
    estimator: Estimator = "sextractor",
    rms_estimator: RmsEstimator = "std",
    exclude_percentile: float = 10.0,
    edge_fraction: float = 0.5,
    filter_threshold: float | None = None,
    engine: Engine = "fast",
    bin_size: int = 128,
    order: int = 6,
    weighting: bool = True,
    passes: int = 1,
    nsigma: float = 3.0,
    npixels: int = 5,
    dilate: float = 5.0,
    threads: int = 1,
) -> BackgroundResult:
    """Estimate a 2-D background map of one image.

    Mesh engines (``fast``, ``photutils``) cut the image into ``box_size`` boxes; each box
    is sigma clipped (``cenfunc`` centre, ``sigma_low``/``sigma_high``, ``maxiters``) and
    reduced with ``estimator`` and ``rms_estimator``; boxes with too few good pixels are
    excluded and filled; the mesh is median filtered with ``filter_size`` and interpolated
    back to full resolution with a bicubic spline. The ``lsst`` engine fits a Chebyshev
    surface of ``order`` to MEANCLIP statistics of ``bin_size`` superpixels instead.
    Masked, flagged, uncovered and non-finite pixels never enter the statistics.

    With ``passes`` > 1 the model is refined with the sources masked (LSST's DETECTED
    mask, photutils' two-pass recipe): the pixels of the residual above ``nsigma`` times
    the RMS map, in connected groups of at least ``npixels``, grown by ``dilate`` pixels,
    are masked and the model is made again; each further pass detects on the latest
    residual.

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
    coverage_mask : ndarray of bool, optional
        True where the image has no data (mosaic edges, rotation); excluded like ``mask``,
        and the background and RMS maps there are ``fill_value`` (photutils semantics).
    fill_value : float, optional
        Map value under ``coverage_mask`` (0 subtracts nothing there; NaN blanks it).
    box_size : int or (int, int), optional
        Mesh box size ``(ny, nx)``; clamped to the image shape.
    filter_size : int or (int, int), optional
        Odd size of the median filter applied to the mesh; 1 disables it.
    sigma_clip : bool, optional
        False skips the clipping (photutils ``sigma_clip=None``).
    sigma_low, sigma_high : float, optional
        Lower and upper clipping thresholds in standard deviations.
    maxiters : int or None, optional
        Clipping iterations; None iterates until nothing more is rejected.
    cenfunc : {'median', 'mean'}, optional
        Centre of the clipping interval.
    estimator : {'sextractor', 'biweight', 'median', 'mean', 'mode', 'mmm'}, optional
        Per-box background statistic (``mmm`` is photutils' ``MMMBackground``,
        ``3 median - 2 mean``, the same as ``mode``).
    rms_estimator : {'std', 'mad-std', 'biweight'}, optional
        Per-box noise statistic of the clipped pixels: photutils ``StdBackgroundRMS``,
        ``MADStdBackgroundRMS`` or ``BiweightScaleBackgroundRMS`` (c=9). Mesh engines.
    exclude_percentile : float, optional
        A box is excluded when it has ``<= (1 - exclude_percentile/100)`` of a *full*
        box's area in good pixels after clipping (photutils' rule, partial edge boxes
        included; 0 keeps only boxes without a bad pixel).
    edge_fraction : float, optional
        ``fast``: a partial box at the top or right edge is used only if it covers at
        least this share of a full box (and passes the rule above). If every full box is
        excluded, `NoValidPixelsError` is raised as photutils does.
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
    passes : int, optional
        Models made in all: 1 is a plain model, 2 adds one source-masked refinement.
    nsigma : float, optional
        Source detection threshold, in units of the RMS map.
    npixels : int, optional
        Fewest connected pixels (8-neighbour) that make a source.
    dilate : float, optional
        Radius in pixels by which the detected sources are grown before masking.
    threads : int, optional
        ``fast``: threads that share this one image (bands of boxes and of output rows;
        identical results). 1 leaves the other cores to other exposures.

    Returns
    -------
    BackgroundResult
        Background map (float32 for float32 input), lazily computed RMS map, meshes,
        scalar levels, the parameters used and, after several passes, the source mask.

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
    _check_parameters(
        image, dq, engine=engine, estimator=estimator, rms_estimator=rms_estimator,
        cenfunc=cenfunc, exclude_percentile=exclude_percentile, sigma_low=sigma_low,
        sigma_high=sigma_high, sigma_clip=sigma_clip, maxiters=maxiters,
        edge_fraction=edge_fraction, bin_size=bin_size, order=order, threads=threads,
        passes=passes, nsigma=nsigma, npixels=npixels, dilate=dilate,
    )  # fmt: skip
    coverage = None if coverage_mask is None else np.asarray(coverage_mask, dtype=bool)
    flags, badbits = _flags(image.shape, mask, dq, dqbits, coverage)
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
        sigma_clip=bool(sigma_clip),
        rms_estimator=rms_estimator,
        edge_fraction=float(edge_fraction),
    )
    run = partial(
        _run_engine, image, engine=engine, mesh=mesh, coverage=coverage,
        fill_value=float(fill_value), bin_size=bin_size, order=order, weighting=weighting,
        threads=threads,
    )  # fmt: skip
    out, params = run(flags, badbits)
    sources = None
    if passes > 1:
        bad = (flags & flags.dtype.type(badbits)).astype(bool) | ~np.isfinite(image)
        for _ in range(passes - 1):
            residual = np.subtract(image, as_map(out.background), dtype=np.float32)
            sources = detect_sources(
                residual, out.rms_map(), nsigma=nsigma, npixels=npixels, dilate=dilate,
                mask=bad,
            )  # fmt: skip
            out, params = run((bad | sources).view(np.uint8), 1)
        params.update(passes=passes, nsigma=nsigma, npixels=npixels, dilate=dilate)
    good = out.ngood[out.ngood > 0]
    if good.size == 0:
        raise NoValidPixelsError("no unmasked finite pixels in the image")
    background = out.background
    if engine == "lsst":
        background = as_map(background)
        level = float(np.mean(background if coverage is None else background[~coverage]))
    else:
        level = float(np.median(out.mesh))
    error_scale = float(1.0 / np.sqrt(np.median(good)))
    error_map = None
    if coverage is not None:
        params["fill_value"] = float(fill_value)
        background = as_map(background)
        background[coverage] = fill_value
        error_map = partial(_error_outside_coverage, out.rms_map, error_scale, coverage)
    surface = None
    if out.rms_surface is not None and coverage is None:
        surface = (out.rms_surface, error_scale)
    return BackgroundResult(
        _background=background,
        mesh=out.mesh,
        rms_mesh=out.rms_mesh,
        level=level,
        rms_level=float(np.nanmedian(out.rms_mesh)),
        error_scale=error_scale,
        params=MappingProxyType(params),
        source_mask=sources,
        _rms_map=partial(_filled, out.rms_map, coverage, float(fill_value)),
        _error_map=error_map,
        _error_surface=surface,
    )


def _filled(
    make_map: Callable[[], np.ndarray], coverage: np.ndarray | None, fill_value: float
) -> np.ndarray:
    """A freshly computed map with ``fill_value`` under the coverage mask."""
    values = make_map()
    if coverage is not None:
        values[coverage] = fill_value
    return values


def _error_outside_coverage(
    make_rms: Callable[[], np.ndarray], error_scale: float, coverage: np.ndarray
) -> np.ndarray:
    """``rms * error_scale``, and 0 where nothing was estimated (no coverage)."""
    error = np.asarray(make_rms(), dtype=np.float32)
    error *= np.float32(error_scale)
    error[coverage] = 0.0
    return error
