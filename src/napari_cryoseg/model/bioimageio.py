"""bioimage.io model packages of napari-cryoseg U-Nets, built with ``bioimageio.spec``.

The description is assembled from ``bioimageio.spec``'s own model classes (spec 0.5),
validated by them, and packed by ``save_bioimageio_package[_as_folder]``. Files::

    bioimageio.yaml       the model description (inputs/outputs, pre-processing, weights)
    weights.pt            pytorch_state_dict (tensors only; torch.load(weights_only=True))
    unet.py               standalone architecture (our U-Net source + a CryoSegUNet wrapper
                          whose forward ends with sigmoid/softmax)
    weights_torchscript.pt  TorchScript, traced in eval mode (deepImageJ / Fiji run it)
    weights.onnx          ONNX (opset 17), from :mod:`napari_cryoseg.model.export`
    test_input.npy        a raw sample (1, C, Y, X) float32
    test_output.npy       the model's probabilities for it (1, K, Y, X) float32
    cover.png             the sample beside its segmentation
    README.md             what the model does and how it was trained

:func:`validate_package` runs ``bioimageio.core.test_model`` (every weight format must
reproduce the test output). Reading packages back lives in
:mod:`napari_cryoseg.model.bioimageio_package`.
"""

# Over 450 lines: export and import of one format, with the package checks they share.

from __future__ import annotations

import inspect
import io
import json
import keyword
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryoseg import __version__
from napari_cryoseg.core.atomic import atomic_write, refuse_special_file
from napari_cryoseg.core.errors import CryoSegError, InputError, OutputExistsError
from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.core.optional import require
from napari_cryoseg.model import unet as unet_module
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.export import OPSET

ARCHITECTURE_CALLABLE = "CryoSegUNet"
CONFIG_KEY = "napari-cryoseg"

_STANDALONE_HEADER = '''"""Standalone U-Net of napari-cryoseg (bioimage.io architecture file).

Generated from napari_cryoseg.model.unet; needs only torch. ``CryoSegUNet(**kwargs)``
takes the UNetConfig fields as keyword arguments and returns probabilities
(sigmoid for binary models, else softmax over classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    n_classes: int = 2
    depth: int = 4
    base_channels: int = 16
    batch_norm: bool = True
    upsampling: str = "transpose"
    dropout: float = 0.0
    skip_connections: bool = True

    @property
    def out_channels(self) -> int:
        return 1 if self.n_classes == 2 else self.n_classes

    @property
    def stride(self) -> int:
        return 2**self.depth

'''

_STANDALONE_FOOTER = '''

class CryoSegUNet(UNet):
    """U-Net whose output is class probabilities (B, K, H, W)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(UNetConfig(**kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if self.config.out_channels == 1:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)
'''


def standalone_unet_source() -> str:
    """Source of ``unet.py``: our U-Net classes without package imports, plus the wrapper."""
    source = inspect.getsource(unet_module)
    body = source.split("from napari_cryoseg.model.config import UNetConfig", 1)[1]
    return _STANDALONE_HEADER + body.lstrip("\n") + _STANDALONE_FOOTER


def _normalise(image: np.ndarray, norm: NormalizationConfig) -> np.ndarray:
    """The package's pre-processing (scale_range over the whole sample, then clip)."""
    low, high = np.percentile(image, [norm.low, norm.high])
    scaled = (image - low) / (high - low + 1e-6)
    return np.clip(scaled, -norm.clip, 1 + norm.clip).astype(np.float32)


def _sample_input(model: ModelFile, size: int) -> np.ndarray:
    from napari_cryoseg.core.synthetic import SampleConfig, make_sample

    image, _ = make_sample(0, SampleConfig(shape=(size, size)))
    image = image.astype(np.float32)
    channels = model.config.in_channels
    return np.repeat(image[None, None], channels, axis=1)  # (1, C, Y, X)


