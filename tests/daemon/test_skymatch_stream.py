"""Streaming skymatch in the daemon: provisional tables, closing, restart, batch equality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from daemon.fileio.fits_io import read_exposure
from processors import Exposure, skymatch
from tests.conftest import drop_fits, running, test_settings, wait_until

pytestmark = pytest.mark.asyncio

OFFSETS = [0.0, 2.0, -1.0, 3.0]
CORNERS = [(0, 0), (0, 300), (150, 150), (200, 500)]


def _tiles(spitzer_path: Path) -> list[Exposure]:
    with fits.open(spitzer_path) as hdul:
        data = hdul[0].data.astype(np.float32)
        wcs = WCS(hdul[0].header)
    tiles = []
    for index, ((y0, x0), offset) in enumerate(zip(CORNERS, OFFSETS, strict=True)):
        tile_wcs = wcs.deepcopy()
        tile_wcs.wcs.crpix = tile_wcs.wcs.crpix - np.array([x0, y0])
        header = fits.Header()
        header["ASN_ID"] = "mosaic-1"
        header["SKYEND"] = index == len(CORNERS) - 1
        cut = data[y0 : y0 + 300, x0 : x0 + 325] + np.float32(offset)
        tiles.append(Exposure(cut, header=header, wcs=tile_wcs))
    return tiles


def _settings(tmp_path: Path, **skymatch):
    # The stack method with no background frames passes exposures through unsubtracted,
    # so the tiles keep their offsets for skymatch to find.
    return test_settings(
        tmp_path,
        background={"method": "stack", "stack": {"when_insufficient": "skip"}},
        skymatch={"enabled": True, "skystat": "median", "nclip": 3, "lsigma": 3,
                  "usigma": 3, "end_when": {"header": {"SKYEND": ["T"]}}, **skymatch},
    )  # fmt: skip


def _table(settings) -> dict:
    tables = list((settings.output.directory / "skymatch").glob("*.json"))
    return json.loads(tables[0].read_text()) if tables else {}


async def test_group_is_matched_as_it_arrives_and_closed_by_its_end_marker(
    tmp_path, spitzer_path
) -> None:
    settings = _settings(tmp_path)
    inbox, out = settings.source.directory.path, settings.output.directory
    tiles = _tiles(spitzer_path)
    async with running(settings):
        for index, tile in enumerate(tiles):
            drop_fits(inbox, f"t{index}.fits", tile)
            await wait_until(lambda n=index: _table(settings).get("revision", 0) >= n + 1)
            if index < len(tiles) - 1:
                assert _table(settings)["closed"] is False
                assert len(_table(settings)["members"]) == index + 1
        await wait_until(lambda: _table(settings).get("closed") is True)
    table = _table(settings)
    levels = np.array([m["level"] for m in table["members"]])
    noise = float(np.nanstd(tiles[0].sci[150:250, 100:200]))
    assert np.abs((levels - levels[0]) - np.array(OFFSETS)).max() < 0.1 * noise

    products = [read_exposure(out / f"t{i}_bsub.fits") for i in range(len(tiles))]
    for product in products:
        # An announced product never changes: without subtract the levels live only in
        # the group table (and the SkyMatchEvent), and no matched product is written.
        assert "S_SKYMAT" not in product.header
        assert product.header["S_BKDSUB"] == "SKIPPED"
    assert not list(out.glob("*_skym.*"))
    batch = skymatch(products, skymethod="match", skystat="median", nclip=3, lsigma=3,
                     usigma=3)  # fmt: skip
    np.testing.assert_allclose(levels, batch.levels, atol=1e-6)
    assert json.loads((out / "t2_bsub.json").read_text())["skymatch"] is None
    assert not list((settings.state.directory / "skymatch").glob("*.json"))


async def test_restart_mid_group_continues(tmp_path, spitzer_path) -> None:
    settings = _settings(tmp_path)
    inbox = settings.source.directory.path
    tiles = _tiles(spitzer_path)
    async with running(settings):
        for index in range(2):
            drop_fits(inbox, f"r{index}.fits", tiles[index])
            await wait_until(lambda n=index: _table(settings).get("revision", 0) >= n + 1)
    assert list((settings.state.directory / "skymatch").glob("*.json"))
    async with running(settings):
        for index in range(2, len(tiles)):
            drop_fits(inbox, f"r{index}.fits", tiles[index])
        await wait_until(lambda: _table(settings).get("closed") is True)
    levels = np.array([m["level"] for m in _table(settings)["members"]])
    assert [m["exposure_id"] for m in _table(settings)["members"]] == ["r0", "r1", "r2", "r3"]
    noise = float(np.nanstd(tiles[0].sci[150:250, 100:200]))
    assert np.abs((levels - levels[0]) - np.array(OFFSETS)).max() < 0.1 * noise


async def test_idle_group_closes_into_new_matched_products_and_announced_ones_never_change(
    tmp_path, spitzer_path
) -> None:
    settings = _settings(tmp_path, subtract=True, close_after_seconds=1.5, match_down=True)
    inbox, out = settings.source.directory.path, settings.output.directory
    tiles = _tiles(spitzer_path)[:2]
    tiles[1].header["SKYEND"] = False
    announced: dict[str, bytes] = {}
    async with running(settings):
        for index, tile in enumerate(tiles):
            drop_fits(inbox, f"i{index}.fits", tile)
            await wait_until(lambda n=index: _table(settings).get("revision", 0) >= n + 1)
            # Announced (its event and sidecar are out) and the group still open.
            assert _table(settings)["closed"] is False
            for name in (f"i{index}_bsub.fits", f"i{index}_bsub.json"):
                announced[name] = (out / name).read_bytes()
        await wait_until(lambda: _table(settings).get("closed") is True, timeout=20)
    for name, content in announced.items():
        assert (out / name).read_bytes() == content, f"{name} changed after its announcement"
    levels = [m["level"] for m in _table(settings)["members"]]
    assert min(levels) == pytest.approx(0.0, abs=1e-9)  # match_down: the lowest is 0
    assert levels[1] > 1.0  # tile 1 is 2.0 above tile 0: the rewrite would have shown
    matched = read_exposure(out / "i1_bsub_skym.fits")
    assert matched.header["S_SKYMAT"] == "COMPLETE"
    assert matched.header["SKYMSUB"] is True
    assert matched.header["SKYMLVL"] == pytest.approx(levels[1])
    np.testing.assert_allclose(matched.sci, tiles[1].sci - np.float32(levels[1]), rtol=1e-6)
    event = json.loads((out / "i1_bsub_skym.json").read_text())
    assert event["product_uri"] == str(out / "i1_bsub_skym.fits")
    assert event["skymatch"]["level"] == pytest.approx(levels[1])
    assert event["skymatch"]["source_product"] == str(out / "i1_bsub.fits")
