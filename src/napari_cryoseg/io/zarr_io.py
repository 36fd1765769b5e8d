"""Zarr and OME-Zarr images: lazy reading (dask) and chunked label writing.

Reading: a ``.zarr`` folder holding either a plain array, a group with an array named
``0``, or an OME-Zarr image (NGFF 0.4 ``multiscales`` in the group attributes, or 0.5
under ``ome``). The highest-resolution level (the first dataset) is returned as a dask
array; singleton axes (``t``, ``c``) are dropped and the pixel size comes from the
level's ``coordinateTransformations`` scale and the axis units.

Writing: :class:`LabelsZarrWriter` creates an OME-Zarr (zarr v3, NGFF 0.5) labels image
in a hidden temporary folder beside the target, hands out its zarr array so the engine
can write it strip by strip (``segment(..., labels_out=writer.array)``), and renames it
into place on :meth:`~LabelsZarrWriter.commit` -- an interrupted run never leaves a
half-written ``*_labels.zarr`` behind and an existing output is never silently replaced.

May import numpy, dask, zarr and :mod:`napari_cryoseg.core`; never torch or napari.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_cryoseg.core.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import dask.array

ZARR_SUFFIX = ".zarr"
#: Rows per label chunk: a multiple of every tile size we use, so a strip of tile rows
#: touches few chunks.
DEFAULT_CHUNK = 512
_SPATIAL = ("z", "y", "x")


def is_zarr_path(path: str | os.PathLike[str]) -> bool:
    """True for a folder named ``*.zarr`` or one holding zarr metadata."""
    p = Path(path)
    if not p.is_dir():
        return False
    if p.suffix.lower() == ZARR_SUFFIX:
        return True
    return any((p / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray"))


def _multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    """NGFF ``multiscales`` metadata: 0.5 nests it under ``ome``, 0.4 keeps it top level."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and isinstance(ome.get("multiscales"), list):
        return ome["multiscales"]
    found = attrs.get("multiscales")
    return found if isinstance(found, list) else None


def _scale(transforms: Any, ndim: int) -> list[float] | None:
    """The ``scale`` vector of a list of coordinate transformations (if any)."""
    for transform in transforms or []:
        if isinstance(transform, dict) and transform.get("type") == "scale":
            scale = transform.get("scale")
            if isinstance(scale, list) and len(scale) == ndim:
                try:
                    return [float(s) for s in scale]
                except (TypeError, ValueError):
                    return None
    return None


def _axes(multiscale: dict[str, Any], ndim: int) -> list[tuple[str, str | None, str | None]]:
    """(name, type, unit) per axis; 0.3-style plain names and missing axes are accepted."""
    raw = multiscale.get("axes")
    default = ["t", "c", "z", "y", "x"][-ndim:] if ndim <= 5 else [f"d{i}" for i in range(ndim)]
    if not isinstance(raw, list) or len(raw) != ndim:
        return [(name, None, None) for name in default]
    axes = []
    for axis in raw:
        if isinstance(axis, str):
            axes.append((axis.lower(), None, None))
        elif isinstance(axis, dict):
            unit = axis.get("unit")
            axes.append((str(axis.get("name", "")).lower(), axis.get("type"),
                         unit if isinstance(unit, str) else None))
        else:
            axes.append(("", None, None))
    return axes


def _open(path: Path) -> Any:
    import zarr

    try:
        return zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises many types for unreadable stores
        raise InputError(
            f"'{path}' is not a readable zarr store ({' '.join(str(err).split())[:200]})"
        ) from err