def _cover_png(raw: np.ndarray, probabilities: np.ndarray, colors: list[str]) -> bytes:
    from PIL import Image

    plane = raw[0, raw.shape[1] // 2]
    lo, hi = np.percentile(plane, [1, 99])
    gray = (np.clip((plane - lo) / (hi - lo + 1e-6), 0, 1) * 255).astype(np.uint8)
    left = np.repeat(gray[..., None], 3, axis=2)
    if probabilities.shape[1] == 1:
        labels = (probabilities[0, 0] > 0.5).astype(int)
    else:
        labels = probabilities[0].argmax(axis=0)
    right = left.copy()
    for value in range(1, max(int(labels.max()) + 1, 2)):
        hexcolor = colors[value % len(colors)].lstrip("#")
        rgb = np.array([int(hexcolor[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)
        mask = labels == value
        right[mask] = (0.45 * right[mask] + 0.55 * rgb).astype(np.uint8)
    gap = np.full((gray.shape[0], 8, 3), 255, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate([left, gap, right], axis=1)).save(buffer, format="PNG")
    return buffer.getvalue()


def _documentation(model: ModelFile) -> str:
    prov = model.provenance or {}
    norm = model.normalization
    lines = [
        f"# {model.name}",
        "",
        "A 2D U-Net (Ronneberger et al. 2015) for electron-microscopy segmentation, exported "
        f"by napari-cryoseg {__version__}.",
        "",
        "## Classes",
        "",
        *[f"- {i}: {name}" for i, name in enumerate(model.class_names)],
        "",
        "## Input",
        "",
        f"- {model.config.in_channels} channel(s), Y and X multiples of "
        f"{model.config.stride} pixels (tiles of {model.tiling.tile} px recommended).",
        f"- Pre-processing: percentiles {norm.low:g}-{norm.high:g} of the sample mapped to "
        f"0-1, then clipped to [{-norm.clip:g}, {1 + norm.clip:g}].",
    ]
    if model.temporal_context:
        k = model.temporal_context
        lines.append(f"- Temporal context: the channels are frames t-{k}..t+{k} of a time "
                     "series (edge frames repeated).")
    if model.background_subtraction != "none":
        lines.append("- Background subtraction: the per-pixel temporal median of the series "
                     "must be subtracted BEFORE the pre-processing (not expressible in the "
                     "bioimage.io pre-processing; napari-cryoseg does it automatically).")
    if model.pixel_size_nm:
        lines.append(f"- Trained at {model.pixel_size_nm:g} nm per pixel.")
    lines += [
        "",
        "## Output",
        "",
        "Probabilities (B, K, Y, X): K = 1 foreground probability (sigmoid) for binary "
        "models, else one softmax channel per class. Threshold at 0.5 or take the argmax.",
        "",
        "## Training",
        "",
        f"- Steps: {prov.get('steps', 'unknown')}; created {prov.get('created', 'unknown')}.",
        f"- Training data: {json.dumps(prov.get('training_data', {}))[:500]}",
        "",
        "## Weights",
        "",
        "A plain PyTorch state_dict (architecture `unet.py:CryoSegUNet`), TorchScript "
        "(traced in eval mode; deepImageJ / Fiji) and ONNX (opset 17).",
        "Re-import with `cryoseg import-bioimageio <package> --out model.pt`.",
        "",
        "## Validation",
        "",
        "`bioimageio test <package>` runs every weight format on `test_input.npy` and "
        "compares with `test_output.npy`. Segmentation quality of napari-cryoseg models is "
        "measured on held-out EM images (Dice per class) when they are trained.",
        "",
    ]
    return "\n".join(lines)


FEATURE = "bioimage.io export"

#: The package's own file names (an existing package folder is updated file by file).
PACKAGE_FILES = {
    "weights": "weights.pt",
    "architecture": "unet.py",
    "torchscript": "weights_torchscript.pt",
    "onnx": "weights.onnx",
    "test_input": "test_input.npy",
    "test_output": "test_output.npy",
    "cover": "cover.png",
    "documentation": "README.md",
}
RDF_NAME = "bioimageio.yaml"
#: Either name may hold the description of an earlier export (bioimageio.spec writes
#: ``rdf.yaml``); a folder keeps exactly one.
DESCRIPTION_FILES = ("rdf.yaml", "bioimageio.yaml")


def _spec() -> Any:
    return require("bioimageio.spec.model.v0_5", FEATURE)


def build_description(model: ModelFile, folder: Path, torch_version: str) -> Any:
    """A ``bioimageio.spec`` ``ModelDescr`` (spec 0.5) for the files in ``folder``."""
    v05 = _spec()
    require("bioimageio.spec", FEATURE)
    cfg, stride = model.config, model.config.stride
    norm = model.normalization
    k = model.temporal_context
    files = {key: folder / name for key, name in PACKAGE_FILES.items()}
    channel_names = [f"t{d:+d}" if d else "t" for d in range(-k, k + 1)] if k else ["raw"]
    out_names = ["foreground"] if cfg.out_channels == 1 else list(model.class_names)
    halo = stride  # context a consumer's tiler should discard at tile borders
    size = v05.ParameterizedSize(min=4 * stride, step=stride)
    raw_id = v05.TensorId("raw")
    inputs = [v05.InputTensorDescr(
        id=raw_id,
        description="grayscale EM image" + (" frames" if k else ""),
        axes=[
            v05.BatchAxis(),
            v05.ChannelAxis(channel_names=[v05.Identifier(n.replace("+", "p").replace(
                "-", "m")) for n in channel_names]),
            v05.SpaceInputAxis(id=v05.AxisId("y"), size=size),
            v05.SpaceInputAxis(id=v05.AxisId("x"), size=size),
        ],
        test_tensor=v05.FileDescr(source=files["test_input"]),
        data=v05.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[
            v05.ScaleRangeDescr(kwargs=v05.ScaleRangeKwargs(
                axes=[v05.AxisId("channel"), v05.AxisId("y"), v05.AxisId("x")],
                min_percentile=norm.low, max_percentile=norm.high)),
            v05.ClipDescr(kwargs=v05.ClipKwargs(min=-norm.clip, max=1 + norm.clip)),
        ],
    )]
    outputs = [v05.OutputTensorDescr(
        id=v05.TensorId("probabilities"),
        description="class probabilities (sigmoid foreground for binary models, else "
                    "softmax over classes)",
        axes=[
            v05.BatchAxis(),
            v05.ChannelAxis(channel_names=[v05.Identifier(n) for n in _identifiers(out_names)]),
            v05.SpaceOutputAxisWithHalo(id=v05.AxisId("y"), halo=halo, size=v05.SizeReference(
                tensor_id=raw_id, axis_id=v05.AxisId("y"))),
            v05.SpaceOutputAxisWithHalo(id=v05.AxisId("x"), halo=halo, size=v05.SizeReference(
                tensor_id=raw_id, axis_id=v05.AxisId("x"))),
        ],
        test_tensor=v05.FileDescr(source=files["test_output"]),
        data=v05.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )]
    version = v05.Version(torch_version)
    weights = v05.WeightsDescr(
        pytorch_state_dict=v05.PytorchStateDictWeightsDescr(
            source=files["weights"], pytorch_version=version,
            architecture=v05.ArchitectureFromFileDescr(
                source=files["architecture"], callable=v05.Identifier(ARCHITECTURE_CALLABLE),
                kwargs=cfg.to_dict())),
        torchscript=v05.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=version, parent="pytorch_state_dict",
            comment="traced in eval mode by napari-cryoseg"),
        onnx=v05.OnnxWeightsDescr(
            source=files["onnx"], opset_version=OPSET, parent="pytorch_state_dict",
            comment="exported by napari-cryoseg (torch.onnx, dynamic batch/height/width)"),
    )
    return v05.ModelDescr(
        name=f"napari-cryoseg {model.name.replace('_', ' ')}"[:120],
        description="U-Net segmentation of electron-microscopy images "
                    f"({', '.join(model.class_names[1:])}), exported by napari-cryoseg.",
        authors=[v05.Author(name="napari-cryoseg developers")],
        cite=[v05.CiteEntry(
            text="Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for "
                 "Biomedical Image Segmentation. MICCAI 2015.",
            doi=v05.Doi("10.1007/978-3-319-24574-4_28"))],
        license=v05.LicenseId("BSD-3-Clause"),
        documentation=v05.FileDescr(source=files["documentation"]),
        covers=[v05.FileDescr(source=files["cover"])],
        tags=["unet", "2d", "electron-microscopy", "semantic-segmentation", "pytorch",
              "napari-cryoseg"],
        inputs=inputs,
        outputs=outputs,
        weights=weights,
        config=v05.Config(**{CONFIG_KEY: {
            "version": __version__,
            "class_names": list(model.class_names),
            "class_colors": list(model.class_colors),
            "normalization": norm.to_dict(),
            "tiling": {"tile": model.tiling.tile, "overlap": model.tiling.overlap,
                       "batch_size": model.tiling.batch_size},
            "pixel_size_nm": model.pixel_size_nm,
            "temporal_context": int(k),
            "background_subtraction": model.background_subtraction,
            "threshold": float(model.threshold),
        }}),
    )


def _identifier(name: str) -> str:
    """A spec identifier (letters, digits, underscore; no leading digit) for a class name."""
    text = "".join(c if c.isascii() and c.isalnum() else "_" for c in str(name)).strip("_")
    text = text or "class"
    text = text if not text[0].isdigit() else f"c{text}"
    # Python keywords (class, None, import...) are not spec identifiers: append "_".
    return f"{text}_" if keyword.iskeyword(text) or keyword.issoftkeyword(text) else text


def _identifiers(names: list[str]) -> list[str]:
    """Unique spec identifiers for the output channels ("a b" and "a_b" both map to
    "a_b": the second becomes "a_b_2")."""
    out: list[str] = []
    for name in names:
        base = candidate = _identifier(name)
        n = 1
        while candidate in out:
            n += 1
            candidate = f"{base}_{n}"
        out.append(candidate)
    return out


def _write_files(model: ModelFile, folder: Path, sample_size: int) -> None:
    """Weights in three formats, architecture, test tensors, cover and README."""
    from napari_cryoseg.model.export import _export_graph, probability_net

    files = {key: folder / name for key, name in PACKAGE_FILES.items()}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict.items()}
    torch.save(state, files["weights"])
    files["architecture"].write_text(standalone_unet_source(), encoding="utf-8")
    stride = model.config.stride
    size = max(4 * stride, -(-sample_size // stride) * stride)
    raw = _sample_input(model, size)
    normalised = _normalise(raw, model.normalization)
    net = probability_net(model)  # eval mode, fp32, CPU
    with torch.inference_mode():
        probs = net(torch.from_numpy(normalised)).numpy().astype(np.float32)
    example = torch.from_numpy(normalised)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the shape check
        traced = torch.jit.trace(net, example, check_trace=False)
    traced.save(str(files["torchscript"]))
    require("onnx", "the ONNX weights of a bioimage.io package")
    _export_graph(net, example, files["onnx"])
    np.save(files["test_input"], raw)
    np.save(files["test_output"], probs)
    files["cover"].write_bytes(_cover_png(raw, probs, list(model.class_colors)))
    files["documentation"].write_text(_documentation(model), encoding="utf-8")


def _own_files(folder: Path) -> set[str]:
    """Names of the files the package already in ``folder`` consists of (may be empty)."""
    from napari_cryoseg.model.bioimageio_package import package_file_names

    try:
        return package_file_names(folder)
    except CryoSegError:
        return set()


def is_our_package(path: Path) -> bool:
    """True for a package (folder or zip) whose description napari-cryoseg wrote (it
    carries our ``config.napari-cryoseg`` section)."""
    from napari_cryoseg.model.bioimageio_package import read_rdf

    try:
        config = read_rdf(path).get("config")
    except CryoSegError:
        return False
    return isinstance(config, dict) and isinstance(config.get(CONFIG_KEY), dict)


def _check_replaceable(out: Path, names: list[str]) -> None:
    """Refuse to replace any file in ``out`` that is not part of the package there, and
    any folder whose model description napari-cryoseg did not write."""
    from napari_cryoseg.model.bioimageio_package import is_description_name

    descriptions = [p.name for p in out.iterdir() if is_description_name(p.name)]
    if descriptions and not is_our_package(out):
        raise OutputExistsError(
            f"'{out / descriptions[0]}' is a model description napari-cryoseg did not "
            "write; nothing was replaced: choose a new or empty folder (or a .zip file)")
    own = _own_files(out)
    foreign = [n for n in names if (out / n).exists() and n not in own]
    if foreign:
        raise OutputExistsError(
            f"'{out / foreign[0]}' exists and is not part of a bioimage.io package there; "
            "nothing was replaced: choose a new or empty folder (or a .zip file)")


def export_bioimageio(
    model: ModelFile,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    sample_size: int = 256,
) -> Path:
    """Write a bioimage.io package: a folder, or a zip when ``out`` ends with ``.zip``.

    ``overwrite`` replaces an existing zip, or the package's own files in an existing
    folder (other files there are left alone; a file of the same name that the package
    there does not list is never replaced).

    Raises
    ------
    OutputExistsError
        ``out`` exists (a non-empty folder or a file) and ``overwrite`` is False, or a
        file would replace one that is not the package's.
    MissingExtraError
        ``bioimageio.spec`` (or onnx) is not installed.
    """
    spec = require("bioimageio.spec", FEATURE)
    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"folder {out.parent} does not exist; create it first")
    is_zip = out.suffix.lower() == ".zip"
    if out.exists() and not is_zip and not out.is_dir():
        raise OutputExistsError(f"{out} is a file, not a folder; choose a folder or a .zip")
    if out.exists() and not overwrite and (is_zip or any(out.iterdir())):
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it")
    refuse_special_file(out, "--bioimageio")
    names = [*PACKAGE_FILES.values(), *DESCRIPTION_FILES]
    if out.is_dir() and overwrite:
        _check_replaceable(out, names)
    if is_zip and out.exists() and overwrite and not is_our_package(out):
        raise OutputExistsError(f"{out} exists and is not a package napari-cryoseg wrote; "
                                "--overwrite only replaces those. Choose another name")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".bioimageio-") as tmp:
        files = Path(tmp).resolve() / "files"
        files.mkdir()
        _write_files(model, files, sample_size)
        descr = build_description(model, files, torch.__version__.split("+")[0])
        if is_zip:
            packed = spec.save_bioimageio_package(descr, output_path=Path(tmp) / "package.zip")
            data = Path(packed).read_bytes()
            return atomic_write(out, lambda f: f.write(data), overwrite=overwrite)
        folder = Path(tmp) / "package"
        spec.save_bioimageio_package_as_folder(descr, output_path=folder)
        out.mkdir(exist_ok=True)
        written = sorted(folder.iterdir())
        for path in written:  # only the package's own files are replaced
            os.replace(path, out / path.name)
        for name in DESCRIPTION_FILES:  # our older description under the other name
            if name not in {p.name for p in written} and (out / name).is_file():
                (out / name).unlink()
    return out


def validate_package(package: str | os.PathLike[str]) -> tuple[bool, str]:
    """``bioimageio.core.test_model`` on a package: ``(passed, one-line summary)``.

    Runs every weight format (pytorch_state_dict, torchscript, onnx) on the test input and
    compares with the test output. This imports the package's ``unet.py``: use it on
    packages you wrote or trust.
    """
    core = require("bioimageio.core", "testing a bioimage.io package")
    summary = core.test_model(str(package))
    failed = [d for d in summary.details if d.status == "failed"]
    from napari_cryoseg.model.bioimageio_package import read_rdf

    weights = read_rdf(package).get("weights")
    formats = sorted(weights) if isinstance(weights, dict) else []
    if summary.status == "passed":
        return True, (f"bioimageio.core test_model: passed ({len(summary.details)} checks"
                      + (f"; weights {', '.join(formats)}" if formats else "") + ")")
    first = failed[0] if failed else None
    reason = f"{first.name}: {' '.join(str(e.msg) for e in first.errors)[:300]}" if first \
        else str(summary.status)
    return False, f"bioimageio.core test_model: {summary.status} ({reason})"
