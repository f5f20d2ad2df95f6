"""What an exposure is (science or background) and when it was observed."""

from __future__ import annotations

import fnmatch
import math
from typing import Any, Literal

from astropy.time import Time

from daemon.app.settings import BackgroundRule
from daemon.events import ExposureEvent, path_of

__all__ = ["exposure_kind", "header_time", "matches_rule", "observation_time"]

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
    name = path_of(uri).name  # file:// URIs are percent-escaped
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


def header_time(header: Any) -> float | None:
    """Observation start in Unix seconds: ``MJD-OBS``, ``EXPSTART`` (MJD) or ``DATE-OBS``.

    ``DATE-OBS`` without a time part is joined with ``TIME-OBS`` when there is one.

    None when the header holds none of them in a readable form.
    """
    for keyword in ("MJD-OBS", "EXPSTART"):
        value = header.get(keyword)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return (float(value) - _MJD_UNIX_EPOCH) * _SECONDS_PER_DAY
    date = header.get("DATE-OBS")
    if isinstance(date, str) and date.strip():
        date = date.strip()
        clock = header.get("TIME-OBS")
        if "T" not in date and isinstance(clock, str) and clock.strip():
            date = f"{date}T{clock.strip()}"  # the older convention: date and time apart
        try:
            return float(Time(date, scale="utc").unix)
        except ValueError:
            pass
    return None


def observation_time(event: ExposureEvent, header: Any, fallback: float) -> float:
    """Observation start in Unix seconds.

    From the event's ``obs_time``, else the header (`header_time`), else the input file's
    modification time, else ``fallback``. Never the time of processing when the file is
    there: stack ages and backlog order must not depend on when a crash happened.
    """
    if event.obs_time is not None:
        return event.obs_time.timestamp()
    observed = header_time(header)
    if observed is not None:
        return observed
    try:
        return event.path.stat().st_mtime_ns / 1e9
    except OSError:
        return fallback
