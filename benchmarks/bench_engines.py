"""Background engines side by side: fast, lsst, photutils and sep at 1k-8k, plus threading."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_seconds

from processors import estimate_background, simulate_exposure, warm_up

try:
    import sep
except ImportError:  # the bench extra is not installed
    sep = None


def _engines(exposure) -> dict:
    bad = exposure.dq > 0
    data = np.ascontiguousarray(exposure.sci)
    runs = {
        "fast": lambda: estimate_background(data, dq=exposure.dq, engine="fast").background,
        "fast, 2 threads": lambda: (
            estimate_background(data, dq=exposure.dq, engine="fast", threads=2).background
        ),
        "lsst": lambda: estimate_background(data, dq=exposure.dq, engine="lsst").background,
        "photutils": lambda: (
            estimate_background(data, dq=exposure.dq, engine="photutils").background
        ),
    }
    if sep is not None:
        runs["sep"] = lambda: sep.Background(data, mask=bad, bw=64, bh=64, fw=3, fh=3).back()
    return runs


def engines_table(sizes: list[int], repeats: int) -> None:
    print(
        "| size | engine | time | Mpix/s | photutils time / time | median abs diff vs "
        "photutils / noise |"
    )
    print("|---|---|---|---|---|---|")
    for size in sizes:
        exposure = simulate_exposure(0, size=size, seed=1)
        noise = exposure.header["TRUENOIS"]
        runs = _engines(exposure)
        maps = {name: run() for name, run in runs.items()}
        seconds = {
            name: median_seconds(run, 1 if name == "photutils" and size >= 8192 else repeats)
            for name, run in runs.items()
        }
        for name in runs:
            delta = np.median(np.abs(maps[name] - maps["photutils"])) / noise
            print(
                f"| {size}² | {name} | {seconds[name]:.3f} s "
                f"| {size * size / 1e6 / seconds[name]:.0f} "
                f"| {seconds['photutils'] / seconds[name]:.1f} | {delta:.4f} |",
                flush=True,
            )
        del maps, runs


def threads_table(size: int) -> None:
    exposures = [simulate_exposure(i, size=size, seed=2) for i in range(2)]

    def one(exposure) -> None:
        estimate_background(exposure.sci, dq=exposure.dq, engine="fast")

    def serial() -> None:
        for exposure in exposures:
            one(exposure)

    def threaded() -> None:
        threads = [threading.Thread(target=one, args=(e,)) for e in exposures]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    t_serial = median_seconds(serial, 5)
    t_threaded = median_seconds(threaded, 5)
    print(f"\n| two {size}² exposures, fast engine | time |")
    print("|---|---|")
    print(f"| one after the other | {t_serial:.3f} s |")
    print(f"| on two threads | {t_threaded:.3f} s ({t_serial / t_threaded:.2f}x) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    start = time.perf_counter()
    warm_up()
    print(f"(kernels ready in {time.perf_counter() - start:.1f} s)\n")
    engines_table(args.sizes, args.repeats)
    threads_table(4096)


if __name__ == "__main__":
    main()
