"""Write and read label images as ImageJ/Fiji-compatible TIFF files.

Files are ``uint8`` (up to 255 classes/labels) or ``uint16``, zlib-compressed, with the
pixel size in nm (Fiji shows it under Image > Properties) and the class names in the
ImageJ ``Info`` property (Fiji: Image > Show Info). Writing is atomic.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_cryoseg.core.atomic import atomic_write
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.io.checks import TIFF_SUFFIXES, check_input_file
from napari_cryoseg.io.tiff import read_tiff

__all__ = [
    "write_labels_tiff",
    "read_labels_tiff",
    "read_labels_class_names",
    "read_labels_class_colors",
    "is_cryoseg_labels_tiff",
    "labels_output_path",
    "labels_dtype",
]

#: Prefixes of the machine-readable lines in the ImageJ ``Info`` property.
_CLASS_NAMES_KEY = "cryoseg_class_names="
_CLASS_COLORS_KEY = "cryoseg_class_colors="
_INFO_HEADER = "napari-cryoseg labels"


def labels_dtype(labels: np.ndarray) -> np.dtype:
    """Smallest of ``uint8``/``uint16`` that holds ``labels`` exactly.

    Parameters
    ----------
    labels : numpy.ndarray
        Bool or integer label array.

    Returns
    -------
    numpy.dtype
        ``uint8`` if all values are in 0..255 (and for bool), ``uint16`` if in 0..65535.

    Raises
    ------
    InputError
        Float/complex/other dtype, negative values, or values above 65535.
    """
    dtype = labels.dtype
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if not np.issubdtype(dtype, np.integer):
        raise InputError(
            f"labels must be an integer array, got dtype {dtype}; "
            "round/convert them to integers first"
        )
    if labels.size == 0:
        raise InputError(f"labels are empty (shape {labels.shape}); nothing to write")
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise InputError(f"labels contain negative values (min {low}); labels must be >= 0")
    if high <= 255:
        return np.dtype(np.uint8)
    if high <= 65535:
        return np.dtype(np.uint16)
    raise InputError(
        f"labels go up to {high}, more than a 16-bit TIFF can hold (65535); "
        "relabel them consecutively (e.g. skimage.segmentation.relabel_sequential)"
    )


_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")


def checked_colors(values: Any) -> list[str]:
    """Stored class colours when every one is ``#rrggbb[aa]``; else [] (the reader then
    uses the default palette: a crafted colour must not break the viewer)."""
    if not isinstance(values, list | tuple) or len(values) > 1 << 16:
        return []
    if all(isinstance(v, str) and _HEX_COLOR.match(v) for v in values):
        return list(values)
    return []


def checked_names(values: Any) -> list[str]:
    """Stored class names when they are a list of text; else []."""
    if not isinstance(values, list | tuple) or len(values) > 1 << 16:
        return []
    return [str(v) for v in values] if all(isinstance(v, str) for v in values) else []


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(text))


def _info_text(class_names: Sequence[str], class_colors: Sequence[str] | None = None) -> str:
    lines = [_INFO_HEADER]
    # Names are escaped on the human-readable lines: a line break in a name must not start
    # a line of its own (it would read back as other names, or as the JSON key line).
    lines += [f"{i}: {_one_line(name)}" for i, name in enumerate(class_names)]
    lines.append(_CLASS_NAMES_KEY + json.dumps(list(class_names), ensure_ascii=False))
    if class_colors:
        lines.append(_CLASS_COLORS_KEY + json.dumps(list(class_colors), ensure_ascii=False))
    return "\n".join(lines)


#: Pixel sizes a TIFF resolution (a ratio of 32-bit integers) and readers handle: 1 pm
#: to 1 m. Outside it (1e-20 nm from a damaged OME header) the size is not stored.
SIZE_RANGE_NM = (1e-3, 1e9)


def usable_size_nm(value: Any) -> float | None:
    """``value`` as a float when it is a storable size in nm (finite, in
    :data:`SIZE_RANGE_NM`), else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    low, high = SIZE_RANGE_NM
    return out if math.isfinite(out) and low <= out <= high else None


