"""Model exchange: export a model file to ONNX (verified against PyTorch with onnxruntime).

The exported graph takes the *normalised* image ``(B, in_channels, H, W)`` float32
(H, W multiples of the network stride; batch, H and W are dynamic) and returns class
probabilities ``(B, K, H, W)``: K = 1 foreground probability for binary models (sigmoid),
else the softmax over classes. Normalisation (percentiles in the model file) and tiling
stay with the caller; the ONNX metadata records them.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_cryoseg.core.atomic import atomic_write
from napari_cryoseg.core.errors import CryoSegError, InputError
from napari_cryoseg.core.optional import require
from napari_cryoseg.model.checkpoint import ModelFile

#: Opset of the exported graph (ONNX Runtime >= 1.16 runs it).
OPSET = 17


class ProbabilityNet(nn.Module):
    """A U-Net followed by its output activation (sigmoid for binary, else softmax)."""

    def __init__(self, net: nn.Module, binary: bool) -> None:
        super().__init__()
        self.net = net
        self.binary = binary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=1)


def probability_net(model: ModelFile) -> ProbabilityNet:
    """The model's network with its output activation, fp32, CPU, eval mode."""
    net = model.build("cpu").float().eval()
    return ProbabilityNet(net, model.config.out_channels == 1).eval()


@dataclass
class OnnxCheck:
    """Result of :func:`verify_onnx`."""

    max_abs_diff: float
    shape: tuple[int, ...]
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def onnx_metadata(model: ModelFile) -> dict[str, str]:
    """Key/value metadata stored in the ONNX file (strings only)."""
    return {
        "format": "napari-cryoseg-onnx",
        "class_names": json.dumps(list(model.class_names)),
        "class_colors": json.dumps(list(model.class_colors)),
        "normalization": json.dumps(model.normalization.to_dict()),
        "stride": str(model.config.stride),
        "temporal_context": str(model.temporal_context),
        "background_subtraction": str(getattr(model, "background_subtraction", "none")),
        "pixel_size_nm": "" if model.pixel_size_nm is None else str(model.pixel_size_nm),
        "tile": str(model.tiling.tile),
        "input": "normalised float32 (B, C, H, W), H and W multiples of stride",
        "output": "probabilities (B, K, H, W): K=1 sigmoid foreground, else softmax",
    }


def _export_graph(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """torch.onnx.export with dynamic batch/H/W (the TorchScript exporter: no onnxscript
    round trip needed, and dynamic axes are simple names)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs: dict[str, Any] = {
            "input_names": ["input"],
            "output_names": ["probabilities"],
            "dynamic_axes": {"input": {0: "batch", 2: "height", 3: "width"},
                             "probabilities": {0: "batch", 2: "height", 3: "width"}},
            "opset_version": OPSET,
            "do_constant_folding": True,
        }
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=False, **kwargs)
        except TypeError:  # torch without the ``dynamo`` switch
            torch.onnx.export(module, (example,), str(path), **kwargs)


def export_onnx(
    model: ModelFile,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    verify: bool = True,
    tolerance: float = 1e-4,
) -> OnnxCheck | None:
    """Write ``model`` as an ONNX file (atomically) and optionally verify it.

    Returns
    -------
    OnnxCheck or None
        The max abs difference between ONNX Runtime and PyTorch on a random input
        (None when ``verify`` is False).

    Raises
    ------
    CryoSegError
        Export failed, or the exported graph disagrees with PyTorch beyond ``tolerance``.
    """
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")

    path = Path(path)
    module = probability_net(model)
    stride = model.config.stride
    example = torch.rand(1, model.config.in_channels, 2 * stride, 2 * stride)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        try:
            _export_graph(module, example, raw)
        except Exception as err:  # noqa: BLE001 - report any exporter failure plainly
            raise CryoSegError(f"ONNX export failed: {err}") from err
        proto = onnx.load(str(raw))
        for key, value in onnx_metadata(model).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = f"napari-cryoseg model {model.name}"
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data), overwrite=overwrite)
    if not verify:
        return None
    check = verify_onnx(model, path, tolerance=tolerance)
    if not check.ok:
        raise CryoSegError(
            f"the ONNX file {path} differs from PyTorch by {check.max_abs_diff:.3g} "
            f"(tolerance {tolerance:g}); it was written but should not be trusted"
        )
    return check


def verify_onnx(
    model: ModelFile,
    path: str | os.PathLike[str],
    *,
    shape: tuple[int, int, int] | None = None,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> OnnxCheck:
    """Run the ONNX file with onnxruntime and PyTorch on one random input; compare.

    ``shape`` is (batch, H, W); the default uses a batch of 2 and a non-square size
    that differs from the export example (checks the dynamic axes).
    """
    ort = require("onnxruntime", "verifying an ONNX export")
    stride = model.config.stride
    batch, h, w = shape or (2, 3 * stride, 5 * stride)
    if h % stride or w % stride:
        raise InputError(f"H and W must be multiples of the stride {stride}")
    rng = np.random.default_rng(seed)
    x = rng.random((batch, model.config.in_channels, h, w), dtype=np.float32)
    with torch.inference_mode():
        expected = probability_net(model)(torch.from_numpy(x)).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    if got.shape != expected.shape:
        raise CryoSegError(f"ONNX output shape {got.shape} != PyTorch {expected.shape}")
    return OnnxCheck(float(np.abs(got - expected).max()), tuple(got.shape), tolerance)
