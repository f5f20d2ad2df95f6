"""Routing: each delivery to the lane of its stack key, without ever waiting for a lane."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from astropy.io.fits import Header
from astropy.io.fits.verify import VerifyError

from daemon.errors import INPUT_STORAGE, InvalidInput
from daemon.fileio.fits_io import read_primary_header
from daemon.flow.lanes import Lanes
from daemon.intake.delivery import Delivery, Source
from daemon.ops.progress import Heartbeat
from daemon.retry import Retrier

__all__ = ["INVALID_LANE", "Router", "stack_key_of"]

log = logging.getLogger("skystream.router")

#: The lane where input already known to be invalid is quarantined, in arrival order, so
#: that a slow quarantine folder never holds up routing.
INVALID_LANE = "(invalid input)"

InPool = Callable[..., Awaitable[Any]]


def stack_key_of(header: Header, keys: list[str]) -> str:
    """The stack key of a header: the configured keyword values joined by ``/``."""
    return "/".join(str(header.get(key, "-")).strip() or "-" for key in keys)


class Router:
    """Puts each delivery on its stack key's lane: the event's key, else the header's.

    Parameters
    ----------
    lanes : Lanes
        Where deliveries go; `Lanes.put` never waits, so one key never delays another.
    stack_keys : list of str
        Header keywords of the stack key.
    in_pool : callable
        Runs blocking work (the header read) in the worker pool.
    max_keys : int
        The lanes' limit, for the refusal's message.
    max_bytes : int
        Largest input (``input.max_exposure_bytes``).
    retrier : Retrier
        Retries a header read on a storage hiccup (routing waits; ``/readyz`` says so).
    """

    def __init__(
        self, lanes: Lanes, stack_keys: list[str], in_pool: InPool, *, max_keys: int,
        max_bytes: int, retrier: Retrier,
    ) -> None:  # fmt: skip
        self._lanes = lanes
        self._max_bytes = max_bytes
        self._max_keys = max_keys
        self._stack_keys = stack_keys
        self._in_pool = in_pool
        self._retrier = retrier

    async def run(self, source: Source, heartbeat: Heartbeat) -> None:
        """Route every delivery of ``source`` until it ends."""
        async for delivery in source.deliveries():
            with heartbeat.working():
                key, routed = await self._route(delivery)
            if key != INVALID_LANE and not self._lanes.accepts(key):
                log.warning("stack key %r refused: %d keys have lanes already", key,
                            self._max_keys)  # fmt: skip
                key, routed = (
                    INVALID_LANE,
                    dataclasses.replace(
                        routed,
                        problem=InvalidInput(
                            "too_many_keys",
                            f"{routed.event.path.name}: stack key {key!r} would be one more than "
                            f"lanes.max_keys = {self._max_keys}",
                        ),
                    ),
                )
            self._lanes.put(key, routed)

    async def _route(self, delivery: Delivery) -> tuple[str, Delivery]:
        if delivery.problem is not None:
            return INVALID_LANE, delivery
        if delivery.event.stack_key:
            return delivery.event.stack_key, delivery  # the producer's (and Kafka's) key
        path: Path = delivery.event.path
        try:
            header = await self._retrier.call(
                INPUT_STORAGE,
                lambda: self._in_pool(read_primary_header, path, max_bytes=self._max_bytes),
            )
            return stack_key_of(header, self._stack_keys), delivery
        except InvalidInput as exc:
            problem = exc
        except OSError as exc:
            problem = InvalidInput("unreadable", f"{path.name}: {exc.strerror or exc}")
        except VerifyError as exc:  # a stack-key card astropy cannot parse
            problem = InvalidInput("invalid_header", f"{path.name}: {exc}")
        except Exception as exc:
            log.exception("cannot route %s", path.name)
            problem = InvalidInput("processing_error", f"{type(exc).__name__}: {exc}")
        return INVALID_LANE, dataclasses.replace(delivery, problem=problem)
