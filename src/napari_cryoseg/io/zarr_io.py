"""Zarr and OME-Zarr images: lazy reading (dask) and writing through ``ome-zarr``.

Reading: a ``.zarr`` folder holding either a plain array, a group with an array named
``0``, an OME-Zarr image (NGFF 0.4 ``multiscales`` in the group attributes, or 0.5
under ``ome``), or an NGFF ``labels`` group (the first label image is read). The
highest-resolution level (the first dataset) is returned as a dask array; singleton
axes (``t``, ``c``) are dropped and the pixel size comes from the level's
``coordinateTransformations`` scale and the axis units.

Writing images (:func:`write_zarr_image`) and labels (:mod:`napari_cryoseg.io.zarr_labels`)
goes through ``ome_zarr.writer``, so the metadata is the library's, not hand-written.

zarr and ome-zarr are optional (the ``zarr`` extra); without them every entry point
raises a one-line :class:`~napari_cryoseg.core.optional.MissingExtraError`.
May import numpy, dask, zarr, ome-zarr and :mod:`napari_cryoseg.core`; never torch or
napari.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.optional import require
from napari_cryoseg.io.checks import unit_to_nm

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


ZARR_FEATURE = "reading or writing zarr / OME-Zarr files"


def zarr_module() -> Any:
    """The ``zarr`` package, or a one-line "install the zarr extra" error."""
    return require("zarr", ZARR_FEATURE)


def _open(path: Path) -> Any:
    zarr = zarr_module()

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

    zarr = zarr_module()
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"zarr image '{p}' does not exist; check the path and spelling")
    node = _open(p)
    scale: list[float] | None = None
    axes_info: list[tuple[str, str | None, str | None]] | None = None
    if isinstance(node, zarr.Group):
        node = _first_label_image(node, p)
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


def _first_label_image(group: Any, path: Path) -> Any:
    """The first label image of an NGFF ``labels`` group; other groups unchanged."""
    attrs = dict(group.attrs)
    if _multiscales(attrs):
        return group
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs
    names = ome.get("labels")
    if not isinstance(names, list) or not names:
        return group
    try:
        return group[str(names[0])]
    except KeyError:
        raise InputError(
            f"OME-Zarr labels group '{path}' names '{names[0]}', which is missing; the store "
            "is incomplete"
        ) from None


def axes_for(shape: tuple[int, ...], axes: str | None) -> str:
    """``axes`` upper-cased when it fits ``shape``, else YX / ZYX / TZYX by dimension."""
    if axes and len(axes) == len(shape):
        return axes.upper()
    return {2: "YX", 3: "ZYX"}.get(len(shape), "TZYX"[-len(shape):] if len(shape) <= 4 else "")


def ngff_axes(axes: str, pixel_size_nm: float | None, z_size_nm: float | None,
              ) -> tuple[list[str], dict[str, float], dict[str, str] | None]:
    """(axis names, scale per axis, units or None) for ``ome_zarr.writer``."""
    names = list(axes.lower())
    scale: dict[str, float] = {}
    for name in names:
        if name == "t":
            scale[name] = 1.0
        elif name == "z":
            scale[name] = float(z_size_nm or pixel_size_nm or 1.0)
        else:
            scale[name] = float(pixel_size_nm or 1.0)
    # unknown size: no unit rather than a made-up one
    units = {n: "nanometer" for n in names if n != "t"} if pixel_size_nm else None
    return names, scale, units


def pyramid_factors(shape: tuple[int, ...], smallest: int = 256, max_levels: int = 5,
                    ) -> tuple[int, ...]:
    """XY down-sampling factors 2, 4, ...: at least one level, until a side < ``smallest``."""
    side = min(shape[-2:])
    factors = [2]
    while len(factors) < max_levels - 1 and side // (factors[-1] * 2) >= smallest:
        factors.append(factors[-1] * 2)
    return tuple(factors)


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
    levels: int = 1,
) -> Path:
    """Write a numpy or dask image as an OME-Zarr image (v3, NGFF 0.5) with ome-zarr.

    Used for tests, benchmarks and conversions; dask inputs are stored chunk by chunk.
    ``levels`` > 1 adds a pyramid (XY halved per level).
    """
    import dask.array as da

    zarr = zarr_module()
    writer = require("ome_zarr.writer", ZARR_FEATURE)
    p = Path(path).expanduser()
    if p.exists() and not overwrite:
        raise InputError(f"'{p}' already exists; pass overwrite=True or choose another name")
    shape = tuple(int(s) for s in data.shape)
    chunks = chunks or default_chunks(shape)
    names, scale, units = ngff_axes(axes_for(shape, axes), pixel_size_nm, z_size_nm)
    group = zarr.open_group(str(p), mode="w", zarr_format=3)
    image = data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=chunks)
    factors = tuple(2**i for i in range(1, levels)) or None
    writer.write_image(
        image.rechunk(chunks), group, scale_factors=factors, axes=names, scale=scale,
        axes_units=units, storage_options={"chunks": chunks}, name=p.stem,
        method=None if factors is None else _nearest(),
    )
    return p


def _nearest() -> Any:
    return require("ome_zarr.scale", ZARR_FEATURE).Methods.NEAREST
