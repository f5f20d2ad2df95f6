"""Mesh post-processing shared by the engines: fill, median filter, upsampling matrices."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import spline_filter1d, zoom
from scipy.spatial import cKDTree

from processors.engines._bands import bands, map_bands
from processors.engines._surface_kernels import spline_rows

__all__ = [
    "SplineSurface",
    "as_map",
    "fill_excluded",
    "median_filter_mesh",
    "spline_factors",
    "spline_surface",
    "upsample",
]

# Spline weights this small only cost time (float32 products of them underflow to
# denormals, which made one case 20x slower) and change nothing.
_FLUSH_BELOW = 1e-9


def fill_excluded(
    mesh: np.ndarray, excluded: np.ndarray, *others: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Fill excluded mesh cells by inverse-distance weighting of the good cells.

    Same rule as photutils' ``ShepardIDWInterpolator`` as used by ``Background2D``: the 10
    nearest good cells in (row, column) index space, weights ``1/d``. ``others`` (e.g. the
    RMS mesh) are filled with the same weights. Inputs are not modified.
    """
    filled = [mesh.copy(), *(o.copy() for o in others)]
    if not excluded.any():
        return tuple(filled)
    good = np.argwhere(~excluded)
    bad = np.argwhere(excluded)
    k = min(10, len(good))
    distances, index = cKDTree(good).query(bad, k=k)
    distances = distances.reshape(len(bad), k)
    index = index.reshape(len(bad), k)
    weights = 1.0 / distances
    weights /= weights.sum(axis=1, keepdims=True)
    for target, source in zip(filled, [mesh, *others], strict=True):
        values = source[~excluded][index]
        target[excluded] = (weights * values).sum(axis=1)
    return tuple(filled)


