"""Background engines: interchangeable implementations behind `processors.estimate_background`.

Each engine turns an image plus its bad-pixel flags into an `EngineOutput`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from processors.engines._mesh import SplineSurface

__all__ = ["EngineOutput", "MeshParameters"]


@dataclass(frozen=True, eq=False)
class EngineOutput:
    """What an engine hands back.

    Attributes
    ----------
    background : ndarray or SplineSurface
        Full-resolution background map (float32), or the surface that makes it.
    rms_map : callable
        Computes the full-resolution RMS map on demand (it costs as much as the map).
    mesh, rms_mesh : ndarray
        Low-resolution background and RMS statistics, after fill and filter.
    ngood : ndarray
        Good pixels per mesh cell after clipping.
    params : dict
        Engine-specific parameters actually used (e.g. a reduced polynomial order).
    rms_surface : SplineSurface or None
        The RMS map as a spline surface, when the engine makes it by zooming a mesh.
    """

    background: np.ndarray | SplineSurface
    rms_map: Callable[[], np.ndarray]
    mesh: np.ndarray
    rms_mesh: np.ndarray
    ngood: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    rms_surface: SplineSurface | None = None


@dataclass(frozen=True)
class MeshParameters:
    """The parameters every mesh engine takes (photutils ``Background2D`` semantics).

    ``sigma_clip=False`` skips the clipping (photutils ``sigma_clip=None``);
    ``edge_fraction`` is the smallest share of a full box that a partial box at the top or
    right edge must cover to be used at all.
    """

    box: tuple[int, int]
    filter_size: tuple[int, int]
    sigma_low: float
    sigma_high: float
    maxiters: int | None
    cenfunc: str
    estimator: str
    exclude_percentile: float
    filter_threshold: float | None
    sigma_clip: bool = True
    rms_estimator: str = "std"
    edge_fraction: float = 0.5
