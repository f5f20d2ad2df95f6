"""Source masks for background estimation: threshold, connected components, dilation.

What photutils users do by hand before a second ``Background2D`` (``detect_sources`` on the
residual, then ``binary_dilation`` with a circular footprint), and LSST's DETECTED mask
plane grown before its refined background. The labelling is scipy's; counting the
components and the circular dilation (an exact Euclidean distance test, linear in the
number of pixels whatever the radius) run in compiled, GIL-free kernels.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from scipy import ndimage

__all__ = ["detect_sources", "dilate_mask"]

_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@nb.njit(nogil=True, cache=True)
def _keep_large(labels: np.ndarray, n_labels: int, npixels: int, out: np.ndarray) -> np.ndarray:
    """``out`` = pixels whose component (``labels`` > 0) has at least ``npixels`` pixels."""
    sizes = np.zeros(n_labels + 1, np.int64)
    ny, nx = labels.shape
    for y in range(ny):
        for x in range(nx):
            sizes[labels[y, x]] += 1
    sizes[0] = 0
    for y in range(ny):
        for x in range(nx):
            out[y, x] = sizes[labels[y, x]] >= npixels
    return out


@nb.njit(nogil=True, cache=True)
def _meet(row: np.ndarray, p: int, q: int) -> float:
    """Abscissa where the parabolas of columns ``p < q`` of ``row`` cross."""
    fp = float(row[p]) ** 2 + float(p) ** 2
    fq = float(row[q]) ** 2 + float(q) ** 2
    return (fq - fp) / (2.0 * (q - p))


@nb.njit(nogil=True, cache=True)
def _dilate_disk(mask: np.ndarray, radius: float, out: np.ndarray) -> np.ndarray:
    """``out`` = pixels within Euclidean ``radius`` of a True pixel of ``mask``.

    Vertical distance to the nearest mask pixel of each column first (two sweeps along
    rows), then per row the lower envelope of the parabolas ``g(x')**2 + (x - x')**2``
    (Felzenszwalb & Huttenlocher), keeping only columns whose vertical distance is within
    the radius, since no other can bring a pixel within it.
    """
    ny, nx = mask.shape
    reach = int(np.floor(radius))
    limit = radius * radius
    g = np.empty((ny, nx), np.int32)
    for x in range(nx):
        g[0, x] = 0 if mask[0, x] else reach + 1
    for y in range(1, ny):
        for x in range(nx):
            g[y, x] = 0 if mask[y, x] else min(g[y - 1, x] + 1, reach + 1)
    for y in range(ny - 2, -1, -1):
        for x in range(nx):
            g[y, x] = min(g[y, x], g[y + 1, x] + 1)
    apex = np.empty(nx, np.int64)  # columns whose parabola is on the envelope
    start = np.empty(nx + 1, np.float64)  # where each of them starts being the lowest
    for y in range(ny):
        row = g[y]
        line = out[y]
        k = -1
        for q in range(nx):
            if row[q] > reach:
                continue
            # The first parabola starts at -inf and is never dropped.
            while k > 0 and _meet(row, apex[k], q) <= start[k]:
                k -= 1
            k += 1
            apex[k] = q
            start[k] = -np.inf if k == 0 else _meet(row, apex[k - 1], q)
        if k < 0:
            line[:] = False
            continue
        start[k + 1] = np.inf
        j = 0
        for x in range(nx):
            while start[j + 1] < x:
                j += 1
            v = apex[j]
            line[x] = float(row[v]) ** 2 + float(x - v) ** 2 <= limit
    return out


def dilate_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Grow a mask by a disk: True within Euclidean ``radius`` pixels of a True pixel.

    Equal to ``scipy.ndimage.binary_dilation`` with the footprint ``x**2 + y**2 <=
    radius**2`` (photutils' ``circular_footprint``), at a cost independent of the radius.

    Parameters
    ----------
    mask : ndarray of bool
        2-D mask.
    radius : float
        Dilation radius in pixels; 0 returns a copy.

    Returns
    -------
    ndarray of bool
        The grown mask.
    """
    if radius < 0:
        raise ValueError(f"dilate must be >= 0, got {radius}")
    mask = np.ascontiguousarray(mask, dtype=bool)
    if radius == 0 or not mask.any():
        return mask.copy()
    return _dilate_disk(mask, float(radius), np.empty(mask.shape, dtype=bool))


def detect_sources(
    residual: np.ndarray,
    rms: np.ndarray | float,
    *,
    nsigma: float = 3.0,
    npixels: int = 5,
    dilate: float = 0.0,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Mask of the sources in a background-subtracted image.

    A pixel is a candidate when ``residual > nsigma * rms`` (photutils ``detect_sources``
    compares with ``>``); candidates touching by an edge or a corner form a source, and
    sources of fewer than ``npixels`` pixels are dropped; the rest is grown by a disk of
    radius ``dilate``.

    Parameters
    ----------
    residual : ndarray
        2-D image minus its first background model.
    rms : ndarray or float
        Background noise, per pixel or one value.
    nsigma : float, optional
        Detection threshold in units of ``rms``.
    npixels : int, optional
        Fewest connected pixels that make a source.
    dilate : float, optional
        Radius in pixels by which the detected pixels are grown.
    mask : ndarray of bool, optional
        Pixels that cannot be detected (flagged, outside coverage).

    Returns
    -------
    ndarray of bool
        True on source pixels.

    Raises
    ------
    ValueError
        For a non-positive ``nsigma`` or ``npixels``, a negative ``dilate`` or mismatched
        shapes.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((9, 9))
    >>> image[3:6, 3:6] = 10.0
    >>> int(detect_sources(image, 1.0, npixels=5).sum())
    9
    """
    if nsigma <= 0:
        raise ValueError(f"nsigma must be positive, got {nsigma}")
    if npixels < 1:
        raise ValueError(f"npixels must be >= 1, got {npixels}")
    residual = np.asarray(residual)
    if np.ndim(rms) and np.shape(rms) != residual.shape:
        raise ValueError(f"rms shape {np.shape(rms)} does not match {residual.shape}")
    with np.errstate(invalid="ignore"):
        above = residual > np.multiply(rms, nsigma, dtype=np.float32)
    if mask is not None:
        above &= ~np.asarray(mask, dtype=bool)
    labels, n_labels = ndimage.label(above, structure=_EIGHT_NEIGHBOURS)
    sources = _keep_large(labels, n_labels, int(npixels), np.empty(above.shape, dtype=bool))
    return dilate_mask(sources, dilate)
