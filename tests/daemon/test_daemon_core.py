"""The daemon core on real folders: drains what waits, survives dead tasks and full folders."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from daemon.app.cli import main
from daemon.fileio.fits_io import read_exposure, write_exposure
from processors import Exposure, simulate_exposure
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


def _frame(index: int, sky: float) -> Exposure:
    return simulate_exposure(index, size=64, seed=index, sky_level=sky)


def _reasons(service) -> list[str]:
    return service.readiness()[1]


def test_process_waits_for_the_stack_that_the_same_batch_fills(tmp_path: Path, capsys) -> None:
    """Issue: ``process sci b1_sky b2_sky`` with wait ended '1 not finished', exit 1."""
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "background": {
                    "method": "stack",
                    "stack": {"min_members": 2, "when_insufficient": "wait"},
                },
                "routing": {"background_when": {"filename": ["*_sky*"]}},
            }
        )
    )
    inputs = []
    for name, sky in (("sci_a", 40.0), ("b1_sky", 40.0), ("b2_sky", 40.0)):
        path = tmp_path / f"{name}.fits"
        write_exposure(_frame(len(inputs), sky), path, fsync=False)
        inputs.append(str(path))
    out = tmp_path / "out"
    assert main(["process", *inputs, "--out", str(out), "--config", str(config)]) == 0
    assert "3 processed, 0 failed" in capsys.readouterr().err
    product = read_exposure(out / "sci_a_bsub.fits")
    assert product.header["BKGMETH"] == "stack"
    assert [product.header["BKGINP01"], product.header["BKGINP02"]] == ["b1_sky", "b2_sky"]


@pytest.mark.asyncio
async def test_a_dead_watcher_is_named_restarted_and_the_stream_goes_on(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    inbox = settings.source.directory.path
    async with running(settings) as service:
        drop_fits(inbox, "before.fits", small_exposure(1))
        await wait_until(lambda: len(products_in(settings.output.directory)) == 1)
        observer = service.source._observer  # the watcher's thread, as a crash would end it
        assert observer is not None
        observer.stop()
        await wait_until(
            lambda: any("task directory watcher died" in r for r in _reasons(service))
        )
        await wait_until(lambda: service.readiness() == (True, []))
        assert metric(service, "skystream_task_restarts_total", {"task": "directory watcher"}) == 1
        assert service.source._observer is not observer
        drop_fits(inbox, "after.fits", small_exposure(2))
        await wait_until(lambda: len(products_in(settings.output.directory)) == 2)


@pytest.mark.asyncio
async def test_an_unwritable_quarantine_folder_is_retried_not_a_crash(tmp_path: Path) -> None:
    """Issue: a full or unwritable quarantine folder made the daemon exit 1 (crash loop)."""
    settings = test_settings(tmp_path)
    inbox = settings.source.directory.path
    quarantine = settings.quarantine.directory
    async with running(settings) as service:
        quarantine.rmdir()
        quarantine.write_text("an operator's mistake")  # every write below it now fails
        (inbox / "junk.fits").write_bytes(b"SIMPLE  =                    T" + b"x" * 100)
        await wait_until(
            lambda: any(
                r.startswith("quarantine folder: File exists (EEXIST) since ")
                for r in _reasons(service)
            )
        )
        drop_fits(inbox, "good.fits", small_exposure(3))  # other work goes on meanwhile
        await wait_until(lambda: (settings.output.directory / "good_bsub.fits").exists())
        assert (inbox / "junk.fits").exists()
        quarantine.unlink()
        quarantine.mkdir()
        await wait_until(lambda: (quarantine / "junk.fits.reason.json").exists())
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "quarantined"}, 1)  # fmt: skip
        await wait_until(lambda: service.readiness() == (True, []))


@pytest.mark.asyncio
async def test_a_busy_ledger_is_retried_and_named_then_acknowledged(tmp_path: Path) -> None:
    """Issue: SQLite errors left products unacknowledged with /readyz 200, until a restart."""
    settings = test_settings(tmp_path)
    inbox = settings.source.directory.path
    async with running(settings) as service:
        holder = sqlite3.connect(settings.state.directory / "ledger.sqlite", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the database
        try:
            drop_fits(inbox, "held.fits", small_exposure(4))
            await wait_until(
                lambda: any(
                    r.startswith("ledger: SQLite: database is locked since ")
                    for r in _reasons(service)
                ),
                timeout=60,
            )
            assert (settings.output.directory / "held_bsub.fits").exists()
            assert metric(service, "skystream_exposures_processed_total",
                          {"outcome": "complete"}) == 0  # fmt: skip
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 1, timeout=60)  # fmt: skip
        await wait_until(lambda: service.readiness() == (True, []))


@pytest.mark.asyncio
async def test_one_slow_key_never_delays_another(tmp_path: Path) -> None:
    """Science of key A waits for a stack that never comes; key B flows meanwhile."""
    settings = test_settings(
        tmp_path,
        background={"method": "stack",
                    "stack": {"min_members": 1, "when_insufficient": "wait", "wait_seconds": 600}},
        routing={"background_when": {"filename": ["*_sky*"]}},
        lanes={"queue_size": 4},
    )  # fmt: skip
    inbox = settings.source.directory.path

    def frame(detector: str, index: int) -> Exposure:
        exposure = _frame(index, 30.0)
        exposure.header["DETECTOR"] = detector
        return exposure

    async with running(settings) as service:
        for index in range(4):  # A: four science exposures, no background ever
            drop_fits(inbox, f"a{index}.fits", frame("A", index))
        await wait_until(lambda: "SIMCAM/A/J" in service.lanes.saturated)
        drop_fits(inbox, "b_sky.fits", frame("B", 10))
        for index in range(3):
            drop_fits(inbox, f"b{index}.fits", frame("B", 20 + index))
        out = settings.output.directory
        await wait_until(lambda: all((out / f"b{i}_bsub.fits").exists() for i in range(3)))
        assert metric(service, "skystream_lane_parked", {"lane": "SIMCAM/A/J"}) >= 1
        assert not any(out.glob("a*_bsub.fits"))
        assert read_exposure(out / "b0_bsub.fits").header["BKGMETH"] == "stack"
