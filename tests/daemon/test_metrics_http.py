"""Scrape the real /metrics, /healthz and /readyz endpoints of a running daemon."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    drop_fits,
    products_in,
    running,
    small_exposure,
    test_settings,
    wait_for_count,
    wait_until,
)

pytestmark = pytest.mark.asyncio


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_endpoint_reports_the_stream(tmp_path) -> None:
    settings = test_settings(tmp_path)
    async with running(settings) as service, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{service.health.port}"
        inbox = settings.source.directory.path
        exposures = [small_exposure(i) for i in range(3)]
        for index, exposure in enumerate(exposures):
            drop_fits(inbox, f"m_{index}.fits", exposure)
        (inbox / "junk.fits").write_bytes(b"junk" * 1000)
        await wait_until(lambda: len(products_in(settings.output.directory)) == 3)
        reason_file = settings.quarantine.directory / "junk.fits.reason.json"
        await wait_until(reason_file.exists)
        processed = "skystream_exposures_processed_total"
        await wait_for_count(service, processed, {"outcome": "complete"}, 3)
        await wait_for_count(service, processed, {"outcome": "quarantined"}, 1)

        async with http.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            samples = _samples(await response.text())

        def value(name: str, **labels: str) -> float:
            return samples[(name, frozenset(labels.items()))]

        assert value("skystream_exposures_received_total", source="directory") == 4
        assert value("skystream_exposures_processed_total", outcome="complete") == 3
        assert value("skystream_exposures_processed_total", outcome="quarantined") == 1
        assert value("skystream_exposures_quarantined_total", reason="not_fits") == 1
        assert value("skystream_exposures_quarantined_total", reason="truncated") == 0
        for stage in ("read", "background", "subtract", "write"):
            assert value("skystream_stage_seconds_count", stage=stage) == 3
            assert value("skystream_stage_seconds_sum", stage=stage) > 0
        assert value("skystream_latency_seconds_count") == 3
        assert value("skystream_lane_depth", lane="SIMCAM/SIM1/J") == 0
        level = value("skystream_background_level", stack_key="SIMCAM/SIM1/J")
        truths = [e.header["TRUESKY"] for e in exposures]
        assert min(truths) - 5 < level < max(truths) + 5
        info = [k for k in samples if k[0] == "skystream_build_info"]
        assert info and ("version", "0.1.0") in info[0][1]

        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
            assert (await response.json()) == {"ready": True, "reasons": []}
        async with http.get(f"{base}/startupz") as response:
            assert response.status == 200
            assert (await response.json()) == {"warmed_up": True}


async def test_readyz_is_503_when_the_source_is_down_but_healthz_still_answers(
    tmp_path,
) -> None:
    async with running(test_settings(tmp_path)) as service, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{service.health.port}"
        await service.source.stop()
        async with http.get(f"{base}/readyz") as response:
            body = await response.json()
            assert response.status == 503
        assert body == {"ready": False, "reasons": ["source not connected"]}
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
