"""The subtracted background saved in its product: a ``BKGMESH`` or a ``BKG`` extension."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits

from processors import BackgroundResult, Exposure
from processors.background_mesh import BackgroundMesh, background_mesh, evaluate_mesh

__all__ = [
    "BKG_EXTENSION",
    "MESH_EXTENSION",
    "Extension",
    "SaveBackground",
    "background_extensions",
    "background_map",
    "read_saved_background",
]

SaveBackground = Literal["none", "mesh", "full"]
#: The full-resolution background map.
BKG_EXTENSION = "BKG"
#: The mesh (or Chebyshev coefficients) and the cards that re-create the map.
MESH_EXTENSION = "BKGMESH"
Extension = tuple[str, np.ndarray, fits.Header]


def _mesh_header(mesh: BackgroundMesh) -> fits.Header:
    header = fits.Header()
    header["BKGKIND"] = (mesh.kind, "spline: zoomed mesh; chebyshev: T_i(x) T_j(y)")
    header["BKGNY"] = (mesh.shape[0], "rows of the full background map")
    header["BKGNX"] = (mesh.shape[1], "columns of the full background map")
    if mesh.box is not None:
        header["BKGBOXY"] = (mesh.box[0], "mesh box height [pixel]")
        header["BKGBOXX"] = (mesh.box[1], "mesh box width [pixel]")
    return header


def background_map(background: BackgroundResult | Exposure | None) -> np.ndarray | None:
    """The full-resolution map of the background subtracted (None when nothing was)."""
    if isinstance(background, BackgroundResult):
        return background.background
    return None if background is None else background.sci


def background_extensions(
    background: BackgroundResult | Exposure | None, save: SaveBackground
) -> list[Extension]:
    """The extensions that save a product's background, as ``output.save_background`` says.

    Parameters
    ----------
    background : BackgroundResult, Exposure or None
        The background subtracted: a model (own 2-D model, rolling sky), a combined
        stack, or None for a product passed through unsubtracted.
    save : {'none', 'mesh', 'full'}
        ``mesh``: the model's mesh (``BKGMESH``); a combined stack has no mesh and is
        saved by ``background.stack.save_combined`` instead. ``full``: the map (``BKG``).

    Returns
    -------
    list of (name, data, header)
        Extensions for `daemon.fileio.fits_io.write_exposure`; empty when nothing is saved.
    """
    if save == "none" or background is None:
        return []
    if save == "full":
        full = background_map(background)
        return [(BKG_EXTENSION, np.asarray(full, dtype=np.float32), fits.Header())]
    if not isinstance(background, BackgroundResult):
        return []
    mesh = background_mesh(background)
    return [(MESH_EXTENSION, mesh.values, _mesh_header(mesh))]


def read_saved_background(path: Path) -> np.ndarray | None:
    """The background saved in a product: its ``BKG`` map, or its ``BKGMESH`` re-evaluated.

    Parameters
    ----------
    path : Path
        A product FITS file.

    Returns
    -------
    ndarray or None
        The full-resolution map (float32), or None when the product holds no background.
    """
    with fits.open(path, memmap=False) as hdul:
        names = [hdu.name for hdu in hdul]
        if BKG_EXTENSION in names:
            return np.asarray(hdul[BKG_EXTENSION].data, dtype=np.float32)
        if MESH_EXTENSION not in names:
            return None
        hdu = hdul[MESH_EXTENSION]
        cards = hdu.header
        box = (int(cards["BKGBOXY"]), int(cards["BKGBOXX"])) if "BKGBOXY" in cards else None
        values = np.asarray(hdu.data)
        mesh = BackgroundMesh(
            kind=cards["BKGKIND"],
            values=values.astype(values.dtype.newbyteorder("=")),
            shape=(int(cards["BKGNY"]), int(cards["BKGNX"])),
            box=box,
        )
    return evaluate_mesh(mesh)
