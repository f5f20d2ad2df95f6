"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
from astropy.stats import SigmaClip
from photutils.background import Background2D, SExtractorBackground

from processors import Exposure, bad_pixel_mask


def median_seconds(func: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls (after one warm-up call)."""
    func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def photutils_reference(exposure: Exposure, box_size: int = 64) -> Callable[[], object]:
    """photutils Background2D with skystream's default parameters on the same pixels."""
    mask = bad_pixel_mask(exposure.dq, 0) | ~np.isfinite(exposure.sci)

    def run() -> object:
        return Background2D(
            exposure.sci,
            box_size,
            mask=mask,
            filter_size=3,
            sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
            bkg_estimator=SExtractorBackground(sigma_clip=None),
        ).background

    return run
