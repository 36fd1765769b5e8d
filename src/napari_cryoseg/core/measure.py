"""Per-object measurements of a segmentation (numpy + scikit-image, no torch, no napari).

A semantic label image (0 = background, 1..K = classes) is split into objects: the
connected components of each class. Every object gets a row of shape and intensity
features (see :data:`COLUMNS`), as a plain ``{column: numpy array}`` table that the CLI
writes as CSV, the napari dock shows in a table and the object classifier learns from.

Radial profile
--------------
Each object pixel gets a normalised radius ``r = d / d_max`` (``d``: distance to the
object's centroid, ``d_max``: the largest such distance in the object). The mean
intensity in the rings ``r < 1/3`` (centre), ``1/3 <= r < 2/3`` (middle) and
``r >= 2/3`` (edge) describes e.g. a liposome's dark membrane around a bright lumen;
``edge_contrast = (edge - centre) / (|edge| + |centre|)`` (in [-1, 1]) is positive for
objects whose rim is brighter than their centre.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError

#: Columns of a measurement table, in CSV order. ``plane`` is the Z/T index (0 for 2D).
COLUMNS = (
    "label", "class", "class_name", "plane", "area_px", "area_nm2", "equivalent_diameter_px",
    "equivalent_diameter_nm", "perimeter_px", "circularity", "eccentricity",
    "mean_intensity", "std_intensity", "ring_centre", "ring_middle", "ring_edge",
    "edge_contrast", "centroid_y", "centroid_x",
)  # fmt: skip

#: Numeric, scale-free columns used as classifier features (no ids, no positions, no nm).
FEATURE_COLUMNS = (
    "area_px", "equivalent_diameter_px", "perimeter_px", "circularity", "eccentricity",
    "mean_intensity", "std_intensity", "ring_centre", "ring_middle", "ring_edge",
    "edge_contrast",
)  # fmt: skip

Table = dict[str, np.ndarray]


def instance_labels(labels: np.ndarray, *, connectivity: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of every class of a semantic label image.

    Parameters
    ----------
    labels : numpy.ndarray
        2D (Y, X) or 3D (Z or T, Y, X) non-negative integer classes; 3D is split plane by
        plane (objects never span planes).
    connectivity : int
        1 (4-neighbours) or 2 (8-neighbours, default).

    Returns
    -------
    instances : numpy.ndarray
        int32, same shape, 0 = background, objects numbered 1..N (class by class,
        plane by plane).
    classes : numpy.ndarray
        int64 (any label value) of length N + 1: ``classes[i]`` is the class of
        object ``i`` (0 for 0).
    """
    from skimage.measure import label as cc_label

    labels = _check_labels(labels)
    planes = labels[None] if labels.ndim == 2 else labels
    out = np.zeros(planes.shape, dtype=np.int32)
    classes = [0]
    next_id = 1
    for z, plane in enumerate(planes):
        for value in np.unique(plane):
            if value == 0:
                continue
            components, n = cc_label(plane == value, connectivity=connectivity,
                                     return_num=True)
            if n == 0:
                continue
            mask = components > 0
            out[z][mask] = components[mask] + (next_id - 1)
            classes.extend([int(value)] * n)
            next_id += n
    return (out[0] if labels.ndim == 2 else out), np.asarray(classes, dtype=np.int64)


def _check_labels(labels: Any) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels have {labels.dtype} values; expected integer labels")
    if labels.ndim not in (2, 3):
        raise InputError(f"labels of shape {labels.shape}: expected 2D (Y, X) or 3D (Z/T, Y, X)")
    if labels.size and labels.min() < 0:
        raise InputError("labels contain negative values")
    return labels


