"""Command-line flags generated from self-describing settings (:mod:`~napari_cryoseg.core.setting`).

A described field of a recipe (``FinetuneConfig.lr``, ``TrainConfig.preset``, ...) brings
its flag, help, default and bounds: :func:`add_setting_flag` turns them into an argparse
argument whose value is checked when it is parsed (one line, exit code 2, as every other
flag), and :func:`setting_values` reads the parsed values back by field name. The CLI
never repeats a bound or a default of its own.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from napari_cryoseg.cli._args import float_range, int_range
from napari_cryoseg.core.setting import Setting, about, default_of

__all__ = ["add_setting_flag", "add_setting_flags", "setting_type", "setting_values"]

_METAVARS = {int: "N", float: "F", str: "TEXT"}
_UNSET: Any = object()


def value_kind(cls: Any, name: str) -> type:
    """``int``, ``float``, ``bool`` or ``str``: the type of field ``name`` without None."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def setting_type(cls: Any, name: str) -> Callable[[str], Any]:
    """The argparse ``type`` of a numeric described field: its bounds, its error words."""
    meta = about(cls, name)
    if value_kind(cls, name) is int:
        # whole numbers: an open bound is the next whole number inside it
        low = None if meta.min is None else int(meta.min) + meta.min_open
        high = None if meta.max is None else int(meta.max) - meta.max_open
        return int_range(low, high, what=meta.what)
    return float_range(meta.min, meta.max, low_open=meta.min_open, high_open=meta.max_open,
                       what=meta.what)


def _with_words(parse: Callable[[str], Any], words: dict[str, Any]) -> Callable[[str], Any]:
    """``parse``, except that the given words (``"auto"``) stand for their values."""
    def parse_word(text: str) -> Any:
        key = text.strip().lower()
        return words[key] if key in words else parse(text)

    parse_word.__name__ = parse.__name__
    return parse_word


def _help(meta: Setting, default: Any) -> str:
    text = meta.help
    if default is not None and not isinstance(default, bool):
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        # "... (0 = off; default 0.5)" rather than two brackets in a row
        text = (text[:-1] + f"; default {shown})" if text.endswith(")")
                else text + f" (default {shown})")
    return text.replace("%", "%%")  # argparse formats help texts with %


def add_setting_flag(parser: Any, cls: Any, name: str, *, metavar: str | None = None,
                     default: Any = _UNSET, words: dict[str, Any] | None = None
                     ) -> argparse.Action:
    """Add the flag of described field ``cls.name`` to ``parser`` (or an argument group).

    The value lands in ``args.<name>``; ``default`` replaces the field's declared default
    (rarely: the command line's default is the recipe's), ``words`` are accepted besides
    numbers (``{"auto": None}``).
    """
    meta = about(cls, name)
    if meta.flag is None:
        raise KeyError(f"{cls.__name__}.{name} has no command-line flag")
    default = default_of(cls, name) if default is _UNSET else default
    kind = value_kind(cls, name)
    common = {"dest": name, "default": default, "help": _help(meta, default)}
    if kind is bool:
        return parser.add_argument(meta.flag, action="store_true", **common)
    if meta.choices is not None:  # argparse shows them ({1,2,4,8}) and refuses the rest
        parse_choice: Any = {} if kind is str else {"type": kind}
        return parser.add_argument(meta.flag, choices=list(meta.choices), **parse_choice,
                                   **common)
    parse: Callable[[str], Any] = str if kind is str else setting_type(cls, name)
    if words:
        parse = _with_words(parse, words)
    return parser.add_argument(meta.flag, type=parse, metavar=metavar or _METAVARS[kind],
                               **common)


def add_setting_flags(parser: Any, cls: Any, names: Iterable[str],
                      metavars: dict[str, str] | None = None) -> None:
    """:func:`add_setting_flag` for each of ``names`` (``metavars`` by field name)."""
    for name in names:
        add_setting_flag(parser, cls, name, metavar=(metavars or {}).get(name))


def setting_values(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """``{field name: parsed value}`` of flags added by :func:`add_setting_flag`."""
    return {name: getattr(args, name) for name in names}
