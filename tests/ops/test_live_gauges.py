"""The gauges that cannot lie, scraped from a real daemon while its products folder is gone."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    drop_fits,
    products_in,
    running,
    small_exposure,
    test_settings,
    wait_until,
)

pytestmark = pytest.mark.asyncio


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    """Every sample of the daemon's /metrics."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape_until(
    port: int, predicate: Callable[[Samples], bool], timeout: float = 30
) -> Samples:
    """Scrape until ``predicate`` holds for the samples; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate(samples := await scrape(port)):
        if time.monotonic() > deadline:
            pytest.fail(f"/metrics never satisfied {predicate} within {timeout} s")
        await asyncio.sleep(0.1)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_unsettled_age_backlog_and_readiness_follow_a_stall_and_its_end(tmp_path) -> None:
    settings = test_settings(tmp_path)
    products = settings.output.directory
    async with running(settings) as service:
        port = service.health.port
        idle = await scrape(port)
        assert value(idle, "skystream_oldest_unsettled_age_seconds") == 0
        assert value(idle, "skystream_backlog_exposures", source="directory") == 0
        assert value(idle, "skystream_last_product_timestamp_seconds") == 0
        assert value(idle, "skystream_ready") == 1

        # The products folder becomes a file: every write fails with ENOTDIR.
        shutil.rmtree(products)
        products.write_bytes(b"")
        inbox = settings.source.directory.path
        for index in range(3):
            drop_fits(inbox, f"stall_{index}.fits", small_exposure(index))
        await wait_until(lambda: "products folder" in service.conditions)
        first = await scrape(port)
        assert value(first, "skystream_backlog_exposures", source="directory") == 3
        assert value(first, "skystream_ready") == 0
        assert value(first, "skystream_oldest_unsettled_age_seconds") > 0
        # The oldest stays unsettled: its age keeps growing while nothing moves.
        start = value(first, "skystream_oldest_unsettled_age_seconds")
        later = await scrape_until(
            port, lambda s: value(s, "skystream_oldest_unsettled_age_seconds") > start + 1.0
        )
        assert value(later, "skystream_backlog_exposures", source="directory") == 3
        assert value(later, "skystream_last_product_timestamp_seconds") == 0

        # The operator puts the folder back: everything settles and the gauges say so.
        products.unlink()
        products.mkdir()
        await wait_until(lambda: len(products_in(products)) == 3)
        await wait_until(lambda: service.source.backlog() == 0)
        done = await scrape(port)
        assert value(done, "skystream_oldest_unsettled_age_seconds") == 0
        assert value(done, "skystream_backlog_exposures", source="directory") == 0
        assert value(done, "skystream_ready") == 1
        assert 0 < value(done, "skystream_last_product_timestamp_seconds") <= time.time()
