"""What an exposure is (science or background) and when it was observed."""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path
from typing import Any, Literal

from astropy.time import Time

from daemon.app.settings import BackgroundRule
from daemon.events import ExposureEvent

__all__ = ["exposure_kind", "matches_rule", "observation_time"]

_MJD_UNIX_EPOCH = 40587.0
_SECONDS_PER_DAY = 86400.0


def _card_text(value: Any) -> str:
    """A header value as FITS writes it (booleans are T and F)."""
    if isinstance(value, bool):
        return "T" if value else "F"
    return str(value).strip().upper()


def matches_rule(rule: BackgroundRule, header: Any, uri: str) -> bool:
    """True when a header keyword has one of the rule's values or the file name matches."""
    for keyword, values in rule.header.items():
        if keyword in header and _card_text(header[keyword]) in {v.upper() for v in values}:
            return True
    name = Path(uri).name
    return any(fnmatch.fnmatch(name, pattern) for pattern in rule.filename)


def exposure_kind(
    event: ExposureEvent, header: Any, rule: BackgroundRule
) -> Literal["science", "background"]:
    """``background`` when the event says so or the configured rule matches, else science.

    An event's ``kind`` counts only when it was given explicitly (a Kafka event); a file
    found in a folder is judged by its header keywords and its name.
    """
    if "kind" in event.model_fields_set:
        return event.kind
    return "background" if matches_rule(rule, header, event.uri) else "science"


def observation_time(event: ExposureEvent, header: Any, fallback: float) -> float:
    """Observation start in Unix seconds.

    From the event's ``obs_time``, else the header's ``MJD-OBS``, ``EXPSTART`` (MJD) or
    ``DATE-OBS``, else ``fallback``.
    """
    if event.obs_time is not None:
        return event.obs_time.timestamp()
    for keyword in ("MJD-OBS", "EXPSTART"):
        value = header.get(keyword)
        if isinstance(value, int | float) and math.isfinite(value):
            return (float(value) - _MJD_UNIX_EPOCH) * _SECONDS_PER_DAY
    date = header.get("DATE-OBS")
    if isinstance(date, str) and date.strip():
        try:
            return float(Time(date.strip(), scale="utc").unix)
        except ValueError:
            pass
    return fallback
