"""Quicklook PNGs: three panels that show the right exposure, binned for big images, and a
worker that drops or fails pictures without ever touching products."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.visualization import PercentileInterval, ZScaleInterval
from PIL import Image

from daemon.fileio.quicklook import (
    BACKGROUND_PERCENT,
    PANEL_MAX,
    Quicklook,
    bin_image,
    render_quicklook,
)
from daemon.ops.progress import Heartbeat
from daemon.ops.quicklooks import QuicklookJob, Quicklooks
from processors import model_exposure_background, simulate_exposure
from tests.conftest import small_exposure
from tests.daemon.sky_night import sky_night


def _grey(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """The reference display: linear between astropy's limits, 8 bits."""
    return np.round(255 * np.clip((values - low) / (high - low), 0, 1))


def _panels(quicklook: Quicklook) -> list[np.ndarray]:
    """The three panels as stored (row 0 at the bottom, as in FITS)."""
    picture = np.asarray(Image.open(io.BytesIO(quicklook.png)), dtype=np.float64)
    return [np.flipud(picture[y0:y1, x0:x1]) for x0, y0, x1, y1 in quicklook.panels]


@pytest.fixture(scope="module")
def night() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Two exposures of one night: input, background model, residual."""
    frames = []
    for index in (0, 5):
        exposure = simulate_exposure(index, size=1024, seed=4)
        model = model_exposure_background(exposure, box_size=64)
        frames.append((exposure.sci, model.background, exposure.sci - model.background))
    return frames


def test_the_png_shows_input_background_and_residual_of_its_exposure(night) -> None:
    (sci, background, residual), (other_sci, _, _) = night
    quicklook = render_quicklook(
        sci, background, residual, caption="night_0000", metadata={"exposure_id": "night_0000"}
    )
    picture = Image.open(io.BytesIO(quicklook.png))
    assert picture.format == "PNG" and picture.text["exposure_id"] == "night_0000"
    assert quicklook.binning == 2  # 1024 pixels into a 512-pixel panel
    shown_input, shown_background, shown_residual = _panels(quicklook)
    assert shown_input.shape == shown_background.shape == shown_residual.shape == (512, 512)

    # Each panel is its binned image through astropy's interval, to one grey level.
    binned = [bin_image(a, 2) for a in (sci, background, residual)]
    expected_input = _grey(binned[0], *ZScaleInterval().get_limits(binned[0]))
    background_limits = PercentileInterval(BACKGROUND_PERCENT).get_limits(binned[1])
    expected_background = _grey(binned[1], *background_limits)
    expected_residual = _grey(binned[2], *ZScaleInterval().get_limits(binned[2]))
    assert np.abs(shown_input - expected_input).max() <= 1
    assert np.abs(shown_background - expected_background).max() <= 1
    assert np.abs(shown_residual - expected_residual).max() <= 1

    # ... and not another exposure of the same night (other dither, other sky).
    other = bin_image(other_sci, 2)
    other_grey = _grey(other, *ZScaleInterval().get_limits(other))
    error = np.abs(shown_input - expected_input).mean()
    assert np.abs(shown_input - other_grey).mean() > 10 * error

    # The statistics an observer reads off the panels: the sky gradient is in the input and
    # the model, and gone from the residual; the stars are in the input and the residual.
    def gradient(panel: np.ndarray) -> float:
        """Grey levels gained from left to right (inside the 4-pixel reference border)."""
        columns = np.median(panel[4:-4, 4:-4], axis=0)
        return float(np.polyfit(np.arange(columns.size), columns, 1)[0] * columns.size)

    assert abs(gradient(shown_background)) > 200  # most of the grey range across the panel
    assert abs(gradient(shown_input)) > 50
    assert abs(gradient(shown_residual)) < 0.1 * abs(gradient(shown_input))
    stars = binned[2] > np.percentile(binned[2], 99.9)
    assert (shown_input[stars] == 255).mean() > 0.9 and (shown_residual[stars] == 255).all()
    assert (shown_background[stars] < 255).mean() > 0.9  # the model holds no stars
    assert abs(np.median(binned[2])) < 0.05 * np.median(binned[1])  # residual sky ~ 0


def test_a_4k_image_is_binned_to_the_panel_cap() -> None:
    rng = np.random.default_rng(2)
    image = rng.normal(100.0, 5.0, (4096, 4096)).astype(np.float32)
    image[:2048, :] += 50.0  # the lower half (FITS rows 0..2047) brighter
    quicklook = render_quicklook(image, np.full(image.shape, 100.0, np.float32), image - 100,
                                 caption="big")  # fmt: skip
    assert quicklook.binning == 8
    shown_input, _, _ = _panels(quicklook)
    assert shown_input.shape == (PANEL_MAX, PANEL_MAX)
    assert shown_input[:256].mean() > shown_input[256:].mean() + 100  # bright half at bottom
    assert Image.open(io.BytesIO(quicklook.thumbnail)).size[0] <= 360


def test_a_skipped_product_has_an_empty_background_panel(night) -> None:
    sci, _, _ = night[0]
    quicklook = render_quicklook(sci, None, sci, caption="skipped")
    _, shown_background, shown_residual = _panels(quicklook)
    assert (shown_background == 0).mean() > 0.95  # black but for its "none" label
    assert shown_residual.std() > 10


def test_cubes_show_the_median_of_their_integrations() -> None:
    rng = np.random.default_rng(4)
    cube = rng.normal(10, 1, (3, 64, 64)).astype(np.float32)
    cube[1, :8] = np.nan  # one integration without its first rows
    reference = np.nanmedian(np.stack([bin_image(plane, 4) for plane in cube]), axis=0)
    np.testing.assert_allclose(bin_image(cube, 4), reference, rtol=1e-12)
    quicklook = render_quicklook(cube, np.full((64, 64), 10, np.float32), cube - 10, caption="")
    shown_input, _, shown_residual = _panels(quicklook)
    assert shown_input.shape == shown_residual.shape == (64, 64)
    assert np.abs(shown_input - shown_residual).max() <= 1  # the same picture, 10 lower


def _job(path: Path, index: int = 0, size: int = 128) -> QuicklookJob:
    sci = simulate_exposure(index, size=size, seed=1).sci
    return QuicklookJob(f"e{index}", path, sci, None, sci, "model", 1.0, 0.5)


@pytest.mark.asyncio
async def test_the_worker_drops_when_full_and_survives_a_failed_picture(tmp_path: Path) -> None:
    written: list[str] = []
    worker = Quicklooks(
        fsync=False, queue_size=2, on_written=lambda exposure, _p, _t: written.append(exposure)
    )
    assert worker.offer(_job(tmp_path / "missing" / "e0.png", 0))  # its folder is missing
    assert worker.offer(_job(tmp_path / "e1.png", 1))
    assert not worker.offer(_job(tmp_path / "e2.png", 2))  # full: dropped at once
    assert worker.dropped == 1
    task = asyncio.create_task(worker.run(Heartbeat("quicklooks", 60)))
    try:
        await worker.drain(30)
    finally:
        task.cancel()
        worker.close()
    assert (worker.written, worker.failed, written) == (1, 1, ["e1"])
    with Image.open(tmp_path / "e1.png") as picture:
        assert picture.text == {
            "exposure_id": "e1", "method": "model", "level": "1.0", "rms": "0.5",
        }  # fmt: skip
    assert sorted(p.name for p in os.scandir(tmp_path)) == ["e1.png"]  # no temporary left


@pytest.mark.asyncio
async def test_a_daemon_quicklook_shows_the_exposure_as_read_not_its_residual(tmp_path) -> None:
    # The subtraction may reuse the input's planes for the product: the picture's input
    # panel must still be the exposure before the background came off.
    async with sky_night(tmp_path) as night:
        (png,) = night.settings.output.directory.rglob("night_0001*.png")
        written = png.read_bytes()
    sci = small_exposure(1, size=256).sci
    layout = render_quicklook(sci, sci, sci, caption="layout")  # where the panels are
    shown_input, _, shown_residual = _panels(
        Quicklook(png=written, thumbnail=b"", panels=layout.panels, binning=layout.binning)
    )
    expected = _grey(sci, *ZScaleInterval().get_limits(sci))
    assert shown_input.shape == sci.shape
    assert np.abs(shown_input - expected).max() <= 1
    assert np.abs(shown_input - shown_residual).mean() > 10
