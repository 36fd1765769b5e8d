"""YAML from strangers, read in time linear in its size.

A description is checked before it is parsed: nesting deeper than :data:`MAX_DEPTH`
(brackets, or indentation levels of block mappings and lists) is refused with one line,
so neither a slow parser nor Python's recursion limit is ever reached. Parsing uses the
C (libyaml) safe loader when PyYAML has it; aliases are refused (the "billion laughs"
bomb needs them, and bioimage.io descriptions never do).
"""

from __future__ import annotations

from typing import Any

#: Deepest nesting accepted; real bioimage.io descriptions stay below 15.
MAX_DEPTH = 64


class YamlRefused(ValueError):
    """The text is not accepted; the message is one line for the user."""


def nesting_depth(text: str) -> int:
    """An upper bound of the nesting depth of a YAML document, in one pass.

    Counts open flow brackets (``[`` / ``{``) plus the number of distinct indentation
    levels (a ``- `` list marker counts as one more level). Quoted text is not parsed,
    so brackets in strings count too: the bound is generous, never too low.
    """
    deepest = 0
    brackets = 0
    indents: list[int] = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if stripped and not stripped.startswith("#") and brackets == 0:
            indent = len(line) - len(stripped)
            while indents and indents[-1] > indent:
                indents.pop()
            if not indents or indents[-1] < indent:
                indents.append(indent)
            markers = 0
            rest = stripped
            while rest.startswith(("- ", "? ")) or rest in ("-", "?"):
                markers += 1
                rest = rest[2:].lstrip(" ")
            deepest = max(deepest, len(indents) + markers)
        for char in line:
            if char in "[{":
                brackets += 1
                deepest = max(deepest, len(indents) + brackets)
            elif char in "]}" and brackets:
                brackets -= 1
        if deepest > MAX_DEPTH:
            return deepest
    return deepest


def safe_load(text: str, what: str) -> Any:
    """Parse ``text`` (see the module docstring); :class:`YamlRefused` when refused."""
    import yaml

    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise YamlRefused(f"{what} is nested more than {MAX_DEPTH} levels deep; refused "
                          "(bioimage.io descriptions are shallow)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=loader)):
            raise YamlRefused(f"{what} uses YAML aliases, which bioimage.io descriptions "
                              "do not need; refused")
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except RecursionError:
        raise YamlRefused(f"{what} is nested too deeply to read; refused") from None
    except yaml.YAMLError as err:
        first = " ".join(str(err).split())[:160]
        raise YamlRefused(f"{what} is not valid YAML ({first})") from None
