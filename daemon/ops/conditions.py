"""Conditions that hold right now (disk full, a task restarting), named in ``/readyz``."""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["Condition", "Conditions"]


@dataclass(frozen=True)
class Condition:
    """One thing that keeps the service from being ready.

    Attributes
    ----------
    text : str
        What holds, for people.
    since : float
        ``time.time()`` when it began.
    """

    text: str
    since: float

    def describe(self) -> str:
        """``"<text> since <UTC time>"``."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))
        return f"{self.text} since {stamp}"


class Conditions:
    """The current conditions by name; setting one again keeps its start time."""

    def __init__(self) -> None:
        self._held: dict[str, Condition] = {}

    def set(self, name: str, text: str) -> bool:
        """Record that ``name`` holds with ``text``; True if it was not holding before."""
        previous = self._held.get(name)
        self._held[name] = Condition(text, previous.since if previous else time.time())
        return previous is None

    def clear(self, name: str) -> bool:
        """Record that ``name`` no longer holds; True if it was holding."""
        return self._held.pop(name, None) is not None

    def describe(self) -> list[str]:
        """Every holding condition, oldest first."""
        held = sorted(self._held.values(), key=lambda c: c.since)
        return [condition.describe() for condition in held]

    def __contains__(self, name: str) -> bool:
        return name in self._held
