"""One owner per state folder: a second daemon on the same folder exits 2 naming the holder."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from daemon.state.lock import LOCK_NAME, StateFolderBusy, StateFolderLock
from tests.conftest import drop_fits, small_exposure
from tests.daemon.processes import start, stop, wait, write_config


def test_second_lock_on_one_folder_is_refused_until_the_first_is_released(
    tmp_path: Path,
) -> None:
    first = StateFolderLock(tmp_path)
    first.acquire()
    first.acquire()  # idempotent
    with pytest.raises(StateFolderBusy, match=r"in use by another skystream \(pid \d+ on "):
        StateFolderLock(tmp_path).acquire()
    first.release()
    first.release()
    with StateFolderLock(tmp_path) as second:
        assert second.path.read_text().startswith("pid ")


@pytest.mark.slow
def test_second_daemon_on_one_state_folder_exits_2_naming_the_holder(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        (folder / "inbox").mkdir(parents=True)
    state = tmp_path / "state"
    config_one = write_config(one, {"state": {"directory": str(state)}})
    config_two = write_config(two, {"state": {"directory": str(state)}})
    drop_fits(one / "inbox", "a.fits", small_exposure(0))
    drop_fits(two / "inbox", "b.fits", small_exposure(1))

    holder = start(config_one, one)
    try:
        wait(lambda: (one / "products" / "a_bsub.fits").exists(), 120, "first daemon's product")
        assert (state / LOCK_NAME).read_text().startswith(f"pid {holder.pid} on ")

        second = start(config_two, two)
        _, stderr = second.communicate(timeout=120)
        assert second.returncode == 2, stderr
        assert f"state folder {state} is in use by another skystream (pid {holder.pid} on" in (
            stderr
        )
        assert "Traceback" not in stderr
        assert not (two / "products" / "b_bsub.fits").exists()
    finally:
        stop(holder, signal.SIGKILL)

    # The kernel released the killed holder's lock: the second daemon now starts and works.
    second = start(config_two, two)
    try:
        wait(lambda: (two / "products" / "b_bsub.fits").exists(), 120, "second daemon's product")
        assert (state / LOCK_NAME).read_text().startswith(f"pid {second.pid} on ")
    finally:
        assert "Traceback" not in stop(second)
    assert second.returncode == 0
