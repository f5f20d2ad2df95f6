"""The daemon end to end on a real temp folder: arrivals, restarts, bursts, metrics."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np
import pytest

from daemon.fileio.fits_io import read_exposure, write_exposure
from tests.conftest import (
    drop_fits,
    metric,
    products_in,
    running,
    small_exposure,
    test_settings,
    wait_for_count,
    wait_until,
)

pytestmark = pytest.mark.asyncio


async def test_renamed_file_becomes_a_product_with_truthful_sky(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    async with running(settings) as service:
        exposure = small_exposure(size=128)
        drop_fits(settings.source.directory.path, "exp_a.fits", exposure)
        out = settings.output.directory
        await wait_until(lambda: len(products_in(out)) == 1)
        product = read_exposure(out / "exp_a_bsub.fits")
        assert product.header["S_BKDSUB"] == "COMPLETE"
        assert product.header["BKGSUB"] is True
        level = product.header["BKGLEVEL"]
        assert abs(level - exposure.header["TRUESKY"]) < 0.2 * exposure.header["TRUENOIS"]
        np.testing.assert_allclose(
            np.median(product.sci[product.dq == 0]), 0.0, atol=0.2 * exposure.header["TRUENOIS"]
        )
        sidecar = json.loads((out / "exp_a_bsub.json").read_text())
        assert sidecar["schema"] == "skystream.product/1"
        assert sidecar["exposure_id"] == "exp_a"
        assert sidecar["stack_key"] == "SIMCAM/SIM1/J"
        assert sidecar["background_level"] == pytest.approx(level)
        assert set(sidecar["timings"]) >= {"read", "background", "subtract"}
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 1)  # fmt: skip


async def test_slowly_written_file_waits_then_succeeds(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    data = tmp_path / "staging.fits"
    write_exposure(small_exposure(), data)
    payload = data.read_bytes()
    async with running(settings) as service:
        target = settings.source.directory.path / "slow.fits"
        with open(target, "wb") as handle:  # one writer handle, no close until the end
            for start in range(0, len(payload), 2000):
                handle.write(payload[start : start + 2000])
                handle.flush()
                await asyncio.sleep(0.1)  # ~3 s in all: > settle, incomplete timeout, rescan
        out = settings.output.directory
        await wait_until(lambda: len(products_in(out)) == 1)
        assert not any(settings.quarantine.directory.iterdir())
        truncated = {"reason": "truncated"}
        assert metric(service, "skystream_exposures_quarantined_total", truncated) == 0


async def test_files_dropped_while_down_are_found_at_start(tmp_path: Path) -> None:
    settings = test_settings(tmp_path, source={"directory": {"rescan_seconds": 3600}})
    inbox = settings.source.directory.path
    inbox.mkdir(parents=True)
    for index in range(3):
        write_exposure(small_exposure(index), inbox / f"early_{index}.fits")
    async with running(settings):
        await wait_until(lambda: len(products_in(settings.output.directory)) == 3)


async def test_restart_skips_finished_files(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    inbox = settings.source.directory.path
    async with running(settings):
        for index in range(3):
            drop_fits(inbox, f"r_{index}.fits", small_exposure(index))
        await wait_until(lambda: len(products_in(settings.output.directory)) == 3)
    stamps = {p.name: p.stat().st_mtime_ns for p in products_in(settings.output.directory)}
    async with running(settings) as service:
        drop_fits(inbox, "r_new.fits", small_exposure(9))
        await wait_until(lambda: len(products_in(settings.output.directory)) == 4)
        await asyncio.sleep(1.2)  # past one rescan
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 1)  # fmt: skip
    for name, stamp in stamps.items():
        assert (settings.output.directory / name).stat().st_mtime_ns == stamp


async def test_rewritten_file_is_processed_again(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    inbox = settings.source.directory.path
    async with running(settings) as service:
        drop_fits(inbox, "again.fits", small_exposure(1))
        await wait_until(
            lambda: (
                metric(service, "skystream_exposures_processed_total", {"outcome": "complete"})
                == 1
            )
        )
        drop_fits(inbox, "again.fits", small_exposure(2, size=96))
        await wait_until(
            lambda: (
                metric(service, "skystream_exposures_processed_total", {"outcome": "complete"})
                == 2
            )
        )
        product = read_exposure(settings.output.directory / "again_bsub.fits")
        assert product.shape == (96, 96)


async def test_burst_of_two_thousand_small_files_misses_none(tmp_path: Path) -> None:
    settings = test_settings(tmp_path, output={"fsync": False}, lanes={"queue_size": 64})
    inbox = settings.source.directory.path
    template = tmp_path / "template.fits"
    write_exposure(small_exposure(size=64), template)
    payload = template.read_bytes()
    async with running(settings) as service:
        for index in range(2000):
            hidden = inbox / f".b{index:05d}.part"
            hidden.write_bytes(payload)
            os.replace(hidden, inbox / f"b{index:05d}.fits")
        out = settings.output.directory
        await wait_until(lambda: len(products_in(out)) == 2000, timeout=240)
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 2000)  # fmt: skip
        received = metric(service, "skystream_exposures_received_total", {"source": "directory"})
        assert received == 2000
    assert not any(settings.quarantine.directory.iterdir())


async def test_periodic_rescan_recovers_events_the_watcher_never_saw(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    inbox = settings.source.directory.path
    async with running(settings) as service:
        source = service.source
        assert source is not None
        # Simulate an inotify overflow: the file lands while hints are being dropped.
        original = source.hint
        source.hint = lambda path, writer_done: None  # type: ignore[method-assign]
        drop_fits(inbox, "lost_event.fits")
        await asyncio.sleep(0.3)
        assert not products_in(settings.output.directory)
        source.hint = original  # type: ignore[method-assign]
        await wait_until(lambda: len(products_in(settings.output.directory)) == 1, timeout=10)


async def test_polling_observer_settles_on_size_and_mtime(tmp_path: Path) -> None:
    settings = test_settings(
        tmp_path, source={"directory": {"polling": True, "poll_interval_seconds": 0.1}}
    )
    async with running(settings):
        write_exposure(small_exposure(), settings.source.directory.path / "nfs.fits")
        await wait_until(lambda: len(products_in(settings.output.directory)) == 1)


async def test_lanes_follow_the_stack_key(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    inbox = settings.source.directory.path
    async with running(settings) as service:
        for index, filt in enumerate(["J", "H", "K"]):
            exposure = small_exposure(index)
            exposure.header["FILTER"] = filt
            drop_fits(inbox, f"f_{filt}.fits", exposure)
        keys = {"SIMCAM/SIM1/J", "SIMCAM/SIM1/H", "SIMCAM/SIM1/K"}
        # The sidecar and the level gauge follow the product file by a moment.
        await wait_until(lambda: all(metric(service, "skystream_background_level",
                                            {"stack_key": key}) > 0 for key in keys))  # fmt: skip
        assert len(products_in(settings.output.directory)) == 3
        assert keys == {
            json.loads(p.read_text())["stack_key"]
            for p in settings.output.directory.glob("*.json")
        }
