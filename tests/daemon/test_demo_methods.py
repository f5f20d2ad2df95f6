"""``skystream demo --method M --passes P``: every background method run on a simulated night,
each product's recovered sky compared with the simulation's truth."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from daemon.app.cli import main
from daemon.app.demo_inputs import REFERENCE_LEVEL, STACK_SKY

COUNT = 4
SIZE = 256  # the default 64-pixel boxes: the 4-pixel reference border excludes all at 128


def _run(tmp_path: Path, method: str, passes: int, capsys) -> tuple[str, list[fits.Header]]:
    argv = ["demo", "--count", str(COUNT), "--size", str(SIZE), "--workdir", str(tmp_path),
            "--method", method, "--passes", str(passes)]  # fmt: skip
    assert main(argv) == 0
    products = sorted((tmp_path / "products").glob("night_*_bsub.fits"))
    assert [p.name for p in products] == [f"night_{i:04d}_bsub.fits" for i in range(COUNT)]
    return capsys.readouterr().out, [fits.getheader(p, 0) for p in products]


@pytest.mark.parametrize(
    ("method", "passes"),
    [("model", 1), ("model", 2), ("stack", 1), ("rolling-sky", 2), ("reference", 1)],
)
def test_each_method_recovers_the_true_sky(
    tmp_path: Path, capsys, monkeypatch, method: str, passes: int
) -> None:
    monkeypatch.chdir(tmp_path)
    out, headers = _run(tmp_path, method, passes, capsys)
    assert f"(method {method}, {passes} pass" in out
    for header in headers:
        assert header["S_BKDSUB"] == "COMPLETE"
        # Within a tenth of the per-pixel sky noise (about 1.4 DN/s on ~300).
        assert abs(header["BKGLEVEL"] - header["TRUESKY"]) < 0.1 * header["TRUENOIS"]
    methods = [h["BKGMETH"] for h in headers]
    sidecars = [
        json.loads(p.read_text()) for p in sorted((tmp_path / "products").glob("night_*.json"))
    ]
    if method == "rolling-sky":  # the first frames have too few others (min_members 2)
        assert methods == ["model", "model", "rolling-sky", "rolling-sky"]
    else:
        assert methods == [method] * COUNT
    if method in ("model", "rolling-sky"):
        assert {s["background_params"].get("passes", 1) for s in sidecars} == {passes}
    if method == "stack":
        # Three star-free sky frames of the same constant sky were stacked first.
        assert [h["TRUESKY"] for h in headers] == [STACK_SKY] * COUNT
        assert [s["background_params"]["members"] for s in sidecars] == [3] * COUNT
        assert sorted(s["inputs_used"] for s in sidecars)[0] == ["sky_0000", "sky_0001",
                                                                 "sky_0002"]  # fmt: skip
    if method == "reference":
        # The fitted factor scales the flat reference to each frame's drifting sky.
        truth = np.array([h["TRUESKY"] for h in headers]) / REFERENCE_LEVEL
        np.testing.assert_allclose([h["BKGD_SCL"] for h in headers], truth, rtol=2e-3)
        assert len(set(np.round(truth, 3))) == COUNT  # the sky did drift
        assert {h["MASTERBG"] for h in headers} == {"sky_reference.fits"}
    rows = re.findall(r"^night_\d{4} +(\S+) +[0-9.]+ +[0-9.]+ ", out, re.MULTILINE)
    assert rows == methods  # the summary table names each product's method


def test_an_unknown_method_is_refused_by_the_command_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--method", "median"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'median'" in capsys.readouterr().err