def _radial_rings(coords: np.ndarray, values: np.ndarray, centroid: np.ndarray) -> tuple:
    d = np.sqrt(((coords - centroid) ** 2).sum(axis=1))
    d_max = float(d.max()) if d.size else 0.0
    if d_max <= 0:
        mean = float(values.mean())
        return mean, mean, mean
    r = d / d_max
    rings = []
    for lo, hi in ((0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.0 + 1e-9)):
        sel = (r >= lo) & (r < hi)
        rings.append(float(values[sel].mean()) if sel.any() else math.nan)
    # Tiny objects can have an empty ring: fall back to the neighbouring ring / object mean.
    mean = float(values.mean())
    centre, middle, edge = (mean if math.isnan(v) else v for v in rings)
    return centre, middle, edge


def measure_objects(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    instances: np.ndarray | None = None,
    classes: np.ndarray | None = None,
    pixel_size_nm: float | None = None,
    class_names: Sequence[str] | None = None,
    min_size: int = 0,
    max_size: int | None = None,
) -> Table:
    """Measure every object (connected component per class) of ``labels``.

    Parameters
    ----------
    labels : numpy.ndarray
        Semantic labels, 2D or 3D (see :func:`instance_labels`).
    image : numpy.ndarray, optional
        Intensity image of the same shape; without it intensity columns are NaN.
    instances, classes : numpy.ndarray, optional
        A precomputed :func:`instance_labels` result (e.g. after removing objects).
    pixel_size_nm : float, optional
        XY pixel size; fills the ``*_nm`` columns (NaN without it).
    class_names : sequence of str, optional
        Names of the classes 0, 1, ...; default ``"class <i>"``.
    min_size, max_size : int
        Keep objects with ``min_size <= area_px <= max_size`` only.

    Returns
    -------
    dict of str to numpy.ndarray
        One array per name in :data:`COLUMNS`, one entry per object, sorted by label.
    """
    from skimage.measure import regionprops

    labels = _check_labels(labels)
    if image is not None:
        image = np.asarray(image)
        if image.shape != labels.shape:
            raise InputError(
                f"image shape {image.shape} differs from labels shape {labels.shape}"
            )
        if image.dtype.kind not in "biuf":
            raise InputError(f"image dtype {image.dtype} is not a grayscale intensity")
    if instances is None or classes is None:
        instances, classes = instance_labels(labels)
    rows: list[dict[str, Any]] = []
    inst_planes = instances[None] if instances.ndim == 2 else instances
    img_planes = None
    if image is not None:
        img_planes = (image[None] if image.ndim == 2 else image).astype(np.float64, copy=False)
    if pixel_size_nm is not None and not (
            isinstance(pixel_size_nm, int | float | np.number)
            and math.isfinite(float(pixel_size_nm)) and float(pixel_size_nm) > 0):
        # A negative size gives negative areas and diameters without any error.
        raise InputError(f"pixel size {pixel_size_nm!r} nm must be a positive number")
    px = float(pixel_size_nm) if pixel_size_nm else None
    for z, plane in enumerate(inst_planes):
        for region in regionprops(plane):
            area = int(region.area)
            if area < min_size or (max_size is not None and area > max_size):
                continue
            label_id = int(region.label)
            cls = int(classes[label_id]) if label_id < len(classes) else 0
            perimeter = float(region.perimeter)
            circ = min(4 * math.pi * area / perimeter**2, 1.0) if perimeter > 0 else 1.0
            cy, cx = (float(c) for c in region.centroid)
            row = {
                "label": label_id,
                "class": cls,
                "class_name": _class_name(cls, class_names),
                "plane": z,
                "area_px": area,
                "area_nm2": area * px * px if px else math.nan,
                "equivalent_diameter_px": float(region.equivalent_diameter_area),
                "equivalent_diameter_nm": float(region.equivalent_diameter_area) * px
                if px else math.nan,
                "perimeter_px": perimeter,
                "circularity": circ,
                "eccentricity": float(region.eccentricity),
                "centroid_y": cy,
                "centroid_x": cx,
            }
            if img_planes is not None:
                coords = region.coords
                values = img_planes[z][coords[:, 0], coords[:, 1]]
                centre, middle, edge = _radial_rings(
                    coords.astype(np.float64), values, np.array([cy, cx]))
                denom = abs(edge) + abs(centre)
                row.update(
                    mean_intensity=float(values.mean()),
                    std_intensity=float(values.std()),
                    ring_centre=centre, ring_middle=middle, ring_edge=edge,
                    edge_contrast=(edge - centre) / denom if denom > 0 else 0.0,
                )
            rows.append(row)
    rows.sort(key=lambda r: r["label"])
    return table_from_rows(rows)


