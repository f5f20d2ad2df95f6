"""One typed settings tree, loaded from YAML with ``SKYSTREAM_`` environment overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from astropy.nddata.bitmask import interpret_bit_flags
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from pydantic_settings.sources.utils import parse_env_vars

from daemon.errors import Fatal
from daemon.fileio.fits_walk import DEFAULT_MAX_EXPOSURE_BYTES
from daemon.fileio.saved_background import SaveBackground
from processors import bad_pixel_mask
from processors.background import (
    ENGINES,
    ESTIMATORS,
    RMS_ESTIMATORS,
    Engine,
    Estimator,
    RmsEstimator,
)
from processors.combine import Combine
from processors.dq import DQ_FLAG_MAP
from processors.reference_background import SCALE_METHODS, ScaleMethod
from processors.skystats import SkyStat
from processors.subtract import ERROR_MODES, ErrorMode

__all__ = [
    "ConfigError",
    "Settings",
    "dq_flag_bits",
    "load_settings",
    "merge_overrides",
    "settings_to_yaml",
]

ENV_PREFIX = "SKYSTREAM_"
ENV_DELIMITER = "__"
#: Names the configuration file; not a setting.
CONFIG_VARIABLE = f"{ENV_PREFIX}CONFIG"


def _integer_text(value: Any) -> Any:
    """``"4"`` (an environment variable) is the bit value 4, as in YAML."""
    return int(value) if isinstance(value, str) and value.strip().isdecimal() else value


def _check_dqbits(value: int | str | None) -> int | str | None:
    bad_pixel_mask(np.zeros(1, dtype=np.uint32), value)
    return value


#: A DQ bit-flag expression (astropy syntax, JWST names), checked when the config loads.
DqBits = Annotated[int | str | None, BeforeValidator(_integer_text), AfterValidator(_check_dqbits)]


def dq_flag_bits(flags: int | str) -> int:
    """The DQ bits named by ``flags``: an integer, or JWST DQ names joined by ``+``.

    Unlike ``dqbits`` (bits to *ignore*), these are the bits meant, so ``~`` is refused.

    Raises
    ------
    ValueError
        For an unknown name, a ``~``, or bits outside the 32 of a DQ array.

    Examples
    --------
    >>> dq_flag_bits("NON_SCIENCE+DO_NOT_USE"), dq_flag_bits(0)
    (513, 0)
    """
    if isinstance(flags, str) and "~" in flags:
        raise ValueError(f"DQ flags name the bits meant, no '~': got {flags!r}")
    try:
        bits = interpret_bit_flags(flags, flag_name_map=DQ_FLAG_MAP)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{flags!r} is not a DQ flag expression: {exc}") from None
    if bits is None or not 0 <= int(bits) < 2**32:
        raise ValueError(f"DQ flags must be 32-bit, got {flags!r}")
    return int(bits)


def _check_dq_flags(value: int | str) -> int | str:
    dq_flag_bits(value)
    return value


#: DQ bits that mark pixels (an integer, or JWST names joined by ``+``); 0: none.
DqFlags = Annotated[int | str, BeforeValidator(_integer_text), AfterValidator(_check_dq_flags)]


class ConfigError(Fatal):
    """The configuration is invalid; the message names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DirectorySourceSettings(_Section):
    """Watch a folder for new FITS files."""

    path: Path = Field(Path("inbox"), description="Folder watched for new exposures.")
    patterns: list[str] = Field(
        ["*.fits", "*.fit", "*.fts", "*.fz"],
        description="File-name patterns that are exposures (*.fz: fpack-compressed FITS).",
    )
    polling: bool = Field(
        False, description="Poll instead of inotify (NFS and other network file systems)."
    )
    poll_interval_seconds: float = Field(1.0, gt=0, description="Polling observer period.")
    settle_seconds: float = Field(
        2.0,
        ge=0,
        description="Without a close/rename event, a complete FITS is taken once its size "
        "and mtime have not changed for this long.",
    )
    incomplete_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="A FITS that stays incomplete and unchanged this long is quarantined "
        "as truncated.",
    )
    rescan_seconds: float = Field(
        30.0, gt=0, description="Period of the reconciliation scan (events can be lost)."
    )
    check_interval_seconds: float = Field(
        0.25, gt=0, description="How often pending files are checked for completeness."
    )
    create: bool = Field(
        False,
        description="Create the folder when it does not exist; otherwise a missing folder "
        "(a misspelt path) is a start-up error.",
    )
    allow_outside_symlinks: bool = Field(
        False,
        description="Accept symbolic links whose target lies outside the watched folder "
        "(refused as outside_roots otherwise).",
    )
    after: Literal["keep", "archive"] = Field(
        "keep",
        description="A finished input (product written, or skipped) stays in the folder "
        "(keep) or moves to archive_path/<UTC date>/ (archive), so that the folder and the "
        "ledger hold only what is still to come. Stack backgrounds and quarantined files "
        "are never archived.",
    )
    archive_path: Path | None = Field(
        None, description="Folder given to skystream to own, for after: archive."
    )

    @model_validator(mode="after")
    def _archive_has_a_folder(self) -> DirectorySourceSettings:
        if self.after == "archive" and self.archive_path is None:
            raise ValueError("after: archive needs archive_path (a folder skystream may own)")
        return self


