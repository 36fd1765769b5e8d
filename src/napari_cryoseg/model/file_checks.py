"""Checks of untrusted model-file content: field types and ranges, weights vs config.

A model file is input like any other: it may be damaged, edited by hand or crafted.
Every field is checked for its type and range before it is used, and the weights are
checked against the config (names, shapes, dtypes, finite values) before a network is
allocated, so a bad file fails fast, cheaply and with one line naming the field.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

import torch

from napari_cryoseg.core.errors import ModelFileError
from napari_cryoseg.model.config import UNetConfig

__all__ = [
    "check_weights",
    "class_colors_field",
    "class_names_field",
    "input_mode_fields",
    "normalization_fields",
    "number_field",
    "tiling_fields",
]

#: dtypes accepted for weights (converted to the network's float32 when loaded).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: Largest tile / batch a tiling hint may suggest (the CLI flags may ask for more).
MAX_TILE_HINT = 65536
MAX_BATCH_HINT = 4096
#: Largest temporal context k (2k + 1 input channels).
MAX_TEMPORAL_CONTEXT = 31
_COLOR = re.compile(r"^(#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?|[A-Za-z]{1,32})$")
_MAX_NAME = 200
_SHOW = 3  # names listed in messages


def _few(names: list[str]) -> str:
    more = f" (+{len(names) - _SHOW} more)" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


def _type_name(value: Any) -> str:
    return type(value).__name__


def number_field(
    value: Any,
    name: str,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """``value`` as int/float if it is a finite number in range, else :class:`ModelFileError`.

    The message names the field, says what it holds and what is accepted.
    """
    kind = "a whole number" if integer else "a number"
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real) and not (
        isinstance(value, bool))
    if not ok_type:
        raise ModelFileError(f"field {name} is {value!r} ({_type_name(value)}); expected {kind}")
    number = int(value) if integer else float(value)
    if not math.isfinite(number):
        raise ModelFileError(f"field {name} is {value!r}; expected a finite number")
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        left, right = ("(" if low_open else "["), (")" if high_open else "]")
        span = f"{left}{'-inf' if low is None else f'{low:g}'}, " \
               f"{'inf' if high is None else f'{high:g}'}{right}"
        raise ModelFileError(f"field {name} is {number!r}; expected {kind} in {span}")
    return number


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ModelFileError(f"field {name} is a {_type_name(value)}; expected a dict")
    return value


def normalization_fields(value: Any) -> dict[str, float]:
    """Checked ``normalization`` keyword arguments (NaN/inf/negative clip refused)."""
    data = _mapping(value, "normalization")
    out: dict[str, float] = {}
    for key, low, high in (("low", 0.0, 100.0), ("high", 0.0, 100.0), ("clip", 0.0, 1000.0)):
        if key in data:
            out[key] = number_field(data[key], f"normalization.{key}", low=low, high=high)
    return out


def tiling_fields(value: Any) -> dict[str, Any]:
    """Checked ``tiling`` keyword arguments (tile, overlap, batch_size)."""
    data = _mapping(value, "tiling")
    unknown = sorted(str(k) for k in data if k not in ("tile", "overlap", "batch_size"))
    if unknown:
        raise ModelFileError(f"field tiling has unknown keys {_few(unknown)}")
    out: dict[str, Any] = {}
    if "tile" in data:
        out["tile"] = number_field(data["tile"], "tiling.tile", integer=True, low=16,
                                   high=MAX_TILE_HINT)
    if "overlap" in data:
        out["overlap"] = number_field(data["overlap"], "tiling.overlap", low=0.0, high=0.5)
    if "batch_size" in data:
        out["batch_size"] = number_field(data["batch_size"], "tiling.batch_size", integer=True,
                                         low=1, high=MAX_BATCH_HINT)
    return out


def _string_list(value: Any, name: str, n_classes: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ModelFileError(f"field {name} is a {_type_name(value)}; expected a list of text")
    bad = [repr(v) for v in value if not isinstance(v, str)]
    if bad:
        raise ModelFileError(f"field {name} holds {_few(bad)}, which are not text; expected "
                             "a list of text")
    if value and len(value) != n_classes:
        raise ModelFileError(f"field {name} has {len(value)} entries but the network has "
                             f"{n_classes} classes")
    return list(value)


def class_names_field(value: Any, n_classes: int) -> list[str]:
    """Checked ``class_names``: text, one per class, at most 200 characters each."""
    names = _string_list(value, "class_names", n_classes)
    for name in names:
        if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in name):
            raise ModelFileError(f"field class_names holds {name[:40]!r}; class names must "
                                 "not hold line breaks or other control characters")
        if len(name) > _MAX_NAME:
            raise ModelFileError(f"field class_names holds {name[:40]!r}...; class names must "
                                 f"be at most {_MAX_NAME} characters")
    return names


def class_colors_field(value: Any, n_classes: int) -> list[str]:
    """Checked ``class_colors``: ``#rrggbb[aa]`` or a colour name, one per class."""
    colors = _string_list(value, "class_colors", n_classes)
    for color in colors:
        if not _COLOR.match(color):
            raise ModelFileError(f"field class_colors holds {color[:40]!r}; expected "
                                 "#rrggbb colours")
    return colors


