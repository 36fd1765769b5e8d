"""User settings that describe themselves.

A setting's bounds, label, help text and command-line flag live in its dataclass field's
metadata (:func:`setting`), so the settings class checks its values, the CLI builds its
flags and the dock builds its form rows from the same place: a bound or a default is
written once.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

from napari_cryoseg.core.errors import InputError

_KEY = "cryoseg"


@dataclass(frozen=True)
class Setting:
    """What a user setting says about itself (see :func:`setting`).

    ``label`` and ``help`` are the dock's row label and tooltip (``help`` is also the CLI
    flag's help), ``name`` names the value in errors ("tile size 8 must be ..."), ``what``
    describes an accepted value for the flag's error ("give a tile edge in pixels from
    16 to ...").
    """

    label: str
    help: str
    name: str
    what: str
    flag: str | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    decimals: int = 0


def setting(default: Any, **about: Any) -> Any:
    """A dataclass field with ``default`` and a :class:`Setting` built from ``about``."""
    return dataclasses.field(default=default, metadata={_KEY: Setting(**about)})


def about(cls: Any, name: str) -> Setting:
    """The :class:`Setting` of field ``name`` of dataclass ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name and _KEY in f.metadata:
            return f.metadata[_KEY]
    raise KeyError(f"{getattr(cls, '__name__', cls)}.{name} is not a described setting")


def check_bounds(obj: Any) -> None:
    """Raise :class:`InputError` (one line) for a described field outside its bounds."""
    for f in dataclasses.fields(obj):
        meta = f.metadata.get(_KEY)
        value = getattr(obj, f.name)
        if meta is None or value is None:
            continue
        if meta.min is None and meta.max is None and not isinstance(value, numbers.Real):
            continue  # an unbounded text or tuple setting: nothing to compare
        low = -float("inf") if meta.min is None else meta.min
        high = float("inf") if meta.max is None else meta.max
        if not low <= value <= high:  # NaN fails too
            if meta.max is None:
                raise InputError(f"{meta.name} {value} must be at least {meta.min:g}")
            raise InputError(
                f"{meta.name} {value} must be between {meta.min:g} and {meta.max:g}")