def read_zarr(
    path: str | os.PathLike[str],
) -> tuple[dask.array.Array, float | None, float | None, str]:
    """Open a zarr / OME-Zarr image lazily: (dask data, pixel size nm, z size nm, axes).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.zarr`` folder: a plain array, a group with array ``0``, or an OME-Zarr
        image (highest-resolution level used).

    Returns
    -------
    tuple
        Dask array (YX, ZYX or TYX after dropping singleton axes; chunks as stored),
        XY pixel size in nm, slice spacing in nm (volumes only), axes string.

    Raises
    ------
    InputError
        Not a zarr store, no image array found, or a multi-channel image.
    """
    import dask.array as da
    import zarr

    from napari_cryoseg.io.images import unit_to_nm

    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"zarr image '{p}' does not exist; check the path and spelling")
    node = _open(p)
    scale: list[float] | None = None
    axes_info: list[tuple[str, str | None, str | None]] | None = None
    if isinstance(node, zarr.Array):
        array = node
    else:
        multiscales = _multiscales(dict(node.attrs))
        if multiscales:
            ms = multiscales[0]
            datasets = ms.get("datasets") or []
            if not datasets or "path" not in datasets[0]:
                raise InputError(f"OME-Zarr '{p}' lists no datasets in its multiscales metadata")
            level = str(datasets[0]["path"])
            try:
                array = node[level]
            except KeyError:
                raise InputError(
                    f"OME-Zarr '{p}' names level '{level}', which is missing; the store is "
                    "incomplete"
                ) from None
            ndim = array.ndim
            axes_info = _axes(ms, ndim)
            scale = _scale(datasets[0].get("coordinateTransformations"), ndim)
            outer = _scale(ms.get("coordinateTransformations"), ndim)
            if scale is not None and outer is not None:
                scale = [a * b for a, b in zip(scale, outer)]
            elif scale is None:
                scale = outer
        else:
            arrays = dict(node.arrays())
            if "0" in arrays:
                array = arrays["0"]
            elif len(arrays) == 1:
                array = next(iter(arrays.values()))
            else:
                raise InputError(
                    f"zarr group '{p}' holds {len(arrays)} arrays and no OME-Zarr metadata; "
                    "pass the array's folder instead"
                )
    data = da.from_zarr(array)
    ndim = data.ndim
    if axes_info is None:
        axes_info = _axes({}, ndim)
    # Drop singleton axes (t, c of a 5D OME-Zarr); refuse real channels.
    keep = [i for i in range(ndim) if data.shape[i] != 1 or axes_info[i][0] in ("y", "x")]
    for i, (name, kind, _unit) in enumerate(axes_info):
        if i in keep and (name == "c" or kind == "channel"):
            raise InputError(
                f"zarr image '{p}' has {data.shape[i]} channels; segment one channel at a "
                "time (save each channel as its own image)"
            )
    data = data[tuple(slice(None) if i in keep else 0 for i in range(ndim))]
    kept = [axes_info[i] for i in keep]
    px = z_nm = None
    if scale is not None:
        kept_scale = [scale[i] for i in keep]

        def size_nm(index: int) -> float | None:
            name, _kind, unit = kept[index]
            factor = unit_to_nm(unit) if unit else None
            value = kept_scale[index]
            if factor is None or not np.isfinite(value) or value <= 0:
                return None
            return float(value * factor)

        px = size_nm(len(kept) - 1)
        if len(kept) == 3 and kept[0][0] == "z":
            z_nm = size_nm(0)
    if len(kept) == 3:
        axes = "ZYX" if kept[0][0] == "z" else "TYX"
    else:
        axes = "YX" if len(kept) == 2 else "".join(a[0].upper() or "?" for a in kept)
    if axes != "ZYX":
        z_nm = None
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    return data, px, z_nm, axes


def zarr_nbytes(path: str | os.PathLike[str]) -> int:
    """Uncompressed size of the image :func:`read_zarr` would return (no pixels read)."""
    data = read_zarr(path)[0]
    return int(data.nbytes)


def _ome_attrs(
    shape: tuple[int, ...], axes: str, pixel_size_nm: float | None, z_size_nm: float | None,
    name: str,
) -> dict[str, Any]:
    axes_meta = []
    scale = []
    for letter in axes.lower():
        if letter == "t":
            axes_meta.append({"name": "t", "type": "time"})
            scale.append(1.0)
        elif letter == "z":
            axes_meta.append({"name": "z", "type": "space", "unit": "nanometer"})
            scale.append(float(z_size_nm or pixel_size_nm or 1.0))
        else:
            axes_meta.append({"name": letter, "type": "space", "unit": "nanometer"})
            scale.append(float(pixel_size_nm or 1.0))
    if not pixel_size_nm:  # unknown size: no unit rather than a made-up one
        for axis in axes_meta:
            axis.pop("unit", None)
    return {
        "version": "0.5",
        "multiscales": [{
            "name": name,
            "axes": axes_meta,
            "datasets": [{
                "path": "0",
                "coordinateTransformations": [{"type": "scale", "scale": scale}],
            }],
        }],
    }


def _axes_for(shape: tuple[int, ...], axes: str | None) -> str:
    if axes and len(axes) == len(shape):
        return axes.upper()
    return {2: "YX", 3: "ZYX"}.get(len(shape), "TZYX"[-len(shape):] if len(shape) <= 4 else "")


def default_chunks(shape: tuple[int, ...], rows: int = DEFAULT_CHUNK) -> tuple[int, ...]:
    """Chunks of ``rows`` image rows (aligned to tile rows) by up to 4096 columns, 1 plane."""
    plane = (min(rows, shape[-2]), min(4096, shape[-1]))
    return (1,) * (len(shape) - 2) + plane


