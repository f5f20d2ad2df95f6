"""A real daemon fed the hostile corpus, interleaved with valid exposures, on a real folder.

Every valid exposure gets its product; every corpus file ends with a product or in
quarantine with a structural or content reason (never ``processing_error``); the daemon
stays ready.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import (
    drop_fits,
    metric,
    running,
    small_exposure,
    test_settings,
    wait_until,
)
from tests.daemon.fits_corpus import Case, corpus

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

STRUCTURAL = {"not_fits", "invalid_header", "too_large", "truncated"}
CONTENT = {"no_image_data", "wrong_shape", "shape_mismatch", "no_valid_pixels"}
VALID_EVERY = 10  # one valid exposure after every ten corpus files


def _drop(folder: Path, index: int, case: Case) -> Path:
    """Write a corpus file the way instruments do: a hidden name, then a rename."""
    hidden = folder / f".part-{index}"
    hidden.write_bytes(case.data)
    target = folder / case.name
    os.replace(hidden, target)
    return target


def _allowed(case: Case, patterns: list[str]) -> set[str]:
    """Outcomes a corpus file may have: ``product``, a quarantine reason, or ``ignored``."""
    if not any(fnmatch.fnmatchcase(case.name, pattern) for pattern in patterns):
        return {"ignored"}  # not an exposure by its name (x.FTS), so never touched
    if case.valid:
        return {"product"}
    allowed: set[str] = set()
    for verdict in case.verdicts:
        if verdict == "complete":
            allowed |= {"product", "invalid_header"} | CONTENT
        elif verdict == "incomplete":
            allowed.add("truncated")
        else:
            allowed.add(verdict)
    return allowed


def _products(folder: Path) -> set[str]:
    """Inputs that have a product, from the products' sidecars."""
    sidecars = (p.with_suffix(".json") for p in folder.glob("*_bsub.fits"))
    return {json.loads(sidecar.read_text())["input_uri"] for sidecar in sidecars}


def _quarantined(folder: Path) -> dict[str, str]:
    """Original path -> reason, from the quarantine's reason files."""
    records = (json.loads(p.read_text()) for p in folder.glob("*.reason.json"))
    return {record["original_path"]: record["reason"] for record in records}


# Astropy's complaints about the mutated headers are logged by the daemon, as in service.
@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyWarning")
async def test_daemon_fed_the_corpus_keeps_every_valid_exposure_and_stays_ready(
    tmp_path: Path,
) -> None:
    settings = test_settings(tmp_path, background={"box_size": 8})
    inbox = settings.source.directory.path
    output = settings.output.directory
    patterns = settings.source.directory.patterns
    cases = corpus(count=320, seed=7)
    expected: dict[Path, set[str]] = {}
    valid: list[Path] = []
    async with running(settings) as service:
        for index, case in enumerate(cases):
            expected[_drop(inbox, index, case)] = _allowed(case, patterns)
            if index % VALID_EVERY == 0:
                name = f"valid-{index:04d}.fits"
                valid.append(drop_fits(inbox, name, small_exposure(index, size=32)))
        os.mkfifo(inbox / "pipe.fits")
        expected[inbox / "pipe.fits"] = {"not_a_file"}
        total = sum("ignored" not in allowed for allowed in expected.values()) + len(valid)

        def settled() -> bool:
            outcomes = ("complete", "skipped", "quarantined")
            done = sum(metric(service, "skystream_exposures_processed_total", {"outcome": o})
                       for o in outcomes)  # fmt: skip
            return done >= total

        await wait_until(settled, timeout=240)
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{service.health.port}/readyz"
            async with http.get(url) as response:
                ready = (response.status, await response.json())
        assert metric(service, "skystream_exposures_quarantined_total",
                      {"reason": "processing_error"}) == 0  # fmt: skip
    assert ready == (200, {"ready": True, "reasons": []})
    made = _products(output)
    for path in valid:
        assert str(path) in made, path.name
    reasons = _quarantined(settings.quarantine.directory)
    for path, allowed in expected.items():
        outcome = "product" if str(path) in made else reasons.get(str(path), "ignored")
        assert outcome in allowed, f"{path.name!r}: {outcome}, expected one of {allowed}"
    assert set(reasons.values()) <= STRUCTURAL | CONTENT | {"not_a_file"}
    assert {"product", "ignored"} | STRUCTURAL <= {
        "product" if str(path) in made else reasons.get(str(path), "ignored") for path in expected
    }  # every kind of outcome occurred: none of the checks above was vacuous
