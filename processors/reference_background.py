"""Reference (master) backgrounds: JWST WFSS scaling and the Liger/IRIS master background.

A reference background image (a calibration product, not a model of this exposure) is
scaled to the exposure and subtracted: with a fixed scale, as Liger/IRIS's
``SubtractBackgroundImagerStep`` does (ERR in quadrature, DQ OR), or with a factor fitted
in source-free pixels, as the JWST background step does for WFSS (``ALGORITHMS.md`` §1.4):
jwst >= 1.17's error-weighted mean with percentile outlier rejection, or the legacy
25-75 % robust mean of jwst <= 1.16.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numba as nb
import numpy as np

from processors.combine import collapse_integrations
from processors.detection import detect_sources
from processors.dq import DQ, bad_pixel_mask
from processors.exposure import Exposure
from processors.subarray import subarray_bounds
from processors.subtract import ErrorMode, skip_background, subtract_background

__all__ = [
    "SCALE_METHODS",
    "ReferenceScaling",
    "err_weighted_mean",
    "reference_on_science_grid",
    "robust_mean",
    "scale_reference_background",
    "subtract_reference_background",
    "sufficient_background",
]

ScaleMethod = Literal["jwst", "robust-mean"]
SCALE_METHODS: tuple[str, ...] = ("jwst", "robust-mean")
_LEGACY_MIN_PIXELS = 100  # jwst <= 1.16: more than this many pixels without DO_NOT_USE
_MIN_FRACTION = 0.05  # jwst: background pixels needed, as a share of the image


@dataclass(frozen=True, eq=False)
class ReferenceScaling:
    """The factor that scales a reference background to one exposure.

    Attributes
    ----------
    factor : float
        Multiply the reference by this (0 when the scaling failed, as JWST records it).
    status : {'COMPLETE', 'FAILED', 'SKIPPED'}
        ``FAILED``: too few background pixels or a non-finite factor (jwst method);
        ``SKIPPED``: too few background pixels for the legacy robust mean.
    method : str
        ``'jwst'`` or ``'robust-mean'``.
    background_mask : ndarray of bool
        Pixels offered as background (user mask, DQ, detected sources removed).
    rejected : ndarray of bool
        Pixels the iterative outlier rejection dropped (jwst method).
    iterations : int
        Rejection iterations run.
    reason : str
        Why the scaling did not complete ('' when it did).
    """

    factor: float
    status: Literal["COMPLETE", "FAILED", "SKIPPED"]
    method: str
    background_mask: np.ndarray
    rejected: np.ndarray
    iterations: int
    reason: str = ""


def robust_mean(values: np.ndarray, low: float = 25.0, high: float = 75.0) -> float:
    """Mean of the finite values between two percentiles (jwst <= 1.16 ``robust_mean``).

    Examples
    --------
    >>> import numpy as np
    >>> robust_mean(np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan]))
    3.0
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    lo, hi = np.percentile(x, (low, high))
    return float(np.mean(x[(x >= lo) & (x <= hi)]))


def err_weighted_mean(sci: np.ndarray, reference: np.ndarray, var: np.ndarray) -> float:
    """``sum(sci * ref / var) / sum(ref**2 / var)`` over pixels where all are usable.

    The least-squares factor of ``sci ~ factor * ref`` with weights ``1 / var``; pixels
    with a non-finite value or ``var == 0`` are left out (jwst's ``err_weighted_mean``).
    """
    sci, reference, var = np.broadcast_arrays(sci, reference, var)
    index, s, r, w = _usable_vectors(sci, reference, var, np.ones(sci.shape, dtype=bool))
    return float(_weighted_sums(s, r, w, index.size))