class KafkaSecuritySettings(_Section):
    """How the clients authenticate; secrets are read from a file or an environment variable."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (SASL_* protocols)."
    )
    username: str | None = Field(None, description="SASL user name.")
    password_file: Path | None = Field(
        None, description="File holding the SASL password (a mounted Secret)."
    )
    password_env: str | None = Field(
        None, description="Environment variable holding the SASL password."
    )
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Key of the client certificate.")
    ssl_check_hostname: bool = Field(True, description="Check the brokers' host names.")


class KafkaSourceSettings(_Section):
    """Consume ExposureEvents (claim checks pointing at files) from a Kafka topic."""

    bootstrap_servers: list[str] = Field(["localhost:9092"], description="Kafka brokers.")
    security: KafkaSecuritySettings = KafkaSecuritySettings()
    topic: str = Field("skystream.exposures", description="Topic of ExposureEvents.")
    group_id: str = Field("skystream", description="Consumer group (replicas share it).")
    client_id: str = Field("skystream", description="Client id shown to the brokers.")
    dead_letter_topic: str = Field(
        "skystream.dead-letter", description="Malformed or refused events go here."
    )
    allowed_roots: list[Path] = Field(
        [Path(".")], description="Event URIs must resolve (symlinks too) inside one of these."
    )
    max_event_bytes: int = Field(65536, ge=256, description="Larger events are refused.")
    session_timeout_ms: int = Field(10000, ge=1000, description="Consumer session timeout.")
    heartbeat_interval_ms: int = Field(3000, ge=100, description="Consumer heartbeat.")
    max_poll_interval_ms: int = Field(300000, ge=1000, description="Longest gap between polls.")
    fetch_max_wait_ms: int = Field(
        100, ge=0, description="Longest the brokers hold a fetch that has no new events."
    )
    state_topic: str | None = Field(
        "skystream.state",
        description="Compacted topic of stack membership per stack key, read by a replica "
        "that is given partitions; null: none.",
    )
    mosaic_topic: str = Field(
        "skystream.mosaic",
        description="ProductEvents keyed by mosaic group, from stage 1 to the sky-matching "
        "stage (skymatch.enabled); give it as many partitions as replicas.",
    )
    mosaic_group_id: str = Field(
        "skystream-skymatch",
        description="Consumer group of the sky-matching stage (each mosaic group is matched "
        "on one replica).",
    )
    pause_after: int = Field(
        32, ge=1, description="Events fetched but not yet dispatched before a partition pauses."
    )
    commit_interval_seconds: float = Field(
        1.0, gt=0, description="How often settled offsets are committed."
    )
    revoke_grace_seconds: float = Field(
        20.0, ge=0, description="How long a revoked partition's in-flight work may finish."
    )


class SourceSettings(_Section):
    """Where exposures come from."""

    kind: Literal["directory", "kafka"] = Field(
        "directory", description="directory: watch a folder; kafka: consume events."
    )
    directory: DirectorySourceSettings = DirectorySourceSettings()
    kafka: KafkaSourceSettings = KafkaSourceSettings()


class OutputSettings(_Section):
    """Where products go (and, optionally, where their events are published)."""

    product_topic: str | None = Field(
        None, description="Kafka topic for ProductEvents (brokers from source.kafka); null: none."
    )
    skymatch_topic: str | None = Field(
        None, description="Kafka topic for SkyMatchEvents when a mosaic group closes; null: none."
    )

    directory: Path = Field(Path("products"), description="Product folder.")
    suffix: str = Field("_bsub", description="Appended to the input stem for the product.")
    sidecar: bool = Field(True, description="Write a JSON summary beside each product.")
    fsync: bool = Field(
        True, description="fsync products and their folder before a file counts as done."
    )
    quicklook: bool = Field(
        False,
        description="Write <product>.png beside each product: input, background and residual "
        "(rendered off the hot path; dropped rather than waited for).",
    )
    save_background: SaveBackground = Field(
        "none",
        description="Save the subtracted background in the product: none; mesh: the model's "
        "mesh and the cards that re-create the map (BKGMESH); full: the map (BKG).",
    )


class QuarantineSettings(_Section):
    """Where bad input goes."""

    directory: Path = Field(Path("quarantine"), description="Quarantine folder.")
    move: bool = Field(
        True,
        description="Move the bad file into the quarantine folder (the daemon's own inbox); "
        "otherwise only the reason JSON is written.",
    )


class StateSettings(_Section):
    """Durable service state (ledger of finished inputs)."""

    directory: Path = Field(Path(".skystream"), description="State folder.")


class InputSettings(_Section):
    """What input shapes are accepted."""

    allow_cubes: bool = Field(
        True,
        description="Accept 3-D (nints, ny, nx) exposures; when false they are quarantined "
        "as wrong_shape.",
    )
    max_exposure_bytes: int = Field(
        DEFAULT_MAX_EXPOSURE_BYTES,
        ge=2880,
        description="Largest input file, and largest size its FITS headers may announce; "
        "a larger one is quarantined at once as too_large.",
    )


class BackgroundRule(_Section):
    """Which exposures are dedicated background (sky) frames rather than science."""

    header: dict[str, list[str]] = Field(
        {},
        description="Header keyword -> values that mark a background exposure "
        "(case-insensitive), e.g. {OBSTYPE: [SKY, BACKGROUND]}.",
    )
    filename: list[str] = Field(
        [], description="File-name patterns that mark a background exposure, e.g. '*_sky*'."
    )


class RoutingSettings(_Section):
    """How exposures are grouped into ordered lanes."""

    stack_key: list[str] = Field(
        ["INSTRUME", "DETECTOR", "FILTER"],
        description="Header keywords whose values form the stack key (one lane per key).",
    )
    background_when: BackgroundRule = Field(
        BackgroundRule(),
        description="Rule for background exposures (an event's explicit kind wins).",
    )


class StackSettings(_Section):
    """The ``stack`` method: a rolling stack of dedicated background exposures per key."""

    max_members: int = Field(8, ge=1, description="Most members per stack (oldest leave).")
    max_age_seconds: float | None = Field(
        None, gt=0, description="Members older than this (observation time) are dropped."
    )
    min_members: int = Field(1, ge=1, description="Fewest members to subtract the stack.")
    combine: Combine = Field("jwst", description="Combination rule (jwst: 3-sigma clipped mean).")
    sigma: float = Field(3.0, gt=0, description="Clipping threshold for jwst.")
    maxiters: int | None = Field(None, ge=1, description="Clip iterations; null: converge.")
    k_err: float = Field(3.0, gt=0, description="error-clip threshold in units of ERR.")
    when_insufficient: Literal["wait", "model", "skip"] = Field(
        "model",
        description="Science arriving while the stack is too small: wait for backgrounds, "
        "subtract its own 2-D model, or pass it through as S_BKDSUB=SKIPPED.",
    )
    wait_seconds: float = Field(300.0, gt=0, description="How long 'wait' waits.")
    after_wait: Literal["model", "skip"] = Field(
        "skip", description="What 'wait' does when the time is up."
    )
    save_combined: bool = Field(
        False, description="Write <stem>_combinedbackground.fits beside each product."
    )


class RollingSkySettings(_Section):
    """The ``rolling-sky`` method: the normalised sky of recent science frames per key."""

    members: int = Field(5, ge=1, description="Recent frames kept per stack key.")
    min_members: int = Field(2, ge=1, description="Fewest other frames to use a template.")
    combine: Combine = Field("jwst", description="Combination rule for the normalised skies.")
    sigma: float = Field(3.0, gt=0, description="Clipping threshold for jwst.")


class ReferenceFitSettings(_Section):
    """``scale: fit``: the factor fitted to the exposure's sky (the JWST WFSS background)."""

    method: ScaleMethod = Field(
        "jwst",
        description="jwst: iterated error-weighted mean with percentile rejection (jwst "
        f">= 1.17); robust-mean: ratio of the 25-75 % means (jwst <= 1.16); {SCALE_METHODS}.",
    )
    maxiter: int = Field(
        5, ge=0, description="jwst: outlier-rejection iterations (0: the plain weighted mean)."
    )
    outlier_percent: float = Field(
        1.0, ge=0, lt=50, description="jwst: percentile rejected at each end per iteration."
    )
    rms_stop: float = Field(
        0.0,
        ge=0,
        description="jwst: stop once the RMS of the residual profile improves by less than "
        "this fraction (0: never); needs dispersion_axis.",
    )
    dispersion_axis: Annotated[Literal[1, 2] | None, BeforeValidator(_integer_text)] = Field(
        None, description="1: spectra disperse along x, 2: along y (for rms_stop)."
    )
    dqbits: DqBits = Field(
        None,
        description="DQ bits to IGNORE when choosing background pixels; null: DQ not used "
        "(as JWST).",
    )
    passes: int = Field(
        1,
        ge=1,
        description="2 or more: the sources detected in the residual of a fit are masked and "
        "the factor fitted again.",
    )
    nsigma: float = Field(3.0, gt=0, description="Source detection threshold [ERR].")
    npixels: int = Field(5, ge=1, description="Fewest connected pixels of a source.")
    dilate: float = Field(5.0, ge=0, description="Sources grown by this radius [pixels].")

    @model_validator(mode="after")
    def _rms_stop_has_an_axis(self) -> ReferenceFitSettings:
        if self.rms_stop > 0 and self.dispersion_axis is None:
            raise ValueError("rms_stop needs dispersion_axis (1: x, 2: y)")
        return self


