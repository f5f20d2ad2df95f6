"""A lost state folder costs a scan, not a night: products with their sidecars are recognised."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daemon.intake.ledger import Ledger, LedgerEntry
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

COMPLETE = {"outcome": "complete"}
RECOGNISED = {"outcome": "duplicate"}


async def test_products_of_a_lost_state_folder_are_recognised_not_recomputed(
    tmp_path: Path,
) -> None:
    settings = test_settings(tmp_path)
    inbox, out = settings.source.directory.path, settings.output.directory
    inbox.mkdir(parents=True)
    count = 5
    for index in range(count):
        drop_fits(inbox, f"n_{index}.fits", small_exposure(index))
    async with running(settings) as service:
        await wait_for_count(service, "skystream_exposures_processed_total", COMPLETE, count)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("n_*")}
    assert len(stamps) == 2 * count  # products and sidecars

    shutil.rmtree(settings.state.directory)
    # One input was replaced under its name while the state was lost: it is new work.
    drop_fits(inbox, "n_4.fits", small_exposure(40))
    async with running(settings) as service:
        await wait_for_count(service, "skystream_exposures_processed_total", RECOGNISED,
                             count - 1)  # fmt: skip
        await wait_for_count(service, "skystream_exposures_processed_total", COMPLETE, 1)
    for name, stamp in stamps.items():
        if not name.startswith("n_4"):
            assert (out / name).stat().st_mtime_ns == stamp, f"{name} was rewritten"
    assert (out / "n_4_bsub.fits").stat().st_mtime_ns != stamps["n_4_bsub.fits"]
    assert len(products_in(out)) == count

    ledger = Ledger(settings.state.directory / "ledger.sqlite")
    try:
        for index in range(count):
            info = (inbox / f"n_{index}.fits").stat()
            entry = LedgerEntry(str(inbox / f"n_{index}.fits"), info.st_size, info.st_mtime_ns)
            assert ledger.is_finished(entry), entry
    finally:
        ledger.close()

    # Recorded for good: the next start neither recomputes nor re-recognises anything.
    async with running(settings) as service:
        await wait_until(lambda: service.source is not None and service.source.idle)
        assert metric(service, "skystream_exposures_received_total", {"source": "directory"}) == 0