def sufficient_background(
    dq: np.ndarray,
    background_mask: np.ndarray,
    reference: np.ndarray,
    *,
    min_fraction: float = _MIN_FRACTION,
) -> bool:
    """JWST's check: enough background pixels without DO_NOT_USE where the reference is set.

    True when the pixels of ``background_mask`` where ``reference != 0`` and DQ lacks
    DO_NOT_USE number more than ``int(min_fraction * dq.size)``.
    """
    usable = np.asarray(background_mask, dtype=bool) & (np.asarray(reference) != 0)
    good = (np.asarray(dq)[usable] & DQ.DO_NOT_USE) == 0
    return int(np.count_nonzero(good)) > int(min_fraction * np.size(dq))


def reference_on_science_grid(science: Exposure, reference: Exposure) -> Exposure:
    """The reference cut to the science exposure's detector subarray.

    A reference of the science image shape is used as it is; a larger one (a full-frame
    calibration for a subarray exposure) is cut using both headers' ``SUBSTRT``/``SUBSIZE``
    keywords, as JWST's ``get_subarray_model`` does.

    Raises
    ------
    ValueError
        If the reference is 3-D, has no subarray keywords where they are needed, or does
        not cover the science subarray.
    """
    if reference.is_cube:
        raise ValueError(f"reference background must be 2-D, got shape {reference.shape}")
    if reference.image_shape == science.image_shape:
        return reference
    sy0, sy1, sx0, sx1 = subarray_bounds(science.header, science.image_shape)
    ry0, ry1, rx0, rx1 = subarray_bounds(reference.header, reference.image_shape)
    if sy0 < ry0 or sx0 < rx0 or sy1 > ry1 or sx1 > rx1:
        raise ValueError(
            f"reference background (detector rows {ry0}:{ry1}, columns {rx0}:{rx1}) does "
            f"not cover the science subarray (rows {sy0}:{sy1}, columns {sx0}:{sx1})"
        )
    cut = (slice(sy0 - ry0, sy1 - ry0), slice(sx0 - rx0, sx1 - rx0))
    return Exposure(
        sci=reference.sci[cut],
        err=None if reference.err is None else reference.err[cut],
        dq=reference.dq[cut],
        header=reference.header.copy(),
    )


@nb.njit(nogil=True, cache=True)
def _weighted_sums(s: np.ndarray, r: np.ndarray, w: np.ndarray, n: int) -> float:
    """``sum(s r w) / sum(r r w)`` over the first ``n`` entries, summed in float64."""
    num = 0.0
    den = 0.0
    for i in range(n):
        rw = r[i] * w[i]
        num += s[i] * rw
        den += r[i] * rw
    return num / den if den != 0.0 else np.nan


@nb.njit(nogil=True, cache=True)
def _residuals(s: np.ndarray, r: np.ndarray, factor: float, n: int, out: np.ndarray) -> None:
    for i in range(n):
        out[i] = s[i] - factor * r[i]


@nb.njit(nogil=True, cache=True)
def _keep_between(
    lo: float,
    hi: float,
    n: int,
    residual: np.ndarray,
    index: np.ndarray,
    s: np.ndarray,
    r: np.ndarray,
    w: np.ndarray,
    rejected: np.ndarray,
) -> int:
    """Compact the entries with ``lo <= residual <= hi`` to the front; flag the others."""
    kept = 0
    for i in range(n):
        if lo <= residual[i] <= hi:
            index[kept] = index[i]
            s[kept] = s[i]
            r[kept] = r[i]
            w[kept] = w[i]
            residual[kept] = residual[i]
            kept += 1
        else:
            rejected[index[i]] = True
    return kept


