"""Rolling sky: the sky of recent dithered frames, normalised, combined and rescaled.

The Liger/IRIS "average of the scaled input data" done right (ALGORITHMS.md §4.1): each
member's 2-D background mesh is *divided* by its own level (a biweight location), the
normalised meshes are combined with clipping, and the result is multiplied by the current
exposure's level. Liger multiplies by ``s_i / mean(s)`` instead, which inflates the
template by ``mean(scale**2)`` (12.5 % for scales 0.5 ... 1.5), AND-combines DQ, and loses
ERR at clipped pixels; none of that happens here. Working on the meshes (a few thousand
cells) rather than full maps keeps members cheap to hold and to combine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from astropy.stats import biweight_location

from processors.background import BackgroundResult
from processors.combine import Combine, combine_backgrounds
from processors.engines._mesh import spline_surface

__all__ = ["SkyMember", "rolling_sky_background", "sky_member"]


@dataclass(frozen=True, eq=False)
class SkyMember:
    """One frame's normalised sky: its mesh divided by its level, with errors.

    Attributes
    ----------
    mesh : ndarray
        Background mesh / level.
    error_mesh : ndarray
        Standard error of each mesh cell / level.
    level : float
        Biweight location of the frame's background mesh.
    box_size : (int, int)
        Mesh box, which every member of a template must share.
    """

    mesh: np.ndarray
    error_mesh: np.ndarray
    level: float
    box_size: tuple[int, int]


def _mesh_box(model: BackgroundResult) -> tuple[int, int]:
    box = model.params.get("box_size")
    if box is None:
        raise ValueError("rolling sky needs a mesh engine ('fast' or 'photutils'), not 'lsst'")
    return (int(box[0]), int(box[1]))


def sky_member(model: BackgroundResult) -> SkyMember:
    """Normalise one frame's background model for a rolling-sky template.

    Raises
    ------
    ValueError
        If the model has no mesh box (the ``lsst`` engine) or a non-positive level.
    """
    level = float(biweight_location(model.mesh))
    if not np.isfinite(level) or level <= 0:
        raise ValueError(f"sky level {level} is not positive: cannot normalise this frame")
    error = model.rms_mesh * model.error_scale
    return SkyMember(
        mesh=np.asarray(model.mesh / level, dtype=np.float32),
        error_mesh=np.asarray(error / level, dtype=np.float32),
        level=level,
        box_size=_mesh_box(model),
    )


def rolling_sky_background(
    current: BackgroundResult,
    members: Sequence[SkyMember],
    *,
    combine: Combine = "jwst",
    sigma: float = 3.0,
    maxiters: int | None = None,
) -> BackgroundResult:
    """The background of the current frame from the normalised skies of other frames.

    Parameters
    ----------
    current : BackgroundResult
        The current frame's own model: only its level (and noise) is used.
    members : sequence of SkyMember
        Other frames of the same stack key (the current one excluded by the caller).
    combine, sigma, maxiters
        How the normalised meshes are combined (see `processors.combine_backgrounds`).

    Returns
    -------
    BackgroundResult
        ``template * level_current`` at full resolution, with the template's error scaled
        the same way as its `~BackgroundResult.error`, and ``params`` recording the method,
        members and levels.

    Raises
    ------
    ValueError
        With no members, or members whose mesh grid differs from the current frame's.
    """
    if not members:
        raise ValueError("rolling sky needs at least one other frame")
    box = _mesh_box(current)
    for member in members:
        if member.mesh.shape != current.mesh.shape or member.box_size != box:
            raise ValueError(
                f"member mesh {member.mesh.shape} (box {member.box_size}) differs from the "
                f"current frame's {current.mesh.shape} (box {box})"
            )
    template = combine_backgrounds(
        np.stack([m.mesh for m in members]),
        np.stack([m.error_mesh for m in members]),
        combine=combine,
        sigma=sigma,
        maxiters=maxiters,
    )
    level = float(biweight_location(current.mesh))
    shape = current.shape
    mesh = template.sci * np.float32(level)
    error_mesh = np.asarray(template.err) * np.float32(level)  # members always carry errors
    error_surface = spline_surface(error_mesh, box, shape)
    params = dict(current.params)
    params.update({"method": "rolling-sky", "members": len(members), "combine": combine})
    return BackgroundResult(
        _background=spline_surface(mesh, box, shape),
        mesh=mesh,
        rms_mesh=current.rms_mesh,
        level=float(np.median(mesh)),
        rms_level=current.rms_level,
        error_scale=current.error_scale,
        params=MappingProxyType(params),
        source_mask=current.source_mask,  # this frame's sources, for the product's DQ
        _rms_map=current._rms_map,
        _error_surface=(error_surface, 1.0),
    )
