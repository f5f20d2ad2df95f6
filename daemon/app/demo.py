"""``skystream demo``: simulate a short night, run the daemon on it, compare with the truth."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from daemon.app.demo_report import write_report
from daemon.app.progress_display import showing_progress
from daemon.app.service import Service
from daemon.app.settings import Settings, load_settings, merge_overrides
from daemon.events import ProductEvent
from daemon.fileio.fits_io import write_exposure
from processors import Exposure, FieldModel, simulate_exposure

__all__ = ["run_demo"]


def _drop_into(inbox: Path, name: str, exposure: Exposure) -> None:
    """Write like an instrument does: to a hidden name, then rename into place."""
    hidden = inbox / f".{name}.part"
    write_exposure(exposure, hidden, fsync=False)
    os.replace(hidden, inbox / name)


def _finished(service: Service) -> int:
    """Exposures finished so far, whatever their outcome."""
    registry = service.metrics.registry
    return int(
        sum(
            registry.get_sample_value("skystream_exposures_processed_total", {"outcome": o}) or 0
            for o in ("complete", "quarantined")
        )
    )


def _summary(truth: dict[str, Exposure], products: dict[str, ProductEvent], out: TextIO) -> None:
    header = (
        f"{'exposure':<10} {'true sky':>9} {'BKGLEVEL':>9} {'diff':>7} {'diff/noise':>10} "
        f"{'read':>6} {'bkg':>6} {'subtr':>6} {'write':>6}  [ms]"
    )
    print("\n" + header, file=out)
    print("-" * len(header), file=out)
    worst = 0.0
    for exposure_id in sorted(truth):
        cards = truth[exposure_id].header
        product = products.get(exposure_id)
        if product is None:
            print(f"{exposure_id:<10} {cards['TRUESKY']:>9.3f}   (no product: see the log)",
                  file=out)  # fmt: skip
            continue
        diff = product.background_level - cards["TRUESKY"]
        worst = max(worst, abs(diff) / cards["TRUENOIS"])
        t = {k: 1000 * v for k, v in product.timings.items()}
        print(
            f"{exposure_id:<10} {cards['TRUESKY']:>9.3f} {product.background_level:>9.3f} "
            f"{diff:>+7.3f} {diff / cards['TRUENOIS']:>+10.4f} {t.get('read', 0):>6.0f} "
            f"{t.get('background', 0):>6.0f} {t.get('subtract', 0):>6.0f} "
            f"{t.get('write', 0):>6.0f}",
            file=out,
        )
    print(f"\nworst |recovered - true| = {worst:.4f} x the per-pixel sky noise", file=out)


async def _demo(
    settings: Settings, count: int, size: int, seed: int, interval: float, out: TextIO
) -> int:
    products: dict[str, ProductEvent] = {}
    started = time.monotonic()
    truth: dict[str, Exposure] = {}
    with showing_progress(count, out) as progress:

        def finished(event: ProductEvent) -> None:
            products[event.exposure_id] = event
            progress.advance(
                f"{event.exposure_id} level {event.background_level:.3f} "
                f"rms {event.background_rms:.3f}"
            )

        service = Service(settings, on_product=finished)
        running = asyncio.create_task(service.run(), name="service")
        await service.wait_started()
        if service.health is not None:
            print(f"live sky page: http://127.0.0.1:{service.health.port}/ (metrics at "
                  "/metrics) while the demo runs", file=out)  # fmt: skip
        field = FieldModel.random(seed)
        inbox = settings.source.directory.path
        for index in range(count):
            exposure = simulate_exposure(index, size=size, seed=seed, field=field)
            name = f"night_{index:04d}"
            truth[name] = exposure
            await asyncio.to_thread(_drop_into, inbox, f"{name}.fits", exposure)
            await asyncio.sleep(interval)
        deadline = time.monotonic() + 120 + 5 * count
        # Quarantines have no callback; the finished count lives in the metrics.
        while _finished(service) < count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        if _finished(service) < count:
            print("timed out waiting for products", file=out)
        service.request_stop()
        await running  # the quicklooks still queued are drawn before it returns
    _summary(truth, products, out)
    report = settings.output.directory.parent / "report.html"
    await asyncio.to_thread(write_report, report, truth, products)
    print(
        f"{len(products)}/{count} products in {settings.output.directory} "
        f"({time.monotonic() - started:.1f} s)\nreport: {report.as_uri()}",
        file=out,
    )
    return 0 if len(products) == count else 1


def run_demo(
    *,
    count: int = 8,
    size: int = 1024,
    seed: int = 1,
    workdir: Path | None = None,
    interval: float = 0.2,
    out: TextIO | None = None,
) -> int:
    """Simulate ``count`` exposures into a scratch folder and process them with the daemon.

    The daemon runs on the embedded default configuration, with its relative folders
    (``inbox``, ``products``, ``quarantine``, ``.skystream``) under ``workdir``, the
    metrics port (and the live sky page) on a free port, and quicklooks on. Progress is
    a bar on a terminal and a line per product otherwise; at the end, ``report.html`` in
    ``workdir`` shows the recovered against the true sky and the quicklooks. Returns 0
    when every exposure produced a product.
    """
    out = sys.stdout if out is None else out
    base = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="skystream-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    settings = merge_overrides(
        load_settings(base=base), {"metrics": {"port": 0}, "output": {"quicklook": True}}
    )
    print(f"skystream demo: {count} simulated {size}x{size} exposures in {base}", file=out)
    return asyncio.run(_demo(settings, count, size, seed, interval, out))
