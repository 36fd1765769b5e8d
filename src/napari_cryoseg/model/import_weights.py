"""Import plain PyTorch state_dicts of the public ``U_Net`` (bigmb/Unet-Segmentation-Pytorch).

That layout names its modules ``Conv1..ConvN`` (encoder ``conv_block``\\ s with a ``conv``
Sequential), ``UpN..Up2`` (``up_conv``: ``nn.Upsample(scale_factor=2)`` + 3x3 conv + BN +
ReLU in an ``up`` Sequential), ``Up_convN..Up_conv2`` (decoder ``conv_block``\\ s) and
``Conv`` (the 1x1 head). The seed thesis used the same names with a transposed-conv
up-sampling instead (``UpN.up.0`` = ``ConvTranspose2d(in, out, 2, stride=2)`` alone).
:class:`~napari_cryoseg.model.unet.UNet` mirrors these module structures, so importing is
a key renaming plus inferring the architecture from tensor shapes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from napari_cryoseg.core.errors import InputError, ModelFileError
from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.model.checkpoint import ModelFile, is_model_payload, now_iso, read_payload
from napari_cryoseg.model.config import UNetConfig
from napari_cryoseg.model.file_checks import check_weights

__all__ = ["import_state_dict", "import_weights_file", "infer_config", "rename_keys"]

_ENCODER = re.compile(r"^Conv(\d+)\.conv\.(.+)$")
_UP = re.compile(r"^Up(\d+)\.up\.(.+)$")
_DECODER = re.compile(r"^Up_conv(\d+)\.conv\.(.+)$")
_HEAD = re.compile(r"^Conv\.(weight|bias)$")
#: Wrappers that prefix every key (DataParallel / DistributedDataParallel, torch.compile).
_PREFIXES = ("module.", "_orig_mod.")
_SHOW = 5  # keys listed in error messages


def _few(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _unwrap(obj: Any, name: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded file: the dict itself or its 'state_dict' entry."""
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"{name} holds a {type(obj).__name__}, not a state_dict")
    if is_model_payload(dict(obj)):
        raise ModelFileError(
            f"{name} is already a napari-cryoseg model file; use it directly with --model"
        )
    for key in ("state_dict", "model_state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError(
            f"{name} contains no tensors; expected a U_Net state_dict "
            "(torch.save(model.state_dict(), path))"
        )
    others = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if others:
        raise ModelFileError(f"{name} has non-tensor entries ({_few(others)}); not a state_dict")
    # Strip wrapper prefixes only when every key has them (a partial prefix is a real name).
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def _levels(state_dict: Mapping[str, torch.Tensor]) -> list[int]:
    return sorted({int(m.group(1)) for k in state_dict if (m := _ENCODER.match(k))})


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> UNetConfig:
    """Architecture of a bigmb-style U_Net state_dict, read from its tensor shapes.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        Keys ``Conv1.conv.0.weight``, ..., ``Conv.weight`` (no wrapper prefix).

    Returns
    -------
    UNetConfig
        ``n_classes`` is 2 (sigmoid) for one output channel, else the channel count;
        ``upsampling`` is ``"transpose"`` or ``"nearest"`` (``nn.Upsample`` default).

    Raises
    ------
    ModelFileError
        The keys do not follow the U_Net layout.
    """
    levels = _levels(state_dict)
    if not levels or levels != list(range(1, len(levels) + 1)) or len(levels) < 2:
        sample = _few(list(state_dict))
        raise ModelFileError(
            "not a U_Net state_dict: expected encoder keys Conv1.conv.0.weight, "
            f"Conv2.conv.0.weight, ... (found e.g. {sample})"
        )
    for needed in ("Conv1.conv.0.weight", "Conv.weight"):
        if needed not in state_dict:
            raise ModelFileError(f"not a U_Net state_dict: key {needed!r} is missing")
    first = state_dict["Conv1.conv.0.weight"]
    head = state_dict["Conv.weight"]
    if first.ndim != 4 or head.ndim != 4:
        raise ModelFileError("not a U_Net state_dict: Conv1.conv.0.weight/Conv.weight not 4D")
    depth = len(levels) - 1
    deepest = depth + 1
    if f"Up{deepest}.up.0.weight" in state_dict:
        weight = state_dict[f"Up{deepest}.up.0.weight"]
        if weight.ndim != 4 or tuple(weight.shape[-2:]) != (2, 2):
            raise ModelFileError(
                f"Up{deepest}.up.0.weight has shape {tuple(weight.shape)}; expected a "
                "ConvTranspose2d(in, out, 2, stride=2) weight (in, out, 2, 2)"
            )
        upsampling = "transpose"
    elif f"Up{deepest}.up.1.weight" in state_dict:
        upsampling = "nearest"  # nn.Upsample(scale_factor=2) defaults to mode='nearest'
    else:
        raise ModelFileError(
            f"not a U_Net state_dict: no up-sampling weights Up{deepest}.up.0/1.weight"
        )
    batch_norm = "Conv1.conv.1.weight" in state_dict and state_dict["Conv1.conv.1.weight"].ndim == 1
    base = int(first.shape[0])
    decoder = state_dict.get(f"Up_conv{deepest}.conv.0.weight")
    skip = decoder is None or int(decoder.shape[1]) == base * 2**depth
    out_ch = int(head.shape[0])
    try:
        return UNetConfig(
            in_channels=int(first.shape[1]),
            n_classes=2 if out_ch == 1 else out_ch,
            depth=depth,
            base_channels=base,
            batch_norm=batch_norm,
            upsampling=upsampling,
            skip_connections=skip,
        )
    except InputError as err:
        raise ModelFileError(f"unsupported U_Net architecture: {err}") from None