class ReferenceSettings(_Section):
    """The ``reference`` method: a reference (master) background, scaled and subtracted."""

    path: Path | None = Field(None, description="The reference background of every exposure.")
    folder: Path | None = Field(
        None,
        description="Folder of reference backgrounds: an exposure gets the one file whose "
        "match_keys equal its own.",
    )
    match_keys: list[str] = Field(
        ["INSTRUME", "DETECTOR", "FILTER"],
        description="Header keywords that must agree between an exposure and its reference "
        "(folder; case-insensitive).",
    )
    scale: float | Literal["fit"] = Field(
        1.0,
        description="A fixed scale (the Liger/IRIS master background), or fit: scaled to the "
        "exposure's sky as the JWST WFSS background.",
    )
    fit: ReferenceFitSettings = ReferenceFitSettings()

    @model_validator(mode="after")
    def _one_source(self) -> ReferenceSettings:
        if self.path is not None and self.folder is not None:
            raise ValueError("give path or folder, not both")
        return self


class BackgroundSettings(_Section):
    """The background model subtracted from each exposure."""

    method: Literal["model", "stack", "rolling-sky", "reference"] = Field(
        "model",
        description="model: each exposure's own 2-D sky; stack: rolling stack of background "
        "exposures; rolling-sky: normalised sky of recent science frames; reference: a "
        "reference (master) background file, scaled.",
    )
    engine: Engine = Field("fast", description=f"Background engine, one of {ENGINES}.")
    box_size: int | tuple[int, int] = Field(64, description="Mesh box size in pixels.")
    filter_size: int | tuple[int, int] = Field(3, description="Odd median filter size.")
    sigma_clip: bool = Field(True, description="Sigma clip each box (false: photutils None).")
    sigma_low: float = Field(3.0, gt=0, description="Lower clipping threshold [sigma].")
    sigma_high: float = Field(3.0, gt=0, description="Upper clipping threshold [sigma].")
    maxiters: int | None = Field(10, ge=1, description="Clipping iterations; null: converge.")
    cenfunc: Literal["median", "mean"] = Field("median", description="Clipping centre.")
    estimator: Estimator = Field(
        "sextractor", description=f"Per-box estimator, one of {ESTIMATORS}."
    )
    rms_estimator: RmsEstimator = Field(
        "std", description=f"Per-box noise estimator (mesh engines), one of {RMS_ESTIMATORS}."
    )
    exclude_percentile: float = Field(
        10.0, ge=0, le=100, description="Exclude boxes with more than this % bad pixels."
    )
    edge_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="fast engine: a partial edge box is used only if it covers this share "
        "of a full box.",
    )
    filter_threshold: float | None = Field(
        None, description="Median-filter only mesh cells above this value; null: all."
    )
    dqbits: DqBits = Field(
        0,
        description="DQ bits to IGNORE (astropy bit-flag syntax): 0 = any set bit excludes "
        "the pixel (Liger/IRIS); '~DO_NOT_USE+NON_SCIENCE' = only those exclude; null = "
        "DQ unused.",
    )
    coverage_dq: DqFlags = Field(
        0,
        description="DQ bits that mark pixels without data (mosaic edges): excluded, and the "
        "background there is fill_value (photutils coverage_mask); 0: none.",
    )
    fill_value: float = Field(
        0.0, description="Background where coverage_dq marks no data (.nan: blank)."
    )
    passes: int = Field(
        1,
        ge=1,
        description="Model passes: 2 or more masks the sources detected in the residual and "
        "models again (LSST's DETECTED mask).",
    )
    nsigma: float = Field(3.0, gt=0, description="Source detection threshold [RMS].")
    npixels: int = Field(5, ge=1, description="Fewest connected pixels of a source.")
    dilate: float = Field(5.0, ge=0, description="Sources grown by this radius [pixels].")
    source_dq: DqFlags = Field(
        0,
        description="DQ bits set in the product where a multi-pass model masked sources "
        "(e.g. OTHER_BAD_PIXEL); 0: DQ unchanged.",
    )
    errors: ErrorMode = Field("quadrature", description=f"ERR propagation, one of {ERROR_MODES}.")
    bin_size: int = Field(128, ge=1, description="lsst engine: superpixel size in pixels.")
    order: int = Field(6, ge=0, description="lsst engine: Chebyshev order (reduced if needed).")
    weighting: bool = Field(True, description="lsst engine: inverse-variance weighted fit.")
    threads: int = Field(
        2,
        ge=1,
        description="fast engine: threads sharing one exposure (bands of boxes and rows); "
        "a single-lane stream otherwise leaves the other core idle.",
    )
    stack: StackSettings = StackSettings()
    rolling_sky: RollingSkySettings = RollingSkySettings()
    reference: ReferenceSettings = ReferenceSettings()

    @model_validator(mode="after")
    def _reference_is_named(self) -> BackgroundSettings:
        given = self.reference.path is not None or self.reference.folder is not None
        if self.method == "reference" and not given:
            raise ValueError("method reference needs reference.path or reference.folder")
        return self


