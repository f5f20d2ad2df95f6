"""Daemon end to end on a stream of 4k exposures: latency p50/p95 and throughput.

Paced arrivals are copied into the folder one by one, as an instrument writes them; a
burst is copied beforehand and renamed in all at once, so that its throughput is the
daemon's, not the copying's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_seconds, photutils_reference

from daemon.app.service import Service
from daemon.app.settings import load_settings, merge_overrides
from daemon.events import ProductEvent
from daemon.fileio.fits_io import read_exposure, write_exposure
from daemon.ops.memory import retain_freed_memory
from processors import simulate_exposure


async def _stream(base: Path, template: Path, count: int, interval: float) -> tuple[list, float]:
    settings = merge_overrides(
        load_settings(environ={}, base=base),
        {"metrics": {"enabled": False}, "source": {"directory": {"check_interval_seconds": 0.02}}},
    )
    dropped: dict[str, float] = {}
    done: dict[str, float] = {}

    def on_product(event: ProductEvent) -> None:
        done[event.exposure_id] = time.monotonic()

    service = Service(settings, on_product=on_product)
    task = asyncio.create_task(service.run())
    await service.wait_started()
    inbox = settings.source.directory.path
    if interval == 0:  # a burst: the files are copied beforehand and renamed in at once
        for index in range(count):
            await asyncio.to_thread(shutil.copyfile, template, inbox / f".e{index:04d}.part")
    start = time.monotonic()
    for index in range(count):
        name = f"e{index:04d}"
        hidden = inbox / f".{name}.part"
        if not hidden.exists():
            await asyncio.to_thread(shutil.copyfile, template, hidden)
        os.replace(hidden, inbox / f"{name}.fits")
        dropped[name] = time.monotonic()
        await asyncio.sleep(interval)
    while len(done) < count:  # noqa: ASYNC110 (benchmark polling)
        await asyncio.sleep(0.02)
    elapsed = max(done.values()) - start
    service.request_stop()
    await task
    return [done[name] - dropped[name] for name in dropped], elapsed


def main() -> None:
    retain_freed_memory()  # as `skystream run` does (workers.retain_memory)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--count", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        template = folder / "template.fits"
        write_exposure(simulate_exposure(0, size=args.size, seed=1), template, fsync=False)
        reference = median_seconds(photutils_reference(read_exposure(template)), 3)
        paced, _ = asyncio.run(_stream(folder / "paced", template, args.count, 3 * reference))
        _, elapsed = asyncio.run(_stream(folder / "burst", template, args.count, 0.0))
    pct = statistics.quantiles(paced, n=20)
    print(f"| {args.size}² stream | value | vs photutils Background2D ({reference:.2f} s) |")
    print("|---|---|---|")
    print(
        f"| latency p50 (paced arrivals) | {statistics.median(paced):.2f} s "
        f"| {statistics.median(paced) / reference:.2f} x |"
    )
    print(f"| latency p95 (paced arrivals) | {pct[18]:.2f} s | {pct[18] / reference:.2f} x |")
    print(
        f"| throughput (burst of {args.count}) | {args.count / elapsed:.2f} exposures/s "
        f"| {args.count / elapsed * reference:.2f} x one photutils call per exposure |"
    )


if __name__ == "__main__":
    main()
