"""The event contract: tolerant reading, UTC times, URIs of the input's kind, checked ids,
FAILED product events, and JSON Schema files that are current and describe real events."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest

from daemon.app.settings import BackgroundRule
from daemon.errors import InvalidInput
from daemon.event_schemas import event_schemas
from daemon.events import (
    MAX_ID_BYTES,
    ExposureEvent,
    ProductEvent,
    SkyMatchEvent,
    SkyMatchMember,
    exposure_id_from_path,
    path_of,
    uri_of,
)
from daemon.intake.claims import parse_exposure_event
from daemon.intake.kinds import matches_rule, observation_time

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "x y.fits").write_bytes(b"SIMPLE")
    return folder


def _parse(root: Path, **fields: object) -> ExposureEvent:
    document = {"schema": "skystream.exposure/1", "exposure_id": "e1",
                "uri": str(root / "x y.fits"), **fields}  # fmt: skip
    return parse_exposure_event(json.dumps(document).encode(), max_bytes=65536,
                                allowed_roots=[root])  # fmt: skip


def _refused(root: Path, **fields: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        _parse(root, **fields)
    return info.value


def test_unknown_fields_in_the_same_version_are_ignored(root: Path) -> None:
    event = _parse(root, priority="high", origin={"telescope": "SIM"})
    assert event.exposure_id == "e1"
    assert "priority" not in event.model_dump()
    refused = _refused(root, schema="skystream.exposure/2")
    assert refused.reason == "malformed_event"
    assert "schema" in refused.detail


@pytest.fixture
def local_time_is_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time is UTC+9, so reading a time as local would show."""
    monkeypatch.setenv("TZ", "JST-9")  # a POSIX rule: needs no time-zone database
    time.tzset()
    assert time.timezone == -9 * 3600
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_time_is_not_utc")
def test_naive_observation_time_is_utc_never_local(root: Path) -> None:
    naive = _parse(root, obs_time="2024-05-01T03:04:05")
    assert naive.obs_time == datetime(2024, 5, 1, 3, 4, 5, tzinfo=UTC)
    expected = 1714532645.0  # 2024-05-01T03:04:05Z, computed independently (date -u -d ...)
    assert observation_time(naive, {}, fallback=0.0) == expected
    offset = _parse(root, obs_time="2024-05-01T05:04:05+02:00")
    assert offset.obs_time == naive.obs_time
    assert offset.obs_time.utcoffset() == timedelta(hours=2)  # kept as given


@pytest.mark.parametrize(
    ("exposure_id", "problem"),
    [("..", "starts with '.'"), (".x.tmp-1", "starts with '.'"), ("a/b", "path separator"),
     ("a\\b", "path separator"), ("a\nb", "control character U+000A"),
     ("evil\u202e", "control character U+202E"), ("x" * (MAX_ID_BYTES + 1), "201 bytes long"),
     ("", "is empty")],
)  # fmt: skip
def test_unsafe_exposure_ids_are_malformed_events(
    root: Path, exposure_id: str, problem: str
) -> None:
    refused = _refused(root, exposure_id=exposure_id)
    assert refused.reason == "malformed_event"
    assert refused.detail.startswith("exposure_id: Value error, exposure_id ")
    assert problem in refused.detail
    assert "\n" not in refused.detail


def test_ids_made_from_odd_file_names_are_always_valid() -> None:
    names = {"x.fits": "x", ".hidden.fit": "_hidden", "a\\b\u2028c\x7fd.FTS": "a_b_c_d",
             ".fits": "_", "tab\there.fits": "tab_here", "é" * 150 + ".fits": None}  # fmt: skip
    for name, expected in names.items():
        made = exposure_id_from_path(Path(name))
        assert ExposureEvent.for_file(Path("/in") / name).exposure_id == made
        assert expected is None or made == expected
    long = exposure_id_from_path(Path("é" * 150 + ".fits"))
    assert len(long.encode()) <= MAX_ID_BYTES
    assert long != exposure_id_from_path(Path("é" * 151 + ".fits"))


def test_uris_keep_their_kind_and_are_resolved(root: Path, tmp_path: Path) -> None:
    target = root / "x y.fits"
    as_uri = _parse(root, uri=target.as_uri())
    assert as_uri.uri == "file://" + str(target).replace(" ", "%20")
    assert as_uri.path == target
    assert as_uri.uri_for(tmp_path / "out" / "x y_bsub.fits") == (
        (tmp_path / "out" / "x y_bsub.fits").as_uri()
    )
    (tmp_path / "link.fits").symlink_to(target)
    via_link = _parse(root, uri=str(root / ".." / "link.fits"))
    assert via_link.uri == str(target)  # a plain path stays a plain path, resolved
    assert via_link.uri_for(Path("/p/y.fits")) == "/p/y.fits"
    assert path_of("file://localhost/a/b%25c") == Path("/a/b%c")


@pytest.mark.parametrize(
    ("uri", "reason", "words"),
    [("s3://bucket/x.fits", "malformed_event", "only file paths and file:// URIs"),
     ("file://elsewhere/x.fits", "malformed_event", "names the host 'elsewhere'"),
     ("file:///x%00.fits", "malformed_event", "NUL"),
     ("{root}", "outside_roots", "outside the allowed roots"),
     ("{root}/sub", "not_a_file", "not a regular file"),
     ("{root}/pipe.fits", "not_a_file", "not a regular file")],
)  # fmt: skip
def test_uris_that_name_no_local_file_inside_the_roots(
    root: Path, uri: str, reason: str, words: str
) -> None:
    (root / "sub").mkdir()
    os.mkfifo(root / "pipe.fits")
    refused = _refused(root, uri=uri.format(root=root))
    assert refused.reason == reason
    assert words in refused.detail


