"""Progress of long runs as a person sees it: a bar on a terminal, plain lines in a pipe,
every quicklook of a batch written before it exits, and the demo's HTML report."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import yaml
from PIL import Image

from daemon.app.cli import main
from daemon.fileio.fits_io import write_exposure
from tests.conftest import small_exposure

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\[(\d+)/(\d+)\] (\S+) (\w+) · [0-9.]+ exposure/s · (\d+:\d\d) left$")


def _inputs(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"in_{index}.fits"
        write_exposure(small_exposure(index, size=256), path, fsync=False)
        paths.append(str(path))
    return paths


def test_process_prints_a_line_per_input_when_not_on_a_terminal(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # its state folder
    inputs = _inputs(tmp_path / "in", 3)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"output": {"quicklook": True}}))
    out = tmp_path / "out"
    assert main(["process", *inputs, "--out", str(out), "--config", str(config)]) == 0
    lines = [m for line in capsys.readouterr().err.splitlines() if (m := LINE.match(line))]
    assert [(m[1], m[2], m[4]) for m in lines] == [
        ("1", "3", "complete"), ("2", "3", "complete"), ("3", "3", "complete"),
    ]  # fmt: skip
    assert sorted(m[3] for m in lines) == ["in_0.fits", "in_1.fits", "in_2.fits"]
    assert lines[-1][5] == "0:00"  # nothing left
    # The batch ends only once every quicklook is drawn.
    pictures = sorted(out.glob("*_bsub.png"))
    assert [p.name for p in pictures] == ["in_0_bsub.png", "in_1_bsub.png", "in_2_bsub.png"]
    with Image.open(pictures[0]) as picture:
        assert picture.text["exposure_id"] == "in_0"


def test_process_shows_a_bar_on_a_terminal(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in", 2)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}
    command = [sys.executable, "-m", "daemon", "process", *inputs, "--out", str(tmp_path / "out")]
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=terminal, env=env, cwd=tmp_path) as proc:  # fmt: skip
        os.close(terminal)
        screen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            screen += chunk
        assert proc.wait(timeout=120) == 0
    os.close(controller)
    raw = screen.decode(errors="replace")
    assert "\x1b[" in raw  # drawn in place with terminal controls, not a line per update
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    bar = r"━+ 2/2 100% [0-9.]+ exposure/s \d:\d\d:\d\d elapsed 0:00:00 left  in_\d\.fits complete"
    assert re.search(bar, text), text
    assert not [line for line in text.splitlines() if LINE.match(line.strip())]  # no plain lines
    assert "2 processed, 0 failed" in text


def test_demo_writes_an_html_report_with_the_plot_and_the_quicklooks(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    from daemon.app.demo import run_demo

    assert run_demo(count=3, size=256, workdir=tmp_path, interval=0.05) == 0
    out = capsys.readouterr().out
    report = tmp_path / "report.html"
    assert f"report: {report.as_uri()}" in out
    assert re.findall(r"^\[(\d)/3\] night_000\d level", out, re.MULTILINE) == ["1", "2", "3"]
    page = report.read_text()
    plot = page[page.index('id="recovered-vs-true"') :]
    assert plot.count('<circle class="point"') == 3
    pictures = re.findall(r'<img src="([^"]+)"', page)
    assert pictures == [f"products/night_000{i}_bsub.png" for i in range(3)]
    for name in pictures:
        with Image.open(tmp_path / name) as picture:
            assert picture.format == "PNG"
