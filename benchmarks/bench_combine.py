"""Combining background stacks: JWST rule vs astropy sigma_clip, and per-arrival updates."""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from astropy.stats import sigma_clip

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_seconds

from processors import Exposure, RollingStack, combine_backgrounds


def _peak_bytes(func) -> int:
    """Peak memory traced while ``func`` runs (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    func()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def _reference(cube: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """JWST's rule with astropy: clipped mean and sqrt(sum err**2 of survivors) / n."""
    clipped = sigma_clip(cube, axis=0, sigma=3, maxiters=None)
    used = ~np.ma.getmaskarray(clipped)
    error = np.sqrt(np.where(used, err**2, 0).sum(0)) / np.maximum(used.sum(0), 1)
    return clipped.mean(axis=0).filled(0), error


def combine_table(sizes: list[int], side: int) -> None:
    print(
        f"| N x {side}² | skystream | astropy sigma_clip + ERR | speed-up "
        "| max rel diff (SCI, ERR) "
        "| peak working memory / cube (skystream, astropy) |"
    )
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in sizes:
        cube = rng.normal(100, 5, (n, side, side)).astype(np.float32)
        cube[rng.random(cube.shape) < 0.01] += 1000
        err = np.full(cube.shape, 5.0, np.float32)
        ours = median_seconds(lambda c=cube, e=err: combine_backgrounds(c, e), 3)
        theirs = median_seconds(lambda c=cube, e=err: _reference(c, e), 1)
        ours_result, (ref_sci, ref_err) = combine_backgrounds(cube, err), _reference(cube, err)
        rel = max(
            float(np.max(np.abs(ours_result.sci - ref_sci) / np.abs(ref_sci))),
            float(np.max(np.abs(ours_result.err - ref_err) / ref_err)),
        )
        mem_ours = _peak_bytes(lambda c=cube, e=err: combine_backgrounds(c, e)) / cube.nbytes
        mem_theirs = _peak_bytes(lambda c=cube, e=err: _reference(c, e)) / cube.nbytes
        print(
            f"| {n} | {ours:.3f} s | {theirs:.3f} s | {theirs / ours:.1f}x | {rel:.1e} "
            f"| {mem_ours:.2f}, {mem_theirs:.2f} |",
            flush=True,
        )


def _arrival(stack: RollingStack, frame: Exposure, start: float):
    clock = [start]

    def arrival() -> None:
        clock[0] += 1
        stack.add(f"x{clock[0]}", frame, obs_time=clock[0])
        stack.combined()

    return arrival


def _recompute(paths: list[Path], read):
    def recompute() -> None:
        members = [read(p) for p in paths]
        combine_backgrounds(np.stack([m.sci for m in members]), np.stack([m.err for m in members]))

    return recompute


def arrival_table(sizes: list[int], side: int) -> None:
    print(
        f"\n| N x {side}² | per-arrival update (add + combine) | full recompute from "
        "files | ratio |"
    )
    print("|---|---|---|---|")
    import tempfile

    from daemon.fileio.fits_io import read_exposure, write_exposure

    rng = np.random.default_rng(1)
    for n in sizes:
        frames = [Exposure(rng.normal(100, 5, (side, side)).astype(np.float32),
                           err=np.full((side, side), 5.0)) for _ in range(n + 1)]  # fmt: skip
        stack = RollingStack((side, side), max_members=n)
        for index, frame in enumerate(frames[:n]):
            stack.add(str(index), frame, obs_time=float(index))
        stack.combined()
        update = median_seconds(_arrival(stack, frames[n], float(n)), 3)
        with tempfile.TemporaryDirectory() as scratch:
            paths = []
            for index, frame in enumerate(frames[:n]):
                path = Path(scratch) / f"m{index}.fits"
                write_exposure(frame, path, fsync=False)
                paths.append(path)

            full = median_seconds(_recompute(paths, read_exposure), 3)
        print(f"| {n} | {update:.3f} s | {full:.3f} s | {full / update:.1f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--side", type=int, default=2048)
    args = parser.parse_args()
    combine_backgrounds(np.zeros((3, 8, 8), np.float32), np.ones((3, 8, 8), np.float32))
    start = time.perf_counter()
    combine_table(args.members, args.side)
    arrival_table(args.members, args.side)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
