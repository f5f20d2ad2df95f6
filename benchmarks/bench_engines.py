"""Background engines side by side: fast, lsst, photutils and sep at 1k-8k, plus threading.

``--tables options`` times the newer options against their photutils equivalents in the
same run: robust RMS estimators, and the source-masked two-pass model against photutils'
recipe (Background2D, detect_sources on the residual, binary_dilation with a circular
footprint, Background2D again); plus the JWST WFSS reference scaling.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_seconds

from processors import (
    Exposure,
    estimate_background,
    scale_reference_background,
    simulate_exposure,
    warm_up,
)

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


def _photutils_model(data: np.ndarray, bad: np.ndarray, rms: str = "std") -> Any:
    """Background2D with skystream's defaults and the std or MAD-std RMS estimator."""
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MADStdBackgroundRMS, StdBackgroundRMS

    estimator = MADStdBackgroundRMS() if rms == "mad-std" else StdBackgroundRMS()
    return Background2D(
        data, 64, mask=bad, sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
        bkg_rms_estimator=estimator,
    )  # fmt: skip


def _photutils_two_pass(data: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """What photutils users write by hand: model, detect, dilate, model again."""
    from photutils.segmentation import detect_sources
    from photutils.utils import circular_footprint
    from scipy.ndimage import binary_dilation

    first = _photutils_model(data, bad)
    residual = data - first.background
    segments = detect_sources(residual, 3.0 * first.background_rms, n_pixels=5)
    sources = np.zeros(data.shape, bool) if segments is None else segments.data > 0
    sources = binary_dilation(sources, structure=circular_footprint(5).astype(bool))
    return _photutils_model(data, bad | sources).background


def _options_rows(size: int, repeats: int) -> None:
    exposure = simulate_exposure(0, size=size, seed=1)
    data = np.ascontiguousarray(exposure.sci)
    bad = (exposure.dq > 0) | ~np.isfinite(data)
    rows = {
        "model, MAD-std RMS": (
            lambda: estimate_background(data, dq=exposure.dq, rms_estimator="mad-std").rms,
            lambda: _photutils_model(data, bad, "mad-std").background_rms,
        ),
        "two-pass model (sources masked, dilate 5)": (
            lambda: estimate_background(data, dq=exposure.dq, passes=2),
            lambda: _photutils_two_pass(data, bad),
        ),
    }
    for name, (ours, theirs) in rows.items():
        ours_s = median_seconds(ours, repeats)
        theirs_s = median_seconds(theirs, 1 if size >= 4096 else repeats)
        print(f"| {size}² | {name} | {ours_s:.3f} s | {theirs_s:.3f} s "
              f"| {theirs_s / ours_s:.1f} |", flush=True)  # fmt: skip
    h = exposure.header
    yy, xx = np.mgrid[0:size, 0:size]
    sky = h["TRUESKY"] + h["TRUEGX"] * (xx - (size - 1) / 2) + h["TRUEGY"] * (yy - (size - 1) / 2)
    science = Exposure(data, err=np.full(data.shape, h["TRUENOIS"]), dq=exposure.dq)
    reference = (sky / h["TRUESKY"]).astype(np.float32)
    seconds = median_seconds(lambda: scale_reference_background(science, reference), repeats)
    print(f"| {size}² | WFSS reference scaling (jwst, 5 iterations) | {seconds:.3f} s | — "
          "| — |", flush=True)  # fmt: skip


def options_table(sizes: list[int], repeats: int) -> None:
    print("\n| size | work | skystream | photutils | photutils time / time |")
    print("|---|---|---|---|---|")
    for size in sizes:
        _options_rows(size, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--tables", nargs="+", choices=["engines", "threads", "options"],
        default=["engines", "threads", "options"],
    )  # fmt: skip
    args = parser.parse_args()
    start = time.perf_counter()
    warm_up()
    print(f"(kernels ready in {time.perf_counter() - start:.1f} s)\n")
    if "engines" in args.tables:
        engines_table(args.sizes, args.repeats)
    if "threads" in args.tables:
        threads_table(4096)
    if "options" in args.tables:
        options_table([s for s in args.sizes if s <= 4096], args.repeats)


if __name__ == "__main__":
    main()
