"""Quicklook PNGs: input, background and residual of one product side by side.

Each panel shows the image binned to at most `PANEL_MAX` pixels a side (a 4k image is
binned 8 x 8), north up as FITS stores it (row 0 at the bottom), through an
`astropy.visualization` interval and stretch, with its colour bar and limits beneath. The
caption names the exposure, method, level and RMS; the same facts are PNG text chunks.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.visualization import (
    BaseInterval,
    BaseStretch,
    LinearStretch,
    PercentileInterval,
    ZScaleInterval,
)
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from daemon.fileio.fits_io import write_bytes

__all__ = [
    "BACKGROUND_PERCENT",
    "PANEL_MAX",
    "PANEL_TITLES",
    "Quicklook",
    "bin_image",
    "binning_for",
    "render_quicklook",
    "write_quicklook",
]

#: Largest panel side in pixels; bigger images are binned by a whole factor.
PANEL_MAX = 512
#: Widest thumbnail (the whole quicklook scaled down) for the live page.
THUMBNAIL_WIDTH = 360
PANEL_TITLES = ("input", "background", "residual")
#: Share of the background's pixels inside its display range.
BACKGROUND_PERCENT = 99.5
_MARGIN = 16
_CAPTION = 30  # caption row height
_TITLE = 22  # panel title row height
_BAR = 12  # colour bar height
_LABELS = 20  # colour-bar label row height
_BACKDROP = 24  # grey of the canvas
_INK = 235  # grey of the text
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Quicklook:
    """A rendered quicklook.

    Attributes
    ----------
    png : bytes
        The PNG file.
    thumbnail : bytes
        The same picture scaled to at most `THUMBNAIL_WIDTH` pixels wide (PNG).
    panels : tuple of (x0, y0, x1, y1)
        Where the input, background and residual panels are in the picture (pixels,
        ``x1``/``y1`` exclusive).
    binning : int
        Pixels per panel pixel along each axis.
    """

    png: bytes
    thumbnail: bytes
    panels: tuple[Box, Box, Box]
    binning: int


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks of finite pixels (NaN where none is finite).

    A 3-D image is binned per plane and then collapsed to the median of its planes.
    Rows and columns beyond the last whole block are dropped.
    """
    if image.ndim == 3:
        planes = np.sort(np.stack([bin_image(plane, factor) for plane in image]), axis=0)
        counts = np.isfinite(planes).sum(axis=0)  # np.sort puts NaN last
        low = np.take_along_axis(planes, np.maximum(counts - 1, 0)[None] // 2, axis=0)[0]
        high = np.take_along_axis(planes, np.minimum(counts // 2, len(planes) - 1)[None], axis=0)
        return np.where(counts > 0, (low + high[0]) / 2, np.nan)
    ny, nx = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor)
    finite = np.isfinite(blocks)
    if finite.all():
        return blocks.mean(axis=(1, 3), dtype=np.float64)
    sums = np.where(finite, blocks, 0.0).sum(axis=(1, 3), dtype=np.float64)
    counts = finite.sum(axis=(1, 3))
    return np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)


def binning_for(shape: tuple[int, ...]) -> int:
    """The whole binning factor that brings an image of ``shape`` within `PANEL_MAX`."""
    return max(1, math.ceil(max(shape[-2:]) / PANEL_MAX))


def _limits(values: np.ndarray, interval: BaseInterval) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in interval.get_limits(finite))
    return (low, high) if high > low else (low, low + 1.0)


def _grey(values: np.ndarray, limits: tuple[float, float], stretch: BaseStretch) -> np.ndarray:
    """8-bit grey levels of ``values``, row 0 at the bottom; non-finite pixels black."""
    low, high = limits
    scaled = np.clip((np.nan_to_num(values, nan=low) - low) / (high - low), 0.0, 1.0)
    levels = np.round(255 * np.clip(stretch(scaled), 0.0, 1.0))
    levels[~np.isfinite(values)] = 0
    return np.flipud(levels.astype(np.uint8))


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int) -> None:
    draw.text(xy, text, fill=_INK, font=_font(size))


