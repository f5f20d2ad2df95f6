"""Fuzz the structural check and the read path with a seeded corpus of hostile files.

Each case runs in a worker thread that must return within `HANG_SECONDS`: a hang
detector (the crafted header that once looped forever), not a speed assertion.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import InvalidInput
from daemon.events import ExposureEvent
from daemon.fileio.fits_io import check_fits_complete, read_exposure
from tests.daemon.fits_corpus import corpus

HANG_SECONDS = 2.0
#: Verdicts of the walk that are refusals: the read path must give the same reason.
REFUSED = {"not_fits", "invalid_header", "too_large"}
#: What reading a structurally complete file may still find wrong with its content.
CONTENT_REASONS = {"no_image_data", "wrong_shape", "shape_mismatch", "no_valid_pixels"}


def _bounded(call: Callable[[], Any], what: str) -> Any:
    """``call()`` in a worker thread; fail if it has not returned within HANG_SECONDS."""
    outcome: list[Any] = []

    def work() -> None:
        try:
            outcome.append(("value", call()))
        except BaseException as exc:  # handed back to the test thread
            outcome.append(("raised", exc))

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(HANG_SECONDS)
    if worker.is_alive():
        pytest.fail(f"{what}: no answer within {HANG_SECONDS} s (hang)")
    kind, value = outcome[0]
    if kind == "raised":
        raise value
    return value


def _read_outcome(path: Path) -> str:
    try:
        read_exposure(path)
    except InvalidInput as exc:
        return exc.reason
    return "ok"


CORPUS = corpus(count=320, seed=2024)


def test_the_corpus_is_big_and_varied() -> None:
    assert len(CORPUS) >= 300
    hostile = [case for case in CORPUS if not case.valid]
    assert len(hostile) >= 300
    assert sum(case.valid for case in CORPUS) >= 5
    kinds = Counter(case.what.split(": ", 1)[-1].split(" ")[0] for case in hostile)
    assert len(kinds) >= 10, kinds


# Astropy's complaints about mutated headers are logged by the daemon; here they must not
# turn into errors (the suite's filter), since the read path's answer is what is tested.
@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyWarning")
def test_no_crash_no_hang_and_a_structural_reason_for_every_case(tmp_path: Path) -> None:
    verdicts: Counter[str] = Counter()
    for case in CORPUS:
        path = tmp_path / case.name
        path.write_bytes(case.data)
        state, detail = _bounded(lambda p=path: check_fits_complete(p), case.name)
        verdicts[state] += 1
        label = f"{case.name!r} ({case.what}): {state}, {detail}"
        assert state in case.verdicts, label
        assert detail.isprintable(), label
        outcome = _bounded(lambda p=path: _read_outcome(p), case.name)
        if case.valid:
            assert outcome == "ok", label
        elif state in REFUSED:
            assert outcome == state, label
        elif state == "incomplete":
            assert outcome == "truncated", label
        else:  # complete: the content may still be wrong, or astropy may refuse the header
            assert outcome in {"ok", "invalid_header"} | CONTENT_REASONS, f"{label} -> {outcome}"
        event = ExposureEvent.for_file(path)  # odd names still make valid exposure ids
        assert event.exposure_id.isprintable() and not event.exposure_id.startswith(".")
        path.unlink()
    # Every verdict occurs, so none of the assertions above was vacuous.
    assert set(verdicts) == {"complete", "incomplete", "not_fits", "invalid_header", "too_large"}
