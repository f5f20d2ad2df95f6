"""The ``skystream`` command line: run, process, simulate, demo, config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from daemon import __version__
from daemon.app.demo import run_demo
from daemon.app.demo_inputs import DEMO_METHODS
from daemon.app.progress_display import ProgressDisplay, showing_progress
from daemon.app.reload import reload_configuration
from daemon.app.service import Service
from daemon.app.settings import (
    ConfigError,
    RoutingSettings,
    Settings,
    load_settings,
    merge_overrides,
    settings_to_yaml,
)
from daemon.errors import Fatal
from daemon.fileio.fits_io import write_exposure
from daemon.flow.router import stack_key_of
from daemon.intake.batch import BatchSource
from daemon.kafka.announce import announce_files
from daemon.ops.logs import configure_logging
from daemon.ops.memory import retain_freed_memory
from processors import FieldModel, simulate_exposure

__all__ = ["main"]

log = logging.getLogger("skystream.cli")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
DEFAULT_STACK_KEY = list(RoutingSettings().stack_key)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skystream",
        description="Live sky background subtraction for telescope data streams.",
    )
    parser.add_argument("--version", action="version", version=f"skystream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = "YAML configuration (default: $SKYSTREAM_CONFIG, else the built-in default)"

    run = commands.add_parser("run", help="run the daemon on the configured folder")
    run.add_argument("--config", type=Path, help=config_help)

    process = commands.add_parser("process", help="process FITS files once and exit")
    process.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    process.add_argument("--out", type=Path, required=True, help="product folder")
    process.add_argument(
        "--quarantine", type=Path, help="reason files for bad input (default: OUT/quarantine)"
    )
    process.add_argument("--config", type=Path, help=config_help)

    simulate = commands.add_parser("simulate", help="write synthetic exposures with known sky")
    simulate.add_argument("--out", type=Path, required=True, help="folder to write into")
    simulate.add_argument("--count", type=int, required=True, help="number of exposures")
    simulate.add_argument("--size", type=int, default=1024, help="image side in pixels")
    simulate.add_argument("--seed", type=int, default=1, help="random seed of the night")
    simulate.add_argument("--nints", type=int, help="write 3-D exposures of NINTS integrations")
    simulate.add_argument(
        "--kafka", metavar="BOOTSTRAP", help="also publish an ExposureEvent per file to Kafka"
    )
    simulate.add_argument("--topic", default="skystream.exposures", help="topic for --kafka")

    demo = commands.add_parser("demo", help="simulate a night and run the daemon on it")
    demo.add_argument("--count", type=int, default=8, help="number of exposures")
    demo.add_argument("--size", type=int, default=1024, help="image side in pixels")
    demo.add_argument("--seed", type=int, default=1, help="random seed of the night")
    demo.add_argument("--workdir", type=Path, help="scratch folder (default: a new temp folder)")
    demo.add_argument("--method", choices=DEMO_METHODS, default="model", help="background method")
    demo.add_argument(
        "--passes", type=int, choices=(1, 2), default=1, help="2: mask sources, model again"
    )

    config = commands.add_parser("config", help="print the effective configuration")
    config.add_argument("--config", type=Path, help=config_help)
    return parser


def _config_path(args: argparse.Namespace) -> Path | None:
    if args.config is not None:
        return Path(args.config)
    from_env = os.environ.get("SKYSTREAM_CONFIG")
    return Path(from_env) if from_env else None


async def _serve(service: Service, *, reload: Callable[[], None] | None = None) -> None:
    """Run the service; SIGTERM/SIGINT drain and stop it, SIGHUP calls ``reload``."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.request_stop)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload)
    await service.run()


async def _process_showing(
    service: Service, source: BatchSource, progress: ProgressDisplay
) -> None:
    """Serve a batch, counting each input as its outcome is recorded."""
    serving = asyncio.create_task(_serve(service), name="serve")
    shown = 0
    while not serving.done():
        await asyncio.wait({serving}, timeout=0.2)
        outcomes = list(source.outcomes.items())
        for path, outcome in outcomes[shown:]:
            progress.advance(f"{Path(path).name} {outcome}")
        shown = len(outcomes)
    await serving


