"""Odd names and special files in the watched folder: nothing hangs, collides or is lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from daemon.fileio.fits_io import read_exposure
from daemon.fileio.names import MAX_NAME_BYTES
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


async def test_hostile_names_and_special_files(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    inbox, out = settings.source.directory.path, settings.output.directory
    quarantine = settings.quarantine.directory
    inbox.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    secret = drop_fits(elsewhere, "secret.fits", small_exposure(9))
    secret_bytes = secret.read_bytes()

    long_stem = "L" * 240
    drop_fits(inbox, "x.fits", small_exposure(0))  # observed first: it owns x_bsub.fits
    drop_fits(inbox, "x.fit", small_exposure(1))
    drop_fits(inbox, f"{long_stem}.fits", small_exposure(2))
    drop_fits(inbox, "new\nline.fits", small_exposure(3))
    os.mkfifo(inbox / "pipe.fits")  # opening it would block the settle loop forever
    (inbox / "link.fits").symlink_to(secret)
    async with running(settings) as service:
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 3)  # fmt: skip
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "quarantined"}, 3)  # fmt: skip
        for reason in ("name_collision", "not_a_file", "outside_roots"):
            labels = {"reason": reason}
            assert metric(service, "skystream_exposures_quarantined_total", labels) == 1
        drop_fits(inbox, "after.fits", small_exposure(4))  # the stream goes on
        await wait_until(lambda: (out / "after_bsub.fits").exists())

    # x.fit did not overwrite x.fits's product.
    sidecar = json.loads((out / "x_bsub.json").read_text())
    assert sidecar["input_uri"] == str(inbox / "x.fits")
    product = read_exposure(out / "x_bsub.fits")
    assert product.header["SIMINDEX"] == 0
    collision = json.loads((quarantine / "x.fit.reason.json").read_text())
    assert collision["reason"] == "name_collision"
    assert str(inbox / "x.fits") in collision["detail"]

    names = {p.name for p in products_in(out)}
    long_products = [n for n in names if n.startswith("L" * 100)]
    assert len(long_products) == 1 and len(long_products[0].encode()) <= MAX_NAME_BYTES
    assert read_exposure(out / long_products[0]).header["SIMINDEX"] == 2
    assert read_exposure(out / "new_line_bsub.fits").header["SIMINDEX"] == 3

    pipe = json.loads((quarantine / "pipe.fits.reason.json").read_text())
    assert pipe["reason"] == "not_a_file" and pipe["moved"] is False
    assert (inbox / "pipe.fits").exists()  # a FIFO is never moved (nor opened)
    link = json.loads((quarantine / "link.fits.reason.json").read_text())
    assert link["reason"] == "outside_roots"
    assert secret.read_bytes() == secret_bytes  # the target is never touched
    assert not any(n.startswith("link") or n.startswith("secret") for n in names)


async def test_names_that_are_not_utf8_are_processed_and_remembered(tmp_path: Path) -> None:
    # A file system name is bytes: one that is not UTF-8 must neither stop the folder's
    # tasks nor the good files, nor be done twice after a restart.
    settings = test_settings(tmp_path)
    inbox, out = settings.source.directory.path, settings.output.directory
    quarantine = settings.quarantine.directory
    inbox.mkdir(parents=True)
    odd = os.fsdecode(b"night\xff\xfe_0001.fits")
    broken = os.fsdecode(b"junk\xff.fits")
    drop_fits(inbox, "good.fits", small_exposure(0))
    drop_fits(inbox, odd, small_exposure(1))
    (inbox / broken).write_bytes(b"not a FITS file" * 300)
    async with running(settings) as service:
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 2)  # fmt: skip
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "quarantined"}, 1)  # fmt: skip
    assert sorted(p.name for p in products_in(out)) == [
        "good_bsub.fits",
        "night_xff_xfe_0001_bsub.fits",
    ]
    sidecar = json.loads((out / "night_xff_xfe_0001_bsub.json").read_text())
    assert sidecar["input_uri"].endswith("/night%FF%FE_0001.fits")  # names the bytes exactly
    reason = json.loads((quarantine / f"{broken}.reason.json").read_bytes())  # strict UTF-8
    assert reason["reason"] == "not_fits"
    assert reason["detail"].startswith("junk\\xff.fits: ")  # the byte, readable
    assert reason["detail"].encode("utf-8")
    assert (quarantine / broken).is_file()  # moved: the quarantine folder is skystream's

    async with running(settings) as service:  # the ledger knows both names
        drop_fits(inbox, "later.fits", small_exposure(2))
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 1)  # fmt: skip
        assert metric(service, "skystream_exposures_processed_total",
                      {"outcome": "complete"}) == 1  # fmt: skip
