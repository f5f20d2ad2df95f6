"""The demo's HTML report: recovered against true sky, a table per exposure, quicklooks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from html import escape
from pathlib import Path

from daemon.events import ProductEvent
from daemon.fileio.fits_io import write_bytes
from daemon.ops.svg_plot import scatter_plot
from processors import Exposure

__all__ = ["write_report"]

_STAGES = ("read", "background", "subtract", "write")
_STYLE = """
body { margin: 24px; background: #111417; color: #d7dbe0; font: 14px/1.4 system-ui, sans-serif; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; } th, td { padding: 3px 14px 3px 0; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { color: #8a929b; }
img { max-width: 100%; display: block; margin: 8px 0 20px; } .muted { color: #8a929b; }
"""


def _row(exposure_id: str, truth: Exposure, product: ProductEvent | None) -> str:
    cards = truth.header
    cells = [escape(exposure_id), escape(product.method or "") if product else "",
             f"{cards['TRUESKY']:.3f}"]  # fmt: skip
    if product is None or product.background_level is None:
        return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "<td>no product</td></tr>"
    diff = product.background_level - cards["TRUESKY"]
    timings = {stage: 1000 * seconds for stage, seconds in product.timings.items()}
    cells += [
        f"{product.background_level:.3f}",
        f"{diff:+.3f}",
        f"{diff / cards['TRUENOIS']:+.4f}",
        *(f"{timings.get(stage, 0.0):.0f}" for stage in _STAGES),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def write_report(
    path: Path, truth: Mapping[str, Exposure], products: Mapping[str, ProductEvent]
) -> None:
    """Write the report (atomically) with links to the quicklooks beside the products.

    Parameters
    ----------
    path : Path
        The HTML file; quicklooks are linked relative to its folder.
    truth : mapping of str to Exposure
        The simulated exposures by id (``TRUESKY`` and ``TRUENOIS`` cards).
    products : mapping of str to ProductEvent
        The products made of them.
    """
    points = [
        (truth[i].header["TRUESKY"], p.background_level)
        for i, p in products.items()
        if i in truth and p.background_level is not None
    ]
    plot = scatter_plot(points, x_label="true sky [DN/s]", y_label="recovered BKGLEVEL [DN/s]")
    rows = "".join(_row(i, truth[i], products.get(i)) for i in sorted(truth))
    pictures = []
    for exposure_id in sorted(products):
        picture = products[exposure_id].product_path.with_suffix(".png")
        if picture.is_file():
            link = escape(os.path.relpath(picture, path.parent))
            pictures.append(
                f'<h3>{escape(exposure_id)}</h3><a href="{link}"><img src="{link}" '
                f'alt="quicklook of {escape(exposure_id)}"></a>'
            )
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>skystream demo report</title>
<style>{_STYLE}</style></head><body>
<h1>skystream demo <span class="muted">{len(products)}/{len(truth)} products</span></h1>
<h2>Recovered against true sky level</h2>
<figure id="recovered-vs-true">{plot}</figure>
<table id="exposures"><thead><tr><th>exposure</th><th>method</th><th>true sky</th><th>BKGLEVEL</th>
<th>diff</th><th>diff/noise</th><th>read ms</th><th>bkg ms</th><th>subtr ms</th>
<th>write ms</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Quicklooks</h2>
{"".join(pictures) or '<p class="muted">no quicklook was written</p>'}
</body></html>
"""
    write_bytes(document.encode(), path, fsync=False)