def write_zarr_image(
    path: str | os.PathLike[str],
    data: Any,
    *,
    chunks: tuple[int, ...] | None = None,
    pixel_size_nm: float | None = None,
    z_size_nm: float | None = None,
    axes: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a numpy or dask image as a single-level OME-Zarr (v3, NGFF 0.5).

    Used for tests, benchmarks and conversions; dask inputs are stored chunk by chunk.
    """
    import dask.array as da
    import zarr

    p = Path(path).expanduser()
    if p.exists() and not overwrite:
        raise InputError(f"'{p}' already exists; pass overwrite=True or choose another name")
    shape = tuple(int(s) for s in data.shape)
    chunks = chunks or default_chunks(shape)
    axes = _axes_for(shape, axes)
    group = zarr.open_group(str(p), mode="w", zarr_format=3)
    group.attrs["ome"] = _ome_attrs(shape, axes, pixel_size_nm, z_size_nm, p.stem)
    array = group.create_array("0", shape=shape, dtype=np.dtype(data.dtype), chunks=chunks,
                               dimension_names=list(axes.lower()))
    if isinstance(data, da.Array):
        da.store(data.rechunk(chunks), array, lock=False)
    else:
        array[...] = np.asarray(data)
    return p


class LabelsZarrWriter:
    """A labels OME-Zarr written in place chunk by chunk, renamed into place on commit.

    Parameters
    ----------
    path : str or os.PathLike
        Final ``*_labels.zarr`` folder.
    shape : tuple of int
        Labels shape (the image's).
    dtype : numpy dtype
        uint8 or uint16.
    chunks : tuple of int, optional
        Default: 512 rows (a multiple of the tile size) x up to 4096 columns, 1 plane.
    pixel_size_nm, z_size_nm : float, optional
        Stored as the OME ``scale`` (nanometer units).
    class_names : list of str, optional
        Stored under the ``cryoseg`` attribute (``class_names``; 0 = background).
    axes : str, optional
        ``"YX"``, ``"ZYX"`` or ``"TYX"``.
    overwrite : bool
        Replace an existing output on commit; otherwise refuse up front.

    Attributes
    ----------
    array : zarr.Array
        Where to write (``array[rows] = labels``); any slice assignment works.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: tuple[int, ...],
        dtype: Any,
        *,
        chunks: tuple[int, ...] | None = None,
        pixel_size_nm: float | None = None,
        z_size_nm: float | None = None,
        class_names: list[str] | None = None,
        axes: str | None = None,
        overwrite: bool = False,
    ) -> None:
        import zarr

        self.path = Path(path).expanduser()
        self.overwrite = overwrite
        if self.path.exists() and not overwrite:
            raise InputError(
                f"output '{self.path}' already exists; pass --overwrite or choose another folder"
            )
        if not self.path.parent.is_dir():
            raise InputError(f"cannot write '{self.path}': folder '{self.path.parent}' is missing")
        shape = tuple(int(s) for s in shape)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        axes = _axes_for(shape, axes)
        group = zarr.open_group(str(self.tmp), mode="w", zarr_format=3)
        attrs = _ome_attrs(shape, axes, pixel_size_nm, z_size_nm, self.path.stem)
        group.attrs["ome"] = attrs
        group.attrs["cryoseg"] = json.loads(json.dumps({
            "kind": "labels", "class_names": list(class_names or []), "background": 0,
        }))
        self.array = group.create_array(
            "0", shape=shape, dtype=np.dtype(dtype), chunks=chunks or default_chunks(shape),
            fill_value=0, dimension_names=list(axes.lower()),
        )
        self.committed = False

    @property
    def shape(self) -> tuple[int, ...]:
        """The labels shape."""
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        """The labels dtype."""
        return self.array.dtype

    def commit(self) -> Path:
        """Move the finished store into place (replacing an old one if ``overwrite``)."""
        if self.path.exists():
            if not self.overwrite:
                self.abort()
                raise InputError(f"output '{self.path}' appeared while writing; not replaced")
            old = self.path.with_name(f".{self.path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        self.committed = True
        return self.path

    def abort(self) -> None:
        """Delete the temporary store (after an error or cancel)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LabelsZarrWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None or not self.committed:
            self.abort()


def read_labels_zarr(path: str | os.PathLike[str]) -> tuple[dask.array.Array, list[str]]:
    """A labels zarr written by :class:`LabelsZarrWriter`: (dask labels, class names)."""
    import zarr

    p = Path(path).expanduser()
    data = read_zarr(p)[0]
    node = _open(p)
    names: list[str] = []
    if isinstance(node, zarr.Group):
        info = dict(node.attrs).get("cryoseg", {})
        if isinstance(info, dict):
            names = [str(n) for n in info.get("class_names", [])]
    return data, names
