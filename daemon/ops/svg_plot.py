"""Small server-side SVG plots (no script, no style sheet of their own, no dependency).

The live page draws the sky level over the night with `line_plot`; the demo report draws
recovered against true levels with `scatter_plot`. Text is escaped: series names come
from header values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

__all__ = ["PALETTE", "line_plot", "scatter_plot"]

#: Line colours, one per series in order (colour-blind safe, Okabe-Ito).
PALETTE = ("#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#ffffff")
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 12, 12, 40
_INK = "#cfd3d8"
_GRID = "#3a3f45"
Point = tuple[float, float]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^n steps) spanning ``[low, high]``."""
    span = high - low
    raw = span / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


#: Shortest time axis in seconds (a first minute of products still gets round ticks).
_MIN_TIME_SPAN = 60.0
#: Tick steps of a time axis in seconds: round seconds, minutes and hours.
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def _time_ticks(low: float, high: float, count: int = 6) -> tuple[list[float], str]:
    """Ticks at round times of day (UTC) spanning ``[low, high]``, and their format."""
    raw = (high - low) / max(count - 1, 1)
    step = float(next((s for s in _TIME_STEPS if s >= raw), _TIME_STEPS[-1]))
    first = math.ceil(low / step) * step
    ticks = [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]
    return ticks, "%H:%M:%S" if step < 60 else "%H:%M"


def _padded(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        pad = abs(low) * 0.01 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


@dataclass(frozen=True)
class _Frame:
    """Maps data coordinates onto the plot area of a ``width`` x ``height`` picture."""

    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    def x(self, value: float) -> float:
        low, high = self.x_range
        return _LEFT + (value - low) / (high - low) * (self.width - _LEFT - _RIGHT)

    def y(self, value: float) -> float:
        low, high = self.y_range
        return (
            self.height - _BOTTOM - (value - low) / (high - low) * (self.height - _TOP - _BOTTOM)
        )

    def axes(self, x_label: str, y_label: str, *, x_time: bool = False) -> list[str]:
        """Grid lines, tick labels and axis labels (x as UTC times of day with ``x_time``)."""
        if x_time:
            x_ticks, pattern = _time_ticks(*self.x_range)

            def x_format(value: float) -> str:
                return datetime.fromtimestamp(value, UTC).strftime(pattern)

        else:
            x_ticks = _ticks(*self.x_range)

            def x_format(value: float) -> str:
                return f"{value:.4g}"

        parts = []
        for tick in _ticks(*self.y_range):
            y = self.y(tick)
            parts.append(
                f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{self.width - _RIGHT}" y2="{y:.1f}" '
                f'stroke="{_GRID}"/><text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                f'fill="{_INK}" font-size="11">{tick:.4g}</text>'
            )
        for tick in x_ticks:
            x = self.x(tick)
            parts.append(
                f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{self.height - _BOTTOM}" '
                f'stroke="{_GRID}"/><text x="{x:.1f}" y="{self.height - _BOTTOM + 15}" '
                f'text-anchor="middle" fill="{_INK}" font-size="11">'
                f"{escape(x_format(tick))}</text>"
            )
        parts.append(
            f'<text x="{(self.width + _LEFT) / 2:.0f}" y="{self.height - 6}" '
            f'text-anchor="middle" fill="{_INK}" font-size="12">{escape(x_label)}</text>'
            f'<text x="14" y="{(self.height - _BOTTOM) / 2:.0f}" text-anchor="middle" '
            f'fill="{_INK}" font-size="12" transform="rotate(-90 14 '
            f'{(self.height - _BOTTOM) / 2:.0f})">{escape(y_label)}</text>'
        )
        return parts


def _svg(width: int, height: int, label: str, parts: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        + "".join(parts)
        + "</svg>"
    )


def line_plot(
    series: Mapping[str, Sequence[Point]],
    *,
    x_label: str,
    y_label: str,
    x_time: bool = False,
    width: int = 720,
    height: int = 240,
) -> str:
    """One polyline (with dots) per named series, and a legend.

    Parameters
    ----------
    series : mapping of str to sequence of (x, y)
        Points of each series, in x order.
    x_label, y_label : str
        Axis labels.
    x_time : bool
        x values are Unix times: ticks at round times of day (UTC).
    width, height : int
        Size in pixels.

    Returns
    -------
    str
        An ``<svg>`` element; an empty plot says "no data yet".
    """
    points = [p for values in series.values() for p in values]
    if not points:
        return _svg(width, 40, y_label, [f'<text x="8" y="24" fill="{_INK}">no data yet</text>'])
    times = _padded([p[0] for p in points])
    if x_time and times[1] - times[0] < _MIN_TIME_SPAN:
        middle = (times[0] + times[1]) / 2
        times = (middle - _MIN_TIME_SPAN / 2, middle + _MIN_TIME_SPAN / 2)
    frame = _Frame(width, height, times, _padded([p[1] for p in points]))
    parts = frame.axes(x_label, y_label, x_time=x_time)
    for index, (name, values) in enumerate(series.items()):
        if not values:
            continue  # a key without this quantity (the stack method has no RMS)
        colour = PALETTE[index % len(PALETTE)]
        coordinates = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in values)
        parts.append(
            f'<polyline class="series" data-series="{escape(name)}" points="{coordinates}" '
            f'fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
        parts.extend(
            f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="2.2" fill="{colour}"/>'
            for x, y in values
        )
        parts.append(
            f'<text x="{_LEFT + 8}" y="{_TOP + 14 + 14 * index}" fill="{colour}" '
            f'font-size="12">{escape(name)}</text>'
        )
    return _svg(width, height, y_label, parts)


def scatter_plot(
    points: Sequence[Point],
    *,
    x_label: str,
    y_label: str,
    diagonal: bool = True,
    width: int = 420,
    height: int = 360,
) -> str:
    """Points, and the line ``y = x`` when ``diagonal`` (recovered against true).

    Returns
    -------
    str
        An ``<svg>`` element.
    """
    if not points:
        return _svg(width, 40, y_label, [f'<text x="8" y="24" fill="{_INK}">no data</text>'])
    both = _padded([v for p in points for v in p])
    frame = _Frame(width, height, both, both)
    parts = frame.axes(x_label, y_label)
    if diagonal:
        low, high = both
        parts.append(
            f'<line x1="{frame.x(low):.1f}" y1="{frame.y(low):.1f}" x2="{frame.x(high):.1f}" '
            f'y2="{frame.y(high):.1f}" stroke="{_INK}" stroke-dasharray="4 3"/>'
        )
    parts.extend(
        f'<circle class="point" cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3.5" '
        f'fill="{PALETTE[1]}"/>'
        for x, y in points
    )
    return _svg(width, height, y_label, parts)
