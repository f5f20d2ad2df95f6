"""The LSST background model: MEANCLIP superpixels and a weighted Chebyshev surface."""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev

from processors._validation import NoValidPixelsError
from processors.engines import EngineOutput
from processors.engines._clip_kernel import meanclip_cells

__all__ = ["cell_edges", "lsst_background"]

_N_SIGMA = 3.0
_N_ITER = 3


def cell_edges(length: int, bin_size: int) -> np.ndarray:
    """Near-equal cell edges along one axis, as afw ``Background::_setCenOrigSize``."""
    n = -(-length // bin_size)
    ends = np.minimum(((np.arange(n) + 1) * length + n // 2) // n, length)
    return np.concatenate([[0], ends]).astype(np.int64)


def _chebyshev_design(x: np.ndarray, y: np.ndarray, order: int) -> tuple[np.ndarray, list]:
    terms = [(i, j) for i in range(order + 1) for j in range(order + 1 - i)]
    tx = chebyshev.chebvander(x, order)
    ty = chebyshev.chebvander(y, order)
    return np.stack([tx[:, i] * ty[:, j] for i, j in terms], axis=1), terms


def _fit_surface(
    values: np.ndarray,
    variance: np.ndarray | None,
    centres: tuple[np.ndarray, np.ndarray],
    shape: tuple[int, int],
    order: int,
) -> tuple[np.ndarray, int]:
    """Weighted least-squares Chebyshev fit of a cell grid; coefficients as (y, x) matrix."""
    ny, nx = shape
    yc, xc = np.meshgrid(*centres, indexing="ij")
    good = np.isfinite(values)
    if variance is not None:
        good &= np.isfinite(variance)
    if not good.any():
        raise NoValidPixelsError("no superpixel has a usable background value")
    weights = np.ones(int(good.sum()))
    if variance is not None:
        # A cell of identical values has zero variance: LSST would drop it (infinite
        # weight); it gets the largest finite weight instead, so flat images still fit.
        var = variance[good]
        positive = var > 0
        weights[positive] = 1.0 / var[positive]
        weights[~positive] = weights[positive].max() if positive.any() else 1.0
    # Pixel coordinates map to [-1, 1] over the image's edges (afw Box2D of the bbox).
    xs = (2.0 * (xc[good] + 0.5)) / nx - 1.0
    ys = (2.0 * (yc[good] + 0.5)) / ny - 1.0
    while (order + 1) * (order + 2) // 2 > good.sum():
        order -= 1
    design, terms = _chebyshev_design(xs, ys, order)
    root = np.sqrt(weights)
    solution, *_ = np.linalg.lstsq(design * root[:, None], values[good] * root, rcond=None)
    coefficients = np.zeros((order + 1, order + 1))
    for (i, j), c in zip(terms, solution, strict=True):
        coefficients[j, i] = c
    return coefficients, order


def _evaluate(coefficients: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The surface at every pixel: (ny x k) @ (k x k) @ (k x nx)."""
    ny, nx = shape
    order = coefficients.shape[0] - 1
    ty = chebyshev.chebvander((2.0 * (np.arange(ny) + 0.5)) / ny - 1.0, order)
    tx = chebyshev.chebvander((2.0 * (np.arange(nx) + 0.5)) / nx - 1.0, order)
    small = (ty @ coefficients).astype(np.float32)
    return small @ tx.T.astype(np.float32)


def lsst_background(
    image: np.ndarray,
    flags: np.ndarray,
    badbits: int,
    *,
    bin_size: int,
    order: int,
    weighting: bool,
) -> EngineOutput:
    """Superpixel statistics and the Chebyshev model (LSST ``SubtractBackgroundTask``).

    Cells are near-equal partitions of about ``bin_size`` pixels; each gets the MEANCLIP
    statistic (3 sigma, 3 passes, starting from the median and IQR) and its variance. The
    surface ``sum c_ij T_i(x) T_j(y)``, ``i + j <= order``, is fitted with inverse-variance
    weights (or equal weights) and evaluated at every pixel. The order drops to
    ``min(cells) - 1`` on small grids (LSST's REDUCE_INTERP_ORDER), and further if fewer
    cells are usable than there are coefficients; order 0 is a constant.

    Cells are near-equal partitions of the image, so there are no edge slivers: every
    cell spans between ``bin_size/2`` and ``bin_size`` pixels per axis (or the whole axis
    when it is shorter). A cell needs two surviving pixels to enter the fit.
    """
    ny, nx = image.shape
    y_edges, x_edges = cell_edges(ny, bin_size), cell_edges(nx, bin_size)
    means, variances, stds, counts = meanclip_cells(
        image, flags, flags.dtype.type(badbits), y_edges, x_edges, _N_SIGMA, _N_ITER
    )
    if not counts.any():
        raise NoValidPixelsError("no unmasked finite pixels in the image")
    # One surviving pixel has no variance: LSST's fit drops such a cell (its inverse
    # variance is not finite) rather than give it the largest weight.
    means = np.where(counts >= 2, means, np.nan)
    stds = np.where(counts >= 2, stds, np.nan)
    centres = (
        y_edges[:-1] + 0.5 * np.diff(y_edges) - 0.5,
        x_edges[:-1] + 0.5 * np.diff(x_edges) - 0.5,
    )
    used_order = min(order, min(means.shape) - 1)
    coefficients, used_order = _fit_surface(
        means, variances if weighting else None, centres, (ny, nx), used_order
    )
    rms_coefficients, _ = _fit_surface(stds, None, centres, (ny, nx), used_order)

    return EngineOutput(
        background=_evaluate(coefficients, (ny, nx)),
        rms_map=lambda: _evaluate(rms_coefficients, (ny, nx)),
        mesh=means,
        rms_mesh=stds,
        ngood=counts,
        params={"order": used_order},
    )