def _class_name(cls: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= cls < len(class_names):
        return str(class_names[cls])
    return f"class {cls}"


def table_from_rows(rows: Sequence[dict[str, Any]]) -> Table:
    """``{column: array}`` from row dicts (missing numeric values become NaN)."""
    table: Table = {}
    for column in COLUMNS:
        values = [row.get(column, math.nan) for row in rows]
        if column == "class_name":
            table[column] = np.asarray(values, dtype=object)
        elif column in ("label", "class", "plane", "area_px"):
            table[column] = np.asarray(values, dtype=np.int64)
        else:
            table[column] = np.asarray(values, dtype=np.float64)
    return table


def n_rows(table: Table) -> int:
    """Number of objects in a table."""
    return len(next(iter(table.values()))) if table else 0


def filter_table(table: Table, keep: np.ndarray) -> Table:
    """Rows where the boolean ``keep`` is True."""
    keep = np.asarray(keep, dtype=bool)
    return {k: v[keep] for k, v in table.items()}


def feature_matrix(table: Table, columns: Sequence[str] = FEATURE_COLUMNS) -> np.ndarray:
    """(n_objects, n_features) float64 of ``columns`` (NaN -> 0).

    Raises
    ------
    InputError
        A column that is not a numeric measurement (e.g. a classifier trained on
        features this version does not measure).
    """
    unknown = [c for c in columns if c not in table or np.asarray(table[c]).dtype == object]
    if table and unknown:
        raise InputError(
            f"features {', '.join(map(str, unknown[:3]))} are not numeric measurements "
            f"(known: {', '.join(FEATURE_COLUMNS)}); train the classifier again"
        )
    if not n_rows(table):
        return np.zeros((0, len(columns)))
    matrix = np.stack([np.asarray(table[c], dtype=np.float64) for c in columns], axis=1)
    return np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)


def remove_objects(instances: np.ndarray, labels: np.ndarray, remove: Sequence[int]) -> np.ndarray:
    """``labels`` with the pixels of the object ids ``remove`` set to background (a copy)."""
    out = np.array(labels, copy=True)
    if len(remove):
        out[np.isin(instances, np.asarray(remove))] = 0
    return out


def small_object_ids(table: Table, min_size: int) -> np.ndarray:
    """Labels of objects with fewer than ``min_size`` pixels."""
    return np.asarray(table["label"])[np.asarray(table["area_px"]) < min_size]


def table_to_csv_text(table: Table, extra: dict[str, Sequence[Any]] | None = None) -> str:
    """CSV text (header + one line per object); ``extra`` columns are appended."""
    columns = list(table) + [c for c in (extra or {}) if c not in table]
    data = {**table, **(extra or {})}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for i in range(n_rows(table)):
        writer.writerow([_csv_value(data[c][i]) for c in columns])
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return "" if not math.isfinite(float(value)) else f"{float(value):.6g}"
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_csv(
    table: Table,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    extra: dict[str, Sequence[Any]] | None = None,
) -> Path:
    """Write ``table`` as CSV atomically (refuses to replace a file unless ``overwrite``)."""
    from napari_cryoseg.core.atomic import atomic_write

    text = table_to_csv_text(table, extra).encode("utf-8")
    return atomic_write(Path(path), lambda f: f.write(text), overwrite=overwrite)


def read_csv(path: str | os.PathLike[str]) -> Table:
    """Read a table written by :func:`write_csv` (numbers as float64, text as object)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    table: Table = {}
    for j, column in enumerate(header):
        values = [r[j] if j < len(r) else "" for r in body]
        try:
            table[column] = np.asarray([float(v) if v != "" else math.nan for v in values])
        except ValueError:
            table[column] = np.asarray(values, dtype=object)
    return table