@nb.njit(nogil=True, cache=True)
def _quantile(values: np.ndarray, n: int, q: float, sample: np.ndarray) -> float:
    """``np.quantile(values[:n], q)`` (linear), selecting rather than sorting everything.

    The sorted strided ``sample`` brackets the two ranks needed (a margin of four binomial
    standard deviations); one pass counts the values below the bracket and another gathers
    those inside, and only these are sorted. If the bracket misses, all values are sorted.
    """
    m = sample.size
    position = (n - 1) * q  # numpy's virtual index for the 'linear' method
    k = int(np.floor(position))
    k_next = min(k + 1, n - 1)
    centre = q * (m - 1)
    margin = 4.0 * np.sqrt(m * q * (1.0 - q)) + 10.0
    lo = sample[int(centre - margin)] if centre - margin >= 0 else -np.inf
    top = int(centre + margin) + 1
    hi = sample[top] if top < m else np.inf
    below = 0
    count = 0
    for i in range(n):
        v = values[i]
        if v < lo:
            below += 1
        elif v <= hi:
            count += 1
    if below <= k and k_next < below + count:
        inside = np.empty(count, values.dtype)
        c = 0
        for i in range(n):
            v = values[i]
            if lo <= v <= hi:
                inside[c] = v
                c += 1
        inside.sort()
        a, b = inside[k - below], inside[k_next - below]
    else:
        ordered = np.sort(values[:n])
        a, b = ordered[k], ordered[k_next]
    t = position - k
    # numpy's _lerp, so that the cut equals np.percentile's to the last bit
    return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t


