"""Shared fixtures: seeded data, real FITS files, a running daemon on a temp folder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from prometheus_client import CollectorRegistry

from daemon.app.service import Service
from daemon.app.settings import Settings, load_settings, merge_overrides
from daemon.fileio.fits_io import write_exposure
from daemon.fileio.names import bounded_name
from processors import Exposure, simulate_exposure, warm_up

#: Real data kept in the repository (provenance in tests/data/README.md).
TEST_DATA = Path(__file__).resolve().parent / "data"
SPITZER = TEST_DATA / "spitzer_irac_galactic_plane.fits"


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> None:
    """Compile the numba kernels once, before any test starts a daemon with a timeout.

    A fresh checkout has no kernel cache yet, and compiling takes longer than a daemon
    test waits for its service to start.
    """
    warm_up()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def spitzer_path() -> Path:
    if not SPITZER.exists():
        pytest.fail(f"the real test image is missing: {SPITZER}")
    return SPITZER


def small_exposure(index: int = 0, size: int = 64, **kwargs: Any) -> Exposure:
    """A small simulated exposure (fast enough for bursts of thousands)."""
    return simulate_exposure(index, size=size, seed=7, **kwargs)


def drop_fits(folder: Path, name: str, exposure: Exposure | None = None) -> Path:
    """Write a FITS file the way instruments do: hidden name, then rename into place."""
    exposure = exposure if exposure is not None else small_exposure()
    hidden = folder / f".{bounded_name(name, 100)}.part"  # room for the writer's temp name
    write_exposure(exposure, hidden, fsync=False)
    target = folder / name
    os.replace(hidden, target)
    return target


def test_settings(base: Path, **overrides: Any) -> Settings:
    """Settings rooted at ``base`` with timings short enough for tests."""
    fast = {
        "source": {
            "directory": {
                "settle_seconds": 0.3,
                "incomplete_timeout_seconds": 1.5,
                "rescan_seconds": 1.0,
                "check_interval_seconds": 0.05,
            }
        },
        "background": {"box_size": 16},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "shutdown": {"grace_seconds": 10.0},
    }
    settings = merge_overrides(load_settings(environ={}, base=base), fast)
    return merge_overrides(settings, overrides) if overrides else settings


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``predicate`` until true; fail the test with a clear message after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate.__doc__ or predicate}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(settings: Settings, **kwargs: Any) -> AsyncIterator[Service]:
    """Run a Service in this event loop for the duration of the block."""
    service = Service(settings, registry=CollectorRegistry(), **kwargs)
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.wait_started(), 60)
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 60)


def metric(service: Service, name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of a sample from the service's registry (0 if absent)."""
    value = service.metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


async def wait_for_count(
    service: Service, name: str, labels: dict[str, str], value: float, timeout: float = 30.0
) -> None:
    """Wait for a counter: a product is durable a moment before its input is counted."""

    def reached() -> bool:
        return metric(service, name, labels) >= value

    await wait_until(reached, timeout)
    assert metric(service, name, labels) == value


def products_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("*_bsub.fits"))


def header_only_fits(path: Path) -> Path:
    """A complete FITS file with a primary header and no image anywhere."""
    fits.PrimaryHDU().writeto(path)
    return path
