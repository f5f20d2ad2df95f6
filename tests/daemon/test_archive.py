"""History-independent rescans: finished inputs archived, ledger rows of departed files dropped."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from daemon.intake.ledger import Ledger, LedgerEntry
from tests.conftest import (
    drop_fits,
    products_in,
    running,
    small_exposure,
    test_settings,
    wait_for_count,
    wait_until,
)

COMPLETE = {"outcome": "complete"}


def _entry(path: Path) -> LedgerEntry:
    info = path.stat()
    return LedgerEntry(str(path), info.st_size, info.st_mtime_ns)


def _archiving(archive: Path) -> dict[str, str]:
    return {"after": "archive", "archive_path": str(archive)}


def _today(archive: Path) -> Path:
    return archive / time.strftime("%Y-%m-%d", time.gmtime())


@pytest.mark.asyncio
async def test_finished_inputs_move_to_the_dated_archive_and_leave_the_ledger(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "archive"
    settings = test_settings(tmp_path, source={"directory": _archiving(archive)})
    inbox, out = settings.source.directory.path, settings.output.directory
    inbox.mkdir(parents=True)
    for index in range(3):
        drop_fits(inbox, f"a_{index}.fits", small_exposure(index))
    (inbox / "notes.txt").write_text("not an exposure: never touched")
    async with running(settings) as service:
        await wait_for_count(service, "skystream_exposures_processed_total", COMPLETE, 3)
        await wait_until(lambda: not list(inbox.glob("a_*.fits")))
    assert sorted(p.name for p in _today(archive).iterdir()) == [f"a_{i}.fits" for i in range(3)]
    assert (inbox / "notes.txt").exists()
    assert len(products_in(out)) == 3
    ledger = Ledger(settings.state.directory / "ledger.sqlite")
    try:
        assert len(ledger) == 0  # nothing left to remember: the folder is empty
    finally:
        ledger.close()


@pytest.mark.asyncio
async def test_a_finished_input_left_behind_by_a_stop_is_archived_by_the_next_scan(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "archive"
    settings = test_settings(tmp_path)
    inbox = settings.source.directory.path
    inbox.mkdir(parents=True)
    drop_fits(inbox, "kept.fits", small_exposure(0))
    async with running(settings) as service:  # after: keep
        await wait_for_count(service, "skystream_exposures_processed_total", COMPLETE, 1)
    assert (inbox / "kept.fits").exists()
    archiving = test_settings(tmp_path, source={"directory": _archiving(archive)})
    async with running(archiving):
        await wait_until(lambda: (_today(archive) / "kept.fits").exists())
    assert not (inbox / "kept.fits").exists()


@pytest.mark.asyncio
async def test_the_first_scan_drops_rows_of_files_that_left_the_folder(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    inbox = settings.source.directory.path
    inbox.mkdir(parents=True)
    for index in range(2):
        drop_fits(inbox, f"g_{index}.fits", small_exposure(index))
    async with running(settings) as service:
        await wait_for_count(service, "skystream_exposures_processed_total", COMPLETE, 2)
    gone = _entry(inbox / "g_0.fits")
    (inbox / "g_0.fits").unlink()  # the operator cleaned up
    ledger = Ledger(settings.state.directory / "ledger.sqlite")
    try:
        outsider = LedgerEntry(str(tmp_path / "elsewhere" / "x.fits"), 1, 1)
        ledger.record(outsider, exposure_id="x", outcome="complete", product=None)
        assert ledger.outcome(gone) == "complete" and len(ledger) == 3
    finally:
        ledger.close()
    async with running(settings):
        await wait_until(lambda: _rows(settings) == 2)
    ledger = Ledger(settings.state.directory / "ledger.sqlite")
    try:
        assert not ledger.is_finished(gone)
        assert ledger.is_finished(_entry(inbox / "g_1.fits"))
        assert ledger.is_finished(outsider)  # another folder's rows are not this scan's
    finally:
        ledger.close()


def _rows(settings) -> int:
    ledger = Ledger(settings.state.directory / "ledger.sqlite")
    try:
        return len(ledger)
    finally:
        ledger.close()


def test_archive_needs_a_folder_it_may_own(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="after: archive needs archive_path"):
        test_settings(tmp_path, source={"directory": {"after": "archive"}})
