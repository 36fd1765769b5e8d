"""User settings that describe themselves.

A setting's bounds, label, help text and command-line flag live in its dataclass field's
metadata (:func:`setting`), so the settings class checks its values, the CLI builds its
flags and the dock builds its form rows from the same place: a bound or a default is
written once.
"""

from __future__ import annotations

import dataclasses
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
    16 to ..."). ``min_open`` / ``max_open`` exclude the bound itself (a learning rate
    must be above 0). ``choices``: the accepted values of a setting that takes one of a
    few (text, or numbers such as the test-time augmentation copies).
    """

    label: str
    help: str
    name: str
    what: str = ""
    flag: str | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    step: float | None = None
    decimals: int = 0
    choices: tuple[Any, ...] | None = None

    def accepts(self, value: Any) -> bool:
        """True when ``value`` is within the bounds and choices (None: always)."""
        if value is None:
            return True
        if self.choices is not None:
            return value in self.choices
        if self.min is not None and not (value > self.min if self.min_open
                                         else value >= self.min):
            return False
        if self.max is not None and not (value < self.max if self.max_open
                                         else value <= self.max):
            return False
        return value == value  # NaN is in no range

    def accepted(self) -> str:
        """What :meth:`accepts` lets through, for an error: ``"between 16 and 65536"``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.min_open or self.max_open:  # the command line's interval notation
            if self.max is None:
                return f"> {self.min:g}" if self.min_open else f">= {self.min:g}"
            if self.min is None:
                return f"< {self.max:g}" if self.max_open else f"<= {self.max:g}"
            return (f"in {'(' if self.min_open else '['}{self.min:g}, {self.max:g}"
                    f"{')' if self.max_open else ']'}")
        if self.max is None:
            return f"at least {self.min:g}"
        if self.min is None:
            return f"at most {self.max:g}"
        return f"between {self.min:g} and {self.max:g}"


def setting(default: Any, **about: Any) -> Any:
    """A dataclass field with ``default`` and a :class:`Setting` built from ``about``."""
    return dataclasses.field(default=default, metadata={_KEY: Setting(**about)})


def about(cls: Any, name: str) -> Setting:
    """The :class:`Setting` of field ``name`` of dataclass ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name and _KEY in f.metadata:
            return f.metadata[_KEY]
    raise KeyError(f"{getattr(cls, '__name__', cls)}.{name} is not a described setting")


def described(cls: Any) -> list[str]:
    """Names of the described fields of dataclass ``cls``, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if _KEY in f.metadata]


def default_of(cls: Any, name: str) -> Any:
    """The declared default of field ``name`` of dataclass ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.default
    raise KeyError(f"{getattr(cls, '__name__', cls)} has no field {name}")


def _problem(meta: Setting, value: Any) -> str | None:
    """``"threshold 1.5 must be in (0, 1)"``, or None when ``meta`` accepts ``value``."""
    if meta.accepts(value):
        return None
    shown = repr(value) if isinstance(value, str) else value
    return f"{meta.name} {shown} must be {meta.accepted()}"


def bound_problems(obj: Any) -> list[str]:
    """One phrase per described field of ``obj`` outside its bounds or choices."""
    problems = []
    for f in dataclasses.fields(obj):
        meta = f.metadata.get(_KEY)
        if meta is None or (meta.min is None and meta.max is None and meta.choices is None):
            continue
        problem = _problem(meta, getattr(obj, f.name))
        if problem is not None:
            problems.append(problem)
    return problems


def check_bounds(obj: Any) -> None:
    """Raise :class:`InputError` (one line) for a described field outside its bounds."""
    problems = bound_problems(obj)
    if problems:
        raise InputError(problems[0])


def check_value(cls: Any, name: str, value: Any) -> Any:
    """``value`` when field ``name`` of ``cls`` accepts it, else :class:`InputError` in the
    words of :func:`check_bounds` (for a function that takes the setting on its own, such
    as ``segment(threshold=...)``)."""
    problem = _problem(about(cls, name), value)
    if problem is not None:
        raise InputError(problem)
    return value
