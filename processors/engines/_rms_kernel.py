"""Compiled per-box RMS estimators that need the exact clipped values (MAD-std, biweight).

The default RMS (the clipped population std) comes with the box statistics of
`processors.engines._clip_kernel`, from binned moments. The robust scales are order
statistics of the deviations from the median, which bins cannot give exactly, so each box
is sorted once here: astropy-style sigma clipping keeps a contiguous run of the sorted
values (prefix sums give each iteration's moments), and the estimator runs on that run.
Scratch buffers are local and the GIL is released: any number of threads may call at once.
"""

from __future__ import annotations

import numba as nb
import numpy as np

STD, MAD_STD, BIWEIGHT_SCALE = 0, 1, 2
RMS_CODES = {"std": STD, "mad-std": MAD_STD, "biweight": BIWEIGHT_SCALE}

_MAD_TO_SIGMA = 1.482602218505602  # astropy.stats.mad_std
_BIWEIGHT_SCALE_C = 9.0  # photutils BiweightScaleBackgroundRMS default


@nb.njit(nogil=True, cache=True)
def _median_of_sorted(values: np.ndarray, a: int, b: int) -> float:
    m = b - a
    mid = a + m // 2
    return values[mid] if m % 2 == 1 else 0.5 * (values[mid - 1] + values[mid])


@nb.njit(nogil=True, cache=True)
def _clip_run(
    values: np.ndarray,
    n: int,
    sigma_low: float,
    sigma_high: float,
    maxiters: int,
    median_centre: bool,
    p1: np.ndarray,
    p2: np.ndarray,
) -> tuple[int, int]:
    """The run [a, b) of sorted ``values[:n]`` kept by astropy's ``sigma_clip`` (std ddof 0)."""
    ref = _median_of_sorted(values, 0, n)
    p1[0] = 0.0
    p2[0] = 0.0
    for j in range(n):
        d = values[j] - ref
        p1[j + 1] = p1[j] + d
        p2[j + 1] = p2[j] + d * d
    a = 0
    b = n
    for _ in range(maxiters):
        m = b - a
        mean = (p1[b] - p1[a]) / m
        std = np.sqrt(max((p2[b] - p2[a]) / m - mean * mean, 0.0))
        centre = _median_of_sorted(values, a, b) - ref if median_centre else mean
        new_a = a + np.searchsorted(values[a:b], ref + centre - sigma_low * std, side="left")
        new_b = a + np.searchsorted(values[a:b], ref + centre + sigma_high * std, side="right")
        if new_a == a and new_b == b:
            break
        a = new_a
        b = new_b
        if a >= b:
            return a, a
    return a, b


@nb.njit(nogil=True, cache=True)
def _scale(values: np.ndarray, a: int, b: int, code: int, deviations: np.ndarray) -> float:
    """The RMS estimator of ``values[a:b]`` (sorted, non-empty)."""
    m = b - a
    if code == STD:
        mean = 0.0
        for j in range(a, b):
            mean += values[j]
        mean /= m
        total = 0.0
        for j in range(a, b):
            total += (values[j] - mean) ** 2
        return np.sqrt(total / m)
    med = _median_of_sorted(values, a, b)
    for j in range(a, b):
        deviations[j - a] = abs(values[j] - med)
    mad = np.median(deviations[:m])
    if code == MAD_STD:
        return _MAD_TO_SIGMA * mad
    if mad == 0.0:
        return 0.0
    f1 = 0.0
    f2 = 0.0
    for j in range(a, b):
        d = values[j] - med
        u2 = (d / (_BIWEIGHT_SCALE_C * mad)) ** 2
        if u2 < 1.0:
            f1 += d * d * (1.0 - u2) ** 4
            f2 += (1.0 - u2) * (1.0 - 5.0 * u2)
    return np.sqrt(m * f1 / (f2 * f2)) if f2 != 0.0 else 0.0


@nb.njit(nogil=True, cache=True)
def mesh_rms(
    data: np.ndarray,
    flags: np.ndarray,
    badbits: int,
    box_y: int,
    box_x: int,
    sigma_low: float,
    sigma_high: float,
    maxiters: int,
    median_centre: bool,
    code: int,
) -> np.ndarray:
    """Clipped RMS of every box of an image with the estimator ``code`` (see `RMS_CODES`).

    Boxes tile the image from the origin as in ``mesh_statistics``; returns a
    ``(ceil(ny/box_y), ceil(nx/box_x))`` float64 array, NaN for boxes left empty.
    ``maxiters=0`` does no clipping.
    """
    ny, nx = data.shape
    nby = (ny + box_y - 1) // box_y
    nbx = (nx + box_x - 1) // box_x
    rms = np.full((nby, nbx), np.nan)
    capacity = box_y * box_x
    values = np.empty(capacity, np.float64)
    deviations = np.empty(capacity, np.float64)
    p1 = np.empty(capacity + 1, np.float64)
    p2 = np.empty(capacity + 1, np.float64)
    for iy in range(nby):
        y0 = iy * box_y
        y1 = min(y0 + box_y, ny)
        for ix in range(nbx):
            x0 = ix * box_x
            x1 = min(x0 + box_x, nx)
            n = 0
            for y in range(y0, y1):
                for x in range(x0, x1):
                    v = data[y, x]
                    if (flags[y, x] & badbits) == 0 and np.isfinite(v):
                        values[n] = v
                        n += 1
            if n == 0:
                continue
            run = values[:n]
            run.sort()
            a, b = _clip_run(run, n, sigma_low, sigma_high, maxiters, median_centre, p1, p2)
            if b > a:
                rms[iy, ix] = _scale(run, a, b, code, deviations)
    return rms
