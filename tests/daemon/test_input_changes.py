"""An input that changes after the folder source took it — rewritten in place, or deleted
— is watched again, never refused for it: one product of its final content, or nothing."""

from __future__ import annotations

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
    test_settings,
    wait_until,
)
from tests.daemon.test_stack_method import _science, _sky

pytestmark = pytest.mark.asyncio
PROCESSED = "skystream_exposures_processed_total"
PENDING = "skystream_pending_files"


def _waiting_settings(tmp_path: Path):
    # Science waits in its lane until two backgrounds make its stack: the test changes the
    # file meanwhile, after the source took it and before it is read.
    return test_settings(
        tmp_path,
        background={"method": "stack", "stack": {"min_members": 2, "when_insufficient": "wait",
                                                 "wait_seconds": 120}},
        routing={"background_when": {"filename": ["*_sky*"]}},
    )  # fmt: skip


async def _release(service, inbox: Path) -> None:
    for index, level in enumerate([10.0, 14.0]):
        drop_fits(inbox, f"n{index}_sky.fits", _sky(level, index))
    await wait_until(lambda: metric(service, PROCESSED, {"outcome": "background"}) == 2)


async def test_a_file_rewritten_after_it_was_taken_gets_one_product_of_its_final_content(
    tmp_path: Path,
) -> None:
    settings = _waiting_settings(tmp_path)
    inbox, out = settings.source.directory.path, settings.output.directory
    quarantine = settings.quarantine.directory
    async with running(settings) as service:
        target = drop_fits(inbox, "target.fits", _science(5, sky=12.0))
        await wait_until(lambda: service.lanes is not None and len(service.lanes) == 1)
        # Its writer starts writing it again: half of the new version so far.
        final = tmp_path / "final.fits"
        write_exposure(_science(6, sky=112.0), final, fsync=False)
        data = final.read_bytes()
        with open(target, "r+b") as handle:
            handle.truncate(0)
            handle.write(data[: len(data) // 2])
        await _release(service, inbox)  # the science is read now: it is half a file
        await wait_until(lambda: metric(service, PENDING) == 1)  # watched again
        assert metric(service, PROCESSED, {"outcome": "quarantined"}) == 0
        with open(target, "r+b") as handle:  # the writer finishes
            handle.seek(len(data) // 2)
            handle.write(data[len(data) // 2 :])
        await wait_until(lambda: metric(service, PROCESSED, {"outcome": "complete"}) == 1)
    assert [p.name for p in products_in(out)] == ["target_bsub.fits"]
    product = read_exposure(out / "target_bsub.fits")
    assert abs(float(np.median(product.sci)) - 150.0) < 0.3  # 112 + 50 - mean(10, 14)
    assert target.is_file() and not any(quarantine.glob("target*"))


async def test_a_file_deleted_after_it_was_taken_is_not_quarantined(tmp_path: Path) -> None:
    settings = _waiting_settings(tmp_path)
    inbox, out = settings.source.directory.path, settings.output.directory
    async with running(settings) as service:
        target = drop_fits(inbox, "gone.fits", _science(5, sky=12.0))
        await wait_until(lambda: service.lanes is not None and len(service.lanes) == 1)
        os.unlink(target)  # its producer took it back
        await _release(service, inbox)
        drop_fits(inbox, "later.fits", _science(7, sky=12.0))  # the stream goes on
        await wait_until(lambda: metric(service, PROCESSED, {"outcome": "complete"}) == 1)
        await wait_until(lambda: metric(service, PENDING) == 0)
        assert metric(service, PROCESSED, {"outcome": "quarantined"}) == 0
    assert [p.name for p in products_in(out)] == ["later_bsub.fits"]
    assert not settings.quarantine.directory.exists() or not any(
        settings.quarantine.directory.iterdir()
    )