def _colour_bar(
    canvas: Image.Image, box: Box, limits: tuple[float, float], stretch: BaseStretch
) -> None:
    x0, y0, x1, _ = box
    width = x1 - x0
    ramp = np.linspace(limits[0], limits[1], width)
    strip = _grey(np.tile(ramp, (_BAR, 1)), limits, stretch)
    canvas.paste(Image.fromarray(strip, mode="L"), (x0, y0))
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    low, high = f"{limits[0]:.4g}", f"{limits[1]:.4g}"
    draw.text((x0, y0 + _BAR + 3), low, fill=_INK, font=font)
    draw.text((x1 - draw.textlength(high, font=font), y0 + _BAR + 3), high, fill=_INK, font=font)


def _panel_images(
    input_image: np.ndarray, background: np.ndarray | None, residual: np.ndarray, factor: int
) -> list[tuple[np.ndarray, tuple[float, float]]]:
    """Binned panels and their display limits.

    Zscale for the data; for the background, its central `BACKGROUND_PERCENT` (a smooth
    model's full range, the hot pixels of a combined stack cut).
    """
    binned_input = bin_image(input_image, factor)
    binned_residual = bin_image(residual, factor)
    binned_background = (
        bin_image(background, factor)
        if background is not None
        else np.full(binned_residual.shape, np.nan)
    )
    return [
        (binned_input, _limits(binned_input, ZScaleInterval())),
        (binned_background, _limits(binned_background, PercentileInterval(BACKGROUND_PERCENT))),
        (binned_residual, _limits(binned_residual, ZScaleInterval())),
    ]


def render_quicklook(
    input_image: np.ndarray,
    background: np.ndarray | None,
    residual: np.ndarray,
    *,
    caption: str,
    metadata: dict[str, str] | None = None,
) -> Quicklook:
    """Render the three panels of one product.

    Parameters
    ----------
    input_image : ndarray
        The exposure as read, 2-D or 3-D (integrations are median-combined).
    background : ndarray or None
        The background subtracted (2-D); None draws an empty panel (a SKIPPED product).
    residual : ndarray
        The product's science data, same shape as ``input_image``.
    caption : str
        The line above the panels (exposure id, method, level, RMS).
    metadata : dict, optional
        PNG text chunks (``exposure_id``, ``level``, ...).

    Returns
    -------
    Quicklook
        The PNG, its thumbnail and where each panel is.
    """
    factor = binning_for(input_image.shape)
    panels = _panel_images(input_image, background, residual, factor)
    height, width = panels[0][0].shape
    stretch = LinearStretch()
    canvas_width = max(3 * width + 4 * _MARGIN, 620)
    canvas_height = _CAPTION + _TITLE + height + 4 + _BAR + _LABELS + _MARGIN
    canvas = Image.new("L", (canvas_width, canvas_height), _BACKDROP)
    draw = ImageDraw.Draw(canvas)
    _text(draw, (_MARGIN, 7), caption, 15)
    top = _CAPTION + _TITLE
    boxes: list[Box] = []
    for index, ((values, limits), title) in enumerate(zip(panels, PANEL_TITLES, strict=True)):
        x0 = _MARGIN + index * (width + _MARGIN)
        box = (x0, top, x0 + width, top + height)
        boxes.append(box)
        _text(draw, (x0, _CAPTION + 3), title, 13)
        canvas.paste(Image.fromarray(_grey(values, limits, stretch), mode="L"), (x0, top))
        if title == "background" and background is None:
            _text(draw, (x0 + 4, top + 4), "none (SKIPPED)", 12)
        else:
            _colour_bar(canvas, (x0, top + height + 4, x0 + width, 0), limits, stretch)
    info = PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, value)
    return Quicklook(
        png=_encode(canvas, info),
        thumbnail=_thumbnail(canvas),
        panels=(boxes[0], boxes[1], boxes[2]),
        binning=factor,
    )


def _encode(image: Image.Image, info: PngInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=6)
    return buffer.getvalue()


def _thumbnail(canvas: Image.Image) -> bytes:
    small = canvas.copy()
    small.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH), Image.Resampling.LANCZOS)
    return _encode(small)


def write_quicklook(png: bytes, path: Path, *, fsync: bool = True) -> None:
    """Write a quicklook atomically (a reader never sees half a PNG)."""
    write_bytes(png, path, fsync=fsync)
