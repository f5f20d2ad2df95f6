"""``skystream demo``: simulate a short night, run the daemon on it, compare with the truth."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from daemon.app.demo_inputs import DemoInputs, demo_inputs
from daemon.app.demo_report import write_report
from daemon.app.progress_display import showing_progress
from daemon.app.service import Service
from daemon.app.settings import Settings, load_settings, merge_overrides
from daemon.events import ProductEvent
from daemon.fileio.fits_io import write_exposure
from processors import Exposure, FieldModel

__all__ = ["run_demo"]


def _drop_into(inbox: Path, name: str, exposure: Exposure) -> None:
    """Write like an instrument does: to a hidden name, then rename into place."""
    hidden = inbox / f".{name}.part"
    write_exposure(exposure, hidden, fsync=False)
    os.replace(hidden, inbox / name)


#: The outcomes of a science exposure.
_SCIENCE_OUTCOMES = ("complete", "skipped", "quarantined")


def _finished(service: Service, outcomes: tuple[str, ...]) -> int:
    """Exposures finished so far with one of ``outcomes``."""
    registry = service.metrics.registry
    return int(
        sum(
            registry.get_sample_value("skystream_exposures_processed_total", {"outcome": o}) or 0
            for o in outcomes
        )
    )


async def _until(service: Service, count: int, outcomes: tuple[str, ...], out: TextIO) -> None:
    """Wait until ``count`` exposures finished with one of ``outcomes`` (or time is up)."""
    deadline = time.monotonic() + 120 + 5 * count
    # Quarantines have no callback; the finished count lives in the metrics.
    while _finished(service, outcomes) < count and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    if _finished(service, outcomes) < count:
        print(f"timed out waiting for {count} exposure(s) to finish", file=out)


def _number(value: float | None) -> str:
    """A level for people: three decimals, or ``-`` when the method gives none (stack RMS)."""
    return "-" if value is None else f"{value:.3f}"


def _summary(truth: dict[str, Exposure], products: dict[str, ProductEvent], out: TextIO) -> None:
    header = (
        f"{'exposure':<10} {'method':<11} {'true sky':>9} {'BKGLEVEL':>9} {'diff':>7} "
        f"{'diff/noise':>10} {'read':>6} {'bkg':>6} {'subtr':>6} {'write':>6}  [ms]"
    )
    print("\n" + header, file=out)
    print("-" * len(header), file=out)
    worst = 0.0
    for exposure_id in sorted(truth):
        cards = truth[exposure_id].header
        product = products.get(exposure_id)
        if product is None or product.background_level is None:
            what = "no product: see the log" if product is None else f"{product.status}"
            print(f"{exposure_id:<10} {'':<11} {cards['TRUESKY']:>9.3f}   ({what})", file=out)
            continue
        level = product.background_level
        diff = level - cards["TRUESKY"]
        worst = max(worst, abs(diff) / cards["TRUENOIS"])
        t = {k: 1000 * v for k, v in product.timings.items()}
        print(
            f"{exposure_id:<10} {product.method or '':<11} {cards['TRUESKY']:>9.3f} "
            f"{level:>9.3f} {diff:>+7.3f} {diff / cards['TRUENOIS']:>+10.4f} "
            f"{t.get('read', 0):>6.0f} {t.get('background', 0):>6.0f} "
            f"{t.get('subtract', 0):>6.0f} {t.get('write', 0):>6.0f}",
            file=out,
        )
    print(f"\nworst |recovered - true| = {worst:.4f} x the per-pixel sky noise", file=out)


async def _demo(
    settings: Settings, inputs: DemoInputs, count: int, size: int, seed: int, interval: float,
    out: TextIO,
) -> int:  # fmt: skip
    products: dict[str, ProductEvent] = {}
    started = time.monotonic()
    truth: dict[str, Exposure] = {}
    with showing_progress(count, out) as progress:

        def finished(event: ProductEvent) -> None:
            products[event.exposure_id] = event
            progress.advance(
                f"{event.exposure_id} level {_number(event.background_level)} "
                f"rms {_number(event.background_rms)}"
            )

        service = Service(settings, on_product=finished)
        running = asyncio.create_task(service.run(), name="service")
        await service.wait_started()
        if service.health is not None:
            print(f"live sky page: http://127.0.0.1:{service.health.port}/ (metrics at "
                  "/metrics) while the demo runs", file=out)  # fmt: skip
        field = FieldModel.random(seed)
        inbox = settings.source.directory.path
        for name, background in inputs.backgrounds:
            await asyncio.to_thread(_drop_into, inbox, name, background)
        # The science comes once its backgrounds are in the stack.
        await _until(service, len(inputs.backgrounds), ("background",), out)
        for index in range(count):
            exposure = inputs.science(index, size=size, seed=seed, field=field)
            name = f"night_{index:04d}"
            truth[name] = exposure
            await asyncio.to_thread(_drop_into, inbox, f"{name}.fits", exposure)
            await asyncio.sleep(interval)
        await _until(service, count, _SCIENCE_OUTCOMES, out)
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
    method: str = "model",
    passes: int = 1,
    out: TextIO | None = None,
) -> int:
    """Simulate ``count`` exposures into a scratch folder and process them with the daemon.

    The daemon runs on the embedded default configuration, with its relative folders
    (``inbox``, ``products``, ``quarantine``, ``.skystream``) under ``workdir``, the
    metrics port (and the live sky page) on a free port, and quicklooks on. Progress is
    a bar on a terminal and a line per product otherwise; at the end, ``report.html`` in
    ``workdir`` shows the recovered against the true sky and the quicklooks. Returns 0
    when every exposure produced a product.

    ``method`` is the background method (see `daemon.app.demo_inputs` for what each one
    is given: sky frames for ``stack``, a reference file for ``reference``); ``passes``
    2 masks the sources found in the first model's residual and models again.
    """
    out = sys.stdout if out is None else out
    base = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="skystream-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    inputs = demo_inputs(method, passes, base=base, count=count, size=size, seed=seed)
    settings = merge_overrides(
        load_settings(base=base),
        {"metrics": {"port": 0}, "output": {"quicklook": True}, **inputs.overrides},
    )
    print(
        f"skystream demo: {count} simulated {size}x{size} exposures in {base} "
        f"(method {method}, {passes} pass{'es' if passes > 1 else ''})",
        file=out,
    )
    return asyncio.run(_demo(settings, inputs, count, size, seed, interval, out))
