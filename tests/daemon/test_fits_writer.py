"""The product writer writes the bytes astropy writes, and reports a failing file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from daemon.fileio.fits_writer import write_image_hdus


def _planes() -> list[tuple[str, np.ndarray, fits.Header]]:
    rng = np.random.default_rng(3)
    planes = []
    for dtype in ("float32", "float64", "uint8", "int8", "int16", "uint16", "int32", "uint32",
                  "int64", "uint64"):  # fmt: skip
        kind = np.dtype(dtype)
        if kind.kind == "f":
            values = rng.normal(0, 1e3, (3, 700, 500)).astype(dtype)  # several slices
            values[0, 0, :3] = [np.nan, np.inf, -np.inf]
        else:
            info = np.iinfo(kind)
            values = rng.integers(info.min, info.max, (37, 41), dtype=dtype, endpoint=True)
            values[0, :2] = [info.min, info.max]
        header = fits.Header()
        header["PLANE"] = dtype
        planes.append((dtype.upper(), values, header))
    return planes


def test_bytes_equal_astropys_writeto(tmp_path: Path) -> None:
    primary = fits.Header()
    primary["TELESCOP"] = "test"
    planes = _planes()
    expected = tmp_path / "astropy.fits"
    fits.HDUList(
        [fits.PrimaryHDU(header=primary)]
        + [fits.ImageHDU(data=data, header=header, name=name) for name, data, header in planes]
    ).writeto(expected)
    ours = io.BytesIO()
    write_image_hdus(ours, primary, planes)
    assert ours.getvalue() == expected.read_bytes()


@pytest.mark.parametrize("offset", [0, 10])
def test_a_real_file_gets_the_same_bytes(tmp_path: Path, offset: int) -> None:
    """Whole blocks straight to the device (an aligned start), or plain writes (unaligned)."""
    planes = _planes()
    expected = io.BytesIO()
    write_image_hdus(expected, fits.Header(), planes)
    path = tmp_path / "product.fits"
    with open(path, "wb") as handle:
        handle.write(b"x" * offset)
        write_image_hdus(handle, fits.Header(), planes)
    assert path.read_bytes() == b"x" * offset + expected.getvalue()
    assert path.stat().st_size == offset + len(expected.getvalue())


class _FullDisk(io.RawIOBase):
    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(28, "No space left on device")
        self.room -= size
        return size


def test_a_failing_file_raises_in_the_caller() -> None:
    with pytest.raises(OSError, match="No space left"):
        write_image_hdus(_FullDisk(5 << 20), fits.Header(), _planes())  # type: ignore[arg-type]
