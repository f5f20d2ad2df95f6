"""A background model in its small form, and the full map re-evaluated from it.

LSST persists a background as its statistics image and re-creates the map on demand; the
same is done here. A mesh model (the ``fast`` and ``photutils`` engines, rolling sky) is
kept as its filled, filtered mesh and box size: the map is the cubic-spline zoom of that
mesh. The ``lsst`` model is a Chebyshev surface: it is kept as its coefficient matrix.
Either is a few kilobytes where the map of a 4k image is 64 MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.polynomial import chebyshev

from processors.background import BackgroundResult
from processors.engines._mesh import upsample
from processors.engines.lsst import _evaluate as evaluate_chebyshev

__all__ = ["BackgroundMesh", "background_mesh", "evaluate_mesh"]

MeshKind = Literal["spline", "chebyshev"]
#: Rows and columns of the map sampled to recover a Chebyshev surface (ample for order <= 20).
_SAMPLES = 256


@dataclass(frozen=True, eq=False)
class BackgroundMesh:
    """What re-creates a background map exactly.

    Attributes
    ----------
    kind : {'spline', 'chebyshev'}
        ``spline``: ``values`` is the mesh sampled at box centres and the map is its
        bicubic zoom by ``box`` (photutils ``Background2D``); ``chebyshev``: ``values`` is
        the matrix ``c[j, i]`` of ``T_i(x) T_j(y)``, pixel centres mapped onto [-1, 1]
        over the image (the ``lsst`` engine).
    values : ndarray
        The mesh or the coefficients (float64, or the float32 mesh of a rolling sky).
    shape : (int, int)
        Shape ``(ny, nx)`` of the full map.
    box : (int, int) or None
        Mesh box ``(ny, nx)`` in pixels (``spline`` only).
    """

    kind: MeshKind
    values: np.ndarray
    shape: tuple[int, int]
    box: tuple[int, int] | None = None


def _chebyshev_coefficients(background: np.ndarray, order: int) -> np.ndarray:
    """The coefficients of an evaluated Chebyshev surface, by least squares on its samples.

    The map is ``T(y) C T(x)^T`` exactly (up to float32 rounding), so a separable fit on a
    grid of its rows and columns recovers ``C`` to the precision of the map.
    """
    ny, nx = background.shape
    rows = np.unique(np.linspace(0, ny - 1, min(ny, _SAMPLES)).round().astype(np.int64))
    cols = np.unique(np.linspace(0, nx - 1, min(nx, _SAMPLES)).round().astype(np.int64))
    ty = chebyshev.chebvander((2.0 * (rows + 0.5)) / ny - 1.0, order)
    tx = chebyshev.chebvander((2.0 * (cols + 0.5)) / nx - 1.0, order)
    samples = background[np.ix_(rows, cols)].astype(np.float64)
    along_y, *_ = np.linalg.lstsq(ty, samples, rcond=None)  # (k, len(cols))
    coefficients_t, *_ = np.linalg.lstsq(tx, along_y.T, rcond=None)  # (k, k) transposed
    return np.ascontiguousarray(coefficients_t.T)


def background_mesh(model: BackgroundResult) -> BackgroundMesh:
    """The small form of a background model, from which `evaluate_mesh` re-creates its map.

    Parameters
    ----------
    model : BackgroundResult
        A model of the ``fast``, ``photutils`` or ``lsst`` engine, or a rolling sky.

    Returns
    -------
    BackgroundMesh
        The mesh and box (mesh engines, rolling sky) or the Chebyshev coefficients
        (``lsst``).

    Raises
    ------
    ValueError
        For a model made with a ``coverage_mask``: its map holds ``fill_value`` where
        there was no coverage, which no mesh re-creates.

    Examples
    --------
    >>> import numpy as np
    >>> from processors import estimate_background
    >>> model = estimate_background(np.full((100, 100), 5.0, np.float32), box_size=25)
    >>> mesh = background_mesh(model)
    >>> mesh.kind, mesh.values.shape, bool((evaluate_mesh(mesh) == model.background).all())
    ('spline', (4, 4), True)
    """
    if "fill_value" in model.params:
        raise ValueError("a model made with a coverage_mask cannot be saved as a mesh")
    shape = model.shape
    if model.params.get("engine") == "lsst":
        order = int(model.params["order"])
        coefficients = _chebyshev_coefficients(model.background, order)
        return BackgroundMesh("chebyshev", coefficients, shape)
    box = model.params.get("box_size")
    if box is None:
        raise ValueError("the model names no mesh box_size: not a mesh model")
    return BackgroundMesh("spline", np.asarray(model.mesh), shape, (int(box[0]), int(box[1])))


def evaluate_mesh(mesh: BackgroundMesh) -> np.ndarray:
    """The full background map of a saved mesh (float32), as the engine made it.

    Parameters
    ----------
    mesh : BackgroundMesh
        From `background_mesh`, or read back from a product's ``BKGMESH`` extension.

    Returns
    -------
    ndarray
        Map of shape ``mesh.shape``: identical to the ``fast`` engine's and rolling sky's
        map, equal to photutils' and the ``lsst`` engine's to float32 precision.

    Raises
    ------
    ValueError
        For an unknown kind, or a ``spline`` mesh without a box.
    """
    if mesh.kind == "chebyshev":
        return evaluate_chebyshev(np.asarray(mesh.values, dtype=np.float64), mesh.shape)
    if mesh.kind != "spline":
        raise ValueError(f"unknown mesh kind {mesh.kind!r}: 'spline' or 'chebyshev'")
    if mesh.box is None:
        raise ValueError("a spline mesh needs its box size")
    return upsample(np.asarray(mesh.values), mesh.box, mesh.shape)
