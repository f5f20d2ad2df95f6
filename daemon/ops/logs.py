r"""Logging set-up: readable text lines or JSON lines, warnings routed into the log.

Log lines cannot be forged: a message is one line whatever it holds (a file name with a
newline, an escape sequence), because control characters are written as escapes
(``\n``, ``\x1b``, ``\u2028``) in text output and by JSON's own escaping in JSON output;
the lines of a traceback are indented under their record.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from types import TracebackType

__all__ = ["configure_logging", "escape_controls"]

_TRACEBACK_INDENT = "    "
_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


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

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: _ExcInfo | tuple[None, None, None]) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)  # escapes control characters: one record, one line


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send skystream's logs to stderr as text (``fmt='text'``) or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        formatter = _TextFormatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger("skystream")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers[:] = [handler]
