"""Source masks against photutils detect_sources and scipy's binary dilation."""

from __future__ import annotations

import numpy as np
import pytest
from photutils.segmentation import detect_sources as photutils_detect_sources
from photutils.utils import circular_footprint
from scipy import ndimage

from processors.detection import detect_sources, dilate_mask


def _stars(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = rng.normal(0.0, 1.0, shape)
    for _ in range(ny * nx // 2000):
        y, x = rng.integers(0, ny), rng.integers(0, nx)
        width = rng.uniform(0.7, 3.0)
        image += rng.uniform(3, 200) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * width**2))
    return image


@pytest.mark.parametrize("n_pixels", [1, 3, 5, 20])
def test_detection_is_photutils_detect_sources(n_pixels: int) -> None:
    image = _stars((300, 420), seed=n_pixels)
    rms = np.full(image.shape, 1.0)
    rms[:, 200:] = 1.5  # a noise map, not one value
    segments = photutils_detect_sources(image, 3.0 * rms, n_pixels=n_pixels)
    ours = detect_sources(image, rms, nsigma=3.0, npixels=n_pixels)
    np.testing.assert_array_equal(ours, segments.data > 0)


def test_masked_pixels_are_not_detected() -> None:
    image = _stars((200, 200), seed=9)
    mask = np.zeros(image.shape, bool)
    mask[:, :100] = True
    segments = photutils_detect_sources(image, 3.0, n_pixels=5, mask=mask)
    ours = detect_sources(image, 1.0, nsigma=3.0, npixels=5, mask=mask)
    np.testing.assert_array_equal(ours, segments.data > 0)
    assert not ours[:, :100].any()


@pytest.mark.parametrize("radius", [0.5, 1, 1.5, 2.9, 3, 5, 7.3, 12])
@pytest.mark.parametrize("density", [0.0005, 0.01, 0.2])
def test_dilation_is_scipy_binary_dilation_with_a_circular_footprint(radius, density) -> None:
    mask = np.random.default_rng(int(radius * 10)).random((150, 230)) < density
    mask[0, 0] = mask[-1, -1] = True  # sources on the borders
    reach = int(np.floor(radius))
    yy, xx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    footprint = xx**2 + yy**2 <= radius**2
    expected = ndimage.binary_dilation(mask, structure=footprint)
    np.testing.assert_array_equal(dilate_mask(mask, radius), expected)


def test_integer_radius_equals_photutils_circular_footprint() -> None:
    mask = np.zeros((41, 41), bool)
    mask[20, 20] = True
    grown = dilate_mask(mask, 6)
    np.testing.assert_array_equal(grown[14:27, 14:27], circular_footprint(6).astype(bool))
    assert grown.sum() == circular_footprint(6).sum()


def test_detect_then_dilate_in_one_call() -> None:
    image = _stars((200, 300), seed=4)
    found = detect_sources(image, 1.0, nsigma=3.0, npixels=5)
    np.testing.assert_array_equal(
        detect_sources(image, 1.0, nsigma=3.0, npixels=5, dilate=4.0), dilate_mask(found, 4.0)
    )


def test_nothing_to_detect_or_dilate() -> None:
    empty = np.zeros((20, 30), bool)
    assert not dilate_mask(empty, 5).any()
    assert not detect_sources(np.zeros((20, 30)), 1.0, dilate=3).any()
    np.testing.assert_array_equal(
        dilate_mask(empty | np.eye(20, 30, dtype=bool), 0), np.eye(20, 30)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nsigma": 0.0}, "nsigma must be positive"),
        ({"npixels": 0}, "npixels must be >= 1"),
        ({"dilate": -1.0}, "dilate must be >= 0"),
    ],
)
def test_invalid_parameters_name_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detect_sources(np.zeros((5, 5)), 1.0, **kwargs)


def test_rms_map_must_match_the_image() -> None:
    with pytest.raises(ValueError, match="rms shape"):
        detect_sources(np.zeros((5, 5)), np.ones((4, 4)))
