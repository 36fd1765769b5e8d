"""Labels as OME-Zarr (NGFF ``labels``), written block by block through ``ome-zarr``.

A ``*_labels.zarr`` folder is an NGFF *labels group*: its attributes list the label
images (``ome.labels``), and the label image (named after the segmented image) is a
multiscale pyramid (full resolution plus levels halved in XY, nearest neighbour) with
``image-label`` metadata: one RGBA colour and one ``class`` name per label value.
ome-zarr's ``Reader`` and napari-ome-zarr read it as labels; the ``cryoseg`` attribute
(class names and colours) lets napari-cryoseg's own reader recognise it.

:class:`LabelsZarrWriter` hands out a zarr array that the engine fills strip by strip
(``segment(..., labels_out=writer.array)``), so labels larger than memory never exist
whole. :meth:`~LabelsZarrWriter.commit` then lets ``ome_zarr.writer.write_labels`` copy
that array chunk by chunk into the labels group and build the pyramid (dask, block by
block), and renames the finished folder into place: an interrupted run never leaves a
half-written ``*_labels.zarr`` behind and an existing output is never silently replaced.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.core.atomic import atomic_write
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.optional import require
from napari_cryoseg.io.labels import checked_colors, checked_names
from napari_cryoseg.io.zarr_io import (
    ZARR_FEATURE,
    _open,
    axes_for,
    default_chunks,
    ngff_axes,
    pyramid_factors,
    read_zarr,
    zarr_module,
)

#: Attribute of the labels group that marks a napari-cryoseg output.
CRYOSEG_KEY = "cryoseg"


#: How long a removed store must stay gone before it counts as removed, and the most
#: time spent waiting for that (see :func:`remove_store`).
_QUIET_S = 0.3
_REMOVE_LIMIT_S = 30.0


def remove_store(path: Path) -> None:
    """Delete a hidden zarr store for good, even while zarr is still writing into it.

    zarr writes chunks on its own event-loop thread. When the main thread is interrupted
    (Ctrl-C, SIGTERM) while waiting for a write, that write carries on and recreates its
    folders (``mkdir(parents=True)``) after a plain ``rmtree``. So the store is removed
    again until it has stayed gone for a quiet moment.
    """
    deadline = time.monotonic() + _REMOVE_LIMIT_S
    while True:
        shutil.rmtree(path, ignore_errors=True)
        quiet_until = time.monotonic() + _QUIET_S
        while not path.exists() and time.monotonic() < quiet_until:
            time.sleep(0.02)
        if not path.exists() or time.monotonic() > deadline:
            return


#: Hidden stores of writers not yet committed or aborted, so an interrupted command
#: can remove them even when the signal came between ``__init__`` and ``with``.
_UNFINISHED: set[Path] = set()


def remove_unfinished_stores() -> None:
    """Remove every hidden store a writer of this process left unfinished."""
    for path in list(_UNFINISHED):
        remove_store(path)
        _UNFINISHED.discard(path)


def _rgba(color: str) -> list[int]:
    """``"#rrggbb"`` -> ``[r, g, b, 255]`` (NGFF ``image-label`` colours are 0-255)."""
    text = str(color).lstrip("#")
    if len(text) not in (6, 8):
        return [128, 128, 128, 255]
    try:
        values = [int(text[i : i + 2], 16) for i in range(0, len(text), 2)]
    except ValueError:
        return [128, 128, 128, 255]
    return values if len(values) == 4 else [*values, 255]


def image_label_metadata(class_names: list[str], class_colors: list[str]) -> dict[str, Any]:
    """NGFF ``image-label`` content: colours and class names of the non-zero values."""
    colors = [{"label-value": value, "rgba": _rgba(color)}
              for value, color in enumerate(class_colors) if value]
    properties = [{"label-value": value, "class": name}
                  for value, name in enumerate(class_names) if value]
    return {"colors": colors, "properties": properties}


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


class LabelsZarrWriter:
    """An OME-Zarr labels group written chunk by chunk, renamed into place on commit.

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
        Stored as the NGFF ``scale`` (nanometer units).
    class_names, class_colors : list of str, optional
        Stored as ``image-label`` properties/colours and under the ``cryoseg`` attribute.
    axes : str, optional
        ``"YX"``, ``"ZYX"`` or ``"TYX"``.
    overwrite : bool
        Replace an existing output on commit; otherwise refuse up front.
    name : str, optional
        Name of the label image inside the group (default: the path's stem without
        ``_labels``).

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
        class_colors: list[str] | None = None,
        axes: str | None = None,
        overwrite: bool = False,
        name: str | None = None,
    ) -> None:
        zarr = zarr_module()
        require("ome_zarr.writer", ZARR_FEATURE)  # fail before any work, not at commit
        self.path = Path(path).expanduser()
        self.overwrite = overwrite
        if self.path.exists() and not overwrite:
            raise InputError(
                f"output '{self.path}' already exists; pass --overwrite or choose another folder"
            )
        if not self.path.parent.is_dir():
            raise InputError(f"cannot write '{self.path}': folder '{self.path.parent}' is missing")
        shape = tuple(int(s) for s in shape)
        self.axes = axes_for(shape, axes)
        # A size that is not a finite positive number never reaches zarr.json (JSON has no
        # Infinity/NaN): the labels are written without it.
        self.pixel_size_nm, self.z_size_nm = _finite(pixel_size_nm), _finite(z_size_nm)
        self.class_names = [str(n) for n in class_names or []]
        self.class_colors = [str(c) for c in class_colors or []]
        stem = self.path.name[: -len(".zarr")] if self.path.name.endswith(".zarr") else \
            self.path.name
        self.name = name or (stem[: -len("_labels")] if stem.endswith("_labels") else stem) \
            or "labels"
        self.chunks = tuple(chunks or default_chunks(shape))
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        _UNFINISHED.add(self.tmp)
        self.tmp.mkdir()
        try:
            self.array = zarr.create_array(
                str(self.tmp / "level0"), shape=shape, dtype=np.dtype(dtype),
                chunks=self.chunks, fill_value=0, dimension_names=list(self.axes.lower()),
            )
        except BaseException:
            # Not yet inside a ``with``: an error or a signal (SIGTERM unwinds as an
            # exception) here would otherwise leave the hidden store behind.
            remove_store(self.tmp)
            _UNFINISHED.discard(self.tmp)
            raise
        self.committed = False

    @property
    def shape(self) -> tuple[int, ...]:
        """The labels shape."""
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        """The labels dtype."""
        return self.array.dtype

    def _build_store(self) -> Path:
        """Write the NGFF labels group (pyramid + metadata) from the filled array."""
        import dask.array as da

        zarr = zarr_module()
        writer = require("ome_zarr.writer", ZARR_FEATURE)
        methods = require("ome_zarr.scale", ZARR_FEATURE).Methods
        store = self.tmp / "store"
        root = zarr.open_group(str(store), mode="w", zarr_format=3)
        names, scale, units = ngff_axes(self.axes, self.pixel_size_nm, self.z_size_nm)
        writer.write_labels(
            da.from_zarr(self.array), root, name=self.name, scaler=None,
            scale_factors=pyramid_factors(self.shape), method=methods.NEAREST, axes=names,
            scale=scale, axes_units=units, storage_options={"chunks": self.chunks},
            label_metadata=image_label_metadata(self.class_names, self.class_colors),
        )
        labels_dir = store / "labels"
        group = zarr.open_group(str(labels_dir), mode="r+")
        ome = dict(group.attrs.get("ome", {}))
        ome.setdefault("version", "0.5")
        group.attrs["ome"] = ome
        group.attrs[CRYOSEG_KEY] = {
            "kind": "labels", "class_names": self.class_names,
            "class_colors": self.class_colors, "background": 0,
            "pixel_size_nm": self.pixel_size_nm, "z_size_nm": self.z_size_nm,
            "axes": self.axes,
        }
        return labels_dir

    def commit(self) -> Path:
        """Build the pyramid, then move the finished group into place.

        An existing output is replaced only with ``overwrite``, and then only the label
        image this writer wrote inside the group: anything else a user added to the group
        (another label image, notes) stays, and the group keeps listing it.
        """
        labels_dir = self._build_store()
        if self.path.exists():
            if not self.overwrite:
                self.abort()
                raise InputError(f"output '{self.path}' appeared while writing; not replaced")
            ours = {"zarr.json", self.name}
            if {p.name for p in self.path.iterdir()} <= ours:
                self._swap(self.path, labels_dir)  # nothing else inside: the whole group
            else:
                self._replace_inside(labels_dir)
        else:
            os.replace(labels_dir, self.path)
        shutil.rmtree(self.tmp, ignore_errors=True)
        _UNFINISHED.discard(self.tmp)
        self.committed = True
        return self.path

    @staticmethod
    def _swap(target: Path, new: Path) -> None:
        """Move ``new`` onto ``target`` (file or folder); the old one is deleted after."""
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(new, target)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)

    def _replace_inside(self, labels_dir: Path) -> None:
        """Replace our label image inside an existing group the user added to."""
        meta = self.path / "zarr.json"
        try:
            group = json.loads(meta.read_text(encoding="utf-8"))
            attrs = group["attributes"]
            listed = list(attrs.get("ome", {}).get("labels", []))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.abort()
            raise InputError(f"'{self.path}' holds other data and its metadata cannot be "
                             "read; nothing was replaced. Choose another --out folder") \
                from None
        new_attrs = json.loads((labels_dir / "zarr.json").read_text(encoding="utf-8"))[
            "attributes"]
        ome = dict(attrs.get("ome", {}))
        ome["labels"] = listed + [self.name] if self.name not in listed else listed
        attrs.update(new_attrs, ome={**new_attrs.get("ome", {}), **ome})
        target = self.path / self.name
        if target.exists():
            self._swap(target, labels_dir / self.name)
        else:
            os.replace(labels_dir / self.name, target)
        text = json.dumps(group, indent=2)
        atomic_write(meta, lambda f: f.write(text.encode("utf-8")), overwrite=True)

    def abort(self) -> None:
        """Delete the temporary store (after an error or cancel)."""
        remove_store(self.tmp)
        _UNFINISHED.discard(self.tmp)

    def __enter__(self) -> LabelsZarrWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None or not self.committed:
            self.abort()


