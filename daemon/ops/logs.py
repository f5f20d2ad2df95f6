r"""Logging set-up: one formatter for every logger, readable text lines or JSON lines.

Every record of the process goes through one handler on the root logger, whoever emits
it: skystream's own loggers, aiokafka, watchdog, asyncio, and Python warnings. With
``format: json`` each line is one JSON object; what a record is about travels as fields
(`FIELDS`: ``exposure_id``, ``stack_key``, ``stage``, ``outcome``, ``durations``), set for
a stretch of work with `log_context` (context variables, so concurrent lanes keep theirs
apart) or for one record with ``extra=``.

Log lines cannot be forged: a message is one line whatever it holds (a file name with a
newline, an escape sequence), because control characters are written as escapes
(``\n``, ``\x1b``, ``\u2028``) in text output and by JSON's own escaping in JSON output;
the lines of a traceback are indented under their record.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType, TracebackType
from typing import Any

from daemon.fileio.names import readable

__all__ = ["FIELDS", "configure_logging", "escape_controls", "log_context"]

#: Structured fields a record may carry (from `log_context` or ``extra=``).
FIELDS: tuple[str, ...] = ("exposure_id", "stack_key", "stage", "outcome", "durations")

_TRACEBACK_INDENT = "    "
_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "skystream_log_fields", default=_NO_FIELDS
)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` to every record logged inside the block (None values are dropped).

    Parameters
    ----------
    **fields
        Some of `FIELDS`, e.g. ``exposure_id="ex1", stack_key="F200W"``.
    """
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log fields: {sorted(unknown)}")
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's fields: the context's, overridden by its own ``extra=`` values."""
    found = dict(_context.get())
    for name in FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            found[name] = value
    return {name: value for name, value in found.items() if value is not None}


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    r"""``text`` with every non-printable character written as a Python escape.

    Parameters
    ----------
    text : str
        Any text, e.g. a message naming a file.
    keep_newlines : bool, optional
        Leave ``\n`` as it is (for tracebacks, whose lines are then indented).

    Returns
    -------
    str
        Printable text: a newline becomes the two characters ``\n``.
    """
    if text.isprintable():
        return text
    return "".join(
        c
        if c.isprintable() or (keep_newlines and c == "\n")
        else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def _indented(text: str) -> str:
    lines = escape_controls(text, keep_newlines=True).split("\n")
    return "\n".join(_TRACEBACK_INDENT + line for line in lines)


class _TextFormatter(logging.Formatter):
    """One line per message; traceback and stack lines indented beneath it."""

    def format(self, record: logging.LogRecord) -> str:
        # Another handler's formatter may have cached its own (unindented) traceback text.
        cached, record.exc_text = record.exc_text, None
        try:
            return super().format(record)
        finally:
            record.exc_text = cached

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: _ExcInfo | tuple[None, None, None]) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": readable(record.getMessage()),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a field or message argument of any type still makes one line.
        return json.dumps(entry, default=str)  # escapes control characters: one line


class _Handler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (as `logging.lastResort`).

    `configure_logging` finds it again by its type to replace it.
    """

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always sys.stderr


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send every logger's records to stderr as text (``fmt='text'``) or JSON lines.

    Installs one handler on the root logger (replacing the one an earlier call installed,
    leaving any other alone), so third-party loggers share the format, and routes Python
    warnings into the log.

    Parameters
    ----------
    level : str
        Threshold of every logger (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``).
    fmt : str
        ``text`` or ``json``.
    """
    handler = _Handler()
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        formatter = _TextFormatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
