"""Log lines cannot be forged: control characters in messages are escaped, in both formats."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.ops.logs import configure_logging

FORGED = "x.fits\n2024-01-01T00:00:00.000Z INFO    skystream.pipeline: forged\x1b[2K\u2028"
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger("skystream")
    saved = (root.handlers[:], root.level, root.propagate)
    warnings_handlers = logging.getLogger("py.warnings").handlers[:]
    yield
    root.handlers[:], root.level, root.propagate = saved
    logging.getLogger("py.warnings").handlers[:] = warnings_handlers
    logging.captureWarnings(False)


def _read(name: str) -> None:
    raise ValueError(f"cannot read {name}")


def _log_a_file_name_and_a_failure() -> None:
    log = logging.getLogger("skystream.test")
    log.info("quarantined %s", Path("/inbox") / FORGED)
    try:
        _read(FORGED)
    except ValueError:
        log.exception("failure for %s", FORGED)


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_cannot_be_forged(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    _log_a_file_name_and_a_failure()
    lines = capsys.readouterr().err.splitlines()
    records = [line for line in lines if RECORD_START.match(line)]
    assert len(records) == 2, lines
    escaped = "x.fits\\n2024-01-01T00:00:00.000Z INFO    skystream.pipeline: forged\\x1b[2K\\u2028"
    assert records[0].endswith(f"INFO    skystream.test: quarantined /inbox/{escaped}")
    assert records[1].endswith(f"ERROR   skystream.test: failure for {escaped}")
    traceback = lines[lines.index(records[1]) + 1 :]
    assert traceback[0] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in traceback)  # the forged line too
    assert any("    2024-01-01T00:00:00.000Z INFO    skystream.pipeline: forged" in line
               for line in traceback)  # fmt: skip
    assert all(line.isprintable() for line in lines)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_cannot_be_forged(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    _log_a_file_name_and_a_failure()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == f"quarantined /inbox/{FORGED}"
    assert second["message"] == f"failure for {FORGED}"
    assert second["exception"].endswith(f"ValueError: cannot read {FORGED}")
    assert all(line.isprintable() for line in lines)
