"""Every kind of bad input is quarantined with a reason, counted, and the stream goes on."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
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
from tests.daemon.fits_corpus import card_at, set_value, with_card

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


def _with_value(path: Path, hdu: int, keyword: str, value: object) -> None:
    data = set_value(path.read_bytes(), hdu, keyword, value)
    assert data is not None
    path.write_bytes(data)


def _looping_extension(folder: Path) -> None:
    # On main this header spun the completeness check at 50 % CPU forever.
    extension = fits.ImageHDU(np.zeros(0, np.uint8)).header
    data = fits.PrimaryHDU().header.tostring().encode() + extension.tostring().encode()
    looping = set_value(data, 1, "NAXIS1", -2880)
    assert looping is not None
    (folder / "looping.fits").write_bytes(looping)


def _structural(name: str, hdu: int, keyword: str, value: object) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        scratch = folder.parent / f"scratch-{name}"
        write_exposure(small_exposure(), scratch)
        _with_value(scratch, hdu, keyword, value)
        os.replace(scratch, folder / name)

    return make


def _no_end(folder: Path) -> None:
    scratch = folder.parent / "scratch-no-end"
    write_exposure(small_exposure(), scratch)
    data = scratch.read_bytes()
    at = card_at(data, 1, "END")
    assert at is not None
    (folder / "no_end.fits").write_bytes(with_card(data, at, b""))


STRUCTURAL_DEFECTS = {
    "looping.fits": (_looping_extension, "invalid_header"),
    "bitpix.fits": (_structural("bitpix.fits", 1, "BITPIX", 7), "invalid_header"),
    "naxis1_negative.fits": (
        _structural("naxis1_negative.fits", 1, "NAXIS1", -1),
        "invalid_header",
    ),
    "no_end.fits": (_no_end, "invalid_header"),
    "huge.fits": (_structural("huge.fits", 1, "NAXIS2", 10**15), "too_large"),
    "junk.fits": (lambda folder: (folder / "junk.fits").write_bytes(b"0123456789"), "not_fits"),
}


async def test_structural_defects_are_refused_at_once_with_precise_reasons(
    tmp_path: Path,
) -> None:
    # The incomplete timeout is far beyond the wait below: none of these may wait for it.
    settings = test_settings(tmp_path, source={"directory": {"incomplete_timeout_seconds": 3600}})
    inbox = settings.source.directory.path
    quarantine = settings.quarantine.directory
    async with running(settings) as service:
        for make, _ in STRUCTURAL_DEFECTS.values():
            make(inbox)
        drop_fits(inbox, "good.fits")

        def all_refused() -> bool:
            return all(
                (quarantine / f"{name}.reason.json").exists() for name in STRUCTURAL_DEFECTS
            )

        await wait_until(all_refused, timeout=30)
        await wait_until(lambda: len(products_in(settings.output.directory)) == 1)
        assert metric(service, "skystream_exposures_quarantined_total",
                      {"reason": "processing_error"}) == 0  # fmt: skip
    for name, (_, reason) in STRUCTURAL_DEFECTS.items():
        record = json.loads((quarantine / f"{name}.reason.json").read_text())
        assert record["reason"] == reason, (name, record["detail"])
    looping = json.loads((quarantine / "looping.fits.reason.json").read_text())
    assert looping["detail"] == "looping.fits: HDU 1: NAXIS1 = -2880 is negative"
