"""sd_notify over a real unix datagram socket: ready, a watchdog fed by liveness, stopping."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.ops.conditions import Conditions
from daemon.ops.supervisor import Supervisor
from daemon.ops.systemd import SystemdNotifier, notify
from tests.daemon.processes import write_config

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "skystream.service"


@pytest.fixture
def notify_socket(tmp_path) -> Iterator[socket.socket]:
    """What systemd listens on: a unix datagram socket (its path is NOTIFY_SOCKET)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(30)
        yield sock


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notify_reaches_path_and_abstract_sockets(tmp_path, notify_socket) -> None:
    notify(str(tmp_path / "notify"), "READY=1\nSTATUS=x")
    assert received(notify_socket) == "READY=1\nSTATUS=x"
    name = f"skystream-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name)
        abstract.settimeout(30)
        notify("@" + name, "WATCHDOG=1")
        assert abstract.recv(64) == b"WATCHDOG=1"


def test_environment_decides_whether_and_how_often() -> None:
    assert SystemdNotifier.from_environment({}) is None
    plain = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "/run/x"})
    assert plain is not None and plain.watchdog_seconds is None
    fed = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "60000000"}
    )
    assert fed is not None and fed.watchdog_seconds == 60.0
    other = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}
    )
    assert other is not None and other.watchdog_seconds is None  # meant for another process


@pytest.mark.slow
def test_a_daemon_under_notify_is_ready_fed_and_says_stopping(tmp_path, notify_socket) -> None:
    (tmp_path / "inbox").mkdir()
    config = write_config(tmp_path, {"state": {"directory": str(tmp_path / "state")}})
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    command = [sys.executable, "-m", "daemon", "run", "--config", str(config)]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
    try:
        assert received(notify_socket) == "READY=1\nSTATUS=processing"
        for _ in range(3):
            assert received(notify_socket) == "WATCHDOG=1"
        proc.send_signal(signal.SIGTERM)
        while (message := received(notify_socket)) == "WATCHDOG=1":
            pass
        assert message == "STOPPING=1\nSTATUS=finishing in-flight exposures"
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.asyncio
async def test_the_watchdog_starves_while_a_task_is_stuck(tmp_path, notify_socket) -> None:
    supervisor = Supervisor(Conditions(), stall_seconds=0.3)
    release = asyncio.Event()

    def liveness() -> tuple[bool, list[str]]:
        stalled = supervisor.stalled()
        return not stalled, stalled

    async def stuck() -> None:
        with heartbeat.working():  # working, and never a beat, until released
            await release.wait()
        await asyncio.Event().wait()

    heartbeat = supervisor.spawn("stuck", stuck)
    notifier = SystemdNotifier(str(tmp_path / "notify"), watchdog_seconds=0.2)
    feeding = asyncio.create_task(notifier.feed_watchdog(liveness))
    notify_socket.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        assert await loop.sock_recv(notify_socket, 4096) == b"WATCHDOG=1"
        while (message := await loop.sock_recv(notify_socket, 4096)) == b"WATCHDOG=1":
            pass  # fed until the task has been silent for longer than its stall time
        assert message == b"STATUS=stuck: stuck: no progress for 0 s"
        release.set()
        assert await loop.sock_recv(notify_socket, 4096) == b"WATCHDOG=1\nSTATUS=processing"
    finally:
        feeding.cancel()
        await supervisor.stop()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_the_unit_file_is_valid_for_systemd(tmp_path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(UNIT)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    # Only the host-specific parts may be missing here: the user and the installed binary.
    problems = [line for line in result.stderr.splitlines()
                if "/opt/skystream/venv/bin/skystream" not in line and line.strip()]  # fmt: skip
    assert not problems, result.stderr
