"""Segment with any bioimage.io model (foreign architectures) through ``bioimageio.core``.

:func:`load_any_model` is the one loader the CLI (``--model``) and the dock ("Open model
file…") call: a ``.pt`` model file, a napari-cryoseg U-Net package (it becomes a
:class:`ModelFile`, so it can be fine-tuned), or any other bioimage.io model package (a
:class:`BioimageioModel`: it segments, but cannot be fine-tuned).

:class:`BioimageioModel` runs the model with ``bioimageio.core``'s prediction pipeline.
The library applies its declared input axes, size constraints (``min`` + n x ``step``;
it pads blocks), halo, pre-processing and post-processing, with sample-wise statistics
from the real plane. Blocks are predicted one at a time (:class:`Progress` after each,
so a run can be cancelled between blocks); each 2D plane is one sample. Output channels
become labels: one channel is thresholded, several are reduced by argmax (integer
outputs are taken as labels as they are).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError, ModelFileError
from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.core.optional import require
from napari_cryoseg.core.palette import class_colors_for
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.events import Progress

FEATURE = "using bioimage.io models"
_SPATIAL = ("y", "x")


@dataclass(frozen=True)
class ForeignConfig:
    """What the dock and the CLI read from ``model.config`` (no U-Net behind it)."""

    in_channels: int
    n_classes: int
    out_channels: int
    stride: int
    depth: int = 0
    base_channels: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "n_classes": self.n_classes,
                "architecture": "bioimage.io"}


class BioimageioModel:
    """A bioimage.io model of any architecture, used for segmentation only.

    Mirrors the parts of :class:`~napari_cryoseg.model.checkpoint.ModelFile` that
    segmentation reads (name, classes, colours, tiling hint, threshold, ``config``).
    """

    #: Marks a model that runs through its own pipeline (see engine.inference.predict.segment).
    foreign = True

    def __init__(self, path: Path, descr: Any, weight_format: str | None = None,
                 trusted: list[str] | None = None) -> None:
        self.source_path = path
        self.descr = descr
        #: The weight format chosen by the trust policy (see model.package_trust).
        self.weight_format = weight_format
        #: One line per piece of package code the user trusted (empty: none runs).
        self.trusted = list(trusted or [])
        self.input = descr.inputs[0]
        self.output = descr.outputs[0]
        if len(descr.inputs) != 1 or len(descr.outputs) < 1:
            raise ModelFileError(f"bioimage.io model '{descr.name}' has {len(descr.inputs)} "
                                 "inputs; only single-input models can segment an image")
        in_axes = {str(a.type): a for a in self.input.axes}
        bad = [str(a.id) for a in self.input.axes
               if str(a.type) not in ("batch", "channel", "space") or
               (str(a.type) == "space" and str(a.id) not in _SPATIAL)]
        if bad:
            raise ModelFileError(
                f"bioimage.io model '{descr.name}' expects input axes "
                f"{[str(a.id) for a in self.input.axes]}; only 2D (y, x) models are supported")
        channel = in_axes.get("channel")
        self.in_channels = len(channel.channel_names) if channel is not None else 1
        out_channel = next((a for a in self.output.axes if str(a.type) == "channel"), None)
        names = [str(n) for n in out_channel.channel_names] if out_channel is not None else []
        n_out = max(len(names), 1)
        self.class_names = (["background", names[0] if names else "foreground"]
                            if n_out == 1 else names)
        self.class_colors = class_colors_for(len(self.class_names))
        step = 1
        for axis in self.input.axes:
            size = getattr(axis, "size", None)
            if str(axis.type) == "space" and hasattr(size, "step"):
                step = math.lcm(step, int(size.step) or 1)
        self.config = ForeignConfig(self.in_channels, len(self.class_names), n_out, step)
        self.name = str(descr.name)
        self.tiling = TilingConfig()
        self.threshold = 0.5
        self.pixel_size_nm: float | None = None
        self.temporal_context = 0
        self.background_subtraction = "none"
        self.normalization = NormalizationConfig()
        self.provenance: dict[str, Any] = {"kind": "bioimage.io", "parent": str(path)}
        self._pipelines: dict[str, Any] = {}

    @property
    def not_finetunable(self) -> str:
        """The one-line message shown when someone tries to fine-tune this model."""
        return (f"this bioimage.io model ({self.name}) can be used to segment but not "
                "fine-tuned: its architecture is not napari-cryoseg's U-Net, and "
                "bioimage.io packages carry no training code for it")

    @property
    def n_parameters(self) -> int:
        return 0

    def summary(self) -> dict[str, Any]:
        """Plain values for summaries (same keys as a ModelFile's where they apply)."""
        return {"name": self.name, "classes": list(self.class_names),
                "architecture": {"depth": "-", "base_channels": "-",
                                 "type": "bioimage.io model", "weights": self._formats()},
                "parameters": 0, "tile hint": {"tile": self.tiling.tile,
                                               "overlap": self.tiling.overlap},
                "pixel size (nm)": None, "provenance": dict(self.provenance)}

    def _formats(self) -> list[str]:
        return [name for name, entry in self.descr.weights if entry is not None]

    def pipeline(self, device: str) -> Any:
        """bioimageio.core's prediction pipeline on ``device`` (built once per device)."""
        core = require("bioimageio.core", FEATURE)
        devices = None if device in ("auto", "", None) else [str(device)]
        key = str(devices)
        if self.weight_format is None:  # loaded to be described only: nothing may run
            raise ModelFileError(f"bioimage.io model '{self.name}' was opened to be "
                                 "described only; open it again to segment with it")
        if key not in self._pipelines:
            try:
                self._pipelines[key] = core.create_prediction_pipeline(
                    self.descr, devices=devices, weight_format=self.weight_format)
            except Exception as err:  # noqa: BLE001 - report any backend failure in one line
                first = " ".join(str(err).split())[:200]
                raise ModelFileError(f"bioimage.io model '{self.name}' cannot run here "
                                     f"({type(err).__name__}: {first})") from None
        return self._pipelines[key]

    def _ns(self, tile: int, plane: tuple[int, int]) -> dict[tuple[Any, Any], int]:
        """Block size parameter n per spatial axis: blocks of about ``tile`` pixels, never
        larger than the plane (the library pads a plane smaller than ``min``)."""
        ns = {}
        for axis in self.input.axes:
            size = getattr(axis, "size", None)
            if str(axis.type) == "space" and hasattr(size, "step"):
                step, low = max(int(size.step), 1), int(size.min)
                most = (plane[_SPATIAL.index(str(axis.id))] - low) // step
                n = max(0, math.ceil((tile - low) / step))
                ns[(self.input.id, axis.id)] = max(0, min(n, most))
        return ns

    def _input_array(self, plane: np.ndarray) -> np.ndarray:
        """``plane`` (Y, X) laid out in the model's declared input axis order."""
        shape, index = [], []
        for axis in self.input.axes:
            kind = str(axis.type)
            if kind == "space":
                shape.append(plane.shape[_SPATIAL.index(str(axis.id))])
            else:
                shape.append(1)
            index.append(str(axis.id) if kind == "space" else None)
        # singleton batch/channel axes keep the order of y and x, so a reshape places them
        data = plane if index.index("y") < index.index("x") else plane.T
        return data.reshape(shape)

    def segment(
        self, image: Any, tiling: TilingConfig | None = None, *, device: str = "auto",
        threshold: float | None = None, return_probabilities: bool = False,
        labels_out: Any = None,
    ) -> Generator[Progress, None, Any]:
        """Segment a 2D image or a stack plane by plane (see the module docstring)."""
        from napari_cryoseg.engine.inference.predict import Prediction, labels_dtype

        core = require("bioimageio.core", FEATURE)
        started = time.perf_counter()
        if self.in_channels != 1:
            raise InputError(f"bioimage.io model '{self.name}' expects {self.in_channels} "
                             "input channels; napari-cryoseg gives it one grayscale image")
        if image.ndim not in (2, 3):
            raise InputError(f"image has shape {tuple(image.shape)}; expected YX or ZYX")
        threshold = self.threshold if threshold is None else float(threshold)
        shape = tuple(int(s) for s in image.shape)
        if labels_out is None:
            labels_out = np.zeros(shape, labels_dtype(self.config.n_classes))
        planes = shape[0] if len(shape) == 3 else 1
        probabilities = None
        pipeline = self.pipeline(device)
        tile = (tiling or self.tiling).tile
        done = 0
        yield Progress("segment", 0, None, "starting", 0.0)
        for index in range(planes):
            plane = np.asarray(image[index] if len(shape) == 3 else image)
            height, width = plane.shape
            # The sample is the plane as it is: sample-wise statistics (percentiles, mean)
            # come from the real pixels; the library pads blocks to the declared sizes.
            sample = core.Sample(
                members={self.input.id: core.Tensor.from_numpy(
                    self._input_array(plane), dims=[str(a.id) for a in self.input.axes])},
                stat={}, id=f"plane{index}")
            try:
                steps, intermediates = pipeline.predict_sample_with_blocking_yield_intermediates(
                    sample, ns=self._ns(tile, (height, width)))
                result = None
                for result in intermediates:  # noqa: B007 - the last is the whole sample
                    done += 1
                    total = steps * planes
                    yield Progress("segment", done, total, f"{done}/{total} blocks",
                                   time.perf_counter() - started)
            except (ValueError, RuntimeError, KeyError) as err:
                first = " ".join(str(err).split())[:200]
                raise InputError(f"bioimage.io model '{self.name}' failed on this image "
                                 f"({first})") from None
            probs = self._output_array(result.sample, plane.shape)
            labels = self._labels(probs, threshold)
            if len(shape) == 3:
                labels_out[index] = labels
            else:
                labels_out[...] = labels
            if return_probabilities:
                if probabilities is None:
                    probabilities = np.zeros((*shape[:-2], *probs.shape), np.float32)
                (probabilities[index] if len(shape) == 3 else probabilities)[...] = probs
        return Prediction(
            labels=labels_out, probabilities=probabilities, class_names=list(self.class_names),
            class_colors=list(self.class_colors), value_range=(0.0, 1.0),
            elapsed_s=time.perf_counter() - started,
            info={"model": "bioimage.io", "weights": self._formats(), "blocks": done,
                  "device": device},
        )

    def _output_array(self, sample: Any, plane_shape: tuple[int, ...]) -> np.ndarray:
        """(K, Y, X) float32 of the first output (batch dropped)."""
        tensor = sample.members[self.output.id]
        dims = [str(d) for d in tensor.dims]
        data = np.asarray(tensor.data)
        for dim in list(dims):
            if dim not in ("channel", "y", "x"):
                data = data.take(0, axis=dims.index(dim))
                dims.remove(dim)
        if "channel" not in dims:
            data, dims = data[None], ["channel", *dims]
        data = np.transpose(data, [dims.index(d) for d in ("channel", "y", "x")])
        if data.shape[-2:] != tuple(plane_shape):
            raise InputError(f"bioimage.io model '{self.name}' returned {data.shape[-2:]} "
                             f"pixels for a {tuple(plane_shape)} image; only models whose "
                             "output matches the input size can label it")
        return data

    def _labels(self, probs: np.ndarray, threshold: float) -> np.ndarray:
        if np.issubdtype(probs.dtype, np.integer):  # already labels (post-processing)
            return probs[0].astype(labels_dtype_for(int(probs.max(initial=0))))
        if probs.shape[0] == 1:
            return (probs[0] > threshold).astype(np.uint8)
        return np.argmax(probs, axis=0).astype(labels_dtype_for(probs.shape[0]))


def labels_dtype_for(n: int) -> np.dtype:
    return np.dtype(np.uint8 if n <= 255 else np.uint16)


def load_bioimageio_model(
    path: str | os.PathLike[str], trust_code: Sequence[str] = (), *, check_trust: bool = True,
) -> BioimageioModel:
    """Load any bioimage.io model package for segmentation (checked first, no download).

    Weights that need code from the package (see :mod:`napari_cryoseg.model.package_trust`)
    are used only when ``trust_code`` names the package or the code's sha256; otherwise a
    data-only format (TorchScript, ONNX) of the package is used, or it is refused.
    """
    from napari_cryoseg.model.bioimageio_package import MAX_WEIGHTS_BYTES, check_package
    from napari_cryoseg.model.package_trust import choose_format

    package, data = check_package(path)  # refuses unsafe references before the library
    weight_format, trusted = None, []
    if check_trust:  # ``cryoseg info`` only describes the package: nothing runs
        weight_format, trusted = choose_format(package, data, trust_code)
    weights = data.get("weights") if isinstance(data.get("weights"), dict) else {}
    entry = weights.get(weight_format) or {}
    if isinstance(entry.get("source"), str) and package.size(entry["source"]) > \
            MAX_WEIGHTS_BYTES:
        raise ModelFileError(f"bioimage.io package '{path}': its {weight_format} weights "
                             f"are larger than {MAX_WEIGHTS_BYTES >> 30} GiB; refused")
    core = require("bioimageio.core", FEATURE)
    spec = require("bioimageio.spec", FEATURE)
    try:
        descr = core.load_model_description(str(package.path), perform_io_checks=False,
                                             format_version="latest")
    except Exception as err:  # noqa: BLE001 - the library raises many kinds
        first = " ".join(str(err).split())[:240]
        raise ModelFileError(f"bioimage.io package '{path}' is not a valid model "
                             f"description ({first})") from None
    if isinstance(descr, spec.InvalidDescr) or not hasattr(descr, "inputs"):
        summary = getattr(descr, "validation_summary", None)
        errors = getattr(summary, "errors", None) or []
        first = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors[:2])
        raise ModelFileError(f"bioimage.io package '{path}' is not a valid model description"
                             f" ({first or 'invalid'})")
    return BioimageioModel(package.path, descr, weight_format, trusted)


def load_any_model(path: str | os.PathLike[str], trust_code: Sequence[str] = (), *,
                   check_trust: bool = True) -> Any:
    """A model for segmentation from a ``.pt`` file or a bioimage.io package.

    Returns a :class:`ModelFile` (model files and napari-cryoseg U-Net packages: these can
    be fine-tuned) or a :class:`BioimageioModel` (any other bioimage.io model).
    """
    from napari_cryoseg.model.bioimageio_package import (
        DESCRIPTION_NAMES,
        check_package,
        import_bioimageio,
        is_cryoseg_unet,
        is_package_path,
    )
    from napari_cryoseg.model.checkpoint import load_model

    p = Path(path).expanduser()
    if p.name in DESCRIPTION_NAMES and p.is_file():  # the dialog picked the package's yaml
        p = p.parent
    if not is_package_path(p):
        return load_model(p)
    _package, data = check_package(p)
    if is_cryoseg_unet(data):
        return import_bioimageio(p)
    return load_bioimageio_model(p, trust_code, check_trust=check_trust)
