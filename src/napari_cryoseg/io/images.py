"""Read EM images (TIFF, MRC) with their pixel size, eagerly or lazily.

Every problem a user can fix (missing, empty, truncated or mislabelled file, RGB or
multi-channel image, 4D/5D data, complex values, ...) is raised as
:class:`~napari_cryoseg.core.errors.InputError` with a one-line message that names the
file and says what to do.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.io.checks import (
    IMAGE_SUFFIXES,
    MRC_SUFFIXES,
    TIFF_SUFFIXES,
    ArrayLike,
    _check_shape_dtype,
    _native,
    _one_line,
    _positive,
    _q,
    check_input_file,
    unit_to_nm,
    validate_image_array,
)
from napari_cryoseg.io.tiff import read_tiff, tiff_pixel_size
from napari_cryoseg.io.zarr_io import is_zarr_path, read_zarr

__all__ = [
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "MRC_SUFFIXES",
    "ImageData",
    "check_input_file",
    "read_image",
    "read_tiff",
    "list_images",
    "tiff_pixel_size",
    "validate_image_array",
    "unit_to_nm",
]

#: MRC suffixes that hold a stack of independent 2D images (particles, tilt series).
_MRC_STACK_SUFFIXES = (".mrcs", ".st")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageData:
    """An image as read from disk.

    Attributes
    ----------
    data : numpy.ndarray or dask.array.Array
        Pixel data, YX in the last two axes; ``(Z or T, Y, X)`` for stacks. Native byte
        order. A dask array when read with ``lazy=True``.
    pixel_size_nm : float or None
        XY pixel size in nanometres, if the file says so.
    z_size_nm : float or None
        Slice spacing in nanometres for volumes (``"ZYX"``), if the file says so.
    path : pathlib.Path or None
        Source file (None for arrays that did not come from a file).
    axes : str
        ``"YX"``, ``"ZYX"`` (a volume) or ``"TYX"`` (a time series or a stack of
        independent images, e.g. a tilt series or an ``.mrcs`` particle stack).
    """

    data: ArrayLike
    pixel_size_nm: float | None
    z_size_nm: float | None
    path: Path | None
    axes: str

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`data`."""
        return tuple(int(n) for n in self.data.shape)

    @property
    def is_lazy(self) -> bool:
        """True when :attr:`data` is not a numpy array (e.g. a dask array)."""
        return not isinstance(self.data, np.ndarray)



# --------------------------------------------------------------------------- MRC


def _open_mrc(path: Path, lazy: bool, permissive: bool) -> Any:
    import mrcfile

    opener = mrcfile.mmap if lazy else mrcfile.open
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # permissive mode warns instead of raising
        return opener(path, mode="r", permissive=permissive)


def read_mrc(
    path: Path, *, lazy: bool = False
) -> tuple[ArrayLike, float | None, float | None, str]:
    """Read an MRC file: (data, pixel size nm, z size nm, axes).

    Uses :func:`mrcfile.open` (or :func:`mrcfile.mmap` when ``lazy``), retrying with
    ``permissive=True`` for files with minor header problems (e.g. a missing ``MAP`` ID).
    ``path`` must already have passed :func:`check_input_file`.
    """
    try:
        mrc = _open_mrc(path, lazy, permissive=False)
    except MemoryError:
        raise
    except Exception as strict_err:
        try:
            mrc = _open_mrc(path, lazy, permissive=True)
        except MemoryError:
            raise
        except Exception:
            mrc = None
        if mrc is None or mrc.data is None or mrc.data.size == 0:
            if mrc is not None:
                mrc.close()
            raise InputError(
                f"MRC file {_q(path)} has an invalid header or is truncated "
                f"({_one_line(strict_err)}); the file is damaged or not an MRC file, "
                "so export it again"
            ) from strict_err
        _log.warning("MRC file %s read in permissive mode: %s", path, _one_line(strict_err))
    name = f"image {_q(path)}"
    with mrc:
        data = mrc.data
        if data is None or data.size == 0 or 0 in data.shape:
            shape = None if data is None else tuple(data.shape)
            raise InputError(
                f"MRC file {_q(path)} has an invalid header (it declares an image of shape "
                f"{shape}); the file is damaged, so export it again"
            )
        header = mrc.header
        shape = tuple(int(n) for n in data.shape)
        dtype = np.dtype(data.dtype)
        _check_shape_dtype(shape, dtype, name)
        try:
            voxel = mrc.voxel_size
            vx, vz = _positive(voxel.x), _positive(voxel.z)
        except Exception:  # broken cell dimensions: size unknown, data still fine
            vx = vz = None
        is_stack = path.suffix.lower() in _MRC_STACK_SUFFIXES or (
            int(header.ispg) == 0 and int(header.mz) == 1
        )
        if len(shape) == 2:
            axes = "YX"
        else:
            axes = "TYX" if is_stack else "ZYX"
        if lazy:
            offset = int(header.nbytes) + int(mrc.extended_header.nbytes)
        else:
            array = np.array(data)
    if lazy:
        import dask.array as da

        mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
        chunks = (1, *shape[1:]) if len(shape) == 3 else shape
        array = da.from_array(mm, chunks=chunks, name=f"mrc-{path}-{os.stat(path).st_mtime_ns}")
    px = vx / 10.0 if vx is not None else None
    z = vz / 10.0 if vz is not None and axes == "ZYX" else None
    return _native(array), px, z, axes


