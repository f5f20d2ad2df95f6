"""systemd's notify protocol over a plain datagram socket: ready, watchdog, stopping.

Under a unit with ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (and, with
``WatchdogSec=``, ``WATCHDOG_USEC``); each message is one datagram of ``KEY=value`` lines
(``sd_notify(3)``). No library is needed, and outside systemd nothing is sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

__all__ = ["SystemdNotifier", "notify"]

log = logging.getLogger("skystream.systemd")


def notify(address: str, message: str) -> None:
    """Send one notification datagram to systemd's socket.

    Parameters
    ----------
    address : str
        ``NOTIFY_SOCKET``: a path, or ``@name`` for an abstract socket.
    message : str
        Newline-separated ``KEY=value`` assignments, e.g. ``"READY=1"``.

    Raises
    ------
    OSError
        The socket is not there or refuses the datagram.
    """
    target = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(message.encode("utf-8"), target)


class SystemdNotifier:
    """Tells systemd that the service is ready, feeds its watchdog while it lives, says stop.

    The watchdog is fed from the service's liveness (the supervisor's heartbeats, what
    ``/healthz`` answers): while a task is stuck or supervision gave up, no ``WATCHDOG=1``
    is sent and systemd restarts the service after ``WatchdogSec``; an event loop that
    stops turning stops feeding it too.

    Parameters
    ----------
    address : str
        ``NOTIFY_SOCKET``.
    watchdog_seconds : float or None
        ``WatchdogSec`` (from ``WATCHDOG_USEC``); None when the watchdog is off.
    """

    def __init__(self, address: str, watchdog_seconds: float | None) -> None:
        self.address = address
        self.watchdog_seconds = watchdog_seconds

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> SystemdNotifier | None:
        """The notifier systemd asks for, or None when not run by a ``Type=notify`` unit."""
        address = environ.get("NOTIFY_SOCKET")
        if not address:
            return None
        watchdog = None
        usec = environ.get("WATCHDOG_USEC", "")
        owner = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and owner in ("", str(os.getpid())):
            watchdog = int(usec) / 1e6
        return cls(address, watchdog)

    def send(self, message: str) -> None:
        """Send ``message``; a failure is logged, never raised (systemd decides what follows)."""
        try:
            notify(self.address, message)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address, exc)

    def ready(self) -> None:
        """The service takes work: systemd's start-up is complete."""
        self.send("READY=1\nSTATUS=processing")

    def stopping(self) -> None:
        """A stop began (in-flight exposures are finishing)."""
        self.send("STOPPING=1\nSTATUS=finishing in-flight exposures")

    async def feed_watchdog(self, liveness: Callable[[], tuple[bool, list[str]]]) -> None:
        """Send ``WATCHDOG=1`` every half period while ``liveness()`` says alive (forever).

        Parameters
        ----------
        liveness : callable
            ``(alive, reasons)``, as for ``/healthz``.
        """
        if self.watchdog_seconds is None:
            return
        starved = False
        while True:
            alive, reasons = liveness()
            if alive:
                self.send("WATCHDOG=1" + ("\nSTATUS=processing" if starved else ""))
            elif not starved:
                log.error("not feeding systemd's watchdog: %s", "; ".join(reasons))
                self.send("STATUS=stuck: " + "; ".join(reasons))
            starved = not alive
            await asyncio.sleep(self.watchdog_seconds / 2)
