"""Cold start of a new pod: time from process start to /startupz 200.

Reproduces the container image's layout without a container runtime: the kernels are
compiled once into a "shipped" folder exactly as the Dockerfile's build step does
(``NUMBA_CPU_NAME=generic``, ``NUMBA_CACHE_DIR=<shipped>``, ``processors.warm_up()``);
each measured start then gets a fresh, empty ``NUMBA_CACHE_DIR`` (a new pod's emptyDir)
and ``SKYSTREAM_KERNEL_CACHE=<shipped>``, as in the image. The same start without the
shipped kernels (what every pod paid before) is measured for comparison.

    python benchmarks/bench_cold_start.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(cache: Path, shipped: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "SKYSTREAM_"))}
    env |= {"NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    if shipped is not None:
        env["SKYSTREAM_KERNEL_CACHE"] = str(shipped)
    return env


def build(shipped: Path) -> float:
    """The Dockerfile's build step; returns its wall time."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from processors import warm_up; warm_up()"],
                   env=environment(shipped, None), check=True)  # fmt: skip
    return time.perf_counter() - start


def started(work: Path, shipped: Path | None) -> float:
    """Seconds from spawning ``skystream run`` on an empty cache to /startupz 200."""
    port = free_port()
    (work / "inbox").mkdir(parents=True)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({
        "metrics": {"host": "127.0.0.1", "port": port},
        "source": {"directory": {"path": str(work / "inbox")}},
        "output": {"directory": str(work / "products")},
        "quarantine": {"directory": str(work / "quarantine")},
        "state": {"directory": str(work / "state")},
    }))  # fmt: skip
    env = environment(work / "numba-cache", shipped)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--config", str(config)],
                            env=env, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/startupz", timeout=1):
                    return time.perf_counter() - start
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None:
                    raise SystemExit("the daemon exited during start-up") from None
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        shipped = root / "shipped"
        compile_seconds = build(shipped)
        files = sum(1 for p in shipped.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in shipped.rglob("*") if p.is_file())
        warm = [started(root / f"warm{i}", shipped) for i in range(args.runs)]
        cold = [started(root / f"cold{i}", None) for i in range(args.runs)]
    print(f"Shipped kernel cache: {files} files, {size / 2**20:.1f} MiB; "
          f"build step {compile_seconds:.1f} s\n")  # fmt: skip
    print("| start of a new pod (empty NUMBA_CACHE_DIR) | to /startupz 200, median | runs |")
    print("| --- | ---: | ---: |")
    print(
        f"| image's kernels copied in (SKYSTREAM_KERNEL_CACHE) | "
        f"{statistics.median(warm):.1f} s | {', '.join(f'{t:.1f}' for t in warm)} |"
    )
    print(
        f"| no shipped kernels: compiled at start | "
        f"{statistics.median(cold):.1f} s | {', '.join(f'{t:.1f}' for t in cold)} |"
    )


if __name__ == "__main__":
    main()
