"""A background delivered again after a crash (absorbed and saved, not yet in the ledger)."""

from __future__ import annotations

from pathlib import Path

from daemon.app.settings import RollingSkySettings, StackSettings
from daemon.fileio.fits_io import read_exposure, write_exposure
from daemon.state.stacks import StackStore
from tests.conftest import small_exposure

KEY = "SIMCAM/SIM1/J"


def _store(state: Path) -> StackStore:
    return StackStore(state, StackSettings(max_members=3), RollingSkySettings(), fsync=False)


def test_a_redelivered_background_leaves_the_stack_as_it_was(tmp_path: Path) -> None:
    frames = []
    for index in range(4):
        path = tmp_path / f"b{index}.fits"
        write_exposure(small_exposure(index, size=32), path, fsync=False)
        frames.append(path)
    before = _store(tmp_path / "state")
    state = before.state(KEY)
    for index, path in enumerate(frames):  # b0 is evicted by b3: the stack is full
        before.add_member(state, path.stem, read_exposure(path), str(path), float(index))
    before.save_stack(state)
    expected = state.stack.combined() if state.stack else None
    assert expected is not None and state.stack is not None
    assert state.stack.member_ids == ["b1", "b2", "b3"]

    # A new process: the stack is rebuilt from the saved membership, then the last
    # background comes again because the crash came before its ledger write.
    after = _store(tmp_path / "state")
    assert after.restore() == []
    again = after.state(KEY)
    evicted = after.add_member(again, "b3", read_exposure(frames[3]), str(frames[3]), 3.0)
    assert evicted == []
    assert again.stack is not None and again.stack.member_ids == ["b1", "b2", "b3"]
    assert after.membership(again) == before.membership(state)
    combined = again.stack.combined()
    assert combined.sci.tobytes() == expected.sci.tobytes()
    assert combined.err is not None and expected.err is not None
    assert combined.err.tobytes() == expected.err.tobytes()
    assert combined.dq.tobytes() == expected.dq.tobytes()
