"""The classes of a new model: names, colours and the label value painted for each.

A :class:`ClassEditor` is plain state (no napari, no Qt): the dock's class list is a thin
view of it, and the annotation layers take their ``features`` and colours from it
(:mod:`napari_cryoseg.viewer.annotations`). napari's label 0 means "not painted", so
every class, background included, has a label value >= 1; background is the first class
and becomes the model's class 0.

Values are given once and never renumbered: strokes already painted keep their meaning
when classes are renamed, recoloured, added or removed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.palette import DEFAULT_COLORS
from napari_cryoseg.engine.classes import ClassMapping

#: The background class: always first, not removable, its name fixed.
BACKGROUND = "background"
#: Background strokes must be visible on EM (the palette's class 0 is black, and a grey
#: stroke vanishes on grey micrographs): a saturated violet no palette class uses.
BACKGROUND_COLOR = "#9b5cff"
#: Name shown for label 0 in the annotation layers' features table.
NOT_PAINTED = "(not painted)"
#: Highest label value an annotation layer holds (uint8 labels, 0 = not painted).
MAX_CLASSES = 255
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class ClassSpec:
    """One class of the new model.

    Attributes
    ----------
    name : str
        What the user calls it (stored in the model file).
    color : str
        ``#rrggbb`` (stored in the model file; the labels layers use it).
    value : int
        Label value painted for it in the annotation layers (>= 1).
    """

    name: str
    color: str
    value: int


def check_color(color: str) -> str:
    """``#rrggbb`` in lower case; :class:`InputError` for anything else."""
    text = str(color).strip()
    if not _HEX.match(text):
        raise InputError(f"colour {color!r} is not a #rrggbb colour; pick one with the "
                         "colour button")
    return text.lower()


class ClassEditor:
    """The classes the user names (see the module docstring).

    ``classes[0]`` is background. Listeners (``on_change``) are called after every
    change, so views and annotation layers follow.
    """

    def __init__(self) -> None:
        self.classes: list[ClassSpec] = [ClassSpec(BACKGROUND, BACKGROUND_COLOR, 1)]
        self._next_value = 2
        self._listeners: list[Callable[[], None]] = []

    # --- reading -----------------------------------------------------------------------
    @property
    def foreground(self) -> list[ClassSpec]:
        """The classes other than background, in model order."""
        return self.classes[1:]

    def by_value(self, value: int) -> ClassSpec:
        for spec in self.classes:
            if spec.value == int(value):
                return spec
        raise InputError(f"there is no class with label {value}")

    @property
    def values(self) -> list[int]:
        return [spec.value for spec in self.classes]

    def mapping(self) -> ClassMapping:
        """Painted values -> model classes: background is class 0, then the others.

        Raises :class:`InputError` when only background is named.
        """
        if not self.foreground:
            raise InputError("no classes named yet: add at least one class besides "
                             "background (e.g. the structure you want to find)")
        return ClassMapping(tuple(s.value for s in self.foreground),
                            tuple(s.name for s in self.classes))

    @property
    def colors(self) -> list[str]:
        """Colours in model order (class 0 = background)."""
        return [spec.color for spec in self.classes]

    def features(self) -> dict[str, list[Any]]:
        """The ``features`` table of an annotation layer: label value -> class name."""
        return {"index": [0, *self.values],
                "class": [NOT_PAINTED, *(spec.name for spec in self.classes)]}

    def color_dict(self) -> dict[Any, str]:
        """Label value -> colour for a napari ``DirectLabelColormap`` (0 transparent)."""
        return {None: "transparent", 0: "transparent",
                **{spec.value: spec.color for spec in self.classes}}

    # --- editing -----------------------------------------------------------------------
    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in list(self._listeners):
            callback()

    def _check_name(self, name: str, keep: int | None = None) -> str:
        text = str(name).strip()
        if not text:
            raise InputError("a class needs a name; type one")
        for spec in self.classes:
            if spec.value != keep and spec.name.lower() == text.lower():
                raise InputError(f"there is already a class called {spec.name!r}; choose "
                                 "another name")
        return text

    def add(self, name: str | None = None, color: str | None = None) -> ClassSpec:
        """Add a class with the next free label value; returns it."""
        if self._next_value > MAX_CLASSES:
            raise InputError(f"no label values left: annotation layers hold up to "
                             f"{MAX_CLASSES} (8-bit labels)")
        value = self._next_value
        if name is None:
            number = len(self.classes)
            taken = {spec.name.lower() for spec in self.classes}
            while f"class {number}" in taken:
                number += 1
            name = f"class {number}"
        name = self._check_name(name)
        if color is None:
            # the palette's foreground colours (index 0 is background black), in turn
            color = DEFAULT_COLORS[1 + (len(self.classes) - 1) % (len(DEFAULT_COLORS) - 1)]
        spec = ClassSpec(name, check_color(color), value)
        self._next_value += 1
        self.classes.append(spec)
        self._changed()
        return spec

    def rename(self, value: int, name: str) -> ClassSpec:
        """Rename the class painted with ``value`` (background keeps its name)."""
        spec = self.by_value(value)
        if spec is self.classes[0] and str(name).strip() != BACKGROUND:
            raise InputError("the background class keeps its name; add a class instead")
        updated = replace(spec, name=self._check_name(name, keep=spec.value))
        return self._replace(spec, updated)

    def recolor(self, value: int, color: str) -> ClassSpec:
        """Give the class painted with ``value`` another colour."""
        spec = self.by_value(value)
        return self._replace(spec, replace(spec, color=check_color(color)))

    def remove(self, value: int) -> ClassSpec:
        """Remove a class (not background); its label value is not given out again."""
        spec = self.by_value(value)
        if spec is self.classes[0]:
            raise InputError("background cannot be removed: the model needs to know what "
                             "is not one of your structures")
        self.classes.remove(spec)
        self._changed()
        return spec

    def _replace(self, old: ClassSpec, new: ClassSpec) -> ClassSpec:
        if new != old:
            self.classes[self.classes.index(old)] = new
            self._changed()
        return new
