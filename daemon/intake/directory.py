"""Watch a folder for new FITS files: file events as hints, settle checks, rescans, ledger."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import shutil
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

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
from daemon.errors import QUARANTINE_REASONS, InvalidInput, QuarantineReason, is_input_hiccup
from daemon.events import ExposureEvent
from daemon.fileio.fits_io import (
    DEFAULT_MAX_EXPOSURE_BYTES,
    check_fits_complete,
    read_primary_header,
)
from daemon.intake.delivery import Delivery
from daemon.intake.kinds import header_time
from daemon.intake.ledger import Ledger, LedgerEntry
from daemon.ops.metrics import Metrics
from daemon.ops.progress import Heartbeat
from daemon.ops.supervisor import Supervisor

__all__ = ["DirectorySource"]

log = logging.getLogger("skystream.source.directory")

#: Outcomes whose input ``after: archive`` moves away (a stack background stays: its stack
#: is rebuilt from it; a quarantined input is already gone).
_ARCHIVED = frozenset({"complete", "skipped"})
#: Names of the source's supervised tasks.
_WATCHER, _RESCAN, _SETTLE = "directory watcher", "directory rescan", "directory settle"


@dataclass(frozen=True)
class _Look:
    """What a worker thread found when it examined one pending file."""

    path: str
    size: int = -1
    mtime_ns: int = -1
    # regular (not yet checked) | complete | incomplete | gone | storage (its storage
    # falters: waited for) | a quarantine reason
    # (not_fits, unreadable, not_a_file, outside_roots, ...)
    state: str = "gone"
    detail: str = ""
    observed: float = 0.0  # observation time (Unix seconds): the order of a backlog
    checked: bool = False  # the verdict of a completeness check (kept while unchanged)


_FILE_TYPES = {
    stat.S_IFDIR: "directory",
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def _observed(path: str, fallback: float) -> float:
    """The header's observation time of a complete file, else ``fallback`` (its mtime)."""
    try:
        header = read_primary_header(Path(path))
    except Exception:  # only a sort key: reading it for processing reports why
        return fallback
    observed = header_time(header)
    return fallback if observed is None else observed


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

    Files that wait together (a backlog at start-up, after a rescan or a restart) are
    handed on in observation order — header ``MJD-OBS``/``EXPSTART``/``DATE-OBS``, else
    mtime — so that a stack sees its frames in the same order however often the daemon
    was interrupted. Only regular files are opened: everything is ``lstat``-ed first;
    FIFOs, sockets, devices and folders are refused (``not_a_file``) and symbolic links
    leading out of the folder too (``outside_roots``) unless ``allow_outside_symlinks``.
    Deliveries may repeat: an input whose product and sidecar already exist (a lost state
    folder, a crash before the ledger write) is recognised, not recomputed.

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
    max_exposure_bytes : int, optional
        Larger files, or files whose headers announce more, are refused as ``too_large``.
    """

    name = "directory"

    def __init__(
        self,
        settings: DirectorySourceSettings,
        ledger: Ledger,
        metrics: Metrics,
        *,
        max_ready: int = 32,
        max_exposure_bytes: int = DEFAULT_MAX_EXPOSURE_BYTES,
    ) -> None:
        self._settings = settings
        self._max_bytes = max_exposure_bytes
        self._folder = settings.path
        self._root = os.path.realpath(settings.path)  # where symbolic links may lead
        self._ledger = ledger
        self._metrics = metrics
        self._pending: dict[str, _Pending] = {}
        self._in_flight: dict[str, float] = {}  # handed on, not acknowledged: first seen
        self._ready: asyncio.Queue[Delivery] = asyncio.Queue(max_ready)
        self._wake = asyncio.Event()
        self._observer: BaseObserver | None = None
        self._supervisor: Supervisor | None = None
        self._scanned_once = asyncio.Event()
        self._compacted = False  # the first scan drops rows of files no longer here

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

    def oldest_unsettled(self) -> float | None:
        """``time.monotonic()`` when the oldest pending or unacknowledged file was first seen."""
        seen = [pending.first_seen for pending in self._pending.values()]
        return min([*seen, *self._in_flight.values()], default=None)

    def backlog(self) -> int:
        """Files seen and not settled: pending, or handed on and not yet acknowledged."""
        return len(self._pending) + len(self._in_flight)

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
        """List candidate files that the ledger does not record as finished (worker thread).

        With ``after: archive``, finished inputs still here (a stop came between their
        ledger row and their move) are archived now. The first scan also drops the ledger
        rows of files no longer in the folder.
        """
        found = []
        present = []
        with os.scandir(self._folder) as entries:
            for entry in entries:
                if not self._matches(entry.path):
                    continue
                look = self._probe(entry.path)
                if look.state == "gone":
                    continue
                present.append(entry.path)
                outcome = self._ledger.outcome(LedgerEntry(entry.path, look.size, look.mtime_ns))
                if outcome is None:
                    found.append(entry.path)
                elif outcome in _ARCHIVED:
                    self._archive(entry.path)
        if not self._compacted:
            dropped = self._ledger.compact(str(self._folder), present)
            self._compacted = True
            if dropped:
                log.info("ledger: %d row(s) of files no longer in %s dropped", dropped,
                         self._folder)  # fmt: skip
        return found

    def _archive(self, path: str) -> None:
        """Move a finished input to ``archive_path/<UTC date>/`` and drop its ledger row.

        A failure is logged and the file stays (its ledger row keeps it finished); the
        next scan tries again. An archived file never overwrites another.
        """
        archive = self._settings.archive_path
        if self._settings.after != "archive" or archive is None:
            return
        folder = archive / time.strftime("%Y-%m-%d", time.gmtime())
        name = os.path.basename(path)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / name
            copies = 0
            while target.exists():
                copies += 1
                target = folder / f"{name}.{copies}"
            shutil.move(path, target)
        except OSError as exc:
            log.warning("cannot archive %s: %s", name, exc.strerror or exc)
            return
        self._ledger.forget(path)

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

    def _probe(self, path: str) -> _Look:
        """What a path is, from ``lstat`` and the link target; never opens it.

        The state is ``regular`` for a regular file (or a link to one inside the folder),
        else ``gone`` or the reason it is refused. Size and mtime are the target's for a
        followed link, the entry's own otherwise: the identity the ledger records.
        """
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return _Look(path)
        except OSError as exc:
            state = "storage" if is_input_hiccup(exc) else "unreadable"
            return _Look(path, state=state, detail=exc.strerror or str(exc))
        if stat.S_ISLNK(info.st_mode):
            target = os.path.realpath(path)
            inside = target.startswith(self._root + os.sep)
            if not inside and not self._settings.allow_outside_symlinks:
                return _Look(
                    path, info.st_size, info.st_mtime_ns, "outside_roots",
                    f"symbolic link to {target}, outside the watched folder {self._root}",
                )  # fmt: skip
            try:
                info = os.stat(path)
            except OSError as exc:
                why = "dangling symbolic link" if isinstance(exc, FileNotFoundError) else exc
                return _Look(path, info.st_size, info.st_mtime_ns, "unreadable",
                             f"{why} to {target}")  # fmt: skip
        if not stat.S_ISREG(info.st_mode):
            kind = _FILE_TYPES.get(stat.S_IFMT(info.st_mode), "special file")
            return _Look(path, info.st_size, info.st_mtime_ns, "not_a_file",
                         f"a {kind}, not a regular file: never opened")  # fmt: skip
        return _Look(path, info.st_size, info.st_mtime_ns, "regular",
                     observed=info.st_mtime_ns / 1e9)  # fmt: skip

    def _examine(self, items: list[tuple[str, _Look | None]]) -> list[_Look]:
        """Probe pending files; completeness-check those that changed (worker thread).

        A file whose size and mtime are those of its previous examination keeps that
        verdict, so files waiting behind a busy pipeline are not reread every tick. A
        complete file's header gives its observation time.
        """
        looks = []
        for path, previous in items:
            look = self._probe(path)
            if look.state != "regular":
                looks.append(look)
            elif (
                previous is not None
                and previous.checked
                and (previous.size, previous.mtime_ns) == (look.size, look.mtime_ns)
            ):
                looks.append(previous)
            else:
                looks.append(self._check(look))
        return looks

    def _check(self, look: _Look) -> _Look:
        """The completeness verdict of a regular file (and its observation time)."""
        try:
            state, detail = check_fits_complete(Path(look.path), max_bytes=self._max_bytes)
        except FileNotFoundError:
            return _Look(look.path)
        except OSError as exc:
            failed = "storage" if is_input_hiccup(exc) else "unreadable"
            return _Look(look.path, look.size, look.mtime_ns, failed, exc.strerror or str(exc),
                         look.observed)  # fmt: skip
        observed = _observed(look.path, look.observed) if state == "complete" else look.observed
        return _Look(look.path, look.size, look.mtime_ns, state, detail, observed, checked=True)

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
            # One clock per tick, so files found together settle together, and handed on
            # in observation order.
            now = time.monotonic()
            for look in sorted(looks, key=lambda look: (look.observed, look.mtime_ns, look.path)):
                delivery = self._decide(look, now)
                if delivery is not None:
                    await self._ready.put(delivery)
            self._metrics.pending_files.set(len(self._pending))

    def _decide(self, look: _Look, now: float) -> Delivery | None:
        """Turn one examination into a delivery when the file is ready (or hopeless)."""
        pending = self._pending.get(look.path)
        if pending is None or look.path in self._in_flight:
            return None
        if look.state == "gone":
            del self._pending[look.path]
            return None
        if look.state == "storage":  # its storage falters: wait, neither settle nor refuse
            if pending.look is None or pending.look.state != "storage":
                log.warning("%s: %s (input storage); waiting for it to answer",
                            Path(look.path).name, look.detail)  # fmt: skip
            pending.look = look
            pending.last_change = now
            return None
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
        elif look.state in QUARANTINE_REASONS and stable >= self._settings.settle_seconds:
            reason = cast(QuarantineReason, look.state)
            problem = InvalidInput(reason, f"{Path(look.path).name}: {look.detail}")
        elif look.state == "incomplete" and stable >= self._settings.incomplete_timeout_seconds:
            problem = InvalidInput(
                "truncated",
                f"{Path(look.path).name}: still incomplete after "
                f"{self._settings.incomplete_timeout_seconds:g} s unchanged ({look.detail})",
            )
        else:
            return None
        del self._pending[look.path]
        self._in_flight[look.path] = pending.first_seen
        self._metrics.received.labels(self.name).inc()

        async def acknowledge(outcome: str, product: str | None) -> None:
            await asyncio.to_thread(
                self._ledger.record,
                entry,
                exposure_id=Path(look.path).name,
                outcome=outcome,
                product=product,
            )
            if outcome in _ARCHIVED:
                await asyncio.to_thread(self._archive, look.path)
            self._in_flight.pop(look.path, None)

        def retake() -> None:
            # Changed since it was taken (rewritten in place, shrunk, deleted): watched
            # again from now, its writer's next close counted, its arrival time kept.
            self._in_flight.pop(look.path, None)
            now = time.monotonic()
            self._pending[look.path] = _Pending(first_seen=pending.first_seen, last_change=now)
            self._metrics.pending_files.set(len(self._pending))
            self._wake.set()

        return Delivery(
            event=ExposureEvent.for_file(Path(look.path)),
            source=self.name,
            arrived=pending.first_seen,
            acknowledge=acknowledge,
            problem=problem,
            may_repeat=True,  # after a crash or a lost state folder: recognised by its sidecar
            retake=retake,
        )
