"""Checks shared by the image readers: suffixes, input files, array shape/dtype, units.

Every problem a user can fix is raised as :class:`~napari_cryoseg.core.errors.InputError`
with a one-line message that names the file and says what to do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from napari_cryoseg.core.errors import InputError

if TYPE_CHECKING:
    import dask.array

TIFF_SUFFIXES = (".tif", ".tiff")
MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".st")
IMAGE_SUFFIXES = TIFF_SUFFIXES + MRC_SUFFIXES

#: Length units (lower case, as found in ImageJ/OME metadata) -> nanometres.
_UNIT_TO_NM: dict[str, float] = {
    "pm": 1e-3,
    "å": 0.1,
    "a": 0.1,
    "ang": 0.1,
    "angstrom": 0.1,
    "angstroms": 0.1,
    "ångström": 0.1,
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometers": 1.0,
    "nanometre": 1.0,
    "nanometres": 1.0,
    "µm": 1e3,
    "um": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometers": 1e3,
    "micrometre": 1e3,
    "micrometres": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "centimetre": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "in": 2.54e7,
    "inch": 2.54e7,
}
#: TIFF ResolutionUnit tag values -> nm (1 = none; 4 and 5 are tifffile extensions).

_SHAPE_HINT = (
    "expected YX, ZYX or TYX (one 2D image or a stack of 2D images); save a single "
    "channel / time point, e.g. in Fiji with Image > Duplicate"
)

ArrayLike = Union[np.ndarray, "dask.array.Array"]


def _q(path: str | os.PathLike[str]) -> str:
    """Quote a path for a message."""
    return f"'{path}'"


def _one_line(err: BaseException) -> str:
    """Exception text squeezed onto one line (for embedding in a message)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def unit_to_nm(unit: str | None) -> float | None:
    """Return how many nanometres one ``unit`` is, or None for unknown/pixel units.

    Understands the spellings used by ImageJ/Fiji (``micron``, ``\\u00B5m``, ``um``,
    ``\\u00C5``), OME (``µm``, ``nm``, ``Å``) and plain words (``nanometer``, ...).

    Parameters
    ----------
    unit : str or None
        Unit string from file metadata.

    Returns
    -------
    float or None
        Size of one unit in nm, or None if ``unit`` is missing or not a length.
    """
    if not unit or not isinstance(unit, str):
        return None
    key = unit.strip().lower()
    key = key.replace("\\u00b5", "µ").replace("\\u03bc", "µ").replace("\\u00c5", "å")
    key = key.replace("\u03bc", "µ").replace("\u212b", "å")  # Greek mu, Angstrom sign
    return _UNIT_TO_NM.get(key)


def _positive(value: Any) -> float | None:
    """``float(value)`` if it is a finite number > 0, else None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def _native(data: ArrayLike) -> ArrayLike:
    """Convert a non-native byte order (big-endian files) to native, lazily for dask."""
    dtype = data.dtype
    if dtype.names is None and not dtype.isnative:
        return data.astype(dtype.newbyteorder("="))
    return data


def check_input_file(
    path: str | os.PathLike[str],
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
    kind: str = "image",
) -> Path:
    """Return ``path`` as a Path after checking it is a readable, non-empty file.

    Parameters
    ----------
    path : str or os.PathLike
        File to check.
    suffixes : sequence of str
        Accepted lower-case suffixes.
    kind : str
        Word used in messages ("image", "labels").

    Returns
    -------
    pathlib.Path
        The checked path (``~`` expanded).

    Raises
    ------
    InputError
        Missing, a folder, unsupported suffix, empty or unreadable.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{kind} file {_q(p)} does not exist; check the path and spelling")
    if p.is_dir():
        raise InputError(f"{_q(p)} is a folder, not an {kind} file; pass a file")
    suffix = p.suffix.lower()
    if suffix not in suffixes:
        raise InputError(
            f"{_q(p)} has an unsupported file type '{p.suffix}'; supported are "
            f"{', '.join(suffixes)} (convert it to TIFF, e.g. in Fiji with File > Save As > Tiff)"
        )
    try:
        size = p.stat().st_size
    except OSError as err:
        raise InputError(f"{kind} file {_q(p)} cannot be accessed: {_one_line(err)}") from err
    if size == 0:
        raise InputError(
            f"{kind} file {_q(p)} is empty (0 bytes); the copy or export was probably "
            "interrupted, so copy or export it again"
        )
    if not os.access(p, os.R_OK):
        raise InputError(
            f"{kind} file {_q(p)} cannot be read (permission denied); fix its permissions"
        )
    return p


# --------------------------------------------------------------------------- validation


def _check_shape_dtype(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    """Shared checks of :func:`validate_image_array` (no pixel values needed)."""
    if dtype.names is not None:
        raise InputError(
            f"{name} has a multi-field (e.g. RGB) pixel type; convert it to grayscale, "
            "e.g. in Fiji with Image > Type > 8-bit"
        )
    if np.issubdtype(dtype, np.complexfloating):
        raise InputError(
            f"{name} has complex pixel values ({dtype}); save the magnitude or the real "
            "part as a real-valued image"
        )
    if not (
        dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        raise InputError(
            f"{name} has a non-numeric pixel type ({dtype}); expected integer or float pixels"
        )
    if len(shape) not in (2, 3):
        raise InputError(f"{name} has shape {tuple(shape)}; {_SHAPE_HINT}")
    if math.prod(shape) == 0:
        raise InputError(f"{name} is empty (shape {tuple(shape)}); it contains no pixels")
    if len(shape) == 3 and shape[-1] in (3, 4) and dtype == np.uint8:
        raise InputError(
            f"{name} looks like an RGB image (shape {tuple(shape)}); convert it to "
            "grayscale, e.g. in Fiji with Image > Type > 8-bit"
        )
    if shape[-1] < 2 or shape[-2] < 2:
        raise InputError(
            f"{name} has shape {tuple(shape)}, smaller than 2×2 pixels; it is not a usable image"
        )


def validate_image_array(data: Any, *, name: str = "image") -> None:
    """Raise :class:`InputError` unless ``data`` can be segmented.

    Checks: 2 or 3 dimensions (YX, ZYX, TYX), a real numeric or bool dtype (not complex,
    not RGB records), at least 2×2 pixels, not empty, and not an RGB(A) ``uint8`` array
    with 3 or 4 values in the last axis. NaN and Inf are allowed (normalization handles
    them). Pixel values are not read, so a dask array stays lazy.

    Parameters
    ----------
    data : array-like
        numpy or dask array (anything with ``shape`` and ``dtype``, else converted with
        :func:`numpy.asarray`).
    name : str
        How to refer to the data in messages, e.g. ``"image 'a.tif'"``.

    Raises
    ------
    InputError
        With a one-line message saying what is wrong.
    """
    if not (hasattr(data, "shape") and hasattr(data, "dtype")):
        try:
            data = np.asarray(data)
        except Exception as err:
            raise InputError(f"{name} is not an array: {_one_line(err)}") from err
    _check_shape_dtype(tuple(int(n) for n in data.shape), np.dtype(data.dtype), name)
