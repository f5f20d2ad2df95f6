"""Pure numerical processors of skystream: arrays and headers in, arrays and headers out.

Nothing here does I/O, asyncio, networking or metrics; everything is usable from a
notebook and safe to call from several threads at once.
"""

from processors._validation import NoValidPixelsError
from processors._version import __version__
from processors.background import BackgroundResult, estimate_background
from processors.combine import collapse_integrations, combine_backgrounds
from processors.detection import detect_sources
from processors.dq import DQ, bad_pixel_mask
from processors.exposure import Exposure
from processors.model import model_exposure_background
from processors.reference_background import (
    ReferenceScaling,
    scale_reference_background,
    subtract_reference_background,
)
from processors.rolling_sky import SkyMember, rolling_sky_background, sky_member
from processors.simulate import FieldModel, simulate_exposure, simulate_night
from processors.skymatch import SkyMatchResult, SkyMatchWarning, skymatch
from processors.skystats import SkyStatistic, sky_statistic
from processors.stack import RollingStack
from processors.subarray import subarray_bounds, to_science_grid
from processors.subtract import skip_background, subtract_background
from processors.warmup import warm_up

__all__ = [
    "__version__",
    "Exposure",
    "DQ",
    "bad_pixel_mask",
    "BackgroundResult",
    "estimate_background",
    "warm_up",
    "model_exposure_background",
    "subtract_background",
    "skip_background",
    "combine_backgrounds",
    "collapse_integrations",
    "detect_sources",
    "ReferenceScaling",
    "scale_reference_background",
    "subtract_reference_background",
    "RollingStack",
    "subarray_bounds",
    "to_science_grid",
    "SkyMember",
    "sky_member",
    "rolling_sky_background",
    "skymatch",
    "SkyMatchResult",
    "SkyMatchWarning",
    "SkyStatistic",
    "sky_statistic",
    "NoValidPixelsError",
    "FieldModel",
    "simulate_exposure",
    "simulate_night",
]