class SkyMatchSettings(_Section):
    """Sky matching of the products of one mosaic group as they arrive."""

    enabled: bool = Field(False, description="Match the sky of products per mosaic group.")
    group_key: list[str] = Field(
        ["ASN_ID"],
        description="Header keywords forming the mosaic group (an event's group wins); "
        "products without them are not matched.",
    )
    skymethod: Literal["match", "global+match", "local", "global", "user"] = Field(
        "match", description="JWST skymatch method; user: the levels of skylist."
    )
    skylist: Path | None = Field(
        None,
        description="user: text file of 'exposure-id level' lines (# comments), re-read "
        "when it changes.",
    )
    skystat: SkyStat = Field("mode", description="Sky statistic (stsci.imagestats semantics).")
    match_down: bool = Field(True, description="Reference is the lowest sky (else highest).")
    subtract: bool = Field(False, description="Subtract the levels from product pixels.")
    dqbits: DqBits = Field(
        "~DO_NOT_USE+NON_SCIENCE", description="DQ bits to ignore (JWST skymatch default)."
    )
    lower: float | None = Field(None, description="Lowest pixel value used.")
    upper: float | None = Field(None, description="Highest pixel value used.")
    nclip: int = Field(5, ge=0, description="Clipping passes.")
    lsigma: float = Field(4.0, gt=0, description="Lower clip [sigma].")
    usigma: float = Field(4.0, gt=0, description="Upper clip [sigma].")
    binwidth: float = Field(0.1, gt=0, description="Histogram bin [sigma] for mode/midpt.")
    close_after_seconds: float = Field(
        600.0, gt=0, description="A group closes when no member arrived for this long."
    )
    max_members: int = Field(50, ge=2, description="A group closes at this many members.")
    end_when: BackgroundRule = Field(
        BackgroundRule(), description="Header/file-name rule for a group's last exposure."
    )

    @model_validator(mode="after")
    def _user_levels_are_listed(self) -> SkyMatchSettings:
        if self.skymethod == "user" and self.skylist is None:
            raise ValueError("skymethod user needs skylist")
        return self


