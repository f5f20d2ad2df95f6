"""A saved mesh re-creates the full background map: bit for bit where the engine's own map
is the spline of its mesh, to float32 precision for photutils' map and the LSST surface."""

from __future__ import annotations

import numpy as np
import pytest

from processors import (
    estimate_background,
    model_exposure_background,
    rolling_sky_background,
    simulate_exposure,
    sky_member,
)
from processors.background_mesh import BackgroundMesh, background_mesh, evaluate_mesh

#: float32 precision: the map's own rounding (2**-23 relative), with a few ulps of slack
#: for a different order of the same float32 sums.
FLOAT32_PRECISION = 8 * np.finfo(np.float32).eps


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return simulate_exposure(0, size=300, seed=11).sci


def test_fast_mesh_recreates_the_map_exactly(image: np.ndarray) -> None:
    model = estimate_background(image, box_size=(32, 40), filter_size=3, engine="fast")
    mesh = background_mesh(model)
    assert mesh.kind == "spline" and mesh.box == (32, 40) and mesh.shape == image.shape
    assert mesh.values.shape == (10, 8)  # ceil(300/32) x ceil(300/40) cells
    full = evaluate_mesh(mesh)
    assert full.dtype == np.float32
    np.testing.assert_array_equal(full, model.background)


def test_photutils_mesh_recreates_background2d_to_float32_precision(image: np.ndarray) -> None:
    model = estimate_background(image, box_size=50, engine="photutils")
    full = evaluate_mesh(background_mesh(model))
    np.testing.assert_allclose(full, model.background, rtol=FLOAT32_PRECISION, atol=0)


@pytest.mark.parametrize("shape", [(300, 300), (517, 389)])
def test_lsst_surface_is_saved_as_coefficients_and_recreated(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    sky = 200 + 0.05 * xx - 0.03 * yy + 4e-5 * (xx - 150) ** 2
    data = (sky + rng.normal(0, 3, shape)).astype(np.float32)
    model = estimate_background(data, engine="lsst", bin_size=64, order=4)
    mesh = background_mesh(model)
    assert mesh.kind == "chebyshev" and mesh.values.shape == (5, 5)
    assert mesh.values.nbytes == 200  # 25 coefficients in place of a full map
    full = evaluate_mesh(mesh)
    np.testing.assert_allclose(full, model.background, rtol=FLOAT32_PRECISION, atol=0)


def test_two_pass_and_cube_models_are_recreated_from_their_last_mesh() -> None:
    cube = simulate_exposure(1, size=256, seed=5, nints=3)
    model = model_exposure_background(cube, box_size=32, passes=2)
    assert model.source_mask is not None  # the mesh is the source-masked pass's
    np.testing.assert_array_equal(evaluate_mesh(background_mesh(model)), model.background)


def test_rolling_sky_template_is_recreated_from_its_mesh() -> None:
    models = [
        estimate_background(simulate_exposure(i, size=256, seed=9).sci, box_size=32)
        for i in range(3)
    ]
    sky = rolling_sky_background(models[0], [sky_member(m) for m in models[1:]])
    mesh = background_mesh(sky)
    assert mesh.values.dtype == np.float32
    np.testing.assert_array_equal(evaluate_mesh(mesh), sky.background)


def test_a_model_with_a_coverage_mask_is_refused(image: np.ndarray) -> None:
    coverage = np.zeros(image.shape, dtype=bool)
    coverage[:, :20] = True
    model = estimate_background(image, box_size=50, coverage_mask=coverage)
    with pytest.raises(ValueError, match="coverage_mask"):
        background_mesh(model)


def test_unknown_kind_and_missing_box_are_named() -> None:
    with pytest.raises(ValueError, match="unknown mesh kind"):
        evaluate_mesh(BackgroundMesh("bspline", np.ones((2, 2)), (8, 8), (4, 4)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="box size"):
        evaluate_mesh(BackgroundMesh("spline", np.ones((2, 2)), (8, 8)))
