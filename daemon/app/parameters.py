"""Processor parameters derived from the settings, in one place.

A setting named like a parameter of the processor it configures *is* that parameter: every
such setting is passed on by name (renamed where the daemon's name carries the unit), so a
new processor setting needs no wiring. Settings that are the daemon's policy rather than a
processor's parameter (when to wait for a stack, when a mosaic group closes, ...) are not
passed; ``tests/daemon/test_parameters.py`` says where each of those acts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel

from daemon.app.settings import (
    BackgroundSettings,
    ReferenceFitSettings,
    RollingSkySettings,
    SkyMatchSettings,
    StackSettings,
)
from processors import (
    Exposure,
    RollingStack,
    SkyStatistic,
    estimate_background,
    rolling_sky_background,
    scale_reference_background,
)
from processors.sky_matcher import SkyMatcher

__all__ = [
    "coverage_mask",
    "model_parameters",
    "scaling_parameters",
    "stack_parameters",
    "rolling_sky_parameters",
    "sky_matcher_parameters",
]


def _by_name(
    section: BaseModel, target: Callable[..., Any], renamed: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The section's values for the options ``target`` takes, by name.

    Options are keyword-only parameters or those with a default, never the data a
    processor works on (``rolling_sky_background(current, members)``).
    """
    accepted = {
        name
        for name, parameter in inspect.signature(target).parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY or parameter.default is not parameter.empty
    }
    renamed = renamed or {}
    values = {
        renamed.get(name, name): getattr(section, name) for name in type(section).model_fields
    }
    return {name: value for name, value in values.items() if name in accepted}


def model_parameters(background: BackgroundSettings) -> dict[str, Any]:
    """Keyword arguments of `processors.model_exposure_background`.

    Parameters
    ----------
    background : BackgroundSettings
        The ``background`` section.

    Returns
    -------
    dict
        Engine, mesh, clipping, estimator and DQ parameters (those of
        `processors.estimate_background`).
    """
    return _by_name(background, estimate_background)


def coverage_mask(exposure: Exposure, bits: int) -> np.ndarray:
    """The ``coverage_mask`` of `processors.estimate_background` for one exposure.

    Parameters
    ----------
    exposure : Exposure
        2-D or 3-D exposure.
    bits : int
        DQ bits that mark a pixel without data (``background.coverage_dq``).

    Returns
    -------
    ndarray of bool
        True where a bit of ``bits`` is set (in every integration of a 3-D exposure: its
        model is made from the median of the integrations).
    """
    flagged = (exposure.dq & np.uint32(bits)) != 0
    return flagged.all(axis=0) if exposure.is_cube else flagged


def scaling_parameters(fit: ReferenceFitSettings) -> dict[str, Any]:
    """Keyword arguments of `processors.scale_reference_background` (but the images).

    Parameters
    ----------
    fit : ReferenceFitSettings
        The ``background.reference.fit`` section.

    Returns
    -------
    dict
        Fitting rule, rejection, DQ and source-masking parameters.
    """
    return _by_name(fit, scale_reference_background)


def stack_parameters(stack: StackSettings, threads: int = 1) -> dict[str, Any]:
    """Keyword arguments of `processors.RollingStack` (all but the image shape).

    Parameters
    ----------
    stack : StackSettings
        The ``background.stack`` section.
    threads : int, optional
        Threads sharing one combination (``background.threads``).

    Returns
    -------
    dict
        Size, age limit (``max_age_seconds`` is ``max_age``), combination rule, threads.
    """
    return {**_by_name(stack, RollingStack, {"max_age_seconds": "max_age"}), "threads": threads}


def rolling_sky_parameters(rolling_sky: RollingSkySettings) -> dict[str, Any]:
    """Keyword arguments of `processors.rolling_sky_background` (but the frames).

    Parameters
    ----------
    rolling_sky : RollingSkySettings
        The ``background.rolling_sky`` section.

    Returns
    -------
    dict
        The combination rule of the normalised skies.
    """
    return _by_name(rolling_sky, rolling_sky_background)


def sky_matcher_parameters(skymatch: SkyMatchSettings) -> dict[str, Any]:
    """Keyword arguments of `processors.sky_matcher.SkyMatcher` (but the header keywords).

    Parameters
    ----------
    skymatch : SkyMatchSettings
        The ``skymatch`` section.

    Returns
    -------
    dict
        Method, direction, subtraction, DQ bits and the sky statistic (``stat``, a
        `processors.SkyStatistic` of the statistic settings).
    """
    return {
        "stat": SkyStatistic(**_by_name(skymatch, SkyStatistic)),
        **_by_name(skymatch, SkyMatcher),
    }