class LaneSettings(_Section):
    """Per-stack-key ordered queues."""

    queue_size: int = Field(8, ge=1, description="Exposures waiting per lane (backpressure).")
    max_keys: int = Field(
        256,
        ge=1,
        description="Most stack keys with a lane at once; an exposure of a further key is "
        "quarantined as too_many_keys (a header typo must not grow memory and metrics).",
    )
    idle_seconds: float = Field(
        3600.0,
        gt=0,
        description="A lane idle this long is removed, with its metric series.",
    )


class WorkerSettings(_Section):
    """CPU worker pool."""

    threads: int = Field(2, ge=1, description="Worker threads for reading, modelling, writing.")
    retain_memory: bool = Field(
        True,
        description="Keep freed memory for the next exposure instead of returning it to the "
        "system (glibc); on VMs that reclaim freed pages this makes reads ~10x faster.",
    )


class MetricsSettings(_Section):
    """Prometheus metrics and health endpoints."""

    enabled: bool = Field(True, description="Serve /metrics, /healthz and /readyz.")
    host: str = Field(
        "127.0.0.1", description="Listen address; 0.0.0.0 serves every interface (containers)."
    )
    port: int = Field(9108, ge=0, le=65535, description="Listen port; 0 picks a free one.")


class ShutdownSettings(_Section):
    """Graceful stop on SIGTERM/SIGINT."""

    grace_seconds: float = Field(
        30.0, gt=0, description="Time allowed for in-flight exposures to finish."
    )