# --------------------------------------------------------------------------- public API


def read_image(path: str | os.PathLike[str], *, lazy: bool = False) -> ImageData:
    """Read a TIFF or MRC image with its pixel size.

    Parameters
    ----------
    path : str or os.PathLike
        ``.tif``/``.tiff`` (incl. ImageJ and OME-TIFF), ``.mrc``/``.mrcs``/``.map``/``.st``,
        or a ``.zarr`` folder (plain zarr or OME-Zarr: highest-resolution level).
    lazy : bool
        If True, return a dask array (tifffile's zarr store for TIFF, a memory map for
        MRC, the zarr array itself for zarr): no pixels are read until computed.

    Returns
    -------
    ImageData
        Data with singleton axes removed (YX, ZYX or TYX), pixel size and slice spacing
        in nm (None if unknown), path and axes.

    Raises
    ------
    InputError
        The file is missing, empty, truncated, not a valid TIFF/MRC, of an unsupported
        type, RGB or multi-channel, not 2D/3D, complex, or smaller than 2×2 pixels.
    """


    if is_zarr_path(Path(path).expanduser()):
        p = Path(path).expanduser()
        data, px, z, axes = read_zarr(p)  # lazy: the highest-resolution level
        if not lazy:
            data = np.asarray(data)
        validate_image_array(data, name=f"image {_q(p)}")
        return ImageData(data=data, pixel_size_nm=px, z_size_nm=z, path=p, axes=axes)
    p = check_input_file(path)
    if p.suffix.lower() in TIFF_SUFFIXES:
        data, px, z, axes = read_tiff(p, lazy=lazy)
    else:
        data, px, z, axes = read_mrc(p, lazy=lazy)
    validate_image_array(data, name=f"image {_q(p)}")
    return ImageData(data=data, pixel_size_nm=px, z_size_nm=z, path=p, axes=axes)


def _natural_key(path: Path) -> tuple:
    """Sort key: case-insensitive, numbers by value (img2 before img10)."""
    parts = re.split(r"(\d+)", path.name.casefold())
    return tuple(int(part) if part.isdigit() else part for part in parts)


def list_images(inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Path]:
    """Expand files and folders into a list of image files.

    Folders are scanned non-recursively for files with a suffix in
    :data:`IMAGE_SUFFIXES` and for ``*.zarr`` stores (case-insensitive; hidden
    entries are skipped; a ``.zarr`` folder given directly is one image) and sorted
    naturally by name (``img2`` before ``img10``). Files are kept in the given order;
    duplicates are dropped.

    Parameters
    ----------
    inputs : sequence of str or os.PathLike (or a single one)
        Image files and/or folders.

    Returns
    -------
    list of pathlib.Path
        At least one image file.

    Raises
    ------
    InputError
        A path does not exist, a file has an unsupported suffix, or no image was found.
    """


    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    items = [Path(item).expanduser() for item in inputs]
    if not items:
        raise InputError("no input given; pass image files or folders")
    found: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        if not item.exists():
            raise InputError(f"input {_q(item)} does not exist; check the path and spelling")
        if item.is_dir() and is_zarr_path(item):
            files = [item]  # a zarr store is one image, not a folder of images
        elif item.is_dir():
            try:
                children = list(item.iterdir())
            except OSError as err:
                raise InputError(
                    f"folder {_q(item)} cannot be listed ({_one_line(err)}); check permissions"
                ) from err
            files = sorted(
                (
                    c
                    for c in children
                    if not c.name.startswith(".")
                    and (
                        (c.suffix.lower() in IMAGE_SUFFIXES and c.is_file())
                        or (c.suffix.lower() == ".zarr" and c.is_dir())
                    )
                ),
                key=_natural_key,
            )
        else:
            if item.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(
                    f"{_q(item)} has an unsupported file type '{item.suffix}'; supported are "
                    f"{', '.join(IMAGE_SUFFIXES)}"
                )
            files = [item]
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append(f)
    if not found:
        where = ", ".join(_q(i) for i in items)
        raise InputError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {where}; "
            "check the folder or pass image files"
        )
    return found