def rename_keys(state_dict: Mapping[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """bigmb U_Net names -> :class:`UNet` names (``Up{depth+1}`` is ``ups.0``, the deepest).

    Keys that match no U_Net module are kept unchanged, so the caller reports them.
    """
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if m := _ENCODER.match(key):
            new = f"encoders.{int(m.group(1)) - 1}.conv.{m.group(2)}"
        elif m := _UP.match(key):
            new = f"ups.{depth + 1 - int(m.group(1))}.up.{m.group(2)}"
        elif m := _DECODER.match(key):
            new = f"decoders.{depth + 1 - int(m.group(1))}.conv.{m.group(2)}"
        elif m := _HEAD.match(key):
            new = f"head.{m.group(1)}"
        else:
            new = key
        renamed[new] = value
    return renamed


def _invert(key: str, depth: int) -> str:
    """UNet key -> U_Net key, to name missing keys the way the user's file does."""
    parts = key.split(".", 2)
    if parts[0] == "encoders":
        return f"Conv{int(parts[1]) + 1}.conv.{parts[2].split('.', 1)[1]}"
    if parts[0] == "ups":
        return f"Up{depth + 1 - int(parts[1])}.up.{parts[2].split('.', 1)[1]}"
    if parts[0] == "decoders":
        return f"Up_conv{depth + 1 - int(parts[1])}.conv.{parts[2].split('.', 1)[1]}"
    if parts[0] == "head":
        return f"Conv.{parts[1]}"
    return key


def import_state_dict(
    state_dict: Mapping[str, Any],
    *,
    class_names: Sequence[str] | None = None,
    pixel_size_nm: float | None = None,
    normalization: NormalizationConfig | None = None,
    source_name: str = "state_dict",
) -> ModelFile:
    """Convert a bigmb U_Net state_dict (or a dict holding one) into a :class:`ModelFile`.

    Parameters
    ----------
    state_dict : mapping
        The tensors, or a checkpoint dict with a ``state_dict``/``model_state_dict`` entry.
    class_names : sequence of str, optional
        Names of the classes including background (2 for a one-output network).
    pixel_size_nm : float, optional
        Pixel size of the training images.
    normalization : NormalizationConfig, optional
        Percentile normalization to apply to inputs (default 1-99 %).
    source_name : str
        Shown in messages and stored in the provenance.

    Raises
    ------
    ModelFileError
        Not a U_Net state_dict, or unknown/missing/mis-shaped keys (a few are listed).
    InputError
        Class names or pixel size do not fit.
    """
    tensors = _unwrap(state_dict, source_name)
    config = infer_config(tensors)
    renamed = rename_keys(tensors, config.depth)
    # Shapes from the config alone: nothing is allocated before the weights are checked.
    expected = config.state_shapes()
    unknown = [k for k in renamed if k not in expected]
    if unknown:
        originals = [k for k, new in zip(tensors, renamed) if new in unknown]
        raise ModelFileError(
            f"{source_name} has keys that are not part of the U_Net layout: {_few(originals)}; "
            "only the plain U_Net (Conv1..Conv5, Up5..Up2, Up_conv5..Up_conv2, Conv) is supported"
        )
    # Files saved by old PyTorch versions lack BatchNorm step counters; they are unused
    # in eval mode, so zero counters are harmless.
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in renamed:
            renamed[key] = torch.zeros((), dtype=torch.int64)
    missing = [_invert(k, config.depth) for k in expected if k not in renamed]
    if missing:
        raise ModelFileError(
            f"{source_name} lacks keys of a {config.depth + 1}-level U_Net: {_few(missing)}; "
            "the file is incomplete or from another architecture"
        )
    wrong = [
        f"{_invert(k, config.depth)} {tuple(renamed[k].shape)} != {shape}"
        for k, shape in expected.items()
        if tuple(renamed[k].shape) != shape
    ]
    if wrong:
        raise ModelFileError(
            f"{source_name} has tensors of unexpected shapes: {_few(wrong)}; "
            "the channel widths do not double at each level as in U_Net"
        )
    if class_names is not None:
        class_names = [str(n).strip() for n in class_names]
        if len(class_names) != config.n_classes or not all(class_names):
            raise InputError(
                f"the network has {config.n_classes} classes (including background) but "
                f"{len(class_names)} class names were given; pass --classes with "
                f"{config.n_classes} non-empty names, e.g. background,membrane"
            )
    if pixel_size_nm is not None and not (math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise InputError(f"pixel size {pixel_size_nm} nm must be a positive number")
    layout = "transpose" if config.upsampling == "transpose" else "upsample"
    state = {k: renamed[k].detach().to("cpu", torch.float32 if renamed[k].is_floating_point()
                                        else renamed[k].dtype).clone() for k in expected}
    # NaN/inf weights would give an all-background result without any error: refuse them.
    check_weights(config, state, source=source_name)
    return ModelFile(
        config=config,
        state_dict=state,
        normalization=normalization or NormalizationConfig(),
        class_names=list(class_names or []),
        pixel_size_nm=None if pixel_size_nm is None else float(pixel_size_nm),
        provenance={
            "created": now_iso(),
            "parent": None,
            "steps": 0,
            "metrics": {},
            "imported_from": source_name,
            "source_layout": f"bigmb U_Net ({layout})",
        },
    )


def import_weights_file(path: str | os.PathLike[str], **kwargs: Any) -> ModelFile:
    """Load a state_dict file safely (``weights_only=True``) and import it.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pt``/``.pth`` file saved with ``torch.save(model.state_dict(), path)``, or a
        checkpoint dict with a ``state_dict``/``model_state_dict`` entry.
    **kwargs
        Passed to :func:`import_state_dict` (``class_names``, ``pixel_size_nm``,
        ``normalization``).

    Raises
    ------
    ModelFileError
        Missing, corrupt or code-carrying file, or not a U_Net state_dict.
    """
    path = Path(path)
    # read_payload loads with weights_only=True and turns every failure into one line.
    payload = read_payload(path)
    return import_state_dict(payload, source_name=path.name, **kwargs)
