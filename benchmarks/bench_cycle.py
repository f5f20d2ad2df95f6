"""Per-exposure cycle (read -> background -> subtract -> write) against the I/O floor.

The floor is the same product's bare file work, in the same run: astropy's memory map
of SCI, ERR and DQ read once in full, and the three planes' bytes written to a new file
and fsynced. Every write goes to a new path, as the daemon's products do.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_seconds, photutils_reference

from daemon.fileio.fits_io import read_exposure, write_exposure
from daemon.ops.memory import retain_freed_memory
from processors import (
    Exposure,
    model_exposure_background,
    simulate_exposure,
    subtract_background,
    warm_up,
)

#: As the daemon's default ``background.threads``.
THREADS = 2


def _timed(run: Callable[[], object], prepare: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``run`` over ``repeats`` calls, each after an untimed ``prepare``."""
    prepare()
    run()
    times = []
    for _ in range(repeats):
        prepare()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _Targets:
    """A new product path for every write; the previous one is removed."""

    def __init__(self, folder: Path, stem: str) -> None:
        self._folder = folder
        self._stem = stem
        self._count = itertools.count()
        self.current = folder / f"{stem}_start.fits"

    def next(self) -> Path:
        self.current.unlink(missing_ok=True)
        self.current = self._folder / f"{self._stem}_{next(self._count)}.fits"
        return self.current


def _floor(source: Path, targets: _Targets, fsync: bool) -> None:
    """Read the three planes through astropy's memory map, write their bytes, fsync."""
    with fits.open(source, memmap=True, do_not_scale_image_data=True) as hdul:
        planes = [np.array(hdul[name].data) for name in ("SCI", "ERR", "DQ")]
    with open(targets.next(), "wb") as handle:
        for plane in planes:
            handle.write(plane.data)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())


def _cycle(source: Path, targets: _Targets, fsync: bool) -> None:
    exposure = read_exposure(source)
    model = model_exposure_background(exposure, threads=THREADS)
    product = subtract_background(exposure, model, in_place=True, threads=THREADS)
    write_exposure(product, targets.next(), fsync=fsync)


def _row(source: Path, folder: Path, size: int, repeats: int, fsync: bool) -> str:
    exposure = read_exposure(source)
    work: list[Exposure] = []
    models: list[object] = []

    def fresh() -> None:  # the subtraction writes into its input: a new copy each time
        work[:] = [read_exposure(source)]

    def fresh_with_model() -> None:
        fresh()
        models[:] = [model_exposure_background(work[0], threads=THREADS)]

    product = subtract_background(exposure, model_exposure_background(exposure))
    targets = _Targets(folder, f"out_{size}")
    seconds = {
        "read": median_seconds(lambda: read_exposure(source), repeats),
        "background": median_seconds(
            lambda: model_exposure_background(exposure, threads=THREADS), repeats
        ),
        # With a fresh model, whose error map (the ERR quadrature term) is made on first use.
        "subtract": _timed(
            lambda: subtract_background(work[0], models[0], in_place=True, threads=THREADS),  # type: ignore[arg-type]
            fresh_with_model,
            repeats,
        ),
        "write": median_seconds(
            lambda: write_exposure(product, targets.next(), fsync=fsync), repeats
        ),
        "cycle": median_seconds(lambda: _cycle(source, targets, fsync), repeats),
        "floor": median_seconds(lambda: _floor(source, targets, fsync), repeats),
        "photutils": median_seconds(photutils_reference(exposure), repeats),
    }
    targets.current.unlink(missing_ok=True)
    s = seconds
    return (
        f"| {size}² | {s['read']:.3f} s | {s['background']:.3f} s | {s['subtract']:.3f} s "
        f"| {s['write']:.3f} s | {s['cycle']:.3f} s | {s['floor']:.3f} s "
        f"| {s['cycle'] / s['floor']:.2f} | {s['photutils']:.3f} s "
        f"| {s['cycle'] / s['photutils']:.2f} |"
    )


def main() -> None:
    retain_freed_memory()  # as `skystream run` does (workers.retain_memory)
    warm_up()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-fsync", action="store_true", help="as output.fsync: false")
    args = parser.parse_args()
    print(
        "| size | read | background | subtract (in place) | write | cycle "
        "| I/O floor (read + write) | cycle / floor | photutils Background2D "
        "| cycle / photutils |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for size in args.sizes:
            source = folder / f"in_{size}.fits"
            write_exposure(simulate_exposure(0, size=size, seed=1), source, fsync=False)
            print(_row(source, folder, size, args.repeats, not args.no_fsync), flush=True)


if __name__ == "__main__":
    main()
