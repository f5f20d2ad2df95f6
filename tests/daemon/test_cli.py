"""The command line as users run it: process, simulate, config, demo, signals on run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from daemon.app.cli import main
from daemon.fileio.fits_io import check_fits_complete, read_exposure, write_exposure
from tests.conftest import drop_fits, small_exposure


def test_simulate_writes_exposures_with_truth(tmp_path: Path, capsys) -> None:
    assert main(["simulate", "--out", str(tmp_path), "--count", "2", "--size", "64"]) == 0
    files = sorted(tmp_path.glob("sim_*.fits"))
    assert [f.name for f in files] == ["sim_0000.fits", "sim_0001.fits"]
    exposure = read_exposure(files[1])
    assert exposure.header["TRUESKY"] > 0 and exposure.err is not None
    assert "sim_0001.fits" in capsys.readouterr().out


def test_process_batch_succeeds_and_reports(tmp_path: Path) -> None:
    inputs = []
    for index in range(2):
        path = tmp_path / f"in_{index}.fits"
        write_exposure(small_exposure(index, size=256), path)
        inputs.append(str(path))
    out = tmp_path / "out"
    assert main(["process", *inputs, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.fits")) == ["in_0_bsub.fits", "in_1_bsub.fits"]
    assert json.loads((out / "in_0_bsub.json").read_text())["status"] == "COMPLETE"


def test_process_exits_non_zero_when_an_input_fails_and_keeps_the_input(tmp_path: Path) -> None:
    good = tmp_path / "good.fits"
    write_exposure(small_exposure(size=256), good)
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"nope" * 100)
    out = tmp_path / "out"
    assert main(["process", str(good), str(bad), "--out", str(out)]) == 1
    assert (out / "good_bsub.fits").exists()
    record = json.loads((out / "quarantine" / "bad.fits.reason.json").read_text())
    assert record["reason"] == "not_fits" and record["moved"] is False
    assert bad.exists()  # batch mode never moves the user's files


def test_config_prints_the_effective_configuration(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKYSTREAM_METRICS__PORT", "9999")
    assert main(["config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["metrics"]["port"] == 9999
    assert printed["source"]["directory"]["path"] == str(tmp_path / "inbox")


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("output:\n  directroy: x\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "unknown key 'output.directroy'" in capsys.readouterr().err


def test_a_malformed_environment_variable_exits_2_naming_it(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKYSTREAM_ROUTING__STACK_KEY", "[INSTRUME, FILTER")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "environment variable SKYSTREAM_ROUTING__STACK_KEY" in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_watch_folder_is_a_start_up_error_naming_it(tmp_path: Path, capsys) -> None:
    misspelt = tmp_path / "inbx"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"source": {"directory": {"path": str(misspelt)}}, "metrics": {"enabled": False}}
        )
    )
    assert main(["run", "--config", str(config)]) == 2
    assert f"the watch folder {misspelt} does not exist" in capsys.readouterr().err
    assert not misspelt.exists()


def test_demo_processes_a_short_night(tmp_path: Path, capsys) -> None:
    from daemon.app.demo import run_demo

    assert run_demo(count=3, size=256, workdir=tmp_path, interval=0.05) == 0
    out = capsys.readouterr().out
    assert "3/3 products" in out
    assert "worst |recovered - true|" in out
    assert len(list((tmp_path / "products").glob("*_bsub.fits"))) == 3


def _wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout} s")
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_stream_leaves_no_partial_product_and_loses_nothing(
    tmp_path: Path, signum: int
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": {"directory": {"settle_seconds": 0.2, "check_interval_seconds": 0.05}},
                "metrics": {"port": 0, "host": "127.0.0.1"},
                "background": {"box_size": 32},
            }
        )
    )
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    count = 12
    for index in range(count):
        write_exposure(small_exposure(index, size=512), inbox / f"s_{index:02d}.fits")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "daemon", "run", "--config", str(config)]
    products = tmp_path / "products"

    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: len(list(products.glob("*_bsub.fits"))) >= 2, timeout=60)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "stop requested" in stderr
    finished = sorted(products.glob("*_bsub.fits"))
    assert len(finished) < count, "the signal came too late to test anything"
    for path in finished:
        assert check_fits_complete(path)[0] == "complete"
        assert read_exposure(path).shape == (512, 512)
    assert not list(products.glob(".*"))

    # Restart: what was not finished is processed, what was finished is not redone.
    stamps = {p.name: p.stat().st_mtime_ns for p in finished}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: len(list(products.glob("*_bsub.fits"))) == count, timeout=120)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    for name, stamp in stamps.items():
        assert (products / name).stat().st_mtime_ns == stamp


def test_a_busy_metrics_port_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"metrics": {"host": "127.0.0.1", "port": port}}))
        (tmp_path / "inbox").mkdir()
        result = subprocess.run(
            [sys.executable, "-m", "daemon", "run", "--config", str(config)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "set metrics.port to a free port" in result.stderr
    assert "Traceback" not in result.stderr


def _json_records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_sighup_reloads_the_log_settings_and_names_what_needs_a_restart(tmp_path: Path) -> None:
    def configure(level: str, fmt: str, port: int) -> None:
        config.write_text(
            yaml.safe_dump(
                {
                    # create: the missing inbox is made at start instead of refused.
                    "source": {"directory": {"create": True, "settle_seconds": 0.2,
                                             "check_interval_seconds": 0.05}},
                    "metrics": {"port": port, "host": "127.0.0.1"},
                    "background": {"box_size": 32},
                    "logging": {"level": level, "format": fmt},
                }
            )
        )  # fmt: skip

    config = tmp_path / "config.yaml"
    configure("INFO", "text", 0)
    log = tmp_path / "daemon.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "daemon", "run", "--config", str(config)]
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=stderr, text=True)
    try:
        _wait(lambda: "watching" in log.read_text(), timeout=120)
        assert (tmp_path / "inbox").is_dir()

        # An invalid file: one clear line, the running settings kept, the process alive.
        config.write_text("logging:\n  level: LOUD\n")
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: "configuration not reloaded" in log.read_text(), timeout=60)
        [refused] = [line for line in log.read_text().splitlines() if "not reloaded" in line]
        assert "key 'logging.level'" in refused and "ERROR" in refused
        assert "Traceback" not in log.read_text()
        assert proc.poll() is None

        # JSON lines from now on; the port change waits for a restart.
        configure("INFO", "json", 9)
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: any("reloaded" in r["message"] for r in _json_records(log)), timeout=60)
        assert "needs a restart: metrics.port" in log.read_text()
        [reloaded] = [r for r in _json_records(log) if "reloaded" in r["message"]]
        assert "logging.format text -> json" in reloaded["message"]
        drop_fits(tmp_path / "inbox", "a.fits", small_exposure(size=256))
        _wait(lambda: (tmp_path / "products" / "a_bsub.fits").exists(), timeout=60)
        assert proc.poll() is None

        # WARNING: the INFO lines of the stop are no longer written.
        configure("WARNING", "json", 10)
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: len([r for r in _json_records(log) if "needs a restart" in r["message"]])
              == 1, timeout=60)  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert "stop requested" not in log.read_text()  # INFO, and WARNING was in effect by then
