"""The folder source on real folders: backlog order, special files, links, odd names."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from daemon.app.settings import DirectorySourceSettings
from daemon.intake.delivery import Delivery
from daemon.intake.directory import DirectorySource
from daemon.intake.ledger import Ledger
from daemon.ops.conditions import Conditions
from daemon.ops.metrics import Metrics
from daemon.ops.supervisor import Supervisor
from tests.conftest import drop_fits, small_exposure

pytestmark = pytest.mark.asyncio


def _settings(folder: Path, **overrides: Any) -> DirectorySourceSettings:
    return DirectorySourceSettings(
        path=folder, settle_seconds=0.2, check_interval_seconds=0.02, rescan_seconds=0.5,
        incomplete_timeout_seconds=2.0, **overrides,
    )  # fmt: skip


class _Run:
    """A started source and what it delivered, each acknowledged as the pipeline would."""

    def __init__(self, source: DirectorySource) -> None:
        self.source = source
        self.delivered: list[Delivery] = []

    async def take(self, count: int, outcome: str = "complete") -> list[Delivery]:
        """The next ``count`` deliveries, acknowledged with ``outcome``."""
        taken = []
        async for delivery in self.source.deliveries():
            await delivery.acknowledge(outcome, None)
            taken.append(delivery)
            if len(taken) == count:
                break
        self.delivered += taken
        return taken


@pytest_asyncio.fixture
async def watch(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[tuple[DirectorySource, Supervisor, Ledger]] = []

    async def start(folder: Path, *, limit: int | None = None, **overrides: Any) -> _Run:
        ledger = Ledger(tmp_path / "state" / f"ledger-{len(started)}.sqlite")
        extra = {} if limit is None else {"max_exposure_bytes": limit}
        source = DirectorySource(
            _settings(folder, **overrides), ledger, Metrics(CollectorRegistry()), **extra
        )
        supervisor = Supervisor(Conditions())
        await source.start(supervisor)
        started.append((source, supervisor, ledger))
        return _Run(source)

    yield start
    for source, supervisor, ledger in started:
        await source.stop()
        await supervisor.stop()
        assert supervisor.failure is None
        ledger.close()


async def _take(run: _Run, count: int) -> list[Delivery]:
    return await asyncio.wait_for(run.take(count), 30)


async def test_backlog_is_delivered_in_observation_order_not_name_or_mtime_order(
    tmp_path: Path, watch: Any
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    count = 12
    # Names and mtimes run against the observation order (MJD-OBS grows with the index).
    for rank, index in enumerate(reversed(range(count))):
        path = drop_fits(inbox, f"a{rank:02d}.fits", small_exposure(index, size=32))
        os.utime(path, ns=(10**18 + rank * 10**9, 10**18 + rank * 10**9))
    run = await watch(inbox)
    delivered = await _take(run, count)
    names = [d.event.path.name for d in delivered]
    assert names == [f"a{rank:02d}.fits" for rank in reversed(range(count))]
    assert all(d.may_repeat for d in delivered)  # recognised by its sidecar if done before


async def test_without_header_time_the_backlog_follows_mtime(tmp_path: Path, watch: Any) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    exposure = small_exposure(0, size=32)
    del exposure.header["MJD-OBS"]
    for rank, name in enumerate(["c.fits", "a.fits", "b.fits"]):
        path = drop_fits(inbox, name, exposure)
        os.utime(path, ns=(10**18 + rank * 10**9, 10**18 + rank * 10**9))
    run = await watch(inbox)
    assert [d.event.path.name for d in await _take(run, 3)] == ["c.fits", "a.fits", "b.fits"]


async def test_special_files_are_refused_unopened_and_never_stall_the_folder(
    tmp_path: Path, watch: Any
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(inbox / "fifo.fits")  # open() of a FIFO without a writer blocks forever
    (inbox / "folder.fits").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(inbox / "socket.fits"))
        run = await watch(inbox)
        drop_fits(inbox, "good.fits", small_exposure(0, size=32))
        delivered = {d.event.path.name: d for d in await _take(run, 4)}
    assert delivered["good.fits"].problem is None
    for name, kind in [("fifo.fits", "FIFO"), ("folder.fits", "directory"),
                       ("socket.fits", "socket")]:  # fmt: skip
        problem = delivered[name].problem
        assert problem is not None and problem.reason == "not_a_file", name
        assert f"a {kind}, not a regular file" in problem.detail
    assert (inbox / "fifo.fits").exists()  # the source never moves anything itself


async def test_links_out_of_the_folder_are_refused_links_inside_are_followed(
    tmp_path: Path, watch: Any
) -> None:
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    (inbox / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    secret = drop_fits(elsewhere, "secret.fits", small_exposure(0, size=32))
    inner = drop_fits(inbox / "sub", "inner.fits", small_exposure(1, size=32))
    (inbox / "out.fits").symlink_to(secret)
    (inbox / "dotdot.fits").symlink_to(Path("..") / "elsewhere" / "secret.fits")
    (inbox / "in.fits").symlink_to(inner)
    (inbox / "dangling.fits").symlink_to(inbox / "nothing.fits")
    run = await watch(inbox)
    delivered = {d.event.path.name: d for d in await _take(run, 4)}
    for name in ("out.fits", "dotdot.fits"):
        problem = delivered[name].problem
        assert problem is not None and problem.reason == "outside_roots", name
        assert str(secret) in problem.detail
    assert delivered["in.fits"].problem is None
    dangling = delivered["dangling.fits"].problem
    assert dangling is not None and dangling.reason == "unreadable"
    assert "dangling symbolic link" in dangling.detail


async def test_a_setting_accepts_links_out_of_the_folder(tmp_path: Path, watch: Any) -> None:
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    inbox.mkdir()
    elsewhere.mkdir()
    (inbox / "out.fits").symlink_to(drop_fits(elsewhere, "x.fits", small_exposure(0, size=32)))
    run = await watch(inbox, allow_outside_symlinks=True)
    (delivery,) = await _take(run, 1)
    assert delivery.event.path == inbox / "out.fits" and delivery.problem is None


async def test_odd_names_are_delivered_with_bounded_ids(tmp_path: Path, watch: Any) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    long_stem = "x" * 240
    names = [f"{long_stem}.fits", "new\nline.fits", "back\\slash.fits", "ünï cødé.fits"]
    for index, name in enumerate(names):
        drop_fits(inbox, name, small_exposure(index, size=32))
    run = await watch(inbox)
    delivered = {d.event.path.name: d.event for d in await _take(run, len(names))}
    assert set(delivered) == set(names)
    long_id = delivered[f"{long_stem}.fits"].exposure_id
    assert len(long_id.encode()) == 200 and long_id.startswith("x" * 100)
    assert delivered["new\nline.fits"].exposure_id == "new_line"
    assert delivered["ünï cødé.fits"].exposure_id == "ünï cødé"


async def test_acknowledged_files_are_not_delivered_again(tmp_path: Path, watch: Any) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(inbox / "fifo.fits")
    drop_fits(inbox, "good.fits", small_exposure(0, size=32))
    run = await watch(inbox)
    await _take(run, 2)
    await asyncio.sleep(1.2)  # two rescans: a repeat would be queued before the next file
    drop_fits(inbox, "later.fits", small_exposure(1, size=32))
    (after,) = await _take(run, 1)
    assert after.event.path.name == "later.fits"


async def test_files_over_the_size_limit_are_refused_at_once(tmp_path: Path, watch: Any) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    big = drop_fits(inbox, "big.fits", small_exposure(0, size=64))
    run = await watch(inbox, limit=big.stat().st_size - 2880)
    (delivery,) = await _take(run, 1)
    assert delivery.problem is not None and delivery.problem.reason == "too_large"
