"""The event contract on a real broker: hostile fields are dead letters, additive ones are
not; product events keep the input's URI kind and match the committed JSON Schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from daemon.fileio.fits_io import write_exposure
from tests.conftest import products_in, running, small_exposure, wait_for_count, wait_until
from tests.kafka.helpers import event, kafka_settings, read, send

pytestmark = pytest.mark.asyncio

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


async def test_hostile_fields_are_dead_letters_and_additive_fields_pass(
    tmp_path, bootstrap
) -> None:
    settings = kafka_settings(tmp_path, bootstrap)
    data = tmp_path / "data"
    data.mkdir()
    (data / "sub").mkdir()
    os.mkfifo(data / "pipe.fits")
    good = data / "good one.fits"
    write_exposure(small_exposure(1, size=64), good)
    bad = [
        (event("..", good), "malformed_event", "exposure_id '..' starts with '.'"),
        (event(".x.tmp-1", good), "malformed_event", "exposure_id '.x.tmp-1' starts with '.'"),
        (event("a/b", good), "malformed_event", "holds a path separator"),
        (event("new\nline", good), "malformed_event", "holds the control character U+000A"),
        (event("root", data), "outside_roots", "outside the allowed roots"),
        (event("folder", data / "sub"), "not_a_file", "not a regular file"),
        (event("fifo", data / "pipe.fits"), "not_a_file", "not a regular file"),
    ]
    newer_producer = json.dumps({
        "schema": "skystream.exposure/1", "exposure_id": "good one", "uri": good.as_uri(),
        "obs_time": "2024-05-01T03:04:05", "added_in_a_later_release": {"priority": 1},
    }).encode()  # fmt: skip
    messages = [(b"k", raw) for raw, _, _ in bad] + [(b"k", newer_producer)]
    await send(bootstrap, settings.source.kafka.topic, messages)
    async with running(settings) as service:
        await wait_until(lambda: len(products_in(settings.output.directory)) == 1, 60)
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 1)  # fmt: skip
    letters = await read(bootstrap, settings.source.kafka.dead_letter_topic, len(bad))
    assert [letter["reason"] for letter in letters] == [reason for _, reason, _ in bad]
    for letter, (_, _, words) in zip(letters, bad, strict=True):
        assert words in letter["detail"], letter["detail"]
    assert [p.name for p in products_in(settings.output.directory)] == ["good one_bsub.fits"]
    assert (data / "sub").is_dir() and (data / "pipe.fits").is_fifo()  # nothing moved

    (published,) = await read(bootstrap, settings.output.product_topic, 1)
    schema = json.loads((SCHEMAS / "skystream.product-1.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(published)
    assert published["status"] == "COMPLETE"
    product = settings.output.directory / "good one_bsub.fits"
    assert published["product_uri"] == product.as_uri()  # file:// in, file:// out
    assert published["product_uri"].endswith("/good%20one_bsub.fits")
