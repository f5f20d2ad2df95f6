"""A finite source: the files named on the ``skystream process`` command line."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from daemon.events import ExposureEvent
from daemon.intake.delivery import Delivery
from daemon.ops.supervisor import Supervisor

__all__ = ["BatchSource"]


class BatchSource:
    """Yields one delivery per file, in the order given, then ends.

    Parameters
    ----------
    paths : sequence of Path
        Input files.
    """

    name = "batch"

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = [Path(p).absolute() for p in paths]
        self.outcomes: dict[str, str] = {}
        self._started = False

    @property
    def connected(self) -> bool:
        """True once started."""
        return self._started

    async def start(self, _supervisor: Supervisor) -> None:
        """Nothing to connect to."""
        self._started = True

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Each file once."""
        for path in self._paths:

            async def acknowledge(
                outcome: str, _product: str | None, key: str = str(path)
            ) -> None:
                self.outcomes[key] = outcome

            yield Delivery(
                event=ExposureEvent.for_file(path),
                source=self.name,
                arrived=time.monotonic(),
                acknowledge=acknowledge,
            )

    async def stop(self) -> None:
        """Nothing to release."""
        self._started = False
