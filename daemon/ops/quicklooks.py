"""The quicklook worker: renders product PNGs off the hot path, from a bounded queue.

A finished product is *offered* to the worker, which never blocks: when the queue is
full the quicklook is dropped (logged and counted), so a slow renderer costs pictures,
never products. Rendering runs in the worker's own thread, not in the product pool; a
quicklook that fails is logged and counted, and the worker goes on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daemon.fileio.quicklook import (
    Quicklook,
    binning_for,
    render_quicklook,
    write_quicklook,
)
from daemon.fileio.saved_background import background_map
from daemon.ops.progress import Heartbeat
from processors import BackgroundResult, Exposure

__all__ = ["QuicklookJob", "Quicklooks"]

log = logging.getLogger("skystream.quicklook")

#: Receives the exposure id, the PNG written and its thumbnail (the live page).
OnWritten = Callable[[str, Path, bytes], None]


@dataclass(frozen=True, eq=False)
class QuicklookJob:
    """What one quicklook shows (the arrays are shared with the product, never modified).

    A model's background map is made (if it has not been) when the picture is rendered,
    off the event loop.
    """

    exposure_id: str
    path: Path
    input_image: np.ndarray
    background: BackgroundResult | Exposure | None
    residual: np.ndarray
    method: str
    level: float | None
    rms: float | None

    def caption(self, binning: int) -> str:
        """Exposure, method, level, RMS and binning, for the picture's top line."""
        level = "n/a" if self.level is None else f"{self.level:.5g}"
        rms = "n/a" if self.rms is None else f"{self.rms:.4g}"
        binned = f" · binned {binning}x{binning}" if binning > 1 else ""
        return f"{self.exposure_id} · {self.method} · level {level} · RMS {rms}{binned}"


def render(job: QuicklookJob, *, fsync: bool) -> Quicklook:
    """Render and write one quicklook (blocking)."""
    metadata = {
        "exposure_id": job.exposure_id,
        "method": job.method,
        "level": "" if job.level is None else repr(job.level),
        "rms": "" if job.rms is None else repr(job.rms),
    }
    caption = job.caption(binning_for(job.input_image.shape))
    quicklook = render_quicklook(
        job.input_image, background_map(job.background), job.residual, caption=caption,
        metadata=metadata,
    )  # fmt: skip
    write_quicklook(quicklook.png, job.path, fsync=fsync)
    return quicklook


class Quicklooks:
    """A bounded queue of quicklooks and the task that renders them.

    Parameters
    ----------
    fsync : bool
        fsync each PNG (``output.fsync``).
    queue_size : int
        Quicklooks waiting at most; further ones are dropped. Each holds its product's
        arrays, so this bounds the memory as well.
    on_written : callable, optional
        Called on the event loop with the exposure id, the PNG and its thumbnail.
    """

    def __init__(
        self, *, fsync: bool, queue_size: int = 2, on_written: OnWritten | None = None
    ) -> None:
        self._fsync = fsync
        self._queue: asyncio.Queue[QuicklookJob] = asyncio.Queue(queue_size)
        self._on_written = on_written
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="skystream-quicklook")
        self.written = 0
        self.dropped = 0
        self.failed = 0

    def offer(self, job: QuicklookJob) -> bool:
        """Queue a quicklook without waiting; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("quicklook of %s dropped: %d still waiting to be rendered",
                        job.exposure_id, self._queue.qsize())  # fmt: skip
            return False
        return True

    async def run(self, heartbeat: Heartbeat) -> None:
        """Render queued quicklooks until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            try:
                with heartbeat.working():
                    quicklook = await loop.run_in_executor(
                        self._thread, functools.partial(render, job, fsync=self._fsync)
                    )
            except Exception:
                self.failed += 1
                log.exception("quicklook of %s failed", job.exposure_id)
            else:
                self.written += 1
                if self._on_written is not None:
                    self._on_written(job.exposure_id, job.path, quicklook.thumbnail)
            finally:
                self._queue.task_done()

    async def drain(self, seconds: float) -> None:
        """Wait (at most ``seconds``) for the queued quicklooks to be written."""
        try:
            await asyncio.wait_for(self._queue.join(), seconds)
        except TimeoutError:
            log.warning("%d quicklook(s) not rendered before the stop", self._queue.qsize())

    def close(self) -> None:
        """Release the rendering thread (after `drain`, or once the task is cancelled)."""
        self._thread.shutdown(wait=True, cancel_futures=True)
