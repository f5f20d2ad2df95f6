"""Watch a folder for new FITS files: file events as hints, settle checks, rescans, ledger."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.app.settings import DirectorySourceSettings
from daemon.errors import InvalidInput
from daemon.events import ExposureEvent
from daemon.fileio.fits_io import check_fits_complete
from daemon.intake.delivery import Delivery
from daemon.intake.ledger import Ledger, LedgerEntry
from daemon.ops.metrics import Metrics
from daemon.ops.progress import Heartbeat
from daemon.ops.supervisor import Supervisor

__all__ = ["DirectorySource"]

log = logging.getLogger("skystream.source.directory")

#: Names of the source's supervised tasks.
_WATCHER, _RESCAN, _SETTLE = "directory watcher", "directory rescan", "directory settle"


@dataclass(frozen=True)
class _Look:
    """What a worker thread found when it examined one pending file."""

    path: str
    size: int = -1
    mtime_ns: int = -1
    state: str = "gone"  # complete | incomplete | not_fits | unreadable | gone
    detail: str = ""


@dataclass
class _Pending:
    """A file seen but not yet handed on."""

    first_seen: float
    last_change: float
    size: int = -1
    mtime_ns: int = -1
    writer_done: bool = False  # a close-after-write or rename-into-place event was seen
    look: _Look | None = None  # the last examination, reused while the file is unchanged


class _Hints(FileSystemEventHandler):
    """Runs on watchdog's thread; hands paths to the loop and touches nothing else."""

    def __init__(self, loop: asyncio.AbstractEventLoop, source: DirectorySource) -> None:
        self._loop = loop
        self._source = source

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or isinstance(event, DirMovedEvent):
            return
        if isinstance(event, FileMovedEvent):
            path, writer_done = event.dest_path, True
        else:
            path, writer_done = event.src_path, isinstance(event, FileClosedEvent)
        if event.event_type in ("deleted", "closed_no_write", "opened"):
            return
        self._loop.call_soon_threadsafe(self._source.hint, os.fsdecode(path), writer_done)


