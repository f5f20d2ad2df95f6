"""The daemon saves the subtracted background in its products (a mesh or the full map) and
writes a quicklook beside each; a quicklook that cannot be written costs only itself."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from daemon.fileio.fits_io import read_exposure
from daemon.fileio.saved_background import read_saved_background
from tests.conftest import (
    drop_fits,
    running,
    small_exposure,
    test_settings,
    wait_for_count,
    wait_until,
)

COMPLETE = ("skystream_exposures_processed_total", {"outcome": "complete"})


async def _product_of(base: Path, name: str, **output: object) -> Path:
    """Run the daemon on one exposure with these output settings; the product's path."""
    (base / "inbox").mkdir(parents=True)
    settings = test_settings(base, output=output)
    async with running(settings) as service:
        drop_fits(base / "inbox", f"{name}.fits", small_exposure(3, size=256))
        await wait_for_count(service, *COMPLETE, 1)
        if output.get("quicklook"):
            quicklooks = service.quicklooks
            assert quicklooks is not None
            await wait_until(lambda: quicklooks.written == 1)
    return base / "products" / f"{name}_bsub.fits"


@pytest.mark.asyncio
async def test_mesh_and_full_backgrounds_are_the_map_that_was_subtracted(tmp_path: Path) -> None:
    exposure = small_exposure(3, size=256)
    saved = {}
    for mode, extension in (("mesh", "BKGMESH"), ("full", "BKG")):
        product = await _product_of(tmp_path / mode, "night_0003", save_background=mode)
        with fits.open(product) as hdul:
            assert [hdu.name for hdu in hdul] == ["PRIMARY", "SCI", "ERR", "DQ", extension]
            stored = hdul[extension].data.nbytes
        saved[mode] = read_saved_background(product)
        assert saved[mode].shape == (256, 256) and saved[mode].dtype == np.float32
        subtracted = exposure.sci - read_exposure(product).sci
        np.testing.assert_allclose(subtracted, saved[mode], rtol=0, atol=1e-3)
        if mode == "mesh":
            assert stored == 16 * 16 * 8  # 16-pixel boxes, float64: 2 kB, not 256 kB
    np.testing.assert_array_equal(saved["mesh"], saved["full"])


@pytest.mark.asyncio
async def test_none_saves_nothing_and_the_quicklook_sits_beside_the_product(
    tmp_path: Path,
) -> None:
    product = await _product_of(tmp_path, "night_0003", quicklook=True)
    with fits.open(product) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "SCI", "ERR", "DQ"]
    assert read_saved_background(product) is None
    with Image.open(product.with_suffix(".png")) as picture:
        assert picture.format == "PNG" and picture.text["exposure_id"] == "night_0003"
        assert picture.text["method"] == "model" and float(picture.text["level"]) > 0
    assert not [p for p in os.listdir(product.parent) if p.startswith(".")]  # no temporaries


@pytest.mark.asyncio
async def test_a_quicklook_that_cannot_be_written_fails_alone(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings = test_settings(tmp_path, output={"quicklook": True})
    blocked = tmp_path / "products" / "first_bsub.png"
    blocked.mkdir(parents=True)  # a folder where the picture should go
    async with running(settings) as service:
        quicklooks = service.quicklooks
        assert quicklooks is not None
        drop_fits(inbox, "first.fits", small_exposure(0, size=128))
        await wait_for_count(service, *COMPLETE, 1)
        await wait_until(lambda: quicklooks.failed == 1)
        drop_fits(inbox, "second.fits", small_exposure(1, size=128))
        await wait_for_count(service, *COMPLETE, 2)
        await wait_until(lambda: quicklooks.written == 1)
        assert service.liveness() == (True, [])
        assert service.readiness() == (True, [])
    products = tmp_path / "products"
    assert read_exposure(products / "first_bsub.fits").header["S_BKDSUB"] == "COMPLETE"
    assert blocked.is_dir() and (products / "second_bsub.png").is_file()
