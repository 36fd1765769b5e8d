"""TIFF reading (ImageJ, OME-TIFF, plain) with the pixel size, eagerly or lazily.

Damaged, truncated or mislabelled files and RGB / multi-channel images are refused with a
one-line :class:`~napari_cryoseg.core.errors.InputError`. Compressed TIFFs (LZW, JPEG,
...) are decoded by ``imagecodecs``; a codec that is really missing is named.
"""

from __future__ import annotations

import logging
import threading
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

from napari_cryoseg.core.errors import CryoSegError, InputError
from napari_cryoseg.core.optional import require
from napari_cryoseg.io.checks import (
    _SHAPE_HINT,
    ArrayLike,
    _check_shape_dtype,
    _native,
    _one_line,
    _positive,
    _q,
    unit_to_nm,
)

if TYPE_CHECKING:
    import dask.array

_RESUNIT_TO_NM = {2: 2.54e7, 3: 1e7, 4: 1e6, 5: 1e3}
#: dpi values image editors write by default; they say nothing about the sample.
_DEFAULT_DPI = (72.0, 96.0)
#: tifffile log messages that mean the file is cut short or damaged.
_TIFF_DAMAGE_WORDS = ("invalid page offset", "corrupt", "truncat", "incomplete")


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


def _check_codec(tif: tifffile.TiffFile, path: Path) -> None:
    """Raise if the file's compression cannot be decoded here (a codec really missing).

    Without this, a compressed TIFF whose codec is missing fails deep inside the reader
    (or, read lazily, only when its pixels are computed) with a message that blames a
    corrupt file.
    """
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    compression = getattr(page, "compression", 1)
    if int(compression) == 1:  # uncompressed
        return
    try:
        tifffile.TIFF.DECOMPRESSORS[compression]
    except KeyError as err:
        name = getattr(compression, "name", str(compression))
        raise InputError(
            f"TIFF file {_q(path)} is {name}-compressed and no decoder for {name} is "
            f"installed ({_one_line(err)}); install it with: pip install imagecodecs"
        ) from None


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
            _check_codec(tif, path)
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


class _TiffArray:
    """Array-like view of series 0 (level 0) of a TIFF through tifffile's zarr store.

    The file is opened on first access and closed when this object is garbage collected.
    Pickling keeps only the path and the layout (no file handle), so dask can ship the
    array to worker processes (``cryoseg segment --scheduler``), which reopen the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._array: Any = None
        array = self._open()
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunks = tuple(int(c) for c in array.chunks)
        self.ndim = len(self.shape)

    def _open(self) -> Any:
        if self._array is None:
            zarr = require("zarr", "reading large TIFF files lazily")
            tif = tifffile.TiffFile(self.path)
            try:
                store = tif.series[0].aszarr(level=0)
                self._array = zarr.open_array(store, mode="r")
            except Exception:
                tif.close()
                raise
            weakref.finalize(self, tif.close)
        return self._array

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._open()[key])

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_array"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._array = None


def _lazy_tiff(path: Path) -> dask.array.Array:
    """dask array over series 0 (level 0) of a TIFF; reads no pixels yet (picklable)."""
    import dask.array as da

    try:
        view = _TiffArray(path)
        name = f"tiff-{path.resolve()}-{path.stat().st_mtime_ns}"
        return da.from_array(view, chunks=view.chunks, name=name,
                             meta=np.empty((0,) * view.ndim, dtype=view.dtype))
    except CryoSegError:
        raise
    except Exception as err:
        raise InputError(
            f"TIFF file {_q(path)} could not be opened lazily ({_one_line(err)}); "
            "try reading it without lazy loading"
        ) from err