def _prepare_watch_folder(settings: Settings) -> None:
    """A missing watch folder is a start-up error (a misspelt path) unless ``create``."""
    directory = settings.source.directory
    if settings.source.kind != "directory" or directory.path.is_dir():
        return
    if directory.path.exists():
        raise ConfigError(f"source.directory.path: {directory.path} is not a folder")
    if not directory.create:
        raise ConfigError(
            f"source.directory.path: the watch folder {directory.path} does not exist "
            "(create it, or set source.directory.create: true)"
        )
    try:
        directory.path.mkdir(parents=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the watch folder {directory.path}: {exc}") from None


def _run(settings: Settings, config: Path | None) -> int:
    _prepare_watch_folder(settings)
    service = Service(settings)
    asyncio.run(_serve(service, reload=functools.partial(reload_configuration, service, config)))
    return EXIT_OK


def _process(args: argparse.Namespace, settings: Settings) -> int:
    out = args.out.absolute()
    settings = merge_overrides(
        settings,
        {
            "output": {"directory": str(out)},
            "quarantine": {
                "directory": str((args.quarantine or out / "quarantine").absolute()),
                "move": False,
            },
            "metrics": {"enabled": False},
        },
    )
    source = BatchSource(args.inputs)
    with showing_progress(len(args.inputs), sys.stderr) as progress:
        asyncio.run(_process_showing(Service(settings, source=source), source, progress))
    failed = [p for p, outcome in source.outcomes.items() if outcome == "quarantined"]
    missing = len(args.inputs) - len(source.outcomes)
    print(
        f"{len(source.outcomes) - len(failed)} processed, {len(failed)} failed"
        + (f", {missing} not finished" if missing else ""),
        file=sys.stderr,
    )
    return EXIT_FAILED if failed or missing else EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    if args.count < 1 or args.size < 16:
        print("skystream simulate: --count must be >= 1 and --size >= 16", file=sys.stderr)
        return EXIT_CONFIG
    args.out.mkdir(parents=True, exist_ok=True)
    field = FieldModel.random(args.seed)
    print(f"{'file':<20} {'true sky':>9} {'noise':>7}")
    written = []
    for index in range(args.count):
        exposure = simulate_exposure(
            index, size=args.size, seed=args.seed, field=field, nints=args.nints
        )
        name = f"sim_{index:04d}.fits"
        write_exposure(exposure, args.out / name)
        written.append((args.out / name, stack_key_of(exposure.header, DEFAULT_STACK_KEY)))
        print(f"{name:<20} {exposure.header['TRUESKY']:>9.3f} {exposure.header['TRUENOIS']:>7.3f}")
    if args.kafka:
        sent = asyncio.run(announce_files(args.kafka, args.topic, written))
        print(f"{sent} ExposureEvent(s) published to {args.topic} on {args.kafka}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skystream`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    # A fatal signal (a crash in compiled code, SIGBUS on a vanished mapping) still leaves
    # every thread's traceback on stderr, in the journal beside the last log lines.
    with contextlib.suppress(OSError, ValueError):  # a stderr that is no file (captured)
        faulthandler.enable()
    try:
        if args.command == "simulate":
            configure_logging()
            return _simulate(args)
        if args.command == "demo":
            configure_logging("WARNING")
            return run_demo(
                count=args.count, size=args.size, seed=args.seed, workdir=args.workdir,
                method=args.method, passes=args.passes,
            )  # fmt: skip
        settings = load_settings(_config_path(args))
        if args.command == "config":
            print(settings_to_yaml(settings), end="")
            return EXIT_OK
        configure_logging(settings.logging.level, settings.logging.format)
        if settings.workers.retain_memory:
            retain_freed_memory()
        if args.command == "process":
            return _process(args, settings)
        return _run(settings, _config_path(args))
    except ConfigError as exc:
        print(f"skystream: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Fatal as exc:
        print(f"skystream: {exc}", file=sys.stderr)
        return EXIT_FAILED