class DirectorySource:
    """Deliveries of complete FITS files that appear in a folder.

    File-system events are latency hints only: a file is handed on when it is a complete
    FITS (`daemon.fileio.fits_io.check_fits_complete`) and either a close-after-write or
    rename-into-place event was seen or its size and mtime stayed unchanged for
    ``settle_seconds`` (polling file systems emit neither). A scan at start-up and every
    ``rescan_seconds`` finds what arrived while the daemon was down or what an inotify
    overflow dropped. Files the ledger records as finished are skipped; duplicate events
    are harmless.

    Parameters
    ----------
    settings : DirectorySourceSettings
        Folder, patterns and timings.
    ledger : Ledger
        Finished files; acknowledged deliveries are recorded there.
    metrics : Metrics
        Received counts and pending-file gauge.
    max_ready : int, optional
        Deliveries buffered ahead of the pipeline (backpressure beyond that).
    """

    name = "directory"

    def __init__(
        self,
        settings: DirectorySourceSettings,
        ledger: Ledger,
        metrics: Metrics,
        *,
        max_ready: int = 32,
    ) -> None:
        self._settings = settings
        self._folder = settings.path
        self._ledger = ledger
        self._metrics = metrics
        self._pending: dict[str, _Pending] = {}
        self._in_flight: set[str] = set()
        self._ready: asyncio.Queue[Delivery] = asyncio.Queue(max_ready)
        self._wake = asyncio.Event()
        self._observer: BaseObserver | None = None
        self._supervisor: Supervisor | None = None
        self._scanned_once = asyncio.Event()

    @property
    def connected(self) -> bool:
        """True while the folder is watched."""
        return self._observer is not None and self._observer.is_alive()

    @property
    def idle(self) -> bool:
        """True when nothing is pending, buffered or in flight (after the first scan)."""
        return (
            self._scanned_once.is_set()
            and not self._pending
            and not self._in_flight
            and self._ready.empty()
        )

    def reconfigure(self, settings: DirectorySourceSettings) -> None:
        """Take new timings (settle, incomplete timeout, check and rescan periods) live.

        They are read at each use; the folder, patterns and observer stay those of the start.
        """
        self._settings = settings

    async def start(self, supervisor: Supervisor) -> None:
        """Create the folder; start the watcher, rescan and settle loops under ``supervisor``."""
        self._folder.mkdir(parents=True, exist_ok=True)
        self._supervisor = supervisor
        supervisor.spawn(_WATCHER, self._watch)
        supervisor.spawn(_RESCAN, self._rescan_loop)
        heartbeat = supervisor.spawn(_SETTLE, lambda: self._settle_loop(heartbeat))
        log.info(
            "watching %s (%s) for %s",
            self._folder,
            "polling" if self._settings.polling else "inotify",
            ", ".join(self._settings.patterns),
        )

    async def stop(self) -> None:
        """Stop the loops and the observer; safe to call twice."""
        if self._supervisor is not None:
            for name in (_SETTLE, _RESCAN, _WATCHER):
                await self._supervisor.cancel(name)
            self._supervisor = None

    async def _watch(self) -> None:
        """Run the file-event observer thread; fail (to be restarted) if it dies."""
        if self._settings.polling:
            observer: BaseObserver = PollingObserver(timeout=self._settings.poll_interval_seconds)
        else:
            observer = Observer()
        observer.schedule(_Hints(asyncio.get_running_loop(), self), str(self._folder),
                          recursive=False)  # fmt: skip
        observer.daemon = True
        observer.start()
        self._observer = observer
        try:
            await asyncio.to_thread(observer.join)  # returns only if the thread ends
            raise RuntimeError(f"the file-event observer of {self._folder} stopped")
        finally:
            self._observer = None
            observer.stop()
            await asyncio.to_thread(observer.join, 5.0)

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Complete files, in the order they were first seen."""
        while True:
            yield await self._ready.get()

    def hint(self, path: str, writer_done: bool) -> None:
        """Note a file event (called on the loop thread)."""
        if not self._matches(path) or path in self._in_flight:
            return
        now = time.monotonic()
        pending = self._pending.setdefault(path, _Pending(first_seen=now, last_change=now))
        pending.writer_done |= writer_done
        self._metrics.pending_files.set(len(self._pending))
        self._wake.set()

    def _matches(self, path: str) -> bool:
        name = os.path.basename(path)
        if name.startswith("."):
            return False
        return any(fnmatch.fnmatch(name, pattern) for pattern in self._settings.patterns)

    def _scan(self) -> list[str]:
        """List candidate files that the ledger does not record as finished (worker thread)."""
        found = []
        with os.scandir(self._folder) as entries:
            for entry in entries:
                if not self._matches(entry.path) or entry.is_dir():
                    continue
                try:
                    info = entry.stat()
                except OSError:
                    found.append(entry.path)  # unreadable: let the settle loop decide
                    continue
                done = LedgerEntry(entry.path, info.st_size, info.st_mtime_ns)
                if not self._ledger.is_finished(done):
                    found.append(entry.path)
        return found

    async def _rescan_loop(self) -> None:
        while True:
            try:
                found = await asyncio.to_thread(self._scan)
            except OSError as exc:
                log.error("cannot scan %s: %s", self._folder, exc)  # noqa: TRY400 (no trace)
                found = []
            for path in found:
                self.hint(path, False)
            if found:
                log.debug("scan found %d unfinished file(s)", len(found))
            self._scanned_once.set()
            await asyncio.sleep(self._settings.rescan_seconds)

    @staticmethod
    def _examine(items: list[tuple[str, _Look | None]]) -> list[_Look]:
        """Stat pending files; completeness-check those that changed (worker thread).

        A file whose size and mtime are those of its previous examination keeps that
        verdict, so files waiting behind a busy pipeline are not reread every tick.
        """
        looks = []
        for path, previous in items:
            try:
                info = os.stat(path)
            except FileNotFoundError:
                if os.path.islink(path):
                    looks.append(_Look(path, state="unreadable", detail="dangling symbolic link"))
                else:
                    looks.append(_Look(path))
                continue
            except OSError as exc:
                looks.append(_Look(path, state="unreadable", detail=str(exc)))
                continue
            if (
                previous is not None
                and previous.state in ("complete", "incomplete", "not_fits")
                and (previous.size, previous.mtime_ns) == (info.st_size, info.st_mtime_ns)
            ):
                looks.append(previous)
                continue
            try:
                state, detail = check_fits_complete(Path(path))
            except OSError as exc:
                looks.append(_Look(path, state="unreadable", detail=exc.strerror or str(exc)))
                continue
            looks.append(_Look(path, info.st_size, info.st_mtime_ns, state, detail))
        return looks

    async def _settle_loop(self, heartbeat: Heartbeat) -> None:
        while True:
            heartbeat.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.check_interval_seconds)
            self._wake.clear()
            if not self._pending:
                continue
            order = sorted(self._pending, key=lambda p: self._pending[p].first_seen)
            items = [(path, self._pending[path].look) for path in order]
            with heartbeat.working():  # a check that never returns is a stuck source
                looks = await asyncio.to_thread(self._examine, items)
            for look in looks:
                delivery = self._decide(look)
                if delivery is not None:
                    await self._ready.put(delivery)
            self._metrics.pending_files.set(len(self._pending))

    def _decide(self, look: _Look) -> Delivery | None:
        """Turn one examination into a delivery when the file is ready (or hopeless)."""
        pending = self._pending.get(look.path)
        if pending is None or look.path in self._in_flight:
            return None
        if look.state == "gone":
            del self._pending[look.path]
            return None
        now = time.monotonic()
        pending.look = look
        if (look.size, look.mtime_ns) != (pending.size, pending.mtime_ns):
            pending.size, pending.mtime_ns, pending.last_change = look.size, look.mtime_ns, now
        entry = LedgerEntry(look.path, look.size, look.mtime_ns)
        if self._ledger.is_finished(entry):
            del self._pending[look.path]
            return None
        stable = now - pending.last_change
        settled = pending.writer_done or stable >= self._settings.settle_seconds
        problem: InvalidInput | None = None
        if look.state == "complete" and settled:
            pass
        elif look.state == "not_fits" and stable >= self._settings.settle_seconds:
            problem = InvalidInput("not_fits", f"{Path(look.path).name}: {look.detail}")
        elif look.state == "unreadable" and stable >= self._settings.settle_seconds:
            problem = InvalidInput("unreadable", f"{Path(look.path).name}: {look.detail}")
        elif look.state == "incomplete" and stable >= self._settings.incomplete_timeout_seconds:
            problem = InvalidInput(
                "truncated",
                f"{Path(look.path).name}: still incomplete after "
                f"{self._settings.incomplete_timeout_seconds:g} s unchanged ({look.detail})",
            )
        else:
            return None
        del self._pending[look.path]
        self._in_flight.add(look.path)
        self._metrics.received.labels(self.name).inc()

        async def acknowledge(outcome: str, product: str | None) -> None:
            await asyncio.to_thread(
                self._ledger.record,
                entry,
                exposure_id=Path(look.path).name,
                outcome=outcome,
                product=product,
            )
            self._in_flight.discard(look.path)

        return Delivery(
            event=ExposureEvent.for_file(Path(look.path)),
            source=self.name,
            arrived=pending.first_seen,
            acknowledge=acknowledge,
            problem=problem,
        )
