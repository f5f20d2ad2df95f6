"""Product names: bounded, one product per input, never another input's product overwritten."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.app.settings import OutputSettings
from daemon.errors import InvalidInput
from daemon.events import ExposureEvent, ProductEvent
from daemon.fileio.fits_io import read_exposure, write_exposure
from daemon.fileio.names import MAX_NAME_BYTES, bounded_name, safe_file_name
from daemon.fileio.products import DirectorySink
from tests.conftest import small_exposure


def test_bounded_name_keeps_short_names_and_hashes_long_ones_apart() -> None:
    assert bounded_name("exp_0001") == "exp_0001"
    assert bounded_name("y" * 200) == "y" * 200
    first, second = bounded_name("a" * 250 + "1"), bounded_name("a" * 250 + "2")
    assert first != second
    assert len(first.encode()) == len(second.encode()) == MAX_NAME_BYTES
    assert first.startswith("a" * 150)
    assert bounded_name("a" * 250 + "1") == first  # stable
    # Never cuts a multi-byte character in half.
    wide = bounded_name("é" * 150, 101)
    assert len(wide.encode()) <= 101 and wide.encode().decode() == wide
    # Unchanged for names made before (state files are found by these names).
    assert safe_file_name("SIMCAM/SIM1/J") == "SIMCAM_SIM1_J-8a17e544ab"


def _summary(sink: DirectorySink, source: Path, exposure_id: str) -> ProductEvent:
    return ProductEvent(
        exposure_id=exposure_id, input_uri=str(source),
        product_uri=str(sink.product_path(exposure_id)), status="COMPLETE", method="model",
        stack_key="k", background_level=1.0, background_rms=0.1, background_params={},
        errors="preserve", inputs_used=[exposure_id], shape=[32, 32], timings={},
        software_version="test", produced_at=datetime.now(UTC),
    )  # fmt: skip


@pytest.fixture
def sink(tmp_path: Path) -> DirectorySink:
    return DirectorySink(OutputSettings(directory=tmp_path / "products", fsync=False))


def _input(folder: Path, name: str, index: int = 0) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    write_exposure(small_exposure(index, size=32), path, fsync=False)
    return path


def test_x_fits_and_x_fit_never_share_a_product(tmp_path: Path, sink: DirectorySink) -> None:
    fits_in = _input(tmp_path / "in", "x.fits", 0)
    fit_in = _input(tmp_path / "in", "x.fit", 1)
    first = ExposureEvent.for_file(fits_in)
    second = ExposureEvent.for_file(fit_in)
    assert first.exposure_id == second.exposure_id == "x"
    product = small_exposure(0, size=32)
    sink.write(product, _summary(sink, fits_in, "x"))
    before = sink.product_path("x").read_bytes()

    with pytest.raises(InvalidInput, match="belongs to") as refused:
        sink.check_name(second.exposure_id, str(fit_in))
    assert refused.value.reason == "name_collision"
    assert str(fits_in) in refused.value.detail
    with pytest.raises(InvalidInput) as refused:
        sink.write(small_exposure(1, size=32), _summary(sink, fit_in, "x"))
    assert refused.value.reason == "name_collision"
    assert sink.product_path("x").read_bytes() == before  # the first input's product stands
    sidecar = json.loads(sink.product_path("x").with_suffix(".json").read_text())
    assert sidecar["input_uri"] == str(fits_in)

    # The same input again (reprocessed, or a new file under its name) may rewrite it.
    sink.check_name("x", str(fits_in))
    sink.write(product, _summary(sink, fits_in, "x"))


def test_long_input_names_give_bounded_product_names(tmp_path: Path, sink: DirectorySink) -> None:
    name = "n" * 230 + ".fits"  # a legal name: 235 bytes
    source = _input(tmp_path / "in", name)
    event = ExposureEvent.for_file(source)
    written = sink.write(small_exposure(0, size=32), _summary(sink, source, event.exposure_id))
    product = Path(written.product_uri)
    assert product.exists() and product.with_suffix(".json").exists()
    assert len(product.name.encode()) <= MAX_NAME_BYTES
    assert product.name.endswith("_bsub.fits") and product.name.startswith("n" * 100)
    assert len(sink.combined_background_path(event.exposure_id).name.encode()) <= MAX_NAME_BYTES
    assert read_exposure(product).shape == (32, 32)
    assert sink.existing_summary(event) == written


def test_sidecar_names_the_input_by_size_and_mtime(tmp_path: Path, sink: DirectorySink) -> None:
    source = _input(tmp_path / "in", "a.fits")
    event = ExposureEvent.for_file(source)
    written = sink.write(small_exposure(0, size=32), _summary(sink, source, "a"))
    info = source.stat()
    assert (written.input_size, written.input_mtime_ns) == (info.st_size, info.st_mtime_ns)
    assert sink.existing_summary(event) == written

    # Same path and size, other mtime (even an older one, as `cp -p` leaves): another input.
    os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns - 10**9))
    assert sink.existing_summary(event) is None
    os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert sink.existing_summary(event) == written
    # A product whose sidecar names another path is not this input's.
    other = ExposureEvent(exposure_id="a", uri=str(tmp_path / "elsewhere" / "a.fits"))
    assert sink.existing_summary(other) is None
