"""Combining background stacks: the JWST rule vs astropy sigma_clip, and per-arrival updates.

Two kinds of stack, 2048² by default: "simple" (N(100, 5) with 1 % outliers, constant ERR)
and "hostile" (cosmic rays, a drifting level, per-pixel ERR, NaNs). The reference is
astropy ``sigma_clip(axis=0, sigma=3, maxiters=None)`` with the JWST ERR rule, in the same
process on the same cube.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from astropy.stats import sigma_clip

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_seconds

from daemon.fileio.fits_io import read_exposure, write_exposure
from daemon.ops.memory import retain_freed_memory
from processors import Exposure, RollingStack, combine_backgrounds, warm_up

THREADS = 2  # both cores, as the daemon runs its stacks


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
    count = np.maximum(used.sum(0), 1)
    error = np.sqrt(np.where(used, err.astype(np.float64) ** 2, 0).sum(0)) / count
    return clipped.mean(axis=0).filled(0), error


def _stack(kind: str, n: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "simple":
        cube = rng.normal(100, 5, (n, side, side)).astype(np.float32)
        cube[rng.random(cube.shape) < 0.01] += 1000
        return cube, np.full(cube.shape, 5.0, np.float32)
    levels = np.linspace(100.0, 110.0, n, dtype=np.float32)[:, None, None]
    cube = levels + rng.normal(0, 5, (n, side, side)).astype(np.float32)
    cube[rng.random(cube.shape) < 0.01] += rng.uniform(200, 20000)  # cosmic rays
    cube[rng.random(cube.shape) < 0.001] = np.nan
    err = rng.uniform(3, 8, cube.shape).astype(np.float32)
    return cube, err


def _agreement(ours: Exposure, reference: tuple[np.ndarray, np.ndarray]) -> float:
    ref_sci, ref_err = reference
    assert ours.err is not None
    sci = np.abs(ours.sci - ref_sci) / np.maximum(np.abs(ref_sci), 1e-3)
    err = np.abs(ours.err - ref_err) / np.maximum(ref_err, 1e-6)
    return float(max(np.nanmax(sci), np.nanmax(err)))


def combine_table(sizes: list[int], side: int, kinds: list[str]) -> None:
    print(
        f"| stack | N x {side}² | skystream ({THREADS} threads) | astropy sigma_clip + ERR "
        "| astropy / skystream | max rel diff (SCI, ERR) "
        "| peak working memory / cube (skystream, astropy) |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind in kinds:
        for n in sizes:
            cube, err = _stack(kind, n, side, seed=n)

            def ours(c=cube, e=err) -> Exposure:
                return combine_backgrounds(c, e, threads=THREADS)

            seconds = median_seconds(ours, 5)
            reference = median_seconds(lambda c=cube, e=err: _reference(c, e), 1)
            rel = _agreement(ours(), _reference(cube, err))
            mem_ours = _peak_bytes(ours) / cube.nbytes
            mem_theirs = _peak_bytes(lambda c=cube, e=err: _reference(c, e)) / cube.nbytes
            print(
                f"| {kind} | {n} | {seconds:.3f} s | {reference:.3f} s "
                f"| {reference / seconds:.1f}x | {rel:.1e} | {mem_ours:.2f}, {mem_theirs:.2f} |",
                flush=True,
            )


def arrival_table(sizes: list[int], side: int) -> None:
    print(
        f"\n| N x {side}² | per arrival (add + combined) | batch combine of the same N "
        "in memory | batch from the member files | per arrival / batch in memory "
        "| per arrival / batch from files |"
    )
    print("|---|---|---|---|---|---|")
    for n in sizes:
        cube, err = _stack("hostile", n + 1, side, seed=100 + n)
        frames = [Exposure(cube[k], err=err[k]) for k in range(n + 1)]
        stack = RollingStack((side, side), max_members=n, threads=THREADS)
        for index in range(n):
            stack.add(str(index), frames[index], obs_time=float(index))
        clock = [float(n)]

        def arrival(s=stack, c=clock, f=frames) -> None:
            c[0] += 1
            s.add(f"x{c[0]}", f[int(c[0]) % len(f)], obs_time=c[0])
            s.combined()

        update = median_seconds(arrival, 5)
        in_memory = median_seconds(
            lambda c=cube[:n], e=err[:n]: combine_backgrounds(c, e, threads=THREADS), 3
        )
        with tempfile.TemporaryDirectory() as scratch:
            paths = []
            for index in range(n):
                path = Path(scratch) / f"m{index}.fits"
                write_exposure(frames[index], path, fsync=False)
                paths.append(path)

            def from_files(p=paths) -> None:
                read = [read_exposure(path) for path in p]
                combine_backgrounds([m.sci for m in read], [m.err for m in read],
                                    threads=THREADS)  # fmt: skip

            from_disk = median_seconds(from_files, 3)
        print(
            f"| {n} | {update:.3f} s | {in_memory:.3f} s | {from_disk:.3f} s "
            f"| {update / in_memory:.2f} | {update / from_disk:.2f} |",
            flush=True,
        )


def main() -> None:
    retain_freed_memory()  # as `skystream run` does (workers.retain_memory)
    warm_up()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--kinds", nargs="+", default=["simple", "hostile"])
    parser.add_argument("--skip-arrivals", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    combine_table(args.members, args.side, args.kinds)
    if not args.skip_arrivals:
        arrival_table(args.members, args.side)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
