"""Per-box RMS estimators that need the exact clipped values (MAD-std, biweight scale).

The default RMS (the clipped population std) comes with the box statistics of
`processors.engines._clip_kernel`, from binned moments. The robust scales are order
statistics of the deviations from the median, which bins cannot give exactly, so each box
is sorted here (numpy's vectorised sort of all boxes of a band at once, no GIL); on a
sorted box astropy's ``sigma_clip`` keeps a contiguous run, found with prefix sums and
binary searches, and the median deviation is a merge walk outward from the median. The
compiled part releases the GIL and keeps its scratch local: threads may call at once.
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
    return values[mid] if m % 2 == 1 else 0.5 * (float(values[mid - 1]) + float(values[mid]))


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
        run = values[a:b]
        new_a = a + np.searchsorted(run, ref + centre - sigma_low * std, side="left")
        new_b = a + np.searchsorted(run, ref + centre + sigma_high * std, side="right")
        if new_a == a and new_b == b:
            break
        a = new_a
        b = new_b
        if a >= b:
            return a, a
    return a, b


@nb.njit(nogil=True, cache=True)
def _median_deviation(values: np.ndarray, a: int, b: int, med: float) -> float:
    """Median of ``|values[a:b] - med|`` for sorted values, walking out from ``med``."""
    m = b - a
    k = m // 2  # the median deviation is the k-th smallest (and the (k-1)-th, m even)
    j = a + np.searchsorted(values[a:b], med, side="left")
    i = j - 1
    previous = 0.0
    current = 0.0
    for _ in range(k + 1):
        previous = current
        if i >= a and (j >= b or med - values[i] <= values[j] - med):
            current = med - values[i]
            i -= 1
        else:
            current = values[j] - med
            j += 1
    return current if m % 2 == 1 else 0.5 * (previous + current)


@nb.njit(nogil=True, cache=True)
def _scale(values: np.ndarray, a: int, b: int, code: int, p1: np.ndarray, p2: np.ndarray) -> float:
    """The RMS estimator of the sorted run ``values[a:b]`` (non-empty)."""
    m = b - a
    if code == STD:  # the prefix sums hold the moments about the box median
        mean = (p1[b] - p1[a]) / m
        return np.sqrt(max((p2[b] - p2[a]) / m - mean * mean, 0.0))
    med = _median_of_sorted(values, a, b)
    mad = _median_deviation(values, a, b, med)
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
def _sorted_boxes_rms(
    boxes: np.ndarray,
    sigma_low: float,
    sigma_high: float,
    maxiters: int,
    median_centre: bool,
    code: int,
) -> np.ndarray:
    """Clipped RMS of each row of ``boxes`` (sorted, NaN after the good values)."""
    n_boxes, size = boxes.shape
    rms = np.full(n_boxes, np.nan)
    p1 = np.empty(size + 1, np.float64)
    p2 = np.empty(size + 1, np.float64)
    for k in range(n_boxes):
        row = boxes[k]
        n = size
        while n > 0 and np.isnan(row[n - 1]):
            n -= 1
        if n == 0:
            continue
        a, b = _clip_run(row, n, sigma_low, sigma_high, maxiters, median_centre, p1, p2)
        if b > a:
            rms[k] = _scale(row, a, b, code, p1, p2)
    return rms


def mesh_rms(
    data: np.ndarray,
    flags: np.ndarray,
    badbits: int,
    box: tuple[int, int],
    sigma_low: float,
    sigma_high: float,
    maxiters: int,
    median_centre: bool,
    code: int,
) -> np.ndarray:
    """Clipped RMS of every box of an image with the estimator ``code`` (see `RMS_CODES`).

    Boxes tile the image from the origin as in ``mesh_statistics`` (partial boxes at the
    top and right); returns a ``(ceil(ny/box_y), ceil(nx/box_x))`` float64 array, NaN for
    boxes left empty. ``maxiters=0`` does no clipping.
    """
    ny, nx = data.shape
    by, bx = box
    nby, nbx = -(-ny // by), -(-nx // bx)
    good = ((flags & flags.dtype.type(badbits)) == 0) & np.isfinite(data)
    padded = np.full((nby * by, nbx * bx), np.nan, dtype=np.float32)
    np.copyto(padded[:ny, :nx], data, where=good)
    boxes = padded.reshape(nby, by, nbx, bx).transpose(0, 2, 1, 3).reshape(nby * nbx, by * bx)
    boxes.sort(axis=-1)  # NaN last
    rms = _sorted_boxes_rms(boxes, sigma_low, sigma_high, maxiters, median_centre, code)
    return rms.reshape(nby, nbx)
