"""Background subtraction with the JWST and Liger/IRIS error conventions."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from processors._version import __version__
from processors.background import BackgroundResult
from processors.engines._bands import bands, map_bands
from processors.engines._mesh import SplineSurface, as_map
from processors.engines._surface_kernels import subtract_rows_in_place
from processors.exposure import Exposure

__all__ = ["ERROR_MODES", "skip_background", "subtract_background"]

ErrorMode = Literal["quadrature", "jwst"]
ERROR_MODES: tuple[str, ...] = ("quadrature", "jwst")

# FITS keywords for background parameters (8 characters, one per parameter).
_PARAM_KEYWORDS = {
    "engine": ("BKGENGIN", "background engine"),
    "cenfunc": ("BKGCENTR", "clipping centre"),
    "bin_size": ("BKGBIN", "superpixel size (lsst engine)"),
    "order": ("BKGORDER", "Chebyshev order (lsst engine)"),
    "weighting": ("BKGWEIGH", "inverse-variance weighted fit (lsst engine)"),
    "method": ("BKGMODEL", "how the background map was made"),
    "members": ("BKGNMEMB", "frames combined into the background"),
    "combine": ("BKGCOMB", "rule combining the frames"),
    "box_size": ("BKGBOX", "mesh box size (ny, nx)"),
    "filter_size": ("BKGFILT", "mesh median filter size (ny, nx)"),
    "sigma_low": ("BKGSIGLO", "lower clipping threshold [sigma]"),
    "sigma_high": ("BKGSIGHI", "upper clipping threshold [sigma]"),
    "maxiters": ("BKGMAXIT", "clipping iterations (None: to convergence)"),
    "estimator": ("BKGESTIM", "per-box background estimator"),
    "exclude_percentile": ("BKGEXCL", "box exclusion threshold [percent masked]"),
    "filter_threshold": ("BKGFTHR", "median filter threshold"),
    "sigma_clip": ("BKGCLIP", "boxes sigma clipped"),
    "rms_estimator": ("BKGRMSES", "per-box noise estimator"),
    "edge_fraction": ("BKGEDGEF", "smallest partial edge box used [box share]"),
    "fill_value": ("BKGFILLV", "background where coverage_mask is set"),
    "passes": ("BKGPASS", "model passes (2 and more: sources masked)"),
    "nsigma": ("BKGDETSG", "source detection threshold [rms]"),
    "npixels": ("BKGDETNP", "fewest connected pixels of a source"),
    "dilate": ("BKGDILAT", "source mask dilation radius [pixels]"),
}


def subtract_background(
    exposure: Exposure,
    background: np.ndarray | BackgroundResult | Exposure,
    *,
    errors: ErrorMode = "quadrature",
    method: str = "model",
    level: float | None = None,
    inputs: Sequence[str] = (),
    scale: float | None = None,
    reference: str | None = None,
    source_dq: int = 0,
    in_place: bool = False,
    threads: int = 1,
) -> Exposure:
    """Subtract a 2-D background from an exposure, returning a new exposure.

    SCI becomes ``sci - background`` (a 3-D exposure gets the same 2-D background
    subtracted from every integration); DQ becomes ``dq | background_dq``, and also
    ``| source_dq`` on the sources a multi-pass model masked; ERR follows ``errors``:

    - ``'jwst'``: unchanged, as the JWST background step does;
    - ``'quadrature'``: ``sqrt(err**2 + background_err**2)``, as Liger/IRIS does.

    An unknown ERR (``None``) stays unknown in both modes; a background whose error is
    unknown leaves ERR unchanged and says so in the ``BKGERRMD`` card.

    Parameters
    ----------
    exposure : Exposure
        Science exposure; never modified.
    background : ndarray, BackgroundResult or Exposure
        The background: a 2-D array (error unknown), a model from
        `processors.estimate_background` (error = its `~BackgroundResult.error`), or a
        combined background exposure (its SCI, ERR and DQ).
    errors : {'quadrature', 'jwst'}, optional
        ERR propagation rule; an explicit choice, never mixed.
    method : str, optional
        Background method recorded in ``BKGMETH`` (e.g. ``'model'``, ``'stack'``).
    level : float, optional
        Scalar level for ``BKGLEVEL``; by default the model's level, or the median of a
        background array.
    inputs : sequence of str, optional
        Ids of the exposures the background was made from, recorded as ``BKGINP01``,
        ``BKGINP02``, ... (and ``BKGNINP``).
    scale : float, optional
        Factor the reference background was scaled by, recorded as JWST's ``BKGD_SCL``.
    reference : str, optional
        Name of the reference (master) background file, recorded as ``MASTERBG``.
    source_dq : int, optional
        DQ bits set where a multi-pass model masked sources (``BackgroundResult``
        ``source_mask``); 0 keeps the DQ as it is. The masked fraction is recorded in
        ``BKGSRCFR`` either way.
    in_place : bool, optional
        Overwrite the exposure's SCI, ERR and DQ instead of allocating new planes (one
        pass each; the same values bit for bit). The input exposure must not be used
        afterwards: the returned one shares its arrays.
    threads : int, optional
        Threads sharing an in-place subtraction (bands of rows; identical results).

    Returns
    -------
    Exposure
        New exposure with ``S_BKDSUB='COMPLETE'``, ``BKGLEVEL``, ``BKGMETH``, ``BKGSUB=T``
        and provenance cards in its header.

    Raises
    ------
    ValueError
        If ``errors`` is unknown or the background does not match the image shape.

    Examples
    --------
    >>> import numpy as np
    >>> from processors import Exposure
    >>> out = subtract_background(Exposure(np.full((2, 2), 10.0)), np.ones((2, 2)))
    >>> out.sci.tolist(), out.header["S_BKDSUB"]
    ([[9.0, 9.0], [9.0, 9.0]], 'COMPLETE')
    """
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be one of {ERROR_MODES}, got {errors!r}")

    bkg_data, bkg_error, bkg_dq, default_level, params = _parts(background, lazy=in_place)
    if bkg_data.shape != exposure.image_shape:
        raise ValueError(
            f"background shape {bkg_data.shape} does not match image shape {exposure.image_shape}"
        )

    sources = background.source_mask if isinstance(background, BackgroundResult) else None
    err = exposure.err
    err_mode: str = errors
    extra = None
    surface = None  # the error as a surface, made inside an in-place pass
    if err is None:
        err_mode = f"{errors} (ERR unknown)"
    elif errors == "quadrature":
        if in_place and isinstance(background, BackgroundResult):
            surface = background.error_surface
        extra = bkg_error() if surface is None else None
        if surface is None and extra is None:
            err_mode = "quadrature (background error unknown)"
    if in_place:
        sci, err, dq = _subtract_in_place(exposure, bkg_data, surface or extra, bkg_dq, threads)
    else:
        sci = np.subtract(exposure.sci, as_map(bkg_data), dtype=np.float32)
        dq = exposure.dq if bkg_dq is None else exposure.dq | bkg_dq
        if err is not None and extra is not None:
            combined = np.square(err, dtype=np.float32)
            combined += np.square(extra, dtype=np.float32)
            err = np.sqrt(combined, out=combined)
    if sources is not None and source_dq:
        dq = dq | np.where(sources, np.uint32(source_dq), np.uint32(0))

    header = exposure.header.copy()
    header["S_BKDSUB"] = ("COMPLETE", "background subtraction step")
    header["BKGLEVEL"] = (float(default_level if level is None else level), "background level")
    header["BKGSUB"] = (True, "background subtracted from SCI")
    header["BKGMETH"] = (method, "background method")
    header["BKGERRMD"] = (err_mode, "ERR rule")
    header["SKYSTVER"] = (__version__, "skystream version")
    for name, value in params.items():
        keyword, comment = _PARAM_KEYWORDS[name]
        header[keyword] = (_card_value(value), comment)
    if sources is not None:
        header["BKGSRCFR"] = (float(sources.mean()), "fraction of pixels masked as sources")
    if scale is not None:
        header["BKGD_SCL"] = (float(scale), "scaling factor of the reference background")
    if reference is not None:
        header["MASTERBG"] = (str(reference)[:68], "reference background file")
    _record_inputs(header, inputs)
    header.add_history(f"skystream {__version__}: background '{method}' subtracted, ERR {errors}")
    return exposure.with_changes(sci=sci, err=err, dq=dq, header=header)


def _subtract_in_place(
    exposure: Exposure,
    background: np.ndarray | SplineSurface,
    background_err: np.ndarray | tuple[SplineSurface, float] | None,
    background_dq: np.ndarray | None,
    threads: int,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """SCI, ERR and DQ of ``exposure`` with the background taken out, in their own arrays.

    A background or error given as a spline surface is made row by row inside the pass.
    """
    planes = [exposure.sci] if exposure.err is None else [exposure.sci, exposure.err]
    if not all(p.flags.c_contiguous and p.flags.writeable for p in planes):
        exposure = exposure.with_changes(
            sci=exposure.sci.copy(), err=None if exposure.err is None else exposure.err.copy()
        )
    ny, nx = exposure.image_shape
    sci = exposure.sci.reshape(-1, ny, nx)
    err = np.empty((0, ny, nx), np.float32) if exposure.err is None else exposure.err
    level, level_surface = _map_or_surface(background, nx)
    scale = 1.0
    if isinstance(background_err, tuple):
        error, error_surface = _map_or_surface(background_err[0], nx)
        scale = background_err[1]
    else:
        error, error_surface = _map_or_surface(background_err, nx)

    def band(i0: int, i1: int) -> None:
        subtract_rows_in_place(sci, err.reshape(-1, ny, nx), level, level_surface, error,
                               error_surface, scale, i0, i1)  # fmt: skip

    map_bands(band, bands(ny, threads))
    dq = exposure.dq
    if background_dq is not None:
        if dq.flags.writeable:
            np.bitwise_or(dq, background_dq, out=dq)
        else:
            dq = dq | background_dq
    return exposure.sci, exposure.err, dq


_NO_ROWS = np.empty((0, 0), np.float32)
_NO_SURFACE = (_NO_ROWS, np.zeros((0, 4), np.int64), np.zeros((0, 4), np.float32), 0.0, 0.0)


def _map_or_surface(
    values: np.ndarray | SplineSurface | None, nx: int
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, float, float]]:
    """The kernel's pair for one plane: a map and no surface, or an empty map and a surface.

    Neither (no values) is an empty map and a surface without columns.
    """
    if isinstance(values, SplineSurface):
        return _NO_ROWS, (values.rows, values.taps, values.weights, values.low, values.high)
    if values is None:
        return _NO_ROWS, _NO_SURFACE
    plane = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, nx)
    return plane, _NO_SURFACE


def skip_background(
    exposure: Exposure,
    *,
    method: str,
    reason: str,
    status: Literal["SKIPPED", "FAILED"] = "SKIPPED",
    scale: float | None = None,
) -> Exposure:
    """The exposure unchanged but for ``S_BKDSUB`` (``status``), ``BKGSUB=F`` and the reason.

    ``FAILED`` is JWST's status for a reference background that could not be scaled;
    ``scale`` (JWST records 0 then) goes into ``BKGD_SCL``.

    Examples
    --------
    >>> import numpy as np
    >>> from processors import Exposure
    >>> out = skip_background(Exposure(np.ones((2, 2))), method="stack", reason="no stack")
    >>> out.header["S_BKDSUB"], out.header["BKGSUB"]
    ('SKIPPED', False)
    """
    header = exposure.header.copy()
    if status not in ("SKIPPED", "FAILED"):
        raise ValueError(f"status must be 'SKIPPED' or 'FAILED', got {status!r}")
    header["S_BKDSUB"] = (status, "background subtraction step")
    header["BKGSUB"] = (False, "background subtracted from SCI")
    header["BKGMETH"] = (method, "background method")
    if scale is not None:
        header["BKGD_SCL"] = (float(scale), "scaling factor of the reference background")
    header["SKYSTVER"] = (__version__, "skystream version")
    header.add_history(f"skystream {__version__}: background not subtracted: {reason}")
    return exposure.with_changes(header=header)


def _record_inputs(header: Any, inputs: Sequence[str]) -> None:
    if not inputs:
        return
    header["BKGNINP"] = (len(inputs), "exposures the background was made from")
    for index, name in enumerate(inputs[:99], start=1):
        header[f"BKGINP{index:02d}"] = str(name)[:68]


def _parts(
    background: np.ndarray | BackgroundResult | Exposure, *, lazy: bool
) -> tuple[
    np.ndarray | SplineSurface,
    Callable[[], np.ndarray | None],
    np.ndarray | None,
    float,
    Mapping,
]:
    """Data, error (computed only if asked for), DQ, level and parameters of a background.

    With ``lazy``, a model's data is its surface while its map has not been made.
    """
    if isinstance(background, BackgroundResult):
        surface = background.background_surface if lazy else None
        return (
            background.background if surface is None else surface,
            lambda: background.error,
            None,
            background.level,
            background.params,
        )
    if isinstance(background, Exposure):
        if background.is_cube:
            raise ValueError(f"background exposure must be 2-D, got shape {background.shape}")
        return (
            background.sci,
            lambda: background.err,
            background.dq,
            float(np.nanmedian(background.sci)),
            {},
        )
    data = np.asarray(background, dtype=np.float32)
    return data, lambda: None, None, float(np.nanmedian(data)), {}


def _card_value(value: Any) -> str | float | int | bool:
    """FITS-representable form of a parameter value (tuples, None and NaN become strings)."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # FITS cards cannot hold NaN or inf (a NaN fill_value)
    if isinstance(value, bool | int | float | str):
        return value
    if value is None:
        return "None"
    return str(tuple(value)) if isinstance(value, tuple | list) else str(value)
