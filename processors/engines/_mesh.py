"""Mesh post-processing shared by the engines: fill, median filter, upsampling matrices."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import zoom
from scipy.spatial import cKDTree

__all__ = ["fill_excluded", "median_filter_mesh", "upsample", "upsampling_matrix"]

# Weights this small only cost time: float32 products of them underflow to denormals,
# which made one case 20x slower.
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


@lru_cache(maxsize=64)
def upsampling_matrix(n_cells: int, box: int, n_out: int) -> np.ndarray:
    """The (n_out, n_cells) matrix of photutils' cubic mesh zoom along one axis.

    ``scipy.ndimage.zoom(mesh, box, order=3, mode='reflect', grid_mode=True)`` is linear
    and separable, so zooming the identity gives its matrix; the rows are cropped to the
    image size. Read-only and cached (safe to share between threads).
    """
    identity = np.eye(n_cells)
    matrix = zoom(identity, (box, 1), order=3, mode="reflect", grid_mode=True)[:n_out]
    matrix[np.abs(matrix) < _FLUSH_BELOW] = 0.0
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    matrix.flags.writeable = False
    return matrix


def upsample(mesh: np.ndarray, box: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Cubic-spline upsampling of a mesh to ``shape`` as two small matrix products.

    Equal to photutils' ``zoom`` interpolation: cubic B-spline, reflect boundary, mesh
    samples at box centres, result cropped to ``shape`` and clipped to the mesh range.
    """
    low, high = float(np.min(mesh)), float(np.max(mesh))
    if low == high:
        return np.full(shape, low, dtype=np.float32)
    rows = upsampling_matrix(mesh.shape[0], box[0], shape[0])
    cols = upsampling_matrix(mesh.shape[1], box[1], shape[1])
    # (ny x my) @ ((my x mx) @ (mx x nx)): the small product first.
    out = rows @ (mesh.astype(np.float32) @ cols.T)
    return np.clip(out, low, high, out=out)
