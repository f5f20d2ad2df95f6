"""When an exposure was observed: event, header, file time; never the time of processing."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.time import Time

from daemon.events import ExposureEvent
from daemon.intake.kinds import header_time, observation_time

_MJD = 60310.25  # 2024-01-01T06:00:00 UTC
_UNIX = Time(_MJD, format="mjd", scale="utc").unix


@pytest.mark.parametrize(
    "cards",
    [
        {"MJD-OBS": _MJD},
        {"EXPSTART": _MJD, "DATE-OBS": "1999-01-01T00:00:00"},
        {"DATE-OBS": "2024-01-01T06:00:00"},
        {"DATE-OBS": "2024-01-01", "TIME-OBS": "06:00:00"},  # JWST and older headers
    ],
)
def test_header_time_reads_each_convention(cards: dict[str, object]) -> None:
    assert header_time(fits.Header(cards)) == pytest.approx(_UNIX, abs=1e-3)


def test_header_time_is_none_without_a_usable_card() -> None:
    assert header_time(fits.Header({"DATE-OBS": "not a date", "MJD-OBS": "x"})) is None


def test_event_time_wins_then_header_then_file_mtime(tmp_path: Path) -> None:
    path = tmp_path / "a.fits"
    fits.PrimaryHDU().writeto(path)
    os.utime(path, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    plain = ExposureEvent.for_file(path)
    timed = plain.model_copy(update={"obs_time": datetime(2024, 1, 1, 6, tzinfo=UTC)})
    header = fits.Header({"MJD-OBS": _MJD - 1})
    assert observation_time(timed, header, fallback=0.0) == pytest.approx(_UNIX)
    assert observation_time(plain, header, fallback=0.0) == pytest.approx(_UNIX - 86400)
    # No time in the header: the file's mtime, not the wall clock of processing.
    assert observation_time(plain, fits.Header(), fallback=123.0) == 1_600_000_000.0
    path.unlink()
    assert observation_time(plain, fits.Header(), fallback=123.0) == 123.0
