"""The fast mesh engine: photutils Background2D semantics with a compiled kernel."""

from __future__ import annotations

import numpy as np

from processors._validation import NoValidPixelsError
from processors.engines import EngineOutput, MeshParameters
from processors.engines._bands import bands, map_bands
from processors.engines._clip_kernel import ESTIMATOR_CODES, mesh_statistics
from processors.engines._mesh import fill_excluded, median_filter_mesh, upsample

__all__ = ["fast_background"]


def fast_background(
    image: np.ndarray,
    flags: np.ndarray,
    badbits: int,
    mesh: MeshParameters,
    *,
    threads: int = 1,
) -> EngineOutput:
    """Background and RMS of an image with photutils ``Background2D`` semantics.

    Per-box astropy-style sigma clipping and the estimator run in a compiled kernel; the
    meshes are filled, median filtered and upsampled exactly as photutils does. Boxes
    with fewer good pixels after clipping than ``(1 - exclude_percentile/100)`` of their
    own area, or none, are excluded; the partial boxes at the top and right are judged by
    their own area, so they are used.

    ``threads`` > 1 splits the box rows and the output rows into bands computed on that
    many threads (identical results).

    Raises
    ------
    NoValidPixelsError
        If every box is excluded.
    """
    box = mesh.box
    iterations = 10_000 if mesh.maxiters is None else int(mesh.maxiters)
    ny, nx = image.shape

    def band_statistics(y0: int, y1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return mesh_statistics(
            image[y0:y1], flags[y0:y1], flags.dtype.type(badbits), box[0], box[1],
            float(mesh.sigma_low), float(mesh.sigma_high), iterations,
            mesh.cenfunc == "median", ESTIMATOR_CODES[mesh.estimator],
        )  # fmt: skip

    parts = map_bands(band_statistics, bands(ny, threads, box[0]))
    values, rms_values, ngood = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    heights = np.minimum(box[0], ny - np.arange(values.shape[0]) * box[0])
    widths = np.minimum(box[1], nx - np.arange(values.shape[1]) * box[1])
    area = heights[:, None] * widths[None, :]
    if not ngood.any():
        raise NoValidPixelsError("no unmasked finite pixels in the image")
    excluded = (ngood < (1.0 - mesh.exclude_percentile / 100.0) * area) | (ngood == 0)
    if excluded.all():
        raise NoValidPixelsError(
            f"every {box[0]}x{box[1]} box has too few good pixels after clipping (more than "
            f"exclude_percentile={mesh.exclude_percentile:g} % masked or clipped)"
        )
    values, rms_values = fill_excluded(values, excluded, rms_values)
    values, rms_values = median_filter_mesh(
        values, rms_values, mesh.filter_size, mesh.filter_threshold
    )
    return EngineOutput(
        background=upsample(values, box, (ny, nx), threads=threads),
        rms_map=lambda: upsample(rms_values, box, (ny, nx), threads=threads),
        mesh=values,
        rms_mesh=rms_values,
        ngood=ngood,
    )