def _percentile_cuts(values: np.ndarray, n: int, percent: float) -> tuple[float, float]:
    """``np.percentile(values[:n], (percent, 100 - percent))``, by selection."""
    sample = np.sort(values[: n : max(n // 20_000, 1)])
    low = _quantile(values, n, percent / 100.0, sample)
    high = _quantile(values, n, (100.0 - percent) / 100.0, sample)
    return low, high


def _rejection(
    sci: np.ndarray,
    ref: np.ndarray,
    var: np.ndarray,
    region: np.ndarray,
    *,
    maxiter: int,
    percent: float,
    rms_stop: float,
    dispersion_axis: int | None,
) -> tuple[float, np.ndarray, int]:
    """JWST's ``_ScalingFactorComputer`` on the usable pixels of ``region``, as vectors.

    Each iteration takes the weighted factor, then drops the residuals below the
    ``percent`` and above the ``100 - percent`` percentile; with ``rms_stop`` > 0 it stops
    first when the RMS of the median residual profile along the dispersion axis improves
    by less than that fraction. Returns the final factor, the rejected pixels and the
    iterations run.
    """
    index, s, r, w = _usable_vectors(sci, ref, var, region)
    n = index.size
    residual = np.empty(n, dtype=np.float64)
    rejected = np.zeros(sci.size, dtype=bool)
    last_rms = np.inf
    iterations = 0
    while iterations < maxiter and n > 0:
        _residuals(s, r, _weighted_sums(s, r, w, n), n, residual)
        if rms_stop > 0:
            rms = _profile_rms(residual[:n], index[:n], sci.shape, dispersion_axis)
            with np.errstate(invalid="ignore"):
                if (last_rms - rms) / last_rms < rms_stop:
                    break
            last_rms = rms
        iterations += 1
        lo, hi = _percentile_cuts(residual, n, percent)
        n = _keep_between(lo, hi, n, residual, index, s, r, w, rejected)
    return float(_weighted_sums(s, r, w, n)), rejected.reshape(sci.shape), iterations


@nb.njit(nogil=True, cache=True)
def _usable(inside: bool, s: float, r: float, v: float) -> bool:
    return inside and np.isfinite(s) and np.isfinite(r) and np.isfinite(v) and v != 0


@nb.njit(nogil=True, cache=True)
def _gather(
    sci: np.ndarray, ref: np.ndarray, var: np.ndarray, region: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Index, science, reference and ``1/var`` (float64) of the usable pixels, in order.

    Usable: in ``region``, all three values finite, ``var != 0``.
    """
    n = 0
    for i in range(sci.size):
        n += _usable(region[i], sci[i], ref[i], var[i])
    index = np.empty(n, np.int64)
    s = np.empty(n, np.float64)
    r = np.empty(n, np.float64)
    w = np.empty(n, np.float64)
    k = 0
    for i in range(sci.size):
        if _usable(region[i], sci[i], ref[i], var[i]):
            index[k] = i
            s[k] = sci[i]
            r[k] = ref[i]
            w[k] = 1.0 / float(var[i])
            k += 1
    return index, s, r, w


def _usable_vectors(
    sci: np.ndarray, ref: np.ndarray, var: np.ndarray, region: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`_gather` on flat contiguous views of same-shape arrays."""
    s, r, v = (np.ascontiguousarray(a).ravel() for a in (sci, ref, var))
    return _gather(s, r, v, np.ascontiguousarray(region, dtype=bool).ravel())


def _profile_rms(
    residual: np.ndarray, index: np.ndarray, shape: tuple[int, ...], axis: int | None
) -> float:
    """RMS of the residual's median profile along the dispersion axis (1: x, 2: y)."""
    image = np.full(shape, np.nan)
    image.ravel()[index] = residual
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        profile = np.nanmedian(image, axis=int(axis) - 1)  # type: ignore[arg-type]
        return float(np.sqrt(np.nanmean(profile**2)))


def scale_reference_background(
    science: Exposure,
    reference: Exposure | np.ndarray,
    mask: np.ndarray | None = None,
    *,
    method: ScaleMethod = "jwst",
    maxiter: int = 5,
    outlier_percent: float = 1.0,
    rms_stop: float = 0.0,
    dispersion_axis: int | None = None,
    dqbits: int | str | None = None,
    passes: int = 1,
    nsigma: float = 3.0,
    npixels: int = 5,
    dilate: float = 5.0,
) -> ReferenceScaling:
    """Fit the factor that scales a reference background to an exposure's sky.

    ``method='jwst'`` (jwst >= 1.17): the error-weighted mean factor ``sum(s r / var) /
    sum(r r / var)`` over the background pixels, iterated ``maxiter`` times, each time
    dropping the residuals ``s - factor r`` outside the ``outlier_percent`` and ``100 -
    outlier_percent`` percentiles (``rms_stop`` > 0 also stops once the median residual
    profile along ``dispersion_axis`` improves by less than that fraction). Pixels with a
    non-finite value or zero variance never count; without ERR all weights are equal.
    ``method='robust-mean'`` (jwst <= 1.16): the ratio of the 25-75 % robust means of the
    exposure and of the reference (NaN in the reference read as 0) over the background
    pixels.

    The background pixels are ``mask`` (True = usable, JWST's ``wfss_mask`` convention),
    all pixels without it, minus the pixels flagged by ``dqbits`` (None: DQ is not used,
    as JWST), minus, with ``passes`` > 1, the sources detected in the residual of the
    previous fit above ``nsigma`` times ERR (or the residual's MAD-std without ERR) in
    groups of ``npixels``, grown by ``dilate`` pixels. JWST's sufficiency check applies:
    with a user mask, at least one pixel without DO_NOT_USE; with detected sources, more
    than 5 % of the image without DO_NOT_USE where the reference is non-zero; for the
    robust mean, more than 100 pixels without DO_NOT_USE.

    Parameters
    ----------
    science : Exposure
        The exposure (a 3-D one is collapsed over integrations first, as the JWST
        rateints path does).
    reference : Exposure or ndarray
        Reference background (a larger Exposure is cut to the science subarray).
    mask : ndarray of bool, optional
        True where a pixel may serve as background.
    method : {'jwst', 'robust-mean'}, optional
        Fitting rule.
    maxiter : int, optional
        jwst: outlier-rejection iterations (0: the plain error-weighted mean).
    outlier_percent : float, optional
        jwst: percentile rejected at each end per iteration.
    rms_stop : float, optional
        jwst: fractional RMS improvement below which iterating stops (0: never).
    dispersion_axis : {1, 2} or None, optional
        jwst: 1 when spectra disperse along x, 2 along y; needed with ``rms_stop``.
    dqbits : int, str or None, optional
        DQ bits to ignore when excluding flagged pixels; None uses no DQ.
    passes, nsigma, npixels, dilate
        Source masking, as in `processors.estimate_background`.

    Returns
    -------
    ReferenceScaling
        Factor, status and the masks used.

    Raises
    ------
    ValueError
        For an unknown method, invalid iteration parameters, ``rms_stop`` without a
        dispersion axis, or a reference that does not match the exposure.
    """
    if method not in SCALE_METHODS:
        raise ValueError(f"method must be one of {SCALE_METHODS}, got {method!r}")
    if maxiter < 0:
        raise ValueError(f"maxiter must be >= 0, got {maxiter}")
    if not 0.0 <= outlier_percent < 50.0:
        raise ValueError(f"outlier_percent must be in [0, 50), got {outlier_percent}")
    if rms_stop > 0 and dispersion_axis not in (1, 2):
        raise ValueError(f"rms_stop needs dispersion_axis 1 (x) or 2 (y), got {dispersion_axis!r}")
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if science.is_cube:
        collapsed = collapse_integrations(science.sci, science.err, science.dq)
        science = collapsed.with_changes(header=science.header)
    ref = _reference_pixels(science, reference)
    sci = science.sci
    var = (
        np.ones(sci.shape, dtype=np.float32)
        if science.err is None
        else np.square(science.err, dtype=np.float32)
    )
    offered = np.ones(sci.shape, dtype=bool) if mask is None else np.asarray(mask, bool)
    if offered.shape != sci.shape:
        raise ValueError(f"mask shape {offered.shape} does not match image {sci.shape}")
    if dqbits is not None:
        offered = offered & ~bad_pixel_mask(science.dq, dqbits)

    user_mask = mask is not None

    def fit(region: np.ndarray, check: Literal["user", "sources", "none"]) -> ReferenceScaling:
        if method == "robust-mean":
            return _robust_mean_scaling(science, ref, region)
        if check == "user":  # JWST: threshold 0 and the reference taken as all ones
            enough = sufficient_background(science.dq, region, region, min_fraction=0.0)
        elif check == "sources":
            enough = sufficient_background(science.dq, region, ref)
        else:
            enough = True
        if not enough:
            return _failed(region, "too few background pixels without DO_NOT_USE", "jwst")
        return _jwst_scaling(
            science, ref, var, region, maxiter=maxiter, percent=outlier_percent,
            rms_stop=rms_stop, dispersion_axis=dispersion_axis,
        )  # fmt: skip

    result = fit(offered, "user" if user_mask else "none")
    for _ in range(passes - 1):
        if result.status != "COMPLETE":
            break
        residual = sci - np.float32(result.factor) * ref
        noise = science.err if science.err is not None else _mad_std(residual[offered])
        sources = detect_sources(
            residual, noise, nsigma=nsigma, npixels=npixels, dilate=dilate, mask=~offered
        )
        result = fit(offered & ~sources, "user" if user_mask else "sources")
    return result


def _reference_pixels(science: Exposure, reference: Exposure | np.ndarray) -> np.ndarray:
    if isinstance(reference, Exposure):
        return reference_on_science_grid(science, reference).sci
    ref = np.asarray(reference, dtype=np.float32)
    if ref.shape != science.image_shape:
        raise ValueError(
            f"reference shape {ref.shape} does not match image shape {science.image_shape}"
        )
    return ref


def _mad_std(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("inf")
    return float(1.482602218505602 * np.median(np.abs(finite - np.median(finite))))


def _failed(
    region: np.ndarray,
    reason: str,
    method: str,
    status: Literal["FAILED", "SKIPPED"] = "FAILED",
) -> ReferenceScaling:
    return ReferenceScaling(
        factor=0.0,
        status=status,
        method=method,
        background_mask=region,
        rejected=np.zeros(region.shape, dtype=bool),
        iterations=0,
        reason=reason,
    )


def _jwst_scaling(
    science: Exposure,
    ref: np.ndarray,
    var: np.ndarray,
    region: np.ndarray,
    *,
    maxiter: int,
    percent: float,
    rms_stop: float,
    dispersion_axis: int | None,
) -> ReferenceScaling:
    """The iterated error-weighted mean; FAILED with factor 0 when it is not finite."""
    factor, rejected, iterations = _rejection(
        science.sci, ref, var, region, maxiter=maxiter, percent=percent, rms_stop=rms_stop,
        dispersion_axis=dispersion_axis,
    )  # fmt: skip
    if not np.isfinite(factor):
        return _failed(region, "no finite scaling factor between reference and exposure", "jwst")
    return ReferenceScaling(factor, "COMPLETE", "jwst", region, rejected, iterations)


def _robust_mean_scaling(
    science: Exposure, ref: np.ndarray, region: np.ndarray
) -> ReferenceScaling:
    """The jwst <= 1.16 factor: ratio of 25-75 % robust means; 0 when the reference mean is 0."""
    good = np.count_nonzero((science.dq[region] & DQ.DO_NOT_USE) == 0)
    if good <= _LEGACY_MIN_PIXELS:
        reason = f"{_LEGACY_MIN_PIXELS} or fewer background pixels without DO_NOT_USE"
        return _failed(region, reason, "robust-mean", "SKIPPED")
    sci_mean = robust_mean(science.sci[region])
    ref_mean = robust_mean(np.nan_to_num(ref[region], nan=0.0))
    factor = sci_mean / ref_mean if ref_mean != 0 else 0.0
    if not np.isfinite(factor):
        return _failed(region, "no finite robust mean", "robust-mean", "SKIPPED")
    rejected = np.zeros(region.shape, dtype=bool)
    return ReferenceScaling(factor, "COMPLETE", "robust-mean", region, rejected, 0)


def subtract_reference_background(
    exposure: Exposure,
    reference: Exposure,
    *,
    scale: float | ReferenceScaling = 1.0,
    errors: ErrorMode = "quadrature",
    reference_name: str | None = None,
) -> Exposure:
    """Subtract a scaled reference (master) background, returning a new exposure.

    ``SCI -= scale * ref``; ``DQ |= ref DQ``; ERR unchanged (``errors='jwst'``) or
    ``sqrt(err**2 + (scale * ref_err)**2)`` (``'quadrature'``, Liger/IRIS). The header
    gets ``BKGMETH='reference'``, ``BKGD_SCL`` (the scale), ``BKGSCMTH`` (``fixed`` or the
    fitting method) and ``MASTERBG`` (``reference_name``). A `ReferenceScaling` that did
    not complete leaves the pixels alone: ``S_BKDSUB`` is its status (``FAILED`` or
    ``SKIPPED``) and ``BKGD_SCL`` 0, as JWST records it.

    Parameters
    ----------
    exposure : Exposure
        Science exposure (3-D: the reference is subtracted from every integration).
    reference : Exposure
        Reference background; cut to the science subarray when it is larger.
    scale : float or ReferenceScaling, optional
        A fixed scale (Liger/IRIS ``scale``, default 1) or a fitted one.
    errors : {'quadrature', 'jwst'}, optional
        ERR rule.
    reference_name : str, optional
        Provenance recorded in ``MASTERBG``.

    Returns
    -------
    Exposure
        The background-subtracted exposure.

    Raises
    ------
    ValueError
        If the reference does not match the exposure.
    """
    ref = reference_on_science_grid(exposure, reference)
    if isinstance(scale, ReferenceScaling):
        if scale.status != "COMPLETE":
            out = skip_background(
                exposure, method="reference", reason=scale.reason, status=scale.status,
                scale=0.0,
            )  # fmt: skip
            out.header["BKGSCMTH"] = (scale.method, "how the reference was scaled")
            if reference_name is not None:
                out.header["MASTERBG"] = (str(reference_name)[:68], "reference background")
            return out
        factor, how = scale.factor, scale.method
    else:
        factor, how = float(scale), "fixed"
    scaled = Exposure(
        sci=np.float32(factor) * ref.sci,
        err=None if ref.err is None else np.float32(abs(factor)) * ref.err,
        dq=ref.dq,
    )
    out = subtract_background(
        exposure, scaled, errors=errors, method="reference", scale=factor,
        reference=reference_name,
    )  # fmt: skip
    out.header["BKGSCMTH"] = (how, "how the reference was scaled")
    return out
