"""Real ``skystream run`` processes for tests: a config file, start, wait, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_config(folder: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A config file with test timings; relative folders resolve against ``folder``."""
    fast: dict[str, Any] = {
        "source": {
            "directory": {
                "settle_seconds": 0.2,
                "check_interval_seconds": 0.05,
                "rescan_seconds": 1.0,
                "incomplete_timeout_seconds": 2.0,
            }
        },
        "metrics": {"port": 0, "host": "127.0.0.1"},
        "background": {"box_size": 16},
        "output": {"fsync": False},
    }
    document = _merged(fast, overrides or {})
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    return config


def start(config: Path, cwd: Path) -> subprocess.Popen[str]:
    """Start ``skystream run --config config`` in ``cwd`` (stderr captured)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "daemon", "run", "--config", str(config)]
    return subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` (blocking) until true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout} s: {what}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> str:
    """Send ``signum``, wait for the exit and return stderr (killed if it hangs)."""
    try:
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return stderr


def is_ready(port: int) -> bool:
    """True when the daemon's ``/readyz`` on ``port`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False