class SupervisionSettings(_Section):
    """How long-lived tasks are watched and restarted."""

    max_restarts: int = Field(
        5,
        ge=0,
        description="Failures of one task tolerated within restart_window_seconds; one more "
        "and the process exits non-zero (so systemd or Kubernetes restarts it).",
    )
    restart_window_seconds: float = Field(
        300.0, gt=0, description="Window over which a task's failures are counted."
    )
    stall_seconds: float = Field(
        600.0,
        gt=0,
        description="A task working this long without progress is stuck: /healthz fails.",
    )


class LoggingSettings(_Section):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Level.")
    format: Literal["text", "json"] = Field("text", description="Human text or JSON lines.")


class Settings(BaseSettings):
    """The whole skystream configuration.

    `load_settings` layers its sources: built-in defaults, then the YAML file, then the
    ``SKYSTREAM_<SECTION>__<KEY>`` environment variables, each parsed by its field's type.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        env_parse_none_str="null",
        extra="forbid",
        frozen=True,
    )

    source: SourceSettings = SourceSettings()
    output: OutputSettings = OutputSettings()
    quarantine: QuarantineSettings = QuarantineSettings()
    state: StateSettings = StateSettings()
    input: InputSettings = InputSettings()
    routing: RoutingSettings = RoutingSettings()
    background: BackgroundSettings = BackgroundSettings()
    skymatch: SkyMatchSettings = SkyMatchSettings()
    lanes: LaneSettings = LaneSettings()
    workers: WorkerSettings = WorkerSettings()
    metrics: MetricsSettings = MetricsSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    logging: LoggingSettings = LoggingSettings()

    def resolved(self, base: Path) -> Settings:
        """Return these settings with every relative folder made absolute under ``base``."""

        def absolute(path: Path) -> str:
            return str(path if path.is_absolute() else (base / path).resolve())

        return merge_overrides(
            self,
            {
                "source": {
                    "directory": {"path": absolute(self.source.directory.path)}
                    | (
                        {}
                        if self.source.directory.archive_path is None
                        else {"archive_path": absolute(self.source.directory.archive_path)}
                    ),
                    "kafka": {
                        "allowed_roots": [absolute(p) for p in self.source.kafka.allowed_roots]
                    },
                },
                "output": {"directory": absolute(self.output.directory)},
                "quarantine": {"directory": absolute(self.quarantine.directory)},
                "state": {"directory": absolute(self.state.directory)},
                "background": {
                    "reference": {
                        name: absolute(getattr(self.background.reference, name))
                        for name in ("path", "folder")
                        if getattr(self.background.reference, name) is not None
                    }
                },
                "skymatch": {}
                if self.skymatch.skylist is None
                else {"skylist": absolute(self.skymatch.skylist)},
            },
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values given: validating a merged tree never reads the environment again.

        `load_settings` reads the file and the environment itself, so that it can name the
        variable behind an invalid value.
        """
        return (init_settings,)


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


