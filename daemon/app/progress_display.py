"""Progress of a long run: done/total, rate and time left.

On a terminal it is a `tqdm` bar, with the log lines printed above it rather than through
it; elsewhere (a pipe, a file, a CI log) each finished item is one plain line with the
same facts, since a bar redrawn with carriage returns is noise there.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

__all__ = ["ProgressDisplay", "showing_progress"]


def _is_terminal(stream: TextIO) -> bool:
    """A terminal that has a width (a pseudo-terminal of size 0 shows no bar)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):  # closed, or no file descriptor
        return False


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


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
        self._bar: tqdm | None = None
        if _is_terminal(stream):
            self._bar = tqdm(
                total=total, file=stream, unit=f" {unit}", dynamic_ncols=True, smoothing=0.2,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
                "{rate_fmt}]{postfix}",
            )  # fmt: skip

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
            self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(1)
        else:
            print(self.line(note), file=self._stream, flush=True)

    def close(self) -> None:
        """Finish the bar (nothing to do for plain lines)."""
        if self._bar is not None:
            self._bar.close()


@contextlib.contextmanager
def showing_progress(
    total: int, stream: TextIO, *, unit: str = "exposure"
) -> Iterator[ProgressDisplay]:
    """A `ProgressDisplay` for the block; on a terminal, log lines print above its bar."""
    display = ProgressDisplay(total, stream, unit=unit)
    try:
        if display.is_bar:
            with logging_redirect_tqdm():
                yield display
        else:
            yield display
    finally:
        display.close()
