"""The fast mesh engine: photutils Background2D semantics with a compiled kernel."""

from __future__ import annotations

import numpy as np

from processors._validation import NoValidPixelsError
from processors.engines import EngineOutput, MeshParameters
from processors.engines._bands import bands, map_bands
from processors.engines._clip_kernel import ESTIMATOR_CODES, mesh_statistics
from processors.engines._mesh import (
    fill_excluded,
    median_filter_mesh,
    spline_surface,
)
from processors.engines._rms_kernel import RMS_CODES, mesh_rms

__all__ = ["excluded_boxes", "fast_background"]


def excluded_boxes(
    ngood: np.ndarray, shape: tuple[int, int], box: tuple[int, int], mesh: MeshParameters
) -> np.ndarray:
    """Which mesh cells are excluded, with photutils' rule and a floor for edge boxes.

    A box is excluded when ``ngood <= (1 - exclude_percentile/100) * full box area``, the
    photutils 3.0 comparison against the *full* box even for the partial boxes at the top
    and right edges (``exclude_percentile=0`` keeps boxes with no bad pixel, as photutils
    does since #2363 instead of excluding everything), or when it has no good pixel. A
    partial box also needs at least ``edge_fraction`` of a full box's area.

    Raises
    ------
    NoValidPixelsError
        With photutils' message when every full box is excluded: a map is never built
        from edge slivers alone.
    """
    ny, nx = shape
    full_area = box[0] * box[1]
    heights = np.minimum(box[0], ny - np.arange(ngood.shape[0]) * box[0])
    widths = np.minimum(box[1], nx - np.arange(ngood.shape[1]) * box[1])
    area = heights[:, None] * widths[None, :]
    threshold = (1.0 - mesh.exclude_percentile / 100.0) * full_area
    if mesh.exclude_percentile == 0.0:
        excluded = ngood < full_area
    else:
        excluded = (ngood <= threshold) | (ngood == 0)
    excluded |= area < mesh.edge_fraction * full_area
    full = area == full_area
    if excluded[full].all():
        raise NoValidPixelsError(
            f"All boxes contain <= {threshold:g} unmasked or finite pixels (box_size="
            f"{box}, exclude_percentile={mesh.exclude_percentile:g}): raise "
            "exclude_percentile or use a larger box to include more boxes"
        )
    return excluded


def fast_background(
    image: np.ndarray,
    flags: np.ndarray,
    badbits: int,
    mesh: MeshParameters,
    *,
    threads: int = 1,
) -> EngineOutput:
    """Background and RMS of an image with photutils ``Background2D`` semantics.

    Per-box astropy-style sigma clipping and the estimator run in a compiled kernel; boxes
    are excluded as `excluded_boxes` says; the meshes are filled, median filtered and
    upsampled exactly as photutils does. The default RMS is the clipped std from the same
    kernel; ``mad-std`` and ``biweight`` come from an exact second pass over each box.

    ``threads`` > 1 splits the box rows and the output rows into bands computed on that
    many threads (identical results).

    Raises
    ------
    NoValidPixelsError
        If no pixel is usable, or every full box is excluded.
    """
    box = mesh.box
    if not mesh.sigma_clip:
        iterations = 0
    else:
        iterations = 10_000 if mesh.maxiters is None else int(mesh.maxiters)
    ny, nx = image.shape
    badbits_typed = flags.dtype.type(badbits)
    # photutils' MMMBackground is its mode estimator with the default factors 3 and 2.
    estimator = ESTIMATOR_CODES["mode" if mesh.estimator == "mmm" else mesh.estimator]

    def band_statistics(y0: int, y1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return mesh_statistics(
            image[y0:y1], flags[y0:y1], badbits_typed, box[0], box[1],
            float(mesh.sigma_low), float(mesh.sigma_high), iterations,
            mesh.cenfunc == "median", estimator,
        )  # fmt: skip

    spans = bands(ny, threads, box[0])
    parts = map_bands(band_statistics, spans)
    values, rms_values, ngood = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    if not ngood.any():
        raise NoValidPixelsError("no unmasked finite pixels in the image")
    if mesh.rms_estimator != "std":

        def band_rms(y0: int, y1: int) -> np.ndarray:
            return mesh_rms(
                image[y0:y1], flags[y0:y1], badbits, box, float(mesh.sigma_low),
                float(mesh.sigma_high), iterations, mesh.cenfunc == "median",
                RMS_CODES[mesh.rms_estimator],
            )  # fmt: skip

        rms_values = np.concatenate(map_bands(band_rms, spans))
    excluded = excluded_boxes(ngood, (ny, nx), box, mesh)
    values, rms_values = fill_excluded(values, excluded, rms_values)
    values, rms_values = median_filter_mesh(
        values, rms_values, mesh.filter_size, mesh.filter_threshold
    )
    rms_surface = spline_surface(rms_values, box, (ny, nx), threads=threads)
    return EngineOutput(
        background=spline_surface(values, box, (ny, nx), threads=threads),
        rms_map=rms_surface.evaluate,
        mesh=values,
        rms_mesh=rms_values,
        ngood=ngood,
        rms_surface=rms_surface,
    )