@dataclass
class ZarrLabels:
    """A labels zarr as read back: lazy levels, class names/colours, sizes, axes."""

    levels: list[Any]
    class_names: list[str]
    class_colors: list[str]
    pixel_size_nm: float | None
    z_size_nm: float | None
    axes: str

    @property
    def data(self) -> Any:
        """The full-resolution level (dask)."""
        return self.levels[0]


def cryoseg_labels_attrs(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``cryoseg`` attribute of a labels zarr written by this plugin, else None.

    Reads only the group's metadata file; never raises for foreign or broken stores.
    """
    import json

    p = Path(path)
    for meta_name in ("zarr.json", ".zattrs"):
        meta_file = p / meta_name
        if not meta_file.is_file() or meta_file.stat().st_size > 1 << 20:
            continue
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        attrs = meta.get("attributes", meta) if isinstance(meta, dict) else None
        info = attrs.get(CRYOSEG_KEY) if isinstance(attrs, dict) else None
        if isinstance(info, dict) and info.get("kind") == "labels":
            return info
    return None


def read_labels_zarr(path: str | os.PathLike[str]) -> ZarrLabels:
    """A labels zarr written by :class:`LabelsZarrWriter` (or an older single-level one).

    Raises
    ------
    InputError
        Not a readable zarr store, or no labels array in it.
    """
    import dask.array as da

    zarr = zarr_module()
    p = Path(path).expanduser()
    data, px, z_nm, axes = read_zarr(p)
    info = cryoseg_labels_attrs(p) or {}
    # Stored metadata is checked, not trusted: a crafted colour, name list or size gets
    # the defaults instead of breaking the viewer.
    names = checked_names(info.get("class_names"))
    colors = checked_colors(info.get("class_colors"))
    levels = [data]
    node = _open(p)
    try:
        ome = dict(node.attrs).get("ome", {}) if isinstance(node, zarr.Group) else {}
        label_names = ome.get("labels") if isinstance(ome, dict) else None
        if isinstance(label_names, list) and label_names:
            image = node[str(label_names[0])]
            multiscales = (dict(image.attrs).get("ome") or {}).get("multiscales") or []
            datasets = multiscales[0].get("datasets", []) if multiscales else []
            for dataset in datasets[1:]:
                level = da.from_zarr(image[str(dataset["path"])])
                levels.append(level.reshape(level.shape[-data.ndim:])
                              if level.ndim > data.ndim else level)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        levels = [data]  # a damaged pyramid description: the full resolution still reads
    return ZarrLabels(levels, names, colors, _finite(px), _finite(z_nm), axes)
