"""With ``logging.format: json`` every line of a real run is one JSON object, whoever logs."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import drop_fits, small_exposure
from tests.kafka.helpers import DaemonProcess, free_port, wait_sync

pytestmark = pytest.mark.slow
FOLDER = {"settle_seconds": 0.2, "check_interval_seconds": 0.05, "rescan_seconds": 1.0}


def records(log: Path) -> list[dict[str, Any]]:
    """Every line of the log, each parsed as one JSON object (a line that is not fails)."""
    lines = log.read_text().splitlines()
    assert lines
    parsed = []
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        parsed.append(record)
    return parsed


def test_a_run_with_the_brokers_down_logs_only_json_lines(tmp_path) -> None:
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    daemon = DaemonProcess(tmp_path, {
        "source": {"kind": "kafka", "kafka": {"bootstrap_servers": [down], "topic": "t",
                                              "group_id": "g", "allowed_roots": [str(tmp_path)]}},
        "output": {"directory": str(tmp_path / "products"), "product_topic": "p"},
        "state": {"directory": str(tmp_path / "state")},
        "logging": {"format": "json", "level": "INFO"},
    })  # fmt: skip
    daemon.start()
    try:
        # aiokafka's own logger and skystream's retry policy both complain, a few times.
        wait_sync(lambda: daemon.log.read_text().count('"logger": "aiokafka') >= 2
                  and daemon.log.read_text().count("retrying in") >= 2, 60,
                  "aiokafka and retry lines")  # fmt: skip
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    found = records(daemon.log)
    loggers = {record["logger"] for record in found}
    assert any(name.startswith("aiokafka") for name in loggers), loggers
    assert {"skystream.retry", "skystream.service"} <= loggers
    retry = [r for r in found if r["logger"] == "skystream.retry"]
    assert all("Kafka" in r["message"] for r in retry)


def test_exposure_lines_carry_their_fields(tmp_path) -> None:
    products = tmp_path / "products"
    inbox = tmp_path / "inbox"
    daemon = DaemonProcess(tmp_path, {
        "source": {"directory": {"path": str(inbox), "create": True, **FOLDER}},
        "output": {"directory": str(products), "fsync": False},
        "quarantine": {"directory": str(tmp_path / "quarantine")},
        "state": {"directory": str(tmp_path / "state")},
        "logging": {"format": "json", "level": "INFO"},
    })  # fmt: skip
    daemon.start()
    try:
        daemon.wait_log("watching")
        shutil.rmtree(products, ignore_errors=True)
        products.write_bytes(b"")  # the write fails and is retried: a retry line in context
        drop_fits(inbox, "ex1.fits", small_exposure(1))
        daemon.wait_log("retrying in")
        products.unlink()
        products.mkdir()
        (inbox / "junk.fits").write_bytes(b"junk" * 1000)
        daemon.wait_log("quarantined")
        daemon.wait_log("ex1_bsub.fits")
        assert daemon.terminate(signal.SIGTERM) == 0
    finally:
        daemon.kill()
    found = records(daemon.log)
    retry = [r for r in found if r["logger"] == "skystream.retry" and "products" in r["message"]]
    assert retry and all(r["exposure_id"] == "ex1" for r in retry)
    [done] = [r for r in found if r.get("outcome") == "complete"]
    assert done["exposure_id"] == "ex1" and done["stack_key"] == "SIMCAM/SIM1/J"
    assert {"read", "background", "subtract", "write"} <= done["durations"].keys()
    assert all(isinstance(seconds, float) for seconds in done["durations"].values())
    [bad] = [r for r in found if r.get("outcome") == "quarantined"]
    assert bad["exposure_id"] == "junk" and "stack_key" not in bad
