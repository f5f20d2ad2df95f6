"""Error taxonomy: what happens to an exposure is decided by the class of its error."""

from __future__ import annotations

import errno
import sqlite3
from typing import Literal, get_args

from aiokafka.errors import KafkaConnectionError, KafkaError

__all__ = [
    "INPUT_STORAGE",
    "QUARANTINE_REASONS",
    "Fatal",
    "InputChanged",
    "InvalidInput",
    "Retriable",
    "input_read_error",
    "is_input_hiccup",
    "retriable_cause",
]

#: Bounded set of quarantine reasons (metric label values).
QuarantineReason = Literal[
    "truncated",
    "not_fits",
    "invalid_header",
    "too_large",
    "no_image_data",
    "wrong_shape",
    "shape_mismatch",
    "no_valid_pixels",
    "corrupt_data",
    "unreadable",
    "stack_mismatch",
    "malformed_event",
    "oversized_event",
    "outside_roots",
    "not_a_file",
    "name_collision",
    "too_many_keys",
    "reference_missing",
    "reference_ambiguous",
    "reference_mismatch",
    "processing_error",
]
QUARANTINE_REASONS: tuple[str, ...] = get_args(QuarantineReason)


class InvalidInput(Exception):
    """An exposure that can never be processed: quarantine it with the reason, go on.

    Parameters
    ----------
    reason : str
        One of `QUARANTINE_REASONS`.
    detail : str
        Human-readable explanation.
    """

    def __init__(self, reason: QuarantineReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: QuarantineReason = reason
        self.detail = detail


class InputChanged(InvalidInput):
    """The input changed after its source took it: it shrank, is being rewritten, or is gone.

    A source that watches its files (a folder) takes such an input back and waits for it
    to settle again, instead of refusing it; for the others (a Kafka claim check) it is the
    `InvalidInput` it names (``truncated``, ``unreadable``).
    """


class Fatal(Exception):
    """Configuration or programming error: stop cleanly with a non-zero exit."""


class Retriable(Exception):
    """The world is briefly wrong (disk full, folder gone, database busy, brokers down).

    Nothing is acknowledged; the operation is retried with backoff and ``/readyz`` names
    the condition until it clears.

    Parameters
    ----------
    condition : str
        What is wrong, for people: ``"products folder: No space left on device (ENOSPC)"``.
    """

    def __init__(self, condition: str) -> None:
        super().__init__(condition)
        self.condition = condition


#: The retry condition of reading inputs.
INPUT_STORAGE = "input storage"
#: OS errors reading an input that clear by themselves (a network file system's hiccup,
#: this process briefly out of descriptors or memory).
_INPUT_HICCUPS = frozenset(
    {errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.EBUSY, errno.EMFILE,
     errno.ENFILE, errno.ENOMEM}
)  # fmt: skip


def is_input_hiccup(exc: OSError) -> bool:
    """Whether an OS error reading an input is the storage's, to wait out (not the input's)."""
    return exc.errno in _INPUT_HICCUPS


def input_read_error(name: str, exc: OSError) -> Retriable | InvalidInput:
    """What an OS error reading the input ``name`` means.

    A storage hiccup is `Retriable` (condition `INPUT_STORAGE`: the read is tried again,
    the input never quarantined for it); a file gone is `InputChanged`; anything else
    makes the input ``unreadable``.
    """
    if is_input_hiccup(exc):
        return Retriable(f"{INPUT_STORAGE}: {exc.strerror or exc} reading {name}")
    if exc.errno == errno.ENOENT:
        return InputChanged("unreadable", f"{name}: no longer exists")
    return InvalidInput("unreadable", f"{name}: {exc.strerror or exc}")


#: OS errors an operator or the system can clear; anything else will fail again.
_RETRIABLE_ERRNOS = frozenset(
    {
        errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT,
        errno.ENOTDIR, errno.EEXIST, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ESTALE,
        errno.ETIMEDOUT, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EINTR,
    }
)  # fmt: skip
#: SQLite's transient failures, recognised by their (stable) messages.
_SQLITE_TRANSIENT = ("locked", "busy", "full", "disk i/o", "unable to open", "readonly")


def retriable_cause(exc: BaseException) -> str | None:
    """What is briefly wrong when ``exc`` is worth retrying, else None.

    Classifies the errors of every output edge (files, SQLite, Kafka): a full or
    unwritable folder, a busy or full database and unreachable brokers are retriable; an
    error that would repeat forever (a bad argument, a name too long) is not.
    """
    if isinstance(exc, Retriable):
        return exc.condition
    if isinstance(exc, OSError) and exc.errno in _RETRIABLE_ERRNOS:
        return f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if any(word in text.lower() for word in _SQLITE_TRANSIENT):
            return f"SQLite: {text}"
    if isinstance(exc, KafkaError) and (
        isinstance(exc, KafkaConnectionError) or getattr(exc, "retriable", False)
    ):
        return f"Kafka: {type(exc).__name__} {exc}".strip()
    return None
