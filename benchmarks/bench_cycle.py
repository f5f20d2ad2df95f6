"""Per-exposure cycle (read -> background -> subtract -> write) at 1k, 2k and 4k."""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_seconds, photutils_reference

from daemon.fileio.fits_io import read_exposure, write_exposure
from daemon.ops.memory import retain_freed_memory
from processors import model_exposure_background, simulate_exposure, subtract_background

#: As the daemon's default ``background.threads``.
THREADS = 2


def _stages(source, exposure, product, target, fsync: bool) -> dict:
    return {
        "read": lambda: read_exposure(source),
        "background": lambda: model_exposure_background(exposure, threads=THREADS),
        # A fresh model each time: its RMS map (for the ERR plane) is computed on first use.
        "subtract": lambda: subtract_background(
            exposure, model_exposure_background(exposure, threads=THREADS)
        ),
        "write": lambda: write_exposure(product, target, fsync=fsync),
    }


def _cycle(source: Path, target: Path, fsync: bool) -> None:
    exposure = read_exposure(source)
    model = model_exposure_background(exposure, threads=THREADS)
    write_exposure(subtract_background(exposure, model), target, fsync=fsync)


def main() -> None:
    retain_freed_memory()  # as `skystream run` does (workers.retain_memory)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-fsync", action="store_true", help="as output.fsync: false")
    args = parser.parse_args()
    fsync = not args.no_fsync
    print(
        "| size | read | background | subtract | write | cycle | photutils Background2D "
        "| cycle / photutils |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for size in args.sizes:
            source = folder / f"in_{size}.fits"
            write_exposure(simulate_exposure(0, size=size, seed=1), source, fsync=False)
            exposure = read_exposure(source)
            product = subtract_background(exposure, model_exposure_background(exposure))
            target = folder / f"out_{size}.fits"
            stages = _stages(source, exposure, product, target, fsync)
            seconds = {name: median_seconds(f, args.repeats) for name, f in stages.items()}
            seconds["subtract"] -= seconds["background"]
            total = median_seconds(functools.partial(_cycle, source, target, fsync), args.repeats)
            reference = median_seconds(photutils_reference(exposure), args.repeats)
            print(
                f"| {size}² | {seconds['read']:.3f} s | {seconds['background']:.3f} s "
                f"| {seconds['subtract']:.3f} s | {seconds['write']:.3f} s | {total:.3f} s "
                f"| {reference:.3f} s | {total / reference:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
