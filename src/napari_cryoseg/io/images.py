"""Read EM images (TIFF, MRC) with their pixel size, eagerly or lazily.

Every problem a user can fix (missing, empty, truncated or mislabelled file, RGB or
multi-channel image, 4D/5D data, complex values, ...) is raised as
:class:`~napari_cryoseg.core.errors.InputError` with a one-line message that names the
file and says what to do.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import warnings
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import tifffile

from napari_cryoseg.core.errors import InputError

if TYPE_CHECKING:
    import dask.array

__all__ = [
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "MRC_SUFFIXES",
    "ImageData",
    "read_image",
    "list_images",
    "validate_image_array",
    "unit_to_nm",
]

TIFF_SUFFIXES = (".tif", ".tiff")
MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".st")
IMAGE_SUFFIXES = TIFF_SUFFIXES + MRC_SUFFIXES
#: MRC suffixes that hold a stack of independent 2D images (particles, tilt series).
_MRC_STACK_SUFFIXES = (".mrcs", ".st")

_log = logging.getLogger(__name__)

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
_RESUNIT_TO_NM = {2: 2.54e7, 3: 1e7, 4: 1e6, 5: 1e3}
#: dpi values image editors write by default; they say nothing about the sample.
_DEFAULT_DPI = (72.0, 96.0)
#: tifffile log messages that mean the file is cut short or damaged.
_TIFF_DAMAGE_WORDS = ("invalid page offset", "corrupt", "truncat", "incomplete")

_SHAPE_HINT = (
    "expected YX, ZYX or TYX (one 2D image or a stack of 2D images); save a single "
    "channel / time point, e.g. in Fiji with Image > Duplicate"
)

ArrayLike = Union[np.ndarray, "dask.array.Array"]


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


# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- TIFF


class _ThreadLogCapture(logging.Handler):
    """Collect warnings that this thread logs to the ``tifffile`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def _capture_tifffile_log() -> Iterator[_ThreadLogCapture]:
    logger = logging.getLogger("tifffile")
    handler = _ThreadLogCapture()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _raise_if_damaged(path: Path, messages: list[str]) -> None:
    for msg in messages:
        if any(word in msg.lower() for word in _TIFF_DAMAGE_WORDS):
            raise InputError(
                f"TIFF file {_q(path)} is truncated or corrupted ({' '.join(msg.split())}); "
                "copy or export it again"
            )


def _check_tiff_complete(tif: tifffile.TiffFile, series: Any, path: Path) -> None:
    """Raise if the image data of ``series`` extends past the end of the file."""
    size = tif.filehandle.size
    end = 0
    if series.dataoffset is not None:  # contiguous, uncompressed
        end = int(series.dataoffset) + int(series.nbytes)
    else:
        for page in series.pages:
            if page is None:
                continue
            offsets = getattr(page, "dataoffsets", ()) or ()
            counts = getattr(page, "databytecounts", ()) or ()
            for offset, count in zip(offsets, counts):
                if count:
                    end = max(end, int(offset) + int(count))
    if end > size:
        raise InputError(
            f"TIFF file {_q(path)} is truncated ({size} bytes, image data needs {end}); "
            "copy or export it again"
        )


def _resolution_tag(page: Any) -> float | None:
    """Pixels per unit from the XResolution tag, or None."""
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    value = tag.value
    try:
        num, den = value
        return _positive(num / den) if den else None
    except (TypeError, ValueError):
        return _positive(value)


def _ome_pixel_size(tif: tifffile.TiffFile) -> tuple[float | None, float | None]:
    """(XY, Z) pixel size in nm from the first OME ``Pixels`` element."""
    try:
        root = ET.fromstring(tif.ome_metadata or "")
    except ET.ParseError:
        return None, None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None, None

    def size(axis: str) -> float | None:
        value = _positive(pixels.get(f"PhysicalSize{axis}"))
        factor = unit_to_nm(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        return value * factor if value is not None and factor is not None else None

    return size("X"), size("Z")


def tiff_pixel_size(tif: tifffile.TiffFile) -> tuple[float | None, float | None]:
    """(XY pixel size, Z spacing) in nm from OME, ImageJ or TIFF resolution metadata.

    Parameters
    ----------
    tif : tifffile.TiffFile
        Open TIFF file.

    Returns
    -------
    tuple of (float or None, float or None)
        None where the file does not say.
    """
    page = tif.pages[0]
    if tif.is_ome:
        px, z = _ome_pixel_size(tif)
        if px is not None:
            return px, z
    per_unit = _resolution_tag(page)
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        factor = unit_to_nm(meta.get("unit"))
        if factor is not None:
            px = factor / per_unit if per_unit is not None else None
            spacing = _positive(meta.get("spacing"))
            z = spacing * factor if spacing is not None else None
            return px, z
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default: inch
    factor = _RESUNIT_TO_NM.get(unit)
    if factor is None or per_unit is None:
        return None, None
    if unit == 2 and any(abs(per_unit - dpi) < 1e-9 for dpi in _DEFAULT_DPI):
        return None, None
    return factor / per_unit, None


def _tiff_layout(tif: tifffile.TiffFile, series: Any, path: Path) -> tuple[tuple, str]:
    """Index that drops singleton non-YX axes, and the resulting axes string.

    Raises for RGB and multi-channel images before any pixel is read.
    """
    axes = str(series.axes).upper()
    shape = tuple(int(n) for n in series.shape)
    name = f"image {_q(path)}"
    photometric = getattr(tif.pages[0], "photometric", None)
    is_rgb = photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    if len(axes) != len(shape):  # should not happen; fall back to position only
        axes = "Q" * (len(shape) - 2) + "YX"
    index: list[Any] = []
    kept = ""
    for ax, n in zip(axes, shape):
        if n == 1 and ax not in "YX":
            index.append(0)
        else:
            index.append(slice(None))
            kept += ax
    kept_shape = tuple(n for ax, n in zip(axes, shape) if n != 1 or ax in "YX")
    if is_rgb or ("S" in kept and kept_shape[kept.index("S")] in (3, 4)):
        raise InputError(
            f"{name} is an RGB image; convert it to grayscale, e.g. in Fiji with "
            "Image > Type > 8-bit (or 16-bit), and save it again"
        )
    if len(kept) > 3:
        raise InputError(f"{name} has shape {kept_shape} (axes {kept}); {_SHAPE_HINT}")
    for ax, label in (("S", "samples per pixel"), ("C", "channels")):
        if ax in kept:
            raise InputError(
                f"{name} has {kept_shape[kept.index(ax)]} {label} (shape {kept_shape}, "
                f"axes {kept}); save a single channel, e.g. in Fiji with "
                "Image > Color > Split Channels"
            )
    if len(kept) == 3:
        out_axes = "TYX" if kept[0] == "T" else "ZYX"
    elif len(kept) == 2:
        out_axes = "YX"
    else:
        out_axes = kept
    _check_shape_dtype(kept_shape, np.dtype(series.dtype), name)
    return tuple(index), out_axes


def read_tiff(
    path: Path, *, lazy: bool = False
) -> tuple[ArrayLike, float | None, float | None, str]:
    """Read the first series of a TIFF: (data, pixel size nm, z size nm, axes).

    ``path`` must already have passed :func:`check_input_file`.
    """
    index: tuple = ()
    try:
        with _capture_tifffile_log() as log, tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(
                    f"TIFF file {_q(path)} contains no image data; it may be truncated, "
                    "so copy or export it again"
                )
            series = tif.series[0]
            _raise_if_damaged(path, log.messages)
            index, axes = _tiff_layout(tif, series, path)
            _check_tiff_complete(tif, series, path)
            px, z = tiff_pixel_size(tif)
            data: ArrayLike | None = None
            if not lazy:
                data = series.asarray()
                _raise_if_damaged(path, log.messages)
    except InputError:
        raise
    except MemoryError:
        raise
    except tifffile.TiffFileError as err:
        raise InputError(
            f"{_q(path)} is not a valid TIFF file ({_one_line(err)}); it may be damaged or "
            "another format renamed to .tif"
        ) from err
    except Exception as err:
        raise InputError(
            f"TIFF file {_q(path)} could not be read ({_one_line(err)}); it may be truncated "
            "or corrupted, so copy or export it again"
        ) from err
    if lazy:
        data = _lazy_tiff(path)
    assert data is not None
    if any(isinstance(i, int) for i in index):  # drop singleton non-YX axes
        data = data[index]
    data = _native(data)
    if axes != "ZYX":
        z = None
    return data, px, z, axes


def _lazy_tiff(path: Path) -> dask.array.Array:
    """dask array over tifffile's zarr store of series 0 (level 0); reads nothing yet.

    The file stays open while the store is alive and is closed when the store (i.e. the
    dask array and everything derived from it) is garbage collected.
    """
    import dask.array as da
    import zarr

    tif = None
    try:
        tif = tifffile.TiffFile(path)
        store = tif.series[0].aszarr(level=0)
        weakref.finalize(store, tif.close)  # holds `tif`, not `store`
        array = zarr.open_array(store, mode="r")
        return da.from_zarr(array)
    except Exception as err:
        if tif is not None:
            tif.close()
        raise InputError(
            f"TIFF file {_q(path)} could not be opened lazily ({_one_line(err)}); "
            "try reading it without lazy loading"
        ) from err


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
    from napari_cryoseg.io.zarr_io import is_zarr_path, read_zarr

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
    from napari_cryoseg.io.zarr_io import is_zarr_path

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