def input_mode_fields(value: Any, config: UNetConfig) -> tuple[int, str]:
    """Checked ``(temporal_context, background_subtraction)``."""
    data = _mapping(value, "input_mode")
    context = number_field(data.get("temporal_context", 0), "input_mode.temporal_context",
                           integer=True, low=0, high=MAX_TEMPORAL_CONTEXT)
    if context and config.in_channels != 2 * context + 1:
        raise ModelFileError(
            f"field input_mode.temporal_context is {context} (frames t-{context}..t+{context}, "
            f"{2 * context + 1} channels) but the network has {config.in_channels} input "
            "channels"
        )
    background = data.get("background_subtraction", "none")
    if not isinstance(background, str):
        raise ModelFileError(f"field input_mode.background_subtraction is {background!r}; "
                             "expected text")
    return context, background


def check_weights(
    config: UNetConfig, state_dict: Any, *, source: str = "model", finite: bool = True
) -> None:
    """Refuse weights that do not fit ``config`` or hold NaN/inf values.

    Names, shapes and dtypes are compared with :meth:`UNetConfig.state_shapes`, computed
    from the config alone, so nothing the size of the network is allocated first.

    Parameters
    ----------
    config : UNetConfig
        The architecture the weights must fit.
    state_dict : dict of str to torch.Tensor
        The weights.
    source : str
        Named in messages (e.g. the file path).
    finite : bool
        Also refuse NaN/±inf weights and negative BatchNorm variances: such a network
        outputs NaN, which becomes an all-background result without any error.

    Raises
    ------
    ModelFileError
        One line naming the first offending entry and what to do.
    """
    if not isinstance(state_dict, Mapping):
        raise ModelFileError(f"{source}: the weights are a {_type_name(state_dict)}, not a "
                             "dict of tensors; the file is damaged")
    expected = config.state_shapes()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [str(k) for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {_few(missing)}"] if missing else []) + (
            [f"unexpected {_few(unexpected)}"] if unexpected else [])
        raise ModelFileError(
            f"{source}: the weights do not match the stored config ({'; '.join(parts)}); "
            "the file is damaged or was edited"
        )
    for name, shape in expected.items():
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            raise ModelFileError(f"{source}: weight {name} is a {_type_name(tensor)}, not a "
                                 "tensor; the file is damaged")
        if tensor.layout != torch.strided or tensor.is_meta or tensor.is_quantized:
            raise ModelFileError(f"{source}: weight {name} is not a plain dense tensor "
                                 f"({tensor.layout}); the file is damaged or was edited")
        if name.endswith("num_batches_tracked"):
            dtype_ok = not tensor.is_floating_point() and not tensor.is_complex() and (
                tensor.dtype != torch.bool)
        else:
            dtype_ok = tensor.dtype in FLOAT_DTYPES
        if not dtype_ok:
            raise ModelFileError(f"{source}: weight {name} has dtype {tensor.dtype}, which "
                                 "this network cannot use; the file is damaged or was edited")
        if tuple(tensor.shape) != shape:
            raise ModelFileError(
                f"{source}: weight {name} has shape {tuple(tensor.shape)} but the stored "
                f"config (base_channels={config.base_channels}, depth={config.depth}) needs "
                f"{shape}; the file is damaged or was edited"
            )
    if finite:
        _check_finite(expected, state_dict, source)


def _check_finite(expected: dict[str, tuple[int, ...]], state_dict: Mapping[str, Any],
                  source: str) -> None:
    for name in expected:
        tensor = state_dict[name]
        if not tensor.is_floating_point():
            continue
        if not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(
                f"{source}: weight {name} holds NaN or infinite values (a training run that "
                "diverged?); such a network labels every pixel as background. Use an earlier "
                "or another model file"
            )
        if name.endswith("running_var") and bool((tensor < 0).any()):
            raise ModelFileError(
                f"{source}: weight {name} holds negative variances; the file is damaged or "
                "was edited. Use another model file"
            )
