"""Settings of object measurement: the dock's Objects section and ``cryoseg measure``.

The minimum object size is declared once here: the dock's spin box and the command's
``--min-size`` flag take their default, bounds and help from this field.
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.setting import check_bounds, setting


def tags_from_text(text: str) -> tuple[str, ...]:
    """``"type A, type B"`` -> ``("type A", "type B")`` (blanks and repeats dropped)."""
    names = [t.strip() for t in str(text).split(",")]
    return tuple(dict.fromkeys(n for n in names if n))


def tags_text(tags: tuple[str, ...]) -> str:
    """The comma-separated text of ``tags`` (what the dock's tag field shows)."""
    return ", ".join(tags)


@dataclass(frozen=True)
class ObjectSettings:
    """What the user chooses about objects.

    Attributes
    ----------
    min_size : int
        Objects with fewer pixels are skipped when measuring and deleted by "Remove
        smaller". Smaller regions of a semantic segmentation are mostly speckle.
    tags : tuple of str
        The object classes offered in the table's "tag" column.
    color_by_class : bool
        Colour each object by the class the classifier predicts for it.
    """

    min_size: int = setting(
        20, label="Min size:", flag="--min-size", name="minimum object size",
        what="a number of pixels", min=0,
        help="Skip objects smaller than this many pixels: mostly speckle")
    tags: tuple[str, ...] = setting(
        ("type A", "type B"), label="Tags:", name="tags", what="comma-separated names",
        help="Comma-separated object classes offered in the 'tag' column")
    color_by_class: bool = setting(
        True, label="Colour by class", name="colour by class", what="on or off",
        help="Colour each object by the class the classifier predicts for it")

    def __post_init__(self) -> None:
        if not isinstance(self.min_size, int) or isinstance(self.min_size, bool):
            raise InputError(f"minimum object size {self.min_size!r} must be a whole number "
                             "of pixels")
        check_bounds(self)
        if not isinstance(self.tags, tuple) or not all(
                isinstance(t, str) and t.strip() == t and t and "," not in t
                for t in self.tags):
            raise InputError(f"tags {self.tags!r} must be non-empty names without commas")
        if len(set(self.tags)) != len(self.tags):
            raise InputError(f"tags {tags_text(self.tags)!r} name a class twice")
