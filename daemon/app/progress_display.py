"""Progress of a long run: done/total, rate and time left.

On a terminal it is a `rich` progress bar, with whatever is written to stdout and stderr
meanwhile (the log) printed above it; elsewhere (a pipe, a file, a CI log) each finished
item is one plain line with the same facts, since a bar redrawn in place is noise there.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["ProgressDisplay", "showing_progress"]


def _is_terminal(stream: TextIO) -> bool:
    """A terminal that has a width (a pseudo-terminal of size 0 cannot show a bar)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):  # closed, or no file descriptor
        return False


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class _RateColumn(ProgressColumn):
    """Items per second, as ``2.31 exposure/s``."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self._unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        shown = "?" if speed is None else f"{speed:.2f}"
        return Text(f"{shown} {self._unit}/s", style="progress.data.speed")


class ProgressDisplay:
    """Counts finished items of a known total and shows the count, rate and time left.

    Parameters
    ----------
    total : int
        Items expected.
    stream : text stream
        Where the bar or the lines go; a bar only when it is a terminal with a width.
    unit : str
        What an item is called (``exposure``).
    """

    def __init__(self, total: int, stream: TextIO, *, unit: str = "exposure") -> None:
        self.total = total
        self.done = 0
        self._stream = stream
        self._unit = unit
        self._start = time.monotonic()
        self._bar: Progress | None = None
        if _is_terminal(stream):
            self._bar = Progress(
                BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), _RateColumn(unit),
                TimeElapsedColumn(), TextColumn("elapsed"), TimeRemainingColumn(),
                TextColumn("left  {task.description}"),
                console=Console(file=stream), transient=False,
            )  # fmt: skip
            self._task = self._bar.add_task("", total=total)

    @property
    def is_bar(self) -> bool:
        """True when a terminal shows a bar."""
        return self._bar is not None

    def line(self, note: str) -> str:
        """The plain line for the latest finished item: count, note, rate and time left."""
        elapsed = time.monotonic() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return (
            f"[{self.done}/{self.total}] {note} · {rate:.2f} {self._unit}/s · "
            f"{_duration(left)} left"
        )

    def advance(self, note: str) -> None:
        """Count one finished item, described by ``note``."""
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=note)
        else:
            print(self.line(note), file=self._stream, flush=True)

    def __enter__(self) -> ProgressDisplay:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextlib.contextmanager
def showing_progress(
    total: int, stream: TextIO, *, unit: str = "exposure"
) -> Iterator[ProgressDisplay]:
    """A `ProgressDisplay` shown for the duration of the block."""
    with ProgressDisplay(total, stream, unit=unit) as display:
        yield display