@dataclass(frozen=True)
class _Override:
    """The values one environment variable sets (nested like the settings)."""

    variable: str
    values: dict[str, Any]

    def sets(self, loc: tuple[int | str, ...]) -> bool:
        """True when this variable set the value at ``loc`` (or a value holding it)."""
        node: Any = self.values
        for part in loc:
            if not isinstance(node, dict):
                return True  # a list or mapping set whole by this variable
            if part not in node:
                return False
            node = node[part]
        return True


def _env_overrides(environ: Mapping[str, str]) -> list[_Override]:
    """The overrides of ``SKYSTREAM_A__B=value`` variables, each parsed by its field's type.

    Text stays text, lists, mappings and sections are JSON, ``null`` is none. Variables
    that name no section and have no ``__`` (``SKYSTREAM_CONFIG``, Kubernetes service
    links such as ``SKYSTREAM_PORT``) are not settings. Ordered so that a variable for a
    whole section comes before those for its keys.
    """
    overrides = []
    for name, raw in environ.items():
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_VARIABLE:
            continue
        path = name[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER)
        key = ".".join(path)
        if path[0] not in Settings.model_fields:
            if len(path) > 1:
                raise ConfigError(f"environment variable {name}: unknown key '{key}'")
            continue
        try:
            values = _Environment({name: raw})()
        except SettingsError:
            raise ConfigError(
                f"environment variable {name}: '{key}' takes JSON (a list or a mapping), "
                f"got {raw!r}"
            ) from None
        overrides.append(_Override(name, values))
    return sorted(overrides, key=lambda o: o.variable.count(ENV_DELIMITER))


def _describe(error: ValidationError, overrides: list[_Override]) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            problem = f"unknown key '{key}'"
        else:
            problem = f"key '{key}': {item['msg']} (got {item.get('input')!r})"
        setters = [o.variable for o in overrides if o.sets(item["loc"])]
        lines.append(f"environment variable {setters[-1]}: {problem}" if setters else problem)
    return "; ".join(lines)


def _validate(tree: Mapping[str, Any], overrides: list[_Override] | None = None) -> Settings:
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, overrides or [])) from None


def merge_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """Return new settings with a nested mapping of overrides applied and validated."""
    return _validate(_deep_merge(settings.model_dump(mode="json"), overrides))


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    base: Path | None = None,
) -> Settings:
    """Load settings: built-in defaults, then the YAML file, then the environment.

    Parameters
    ----------
    path : Path, optional
        YAML file; the built-in defaults (identical to ``config/default.yaml``) when None.
    environ : mapping, optional
        Environment to read ``SKYSTREAM_<SECTION>__<KEY>`` overrides from; `os.environ`
        by default. Each value is parsed by its field's type: text as is, numbers and
        booleans as pydantic reads them, lists and mappings as JSON, ``null`` as none.
    base : Path, optional
        Folder that relative paths are resolved against; the working directory by default.

    Returns
    -------
    Settings
        Validated settings with absolute paths.

    Raises
    ------
    ConfigError
        If the file cannot be read or parsed, or a key is unknown or invalid; the message
        names the key, and the environment variable when one set it.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {path} must hold a mapping at the top")
        tree = loaded or {}
    overrides = _env_overrides(os.environ if environ is None else environ)
    for override in overrides:
        tree = _deep_merge(tree, override.values)
    return _validate(tree, overrides).resolved(Path.cwd() if base is None else base)


def settings_to_yaml(settings: Settings) -> str:
    """Render settings as YAML (what ``skystream config`` prints)."""
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
