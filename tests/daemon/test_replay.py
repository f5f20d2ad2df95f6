"""Deterministic replay: a night cut short by kill -9 at random points gives the same products.

The same 60 exposures are processed twice by real ``skystream run`` processes: once as a
calm night (each file arrives while the daemon runs, in observation order), once found
as a backlog and killed with SIGKILL at random moments, restarted until every input is
finished. Every product must be bit-identical, and the set of products the same: a
backlog is taken in observation order, stacks are rebuilt from their members, and nothing
in a product depends on the wall clock.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.fileio.fits_io import write_exposure
from tests.conftest import small_exposure
from tests.daemon.processes import is_ready, start, stop, wait, write_config
from tests.kafka.helpers import free_port

pytestmark = pytest.mark.slow

COUNT = 60
KILLS = 5
#: Sidecar fields that legitimately differ between two runs (paths of the run's folders,
#: the time of processing and how long it took).
_RUN_FIELDS = {"input_uri", "product_uri", "background_uri", "produced_at", "timings"}

_STACK: dict[str, Any] = {
    "background": {
        "method": "stack",
        "stack": {
            "min_members": 2,
            "max_members": 4,
            "when_insufficient": "wait",
            "wait_seconds": 3600.0,  # never runs out here: waiting ends with a background
            "after_wait": "skip",
        },
    },
    "routing": {"background_when": {"header": {"OBSTYPE": ["SKY"]}}},
}
#: Ages evict members too (frames of one key are 180 s apart, its backgrounds 540 s):
#: whether a science frame waits must follow the members usable at its observation time,
#: not what happens to be in memory after a crash. The last frames of a key wait for a
#: background that never comes, and go on (skipped) after wait_seconds in both runs.
_AGED: dict[str, Any] = {
    **_STACK,
    "background": {
        "method": "stack",
        "stack": {**_STACK["background"]["stack"], "max_age_seconds": 600.0,
                  "wait_seconds": 10.0},
    },
}  # fmt: skip
_CONFIGS: dict[str, dict[str, Any]] = {"model": {}, "stack": _STACK, "stack-aged": _AGED}


def _night(folder: Path, method: str) -> list[str]:
    """60 exposures; for the stack method two stack keys (FILTER J and H) interleaved.

    Each key starts with a science frame that must wait for two backgrounds; then every
    third frame is a background. Names and mtimes are shuffled against the observation
    order (MJD-OBS grows with the index), so neither can stand in for it. Returns the
    names in observation order.
    """
    folder.mkdir(parents=True)
    rng = random.Random(11)
    codes = rng.sample(range(1000), COUNT)
    for index in rng.sample(range(COUNT), COUNT):
        exposure = small_exposure(index, size=64)
        if method.startswith("stack"):
            position = index // 2  # within its key
            exposure.header["FILTER"] = "J" if index % 2 == 0 else "H"
            if position % 3 == 1 or position == 2:
                exposure.header["OBSTYPE"] = "SKY"
        write_exposure(exposure, folder / f"e{codes[index]:03d}.fits", fsync=False)
    return [f"e{code:03d}.fits" for code in codes]


def _finished(state: Path) -> int:
    """Inputs the ledger records as finished (read-only, while the daemon writes)."""
    database = state / "ledger.sqlite"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM finished").fetchone()[0])
    except sqlite3.OperationalError:  # the table is being created
        return 0


def _wait_finished(proc: subprocess.Popen[str], state: Path, count: int) -> None:
    """Wait until the ledger holds ``count`` inputs; fail if the daemon exits first."""
    wait(lambda: _finished(state) >= count or proc.poll() is not None, 240,
         f"{count} inputs finished")  # fmt: skip
    assert proc.poll() is None, proc.communicate()[1]


def _arrive(night: Path, inbox: Path, names: list[str]) -> None:
    """Files arrive one by one in observation order, renamed into place as instruments do."""
    for name in names:
        hidden = inbox / f".{name}.part"
        shutil.copy2(night / name, hidden)
        os.replace(hidden, inbox / name)


def _run(
    base: Path, night: Path, method: str, *, kill_after: list[int], arrivals: list[str]
) -> dict[str, Any]:
    """Process ``night`` in ``base``: as ``arrivals`` (in that order, while running), or
    as a backlog killed once the ledger holds each ``kill_after`` count."""
    base.mkdir()
    port = free_port()
    config = write_config(base, {**_CONFIGS[method], "metrics": {"port": port}})
    state = base / ".skystream"
    if arrivals:
        (base / "inbox").mkdir()
    else:
        shutil.copytree(night, base / "inbox")  # copy2: the same mtimes in both runs
    rng = random.Random(f"{method}-{len(kill_after)}")
    for threshold in kill_after:
        proc = start(config, base)
        try:
            _wait_finished(proc, state, threshold)
            time.sleep(rng.uniform(0.0, 0.05))  # land anywhere in the next exposure's stages
        finally:
            stop(proc, signal.SIGKILL)
    proc = start(config, base)
    try:
        if arrivals:
            wait(lambda: is_ready(port) or proc.poll() is not None, 240, "a ready daemon")
            _arrive(night, base / "inbox", arrivals)
        _wait_finished(proc, state, COUNT)
    finally:
        stderr = stop(proc)
    assert proc.returncode == 0, stderr
    assert not any((base / "quarantine").iterdir()), stderr
    products = base / "products"
    assert not [p.name for p in products.iterdir() if p.name.startswith(".")]  # no temporaries
    result: dict[str, Any] = {}
    for path in sorted(products.iterdir()):
        if path.suffix == ".json":
            sidecar = json.loads(path.read_text())
            result[path.name] = {k: v for k, v in sidecar.items() if k not in _RUN_FIELDS}
        else:
            result[path.name] = path.read_bytes()
    return result


@pytest.mark.parametrize("method", ["model", "stack", "stack-aged"])
def test_kill_9_at_random_points_gives_bit_identical_products(tmp_path: Path, method: str) -> None:
    night = tmp_path / "night"
    observed = _night(night, method)
    calm = _run(tmp_path / "calm", night, method, kill_after=[], arrivals=observed)
    kills = sorted(random.Random(method).sample(range(1, COUNT - 1), KILLS))
    crashed = _run(tmp_path / "crashed", night, method, kill_after=kills, arrivals=[])

    science = 38 if method.startswith("stack") else COUNT
    assert sum(name.endswith("_bsub.fits") for name in calm) == science
    assert sorted(crashed) == sorted(calm)
    differing = sorted(name for name in calm if crashed[name] != calm[name])
    assert not differing, f"{len(differing)} product file(s) differ: {differing[:6]}"
    if method == "stack":
        sidecars = [calm[n] for n in calm if n.endswith(".json")]
        assert {s["stack_key"] for s in sidecars} == {"SIMCAM/SIM1/J", "SIMCAM/SIM1/H"}
        assert all(s["method"] == "stack" and s["status"] == "COMPLETE" for s in sidecars)
        assert all(len(s["inputs_used"]) >= 2 for s in sidecars)