def _check_size(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    out = usable_size_nm(value)
    if out is None:
        raise InputError(f"{what} must be a positive number of nm (from {SIZE_RANGE_NM[0]:g} "
                         f"to {SIZE_RANGE_NM[1]:g}), got {value!r}")
    return out


def write_labels_tiff(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    *,
    pixel_size_nm: float | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
    z_size_nm: float | None = None,
    class_colors: Sequence[str] | None = None,
) -> Path:
    """Write a label image as an ImageJ TIFF (atomically).

    Parameters
    ----------
    path : str or os.PathLike
        Destination, normally ``.tif``. Its folder must exist.
    labels : numpy.ndarray
        2D (YX) or 3D (ZYX) bool or non-negative integer array. Stored as ``uint8`` when
        the maximum is <= 255 (and for bool), else as ``uint16`` (<= 65535).
    pixel_size_nm : float, optional
        XY pixel size in nm, stored as TIFF resolution with ImageJ unit ``nm``.
    class_names : sequence of str, optional
        Names of the label values 0, 1, ...; stored in the ImageJ ``Info`` property
        (human-readable lines plus a JSON line), see :func:`read_labels_class_names`.
    overwrite : bool
        Replace an existing file. Default False.
    z_size_nm : float, optional
        Slice spacing in nm for 3D labels (ImageJ ``spacing``).
    class_colors : sequence of str, optional
        ``#rrggbb`` colour per class, stored beside the names (napari-cryoseg's reader
        shows them again).

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    InputError
        Bad labels (dtype, values, shape), bad pixel size, existing file without
        ``overwrite`` (:class:`~napari_cryoseg.core.errors.OutputExistsError`), missing
        or read-only folder.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputError(
            f"labels have shape {labels.shape}; expected YX or ZYX (2 or 3 dimensions)"
        )
    dtype = labels_dtype(labels)
    px = _check_size(pixel_size_nm, "pixel size")
    dz = _check_size(z_size_nm, "z spacing")
    if class_names is not None:
        if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
            raise InputError("class names must be a list of strings")
        class_names = list(class_names)
    if class_colors is not None:
        if isinstance(class_colors, str) or not all(isinstance(c, str) for c in class_colors):
            raise InputError("class colours must be a list of '#rrggbb' strings")
        class_colors = list(class_colors)

    data = np.ascontiguousarray(labels, dtype=dtype)
    axes = "YX" if data.ndim == 2 else "ZYX"
    metadata: dict[str, Any] = {"axes": axes}
    kwargs: dict[str, Any] = {}
    if px is not None:
        metadata["unit"] = "nm"
        kwargs["resolution"] = (1.0 / px, 1.0 / px)
        if dz is not None and data.ndim == 3:
            metadata["spacing"] = dz
    if class_names:
        metadata["Info"] = _info_text(class_names, class_colors)

    def write(fileobj: Any) -> None:
        tifffile.imwrite(
            fileobj,
            data,
            imagej=True,
            metadata=metadata,
            compression="zlib",
            photometric="minisblack",
            **kwargs,
        )

    return atomic_write(path, write, overwrite=overwrite)


def read_labels_tiff(path: str | os.PathLike[str]) -> tuple[np.ndarray, float | None]:
    """Read a label TIFF written by :func:`write_labels_tiff` (or Fiji).

    Parameters
    ----------
    path : str or os.PathLike
        ``.tif``/``.tiff`` file.

    Returns
    -------
    labels : numpy.ndarray
        YX or ZYX integer (or bool) array, as stored (singleton axes removed).
    pixel_size_nm : float or None
        XY pixel size in nm, None if the file has no calibration.

    Raises
    ------
    InputError
        Missing/empty/corrupt file, or pixel values that are not integers.
    """
    p = check_input_file(path, TIFF_SUFFIXES, kind="labels")
    data, px, _z, _axes = read_tiff(p, lazy=False)
    labels = np.asarray(data)
    if not (labels.dtype == np.bool_ or np.issubdtype(labels.dtype, np.integer)):
        raise InputError(
            f"labels file '{p}' has {labels.dtype} pixels, not integer labels; "
            "pass a label image (e.g. one written by napari-cryoseg)"
        )
    return labels, px


def _info_json(info: str, key: str) -> list[str] | None:
    for line in info.splitlines():
        if line.startswith(key):
            try:
                values = json.loads(line[len(key) :])
            except json.JSONDecodeError:
                return None
            if isinstance(values, list) and all(isinstance(n, str) for n in values):
                return values
    return None


def _imagej_info(path: str | os.PathLike[str]) -> str | None:
    p = check_input_file(path, TIFF_SUFFIXES, kind="labels")
    try:
        with tifffile.TiffFile(p) as tif:
            meta = tif.imagej_metadata or {}
    except Exception as err:
        raise InputError(f"labels file '{p}' could not be read ({err}); check the file") from err
    info = meta.get("Info")
    return info if isinstance(info, str) else None


def read_labels_class_names(path: str | os.PathLike[str]) -> list[str] | None:
    """Class names stored by :func:`write_labels_tiff`, or None if there are none.

    Parameters
    ----------
    path : str or os.PathLike
        Label TIFF.

    Returns
    -------
    list of str or None
    """
    info = _imagej_info(path)
    return _info_json(info, _CLASS_NAMES_KEY) if info else None


def read_labels_class_colors(path: str | os.PathLike[str]) -> list[str] | None:
    """Class colours stored by :func:`write_labels_tiff`, or None if there are none."""
    info = _imagej_info(path)
    colors = _info_json(info, _CLASS_COLORS_KEY) if info else None
    return None if colors is None else (checked_colors(colors) or None)


def is_cryoseg_labels_tiff(path: str | os.PathLike[str]) -> bool:
    """True for a TIFF written by :func:`write_labels_tiff` with class names.

    Reads only the first page's tags; never raises (foreign or broken files give False).
    """
    try:
        with tifffile.TiffFile(path) as tif:
            info = (tif.imagej_metadata or {}).get("Info")
    except Exception:  # noqa: BLE001 - any unreadable file is simply not ours
        return False
    return isinstance(info, str) and info.startswith(_INFO_HEADER) and \
        _CLASS_NAMES_KEY in info


def labels_output_path(
    out_dir: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    suffix: str = "_labels.tif",
) -> Path:
    """Output path ``out_dir/<input stem><suffix>``.

    ``.ome.tif``/``.ome.tiff`` count as one suffix, so ``cell.ome.tif`` gives
    ``cell_labels.tif``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output folder (not created here).
    input_path : str or os.PathLike
        The image the labels belong to.
    suffix : str
        Appended to the stem; default ``"_labels.tif"``.

    Returns
    -------
    pathlib.Path
    """
    name = Path(input_path).name
    lower = name.lower()
    for compound in (".ome.tiff", ".ome.tif"):
        if lower.endswith(compound) and len(name) > len(compound):
            stem = name[: -len(compound)]
            break
    else:
        stem = Path(name).stem
    return Path(out_dir) / f"{stem}{suffix}"
