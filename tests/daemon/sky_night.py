"""A short night on a running daemon for the live-page tests: stacks, a mosaic group,
quicklooks, a hostile file name and a quarantined file."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.app.service import Service
from daemon.app.settings import Settings
from tests.conftest import (
    drop_fits,
    running,
    small_exposure,
    test_settings,
    wait_for_count,
    wait_until,
)

#: A file name that is also markup: the page must show it as text.
HOSTILE = "<img src=x onerror=alert(1)>"
SCIENCE = ["night_0001", "night_0002", HOSTILE]
SKY = "night_sky_0000"
PROCESSED = "skystream_exposures_processed_total"


@dataclass
class Night:
    """The running service, its settings and its page's address."""

    service: Service
    settings: Settings
    url: str


def night_settings(base: Path) -> Settings:
    """Stack method (``*_sky*`` files are backgrounds), sky matching per filter, quicklooks."""
    (base / "inbox").mkdir(parents=True, exist_ok=True)
    return test_settings(
        base,
        output={"quicklook": True},
        background={"method": "stack"},
        routing={"background_when": {"filename": ["*_sky*"]}},
        skymatch={"enabled": True, "group_key": ["FILTER"]},
    )


@contextlib.asynccontextmanager
async def sky_night(base: Path) -> AsyncIterator[Night]:
    """Run the daemon through one sky frame, three science frames and one bad file."""
    settings = night_settings(base)
    inbox = settings.source.directory.path
    async with running(settings) as service:
        drop_fits(inbox, f"{SKY}.fits", small_exposure(0, size=256))
        await wait_for_count(service, PROCESSED, {"outcome": "background"}, 1)
        for index, name in enumerate(SCIENCE, start=1):
            drop_fits(inbox, f"{name}.fits", small_exposure(index, size=256))
        (inbox / "broken.fits").write_bytes(b"not a FITS file" * 200)
        await wait_for_count(service, PROCESSED, {"outcome": "complete"}, len(SCIENCE))
        await wait_for_count(service, PROCESSED, {"outcome": "quarantined"}, 1)
        quicklooks = service.quicklooks
        assert quicklooks is not None
        await wait_for_count_of(lambda: quicklooks.written, len(SCIENCE))
        assert service.health is not None
        yield Night(service, settings, f"http://127.0.0.1:{service.health.port}")


async def wait_for_count_of(count: Callable[[], int], value: int) -> None:
    """Wait until ``count()`` reaches ``value`` (pictures are rendered after the product)."""
    await wait_until(lambda: count() >= value)
    assert count() == value