def test_filename_rules_see_the_decoded_name(root: Path) -> None:
    rule = BackgroundRule(filename=["* y.fits"])
    assert matches_rule(rule, {}, (root / "x y.fits").as_uri())


def _product(**fields: object) -> ProductEvent:
    base: dict[str, object] = {
        "exposure_id": "e1", "input_uri": "/raw/e1.fits", "product_uri": "/p/e1_bsub.fits",
        "status": "COMPLETE", "method": "model", "stack_key": "K", "background_level": 1.5,
        "background_rms": 0.5, "errors": "preserve", "inputs_used": ["e1"], "shape": [4, 4],
        "timings": {"read": 0.1}, "software_version": "1.0",
        "produced_at": datetime(2024, 1, 1, tzinfo=UTC),
    }  # fmt: skip
    return ProductEvent(**(base | fields))


def test_failed_product_event_has_reason_and_detail_and_no_product(root: Path) -> None:
    event = _parse(root, stack_key="K")
    failed = ProductEvent.failed(event, "invalid_header", "HDU 1: BITPIX = 7",
                                 software_version="1.0")  # fmt: skip
    assert (failed.status, failed.reason, failed.detail) == (
        "FAILED", "invalid_header", "HDU 1: BITPIX = 7"
    )  # fmt: skip
    assert failed.product_uri is None
    assert failed.input_uri == str(root / "x y.fits")
    assert failed.stack_key == "K"
    assert failed.produced_at.tzinfo is not None
    with pytest.raises(ValueError, match="names no product"):
        _ = failed.product_path
    back = ProductEvent.model_validate_json(failed.model_dump_json(by_alias=True))
    assert back == failed
    with pytest.raises(ValueError, match="exactly when status is FAILED"):
        _product(status="FAILED", product_uri=None)
    with pytest.raises(ValueError, match="exactly when status is not FAILED"):
        _product(product_uri=None)
    assert _product().product_path == Path("/p/e1_bsub.fits")
    assert _product(product_uri="file:///p/e%201.fits").product_path == Path("/p/e 1.fits")


def test_skymatch_events_carry_their_time() -> None:
    before = datetime.now(UTC)
    table = SkyMatchEvent(group="g", revision=1, closed=True, method="global", subtract=False,
                          members=[SkyMatchMember(exposure_id="a", product=None, level=None,
                                                  valid=False)])  # fmt: skip
    assert before <= table.produced_at <= datetime.now(UTC)
    published = json.loads(table.model_dump_json(by_alias=True))
    assert datetime.fromisoformat(published["produced_at"]) == table.produced_at
    again = SkyMatchEvent.model_validate(published | {"produced_at": "2024-05-01T00:00:00"})
    assert again.produced_at == datetime(2024, 5, 1, tzinfo=UTC)
    assert again.produced_at != datetime(2024, 5, 1, tzinfo=timezone(timedelta(hours=1)))


def test_committed_schema_files_are_current() -> None:
    generated = event_schemas()
    committed = {path.name: path.read_text() for path in (REPO / "schemas").glob("*.json")}
    assert sorted(committed) == sorted(generated)
    for name, text in generated.items():
        assert committed[name] == text, f"{name} is stale: run python -m daemon.event_schemas"


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO / "schemas" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schemas_accept_real_events_and_reject_broken_ones(root: Path) -> None:
    products = _validator("skystream.product-1.schema.json")
    failed = ProductEvent.failed(_parse(root), "not_fits", "junk", software_version="1.0")
    for event in (_product(), failed):
        products.validate(event.model_dump(mode="json", by_alias=True))
    broken = failed.model_dump(mode="json", by_alias=True) | {"reason": None}
    assert not products.is_valid(broken)
    exposures = _validator("skystream.exposure-1.schema.json")
    exposures.validate({"schema": "skystream.exposure/1", "exposure_id": "e1",
                        "uri": "file:///raw/e1.fits", "obs_time": "2024-05-01T03:04:05",
                        "added_later": 1})  # fmt: skip
    for bad_id in ("..", "a/b", "new\nline"):
        assert not exposures.is_valid({"exposure_id": bad_id, "uri": "/x.fits"})
    table = SkyMatchEvent(group="g", revision=0, closed=False, method="m", subtract=True,
                          members=[])  # fmt: skip
    _validator("skystream.skymatch-1.schema.json").validate(
        table.model_dump(mode="json", by_alias=True)
    )


def test_the_readme_tables_name_every_field() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n### Events\n", 1)[1].split("\n## ", 1)[0]
    rows = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
    for model in (ExposureEvent, ProductEvent, SkyMatchEvent):
        for name, field in model.model_fields.items():
            assert f"`{field.alias or name}`" in rows, f"{model.__name__}.{name}"


def test_names_that_are_not_utf8_keep_distinct_readable_ids() -> None:
    latin1 = [Path(os.fsdecode(b"/data/caf\xe9.fits")), Path(os.fsdecode(b"/data/caf\xe8.fits"))]
    ids = [exposure_id_from_path(path) for path in latin1]
    assert ids == ["caf_xe9", "caf_xe8"]  # the bytes shown, not all one "_"
    assert exposure_id_from_path(Path("/data/café.fits")) == "café"  # UTF-8 kept
    for path in latin1:
        assert path_of(uri_of(path)) == path  # an event names the bytes exactly
    assert uri_of(Path("/data/café.fits")) == "/data/café.fits"
