"""Every kind of bad input is quarantined with a reason, counted, and the stream goes on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from daemon.fileio.fits_io import write_exposure
from processors import DQ
from tests.conftest import (
    drop_fits,
    header_only_fits,
    metric,
    products_in,
    running,
    small_exposure,
    test_settings,
    wait_for_count,
    wait_until,
)

pytestmark = pytest.mark.asyncio


def _truncated(folder: Path) -> None:
    scratch = folder.parent / "scratch.fits"
    write_exposure(small_exposure(), scratch)
    (folder / "truncated.fits").write_bytes(scratch.read_bytes()[:9000])


def _no_image(folder: Path) -> None:
    header_only_fits(folder / "no_image.fits")


def _cube(folder: Path) -> None:
    write_exposure(small_exposure(nints=2), folder / "cube.fits")


def _mismatch(folder: Path) -> None:
    fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(np.ones((64, 64), np.float32), name="SCI"),
        fits.ImageHDU(np.zeros((32, 64), np.uint32), name="DQ"),
    ]).writeto(folder / "mismatch.fits")  # fmt: skip


def _all_nan(folder: Path) -> None:
    fits.PrimaryHDU(np.full((64, 64), np.nan, np.float32)).writeto(folder / "all_nan.fits")


def _all_flagged(folder: Path) -> None:
    exposure = small_exposure()
    flagged = exposure.with_changes(dq=np.full(exposure.shape, int(DQ.DO_NOT_USE), np.uint32))
    write_exposure(flagged, folder / "all_flagged.fits")


def _not_fits(folder: Path) -> None:
    (folder / "not_fits.fits").write_bytes(b"PNG pretending to be FITS " * 200)


def _unreadable(folder: Path) -> None:
    (folder / "unreadable.fits").symlink_to(folder / "vanished-target.fits")


BAD_INPUTS = {
    "truncated.fits": (_truncated, "truncated"),
    "no_image.fits": (_no_image, "no_image_data"),
    "cube.fits": (_cube, "wrong_shape"),
    "mismatch.fits": (_mismatch, "shape_mismatch"),
    "all_nan.fits": (_all_nan, "no_valid_pixels"),
    "all_flagged.fits": (_all_flagged, "no_valid_pixels"),
    "not_fits.fits": (_not_fits, "not_fits"),
    "unreadable.fits": (_unreadable, "unreadable"),
}


async def test_each_bad_input_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    settings = test_settings(tmp_path, input={"allow_cubes": False})
    inbox = settings.source.directory.path
    quarantine = settings.quarantine.directory
    async with running(settings) as service:
        for make, _ in BAD_INPUTS.values():
            make(inbox)
        drop_fits(inbox, "good.fits")

        def all_reasons_written() -> bool:
            return all((quarantine / f"{name}.reason.json").exists() for name in BAD_INPUTS)

        await wait_until(all_reasons_written, timeout=30)
        await wait_until(lambda: len(products_in(settings.output.directory)) == 1)
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "quarantined"}, len(BAD_INPUTS))  # fmt: skip
        expected: dict[str, int] = {}
        for name, (_, reason) in BAD_INPUTS.items():
            record = json.loads((quarantine / f"{name}.reason.json").read_text())
            assert record["reason"] == reason, name
            assert record["detail"]
            assert record["original_path"] == str(inbox / name)
            assert record["moved"] is True
            assert (quarantine / name).is_symlink() or (quarantine / name).exists()
            assert not (inbox / name).exists()
            expected[reason] = expected.get(reason, 0) + 1
        for reason, count in expected.items():
            assert (
                metric(service, "skystream_exposures_quarantined_total", {"reason": reason})
                == count
            )
        assert metric(
            service, "skystream_exposures_processed_total", {"outcome": "quarantined"}
        ) == len(BAD_INPUTS)
        # Still running: a later good file is processed too.
        drop_fits(inbox, "after.fits", small_exposure(3))
        await wait_until(lambda: len(products_in(settings.output.directory)) == 2)


async def test_quarantined_files_are_not_taken_again_after_restart(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    inbox = settings.source.directory.path
    async with running(settings):
        _not_fits(inbox)
        await wait_until(lambda: (settings.quarantine.directory / "not_fits.fits").exists())
    async with running(settings) as service:
        await wait_until(lambda: service.source is not None and service.source.idle)
        assert metric(service, "skystream_exposures_received_total", {"source": "directory"}) == 0