def median_filter_mesh(
    mesh: np.ndarray,
    rms: np.ndarray,
    size: tuple[int, int],
    threshold: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Median-filter both meshes, windows truncated at the edges (photutils semantics).

    Only cells whose background exceeds ``threshold`` are replaced (all when None), in
    both meshes.
    """
    if size == (1, 1):
        return mesh, rms
    hy, hx = size[0] // 2, size[1] // 2

    def windowed_median(values: np.ndarray) -> np.ndarray:
        padded = np.pad(values, ((hy, hy), (hx, hx)), constant_values=np.nan)
        windows = sliding_window_view(padded, size).reshape(*values.shape, -1)
        return np.nanmedian(windows, axis=-1)  # every window holds its finite centre

    filtered, filtered_rms = windowed_median(mesh), windowed_median(rms)
    if threshold is None:
        return filtered, filtered_rms
    replace = mesh > threshold
    return np.where(replace, filtered, mesh), np.where(replace, filtered_rms, rms)


def _bspline_basis(n_cells: int, box: int, n_out: int) -> np.ndarray:
    """(n_out, n_cells): the cubic B-spline of each unit coefficient, zoomed without prefilter."""
    return np.stack(
        [zoom(unit, box, order=3, mode="reflect", grid_mode=True, prefilter=False)
         for unit in np.eye(n_cells)],
        axis=1,
    )[:n_out]  # fmt: skip


@lru_cache(maxsize=64)
def spline_factors(
    n_cells: int, box: int, n_out: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Factors of photutils' cubic mesh zoom along one axis.

    ``scipy.ndimage.zoom(mesh, box, order=3, mode='reflect', grid_mode=True)`` is linear:
    scipy's spline prefilter of the mesh (a dense ``(n_cells, n_cells)`` matrix; its
    boundary handling is scipy's own, which is why it is taken from scipy rather than
    inverted), then a B-spline evaluation that mixes at most four coefficients per output
    sample. Returns the prefilter and, per output sample (cropped to ``n_out``), the four
    coefficient indices and weights. Read-only and cached (safe to share between threads).
    """
    prefilter = spline_filter1d(np.eye(n_cells), order=3, axis=0, mode="reflect")
    basis = _bspline_basis(n_cells, box, n_out)
    basis[np.abs(basis) < _FLUSH_BELOW] = 0.0
    if n_cells < 4:  # the kernel always reads four taps: pad with zero-weight columns
        basis = np.pad(basis, ((0, 0), (0, 4 - n_cells)))
    order = np.argsort(basis == 0.0, axis=1, kind="stable")[:, :4]  # nonzero columns first
    weights = np.ascontiguousarray(np.take_along_axis(basis, order, axis=1), dtype=np.float32)
    taps = np.where(weights != 0.0, order, 0).astype(np.int64)
    for array in (prefilter, taps, weights):
        array.flags.writeable = False
    return prefilter, taps, weights


@dataclass(frozen=True, eq=False)
class SplineSurface:
    """A mesh zoomed to full resolution, kept as the few numbers that make any row of it.

    ``rows`` is the spline evaluated along x at every output column, one line per
    coefficient row; output row ``i`` mixes the four lines ``taps[i]`` with ``weights[i]``
    and is clipped to ``[low, high]`` (the mesh range). `evaluate` makes the whole map
    (on ``threads`` threads unless told otherwise); a kernel may instead make one row at
    a time where it is used (`processors.engines._surface_kernels.spline_row`), never
    holding the map.
    """

    rows: np.ndarray
    taps: np.ndarray
    weights: np.ndarray
    low: float
    high: float
    shape: tuple[int, int]
    threads: int = 1

    def evaluate(self, *, threads: int | None = None) -> np.ndarray:
        """The full-resolution map (float32), in bands of rows on ``threads`` threads."""
        if self.low == self.high:
            return np.full(self.shape, self.low, dtype=np.float32)
        out = np.empty(self.shape, dtype=np.float32)

        def band(i0: int, i1: int) -> None:
            spline_rows(self.rows, self.taps, self.weights, self.low, self.high, out[i0:i1], i0)

        map_bands(band, bands(self.shape[0], self.threads if threads is None else threads))
        return out


def spline_surface(
    mesh: np.ndarray, box: tuple[int, int], shape: tuple[int, int], *, threads: int = 1
) -> SplineSurface:
    """The cubic-spline zoom of a mesh to ``shape``, equal to photutils' ``zoom``, unevaluated.

    Cubic B-spline, reflect boundary, mesh samples at box centres, cropped to ``shape``
    and clipped to the mesh range. The prefilter acts on the small mesh and the x pass
    runs here; what is left per output row is a four-tap mix of precomputed lines.
    ``threads`` is what `SplineSurface.evaluate` uses by default.
    """
    low, high = float(np.min(mesh)), float(np.max(mesh))
    prefilter_y, taps_y, weights_y = spline_factors(mesh.shape[0], box[0], shape[0])
    if low == high:
        return SplineSurface(np.empty((0, shape[1]), np.float32), taps_y, weights_y, low,
                             high, shape, threads)  # fmt: skip
    prefilter_x, taps_x, weights_x = spline_factors(mesh.shape[1], box[1], shape[1])
    coefficients = prefilter_y @ mesh @ prefilter_x.T
    # Along x for every coefficient row: (my, nx, 4) taps weighted and summed.
    rows = np.einsum("mjk,jk->mj", coefficients[:, taps_x], weights_x, dtype=np.float64)
    rows32 = np.ascontiguousarray(rows, dtype=np.float32)  # einsum may hand back columns
    return SplineSurface(rows32, taps_y, weights_y, low, high, shape, threads)


def upsample(
    mesh: np.ndarray, box: tuple[int, int], shape: tuple[int, int], *, threads: int = 1
) -> np.ndarray:
    """Cubic-spline upsampling of a mesh to ``shape``, equal to photutils' ``zoom``.

    `spline_surface` evaluated in a compiled, GIL-free kernel, in ``threads`` bands of
    output rows.
    """
    return spline_surface(mesh, box, shape).evaluate(threads=threads)


def as_map(values: np.ndarray | SplineSurface) -> np.ndarray:
    """The map itself, or the map a surface makes."""
    return values.evaluate() if isinstance(values, SplineSurface) else values
