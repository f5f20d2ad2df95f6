"""A storage hiccup under an input (EIO, ESTALE, ...) is retried and named in /readyz; the
input is never quarantined for it. Anything else that makes it unreadable is refused."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from daemon.errors import INPUT_STORAGE, InvalidInput, Retriable, input_read_error
from daemon.fileio.fits_io import read_exposure
from tests.conftest import drop_fits, metric, running, small_exposure, test_settings, wait_until

PROCESSED = "skystream_exposures_processed_total"


def _flaky_reads(monkeypatch: pytest.MonkeyPatch, name: str, failures: int) -> dict[str, int]:
    """Make the next ``failures`` pixel reads of the file ``name`` fail with EIO."""
    real = os.preadv
    left = {"failures": failures}

    def preadv(fd: int, buffers, offset: int, *args):  # type: ignore[no-untyped-def]
        if left["failures"] and os.readlink(f"/proc/self/fd/{fd}").endswith(name):
            left["failures"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, buffers, offset, *args)

    monkeypatch.setattr(os, "preadv", preadv)
    return left


def test_read_errors_are_classified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hiccup = input_read_error("x.fits", OSError(errno.ESTALE, "Stale file handle"))
    assert isinstance(hiccup, Retriable)
    assert hiccup.condition == f"{INPUT_STORAGE}: Stale file handle reading x.fits"
    refused = input_read_error("x.fits", OSError(errno.EISDIR, "Is a directory"))
    assert isinstance(refused, InvalidInput) and refused.reason == "unreadable"

    path = tmp_path / "flaky.fits"
    drop_fits(tmp_path, path.name, small_exposure(1))
    left = _flaky_reads(monkeypatch, path.name, 1)
    with pytest.raises(Retriable) as caught:
        read_exposure(path)
    assert caught.value.condition == "input storage: Input/output error reading flaky.fits"
    assert left["failures"] == 0
    assert read_exposure(path).sci.shape == (64, 64)  # the hiccup is over


@pytest.mark.asyncio
async def test_a_hiccup_reading_an_input_is_retried_and_the_input_processed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = test_settings(tmp_path)
    inbox = settings.source.directory.path
    inbox.mkdir(parents=True, exist_ok=True)
    left = _flaky_reads(monkeypatch, "flaky.fits", 3)
    async with running(settings) as service:
        drop_fits(inbox, "flaky.fits", small_exposure(1))
        await wait_until(lambda: INPUT_STORAGE in service.conditions)  # said in /readyz
        await wait_until(lambda: metric(service, PROCESSED, {"outcome": "complete"}) == 1)
        assert INPUT_STORAGE not in service.conditions  # cleared with the successful read
        assert metric(service, PROCESSED, {"outcome": "quarantined"}) == 0
    assert left["failures"] == 0
    assert (settings.output.directory / "flaky_bsub.fits").is_file()
    assert (inbox / "flaky.fits").is_file()  # never moved


@pytest.mark.asyncio
async def test_a_folder_whose_storage_falters_is_waited_for_not_quarantined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every open of one file fails with EIO for a second: the folder source's completeness
    # checks as well as the pipeline's reads. It waits, then processes it.
    settings = test_settings(tmp_path)  # settle_seconds 0.3: a refusal would come at once
    inbox = settings.source.directory.path
    inbox.mkdir(parents=True, exist_ok=True)
    real = os.open
    failing: dict[str, float] = {}

    def open_(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.fspath(path).endswith("flaky.fits"):
            first = failing.setdefault("since", time.monotonic())
            if time.monotonic() - first < 1.0:
                failing["count"] = failing.get("count", 0) + 1
                raise OSError(errno.EIO, "Input/output error")
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    async with running(settings) as service:
        drop_fits(inbox, "flaky.fits", small_exposure(1))
        await wait_until(lambda: metric(service, PROCESSED, {"outcome": "complete"}) == 1)
        assert metric(service, PROCESSED, {"outcome": "quarantined"}) == 0
    assert failing["count"] >= 3  # it was examined several times while failing
    assert (settings.output.directory / "flaky_bsub.fits").is_file()
    assert (inbox / "flaky.fits").is_file()
