"""``skymatch.skymethod: user``: a mosaic group's levels come from the sky list, on real
folders: no WCS or overlap needed, the list re-read when it changes, unlisted members
SKIPPED, and with ``subtract`` new ``_skym`` products of exactly product - level."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from daemon.app.settings import ConfigError, merge_overrides
from daemon.fileio.fits_io import read_exposure
from daemon.skymatch.skylist import SkyList, parse_skylist
from processors import Exposure
from tests.conftest import drop_fits, running, test_settings, wait_until


def _tiles(count: int) -> list[Exposure]:
    """Tiles without any WCS: listed levels need none."""
    rng = np.random.default_rng(5)
    tiles = []
    for index in range(count):
        header = fits.Header()
        header["ASN_ID"] = "mosaic-u"
        header["SKYEND"] = index == count - 1
        sci = (100.0 + 10.0 * index + rng.normal(0.0, 2.0, (48, 40))).astype(np.float32)
        tiles.append(Exposure(sci, header=header))
    return tiles


def _settings(tmp_path: Path, skylist: Path):
    # The stack method without background frames passes the tiles through unsubtracted.
    return test_settings(
        tmp_path,
        background={"method": "stack", "stack": {"when_insufficient": "skip"}},
        skymatch={"enabled": True, "skymethod": "user", "skylist": str(skylist),
                  "subtract": True, "end_when": {"header": {"SKYEND": ["T"]}}},
    )  # fmt: skip


def _table(settings) -> dict:
    tables = list((settings.output.directory / "skymatch").glob("mosaic-u*.json"))
    return json.loads(tables[0].read_text()) if tables else {}


@pytest.mark.asyncio
async def test_listed_levels_become_the_group_levels_and_are_subtracted_exactly(
    tmp_path: Path,
) -> None:
    listed = {"u0": 101.25, "u1": 109.5, "u2": -3.75}
    skylist = tmp_path / "sky.lst"
    skylist.write_text(
        "# exposure  level\nu0 101.25\nu1.fits 109.5   # by file name\n\nu2 -3.75\n"
    )
    settings = _settings(tmp_path, skylist)
    inbox, out = settings.source.directory.path, settings.output.directory
    async with running(settings):
        for index, tile in enumerate(_tiles(3)):
            drop_fits(inbox, f"u{index}.fits", tile)
        await wait_until(lambda: _table(settings).get("closed") is True)
        await wait_until(lambda: len(list(out.glob("*_skym.json"))) == 3)
    table = _table(settings)
    assert table["method"] == "user"
    assert table["subtract"] is True
    assert {m["exposure_id"]: (m["level"], m["valid"]) for m in table["members"]} == {
        k: (v, True) for k, v in listed.items()
    }
    for exposure_id, level in listed.items():
        product = read_exposure(out / f"{exposure_id}_bsub.fits")
        matched = read_exposure(out / f"{exposure_id}_bsub_skym.fits")
        np.testing.assert_array_equal(matched.sci, product.sci - np.float32(level))
        assert matched.header["SKYMLVL"] == level
        assert matched.header["SKYMMETH"] == "user"
        assert matched.header["S_SKYMAT"] == "COMPLETE"
        event = json.loads((out / f"{exposure_id}_bsub_skym.json").read_text())
        assert event["skymatch"]["level"] == level
        assert event["skymatch"]["method"] == "user"


@pytest.mark.asyncio
async def test_an_unlisted_member_is_skipped_and_an_edited_list_is_read_again(
    tmp_path: Path, caplog
) -> None:
    skylist = tmp_path / "sky.lst"
    skylist.write_text("u0 5.0\n")
    settings = _settings(tmp_path, skylist)
    inbox, out = settings.source.directory.path, settings.output.directory
    tiles = _tiles(3)
    caplog.set_level(logging.WARNING, logger="skystream.skymatch")
    async with running(settings):
        drop_fits(inbox, "u0.fits", tiles[0])
        drop_fits(inbox, "u1.fits", tiles[1])
        await wait_until(lambda: len(_table(settings).get("members", [])) == 2)
        assert {m["exposure_id"]: m["valid"] for m in _table(settings)["members"]} == {
            "u0": True, "u1": False,
        }  # fmt: skip
        # The list gains u1 during the night (a new version: size and mtime change).
        skylist.write_text("u0 5.0\nu1 7.5\n")
        os.utime(skylist, ns=(skylist.stat().st_atime_ns, skylist.stat().st_mtime_ns + 10**9))
        drop_fits(inbox, "u2.fits", tiles[2])  # the end marker; never listed
        await wait_until(lambda: _table(settings).get("closed") is True)
        await wait_until(lambda: len(list(out.glob("*_skym.json"))) == 2)
    members = {m["exposure_id"]: (m["level"], m["valid"]) for m in _table(settings)["members"]}
    assert members == {"u0": (5.0, True), "u1": (7.5, True), "u2": (None, False)}
    assert sorted(p.name for p in out.glob("*_skym.fits")) == [
        "u0_bsub_skym.fits", "u1_bsub_skym.fits",
    ]  # fmt: skip
    missing = [r.getMessage() for r in caplog.records if "not in the sky list" in r.getMessage()]
    assert missing == [f"skymatch group mosaic-u: u2 is not in the sky list {skylist}: SKIPPED"]


def test_the_sky_list_format() -> None:
    assert parse_skylist("# id level\na.fits 1.5\n\n  b\t-2e1  # note\nc.FTS 3\n") == {
        "a": 1.5, "b": -20.0, "c": 3.0,
    }  # fmt: skip
    for text, problem in [
        ("a 1 2\n", "line 1: expected 'exposure level'"),
        ("# x\na nan\n", "line 2: the level 'nan' is not a finite number"),
        ("a one\n", "line 1: the level 'one' is not a finite number"),
        ("a 1\na.fits 2\n", "line 2: a is listed twice"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_skylist(text)


def test_user_needs_a_readable_list(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    with pytest.raises(ConfigError, match="skymethod user needs skylist"):
        merge_overrides(settings, {"skymatch": {"skymethod": "user"}})
    with pytest.raises(ConfigError, match=r"skymatch\.skylist: .*missing\.lst"):
        SkyList(tmp_path / "missing.lst")
    bad = tmp_path / "bad.lst"
    bad.write_text("a\n")
    with pytest.raises(ConfigError, match="line 1"):
        SkyList(bad)
