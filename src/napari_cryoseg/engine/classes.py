"""Which mask values become which model classes (``--classes`` / ``--class-names``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError


def class_index_dtype(n_classes: int) -> np.dtype:
    """The smallest integer dtype that holds every class index ``0..n_classes-1``
    (uint8 would wrap class 256 to 0 and 257 to 1)."""
    if n_classes <= 256:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16 if n_classes <= 65536 else np.int32)


@dataclass(frozen=True)
class ClassMapping:
    """Which mask values become which model classes.

    Class 0 is background; class ``i`` (1-based) is mask value ``values[i - 1]``. Mask
    values not listed become background.

    Attributes
    ----------
    values : tuple of int
        Mask values of the foreground classes, in class order.
    names : tuple of str
        Class names including ``"background"`` first (``len(values) + 1`` names).
    """

    values: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise InputError("no foreground class given; pass e.g. --classes 1 or --classes 1,2")
        if len(set(self.values)) != len(self.values):
            raise InputError(f"class values {list(self.values)} contain duplicates")
        if any(v < 0 for v in self.values):
            raise InputError(f"class values {list(self.values)} must be non-negative mask values")
        if len(self.names) != len(self.values) + 1:
            raise InputError(
                f"{len(self.names) - 1} class names for {len(self.values)} classes; give one "
                "name per class value (background is added automatically)"
            )

    @classmethod
    def parse(
        cls, classes: str | Sequence[int], names: str | Sequence[str] | None = None
    ) -> ClassMapping:
        """Build from ``--classes`` (``"3"`` or ``"1,2,3,4"``) and ``--class-names``.

        ``"3"`` gives a binary model of ``mask == 3``; ``"1,2,3,4"`` gives 4 classes plus
        background where mask value ``v_i`` becomes class ``i``.
        """
        if isinstance(classes, str):
            try:
                values = tuple(int(v) for v in classes.replace(" ", "").split(",") if v)
            except ValueError:
                raise InputError(
                    f"--classes {classes!r} must be comma-separated mask values, e.g. 1,2,3"
                ) from None
        else:
            values = tuple(int(v) for v in classes)
        if names is None:
            fg_names: tuple[str, ...] = tuple(f"class {v}" for v in values)
        elif isinstance(names, str):
            fg_names = tuple(n.strip() for n in names.split(","))
        else:
            fg_names = tuple(str(n) for n in names)
        if fg_names and fg_names[0] == "background" and len(fg_names) == len(values) + 1:
            fg_names = fg_names[1:]  # tolerate names given with background
        return cls(values, ("background", *fg_names))

    @classmethod
    def from_masks(
        cls, masks: Sequence[np.ndarray], names: str | Sequence[str] | None = None
    ) -> ClassMapping:
        """All non-zero values present in ``masks`` (sorted), e.g. ``(1,)`` -> binary."""
        present: set[int] = set()
        for mask in masks:
            present.update(int(v) for v in np.unique(mask))
        values = sorted(v for v in present if v != 0)
        if not values:
            raise InputError(
                "the masks contain only background (0); label some pixels with values >= 1"
            )
        if len(values) > 32:
            raise InputError(
                f"the masks contain {len(values)} distinct values; are they instance labels? "
                "pass the semantic class values with --classes"
            )
        return cls.parse(values, names)

    @property
    def n_classes(self) -> int:
        """Classes including background."""
        return len(self.values) + 1

    def apply(self, mask: np.ndarray) -> np.ndarray:
        """Mask values -> class indices (see :func:`class_index_dtype`); unlisted -> 0."""
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            mask = mask.astype(np.uint8)
        if not np.issubdtype(mask.dtype, np.integer):
            raise InputError(f"mask has {mask.dtype} values; masks must hold integer labels")
        out = np.zeros(mask.shape, dtype=class_index_dtype(self.n_classes))
        for index, value in enumerate(self.values, start=1):
            out[mask == value] = index
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for model provenance."""
        return {"values": list(self.values), "names": list(self.names)}


def check_pair(image: Any, mask: Any, name: str = "image") -> None:
    """Raise :class:`InputError` unless ``image`` and ``mask`` are 2D of the same shape."""
    if tuple(image.shape) != tuple(mask.shape):
        raise InputError(
            f"{name}: image shape {tuple(image.shape)} differs from mask shape "
            f"{tuple(mask.shape)}; each mask must have the size of its image"
        )
    if len(image.shape) != 2:
        raise InputError(
            f"{name}: shape {tuple(image.shape)} is not a 2D image; training uses 2D images "
            "(split stacks into single images)"
        )
