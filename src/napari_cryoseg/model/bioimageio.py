"""bioimage.io model packages: export a model file, import one back (no pickle, no code).

Export writes a folder (or a ``.zip`` of it) following the bioimage.io model spec 0.5
(written by hand; validated with ``bioimageio.spec`` only when that is installed)::

    rdf.yaml            the model description (inputs/outputs, pre-processing, weights)
    weights.pt          pytorch_state_dict (tensors only; torch.load(weights_only=True))
    unet.py             standalone architecture (our U-Net source + a CryoSegUNet wrapper
                        whose forward ends with sigmoid/softmax)
    test_input.npy      a raw sample (1, C, Y, X) float32
    test_output.npy     the model's probabilities for it (1, K, Y, X) float32
    cover.png           the sample beside its segmentation
    documentation.md    what the model does and how it was trained

Import reads ``rdf.yaml`` and the ``pytorch_state_dict`` weights and maps them onto a
napari-cryoseg :class:`ModelFile` when the architecture is ours (``CryoSegUNet``); the
package's Python code is never executed on import.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryoseg import __version__
from napari_cryoseg.core.atomic import atomic_write
from napari_cryoseg.core.errors import InputError, ModelFileError, OutputExistsError
from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.model import unet as unet_module
from napari_cryoseg.model.checkpoint import ModelFile, now_iso
from napari_cryoseg.model.config import UNetConfig

SPEC_VERSION = "0.5.3"
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        "Weights are a plain PyTorch state_dict; the architecture is `unet.py:CryoSegUNet`.",
        "Re-import with `cryoseg import-bioimageio <package> --out model.pt`.",
        "",
    ]
    return "\n".join(lines)


def build_rdf(model: ModelFile, files: dict[str, Path], torch_version: str) -> dict[str, Any]:
    """The rdf.yaml content (spec 0.5) for ``model`` given the written package files."""
    cfg = model.config
    stride = cfg.stride
    norm = model.normalization
    k = model.temporal_context
    channel_names = ([f"t{d:+d}" if d else "t" for d in range(-k, k + 1)] if k else ["raw"])
    out_names = (["foreground"] if cfg.out_channels == 1 else list(model.class_names))
    space = {"min": stride, "step": stride}
    return {
        "format_version": SPEC_VERSION,
        "type": "model",
        "name": model.name.replace("_", " ")[:120] or "napari-cryoseg U-Net",
        "description": "U-Net segmentation of electron-microscopy images "
                       f"({', '.join(model.class_names[1:])}), exported by napari-cryoseg.",
        "authors": [{"name": "napari-cryoseg developers"}],
        "cite": [{"text": "Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks "
                          "for Biomedical Image Segmentation. MICCAI 2015.",
                  "doi": "10.1007/978-3-319-24574-4_28"}],
        "license": "BSD-3-Clause",
        "documentation": files["documentation"].name,
        "covers": [files["cover"].name],
        "tags": ["unet", "2d", "electron-microscopy", "semantic-segmentation", "pytorch",
                 "napari-cryoseg"],
        "timestamp": now_iso(),
        "inputs": [{
            "id": "raw",
            "description": "grayscale EM image" + (" frames" if k else ""),
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": channel_names},
                {"type": "space", "id": "y", "size": space},
                {"type": "space", "id": "x", "size": space},
            ],
            "test_tensor": {"source": files["test_input"].name,
                            "sha256": _sha256(files["test_input"])},
            "data": {"type": "float32"},
            "preprocessing": [
                {"id": "scale_range",
                 "kwargs": {"axes": ["channel", "y", "x"], "min_percentile": norm.low,
                            "max_percentile": norm.high}},
                {"id": "clip", "kwargs": {"min": -norm.clip, "max": 1 + norm.clip}},
            ],
        }],
        "outputs": [{
            "id": "probabilities",
            "description": "class probabilities",
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": out_names},
                {"type": "space", "id": "y", "size": {"tensor_id": "raw", "axis_id": "y"}},
                {"type": "space", "id": "x", "size": {"tensor_id": "raw", "axis_id": "x"}},
            ],
            "test_tensor": {"source": files["test_output"].name,
                            "sha256": _sha256(files["test_output"])},
            "data": {"type": "float32"},
        }],
        "weights": {"pytorch_state_dict": {
            "source": files["weights"].name,
            "sha256": _sha256(files["weights"]),
            "architecture": {"source": files["architecture"].name,
                             "sha256": _sha256(files["architecture"]),
                             "callable": ARCHITECTURE_CALLABLE,
                             "kwargs": cfg.to_dict()},
            "pytorch_version": torch_version,
        }},
        "config": {CONFIG_KEY: {
            "version": __version__,
            "class_names": list(model.class_names),
            "class_colors": list(model.class_colors),
            "normalization": norm.to_dict(),
            "tiling": {"tile": model.tiling.tile, "overlap": model.tiling.overlap,
                       "batch_size": model.tiling.batch_size},
            "pixel_size_nm": model.pixel_size_nm,
            "temporal_context": int(k),
            "background_subtraction": model.background_subtraction,
        }},
    }


def _write_folder(model: ModelFile, folder: Path, sample_size: int) -> None:
    import yaml

    from napari_cryoseg.model.export import probability_net

    files = {
        "weights": folder / "weights.pt",
        "architecture": folder / "unet.py",
        "test_input": folder / "test_input.npy",
        "test_output": folder / "test_output.npy",
        "cover": folder / "cover.png",
        "documentation": folder / "documentation.md",
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict.items()}
    torch.save(state, files["weights"])
    files["architecture"].write_text(standalone_unet_source(), encoding="utf-8")
    stride = model.config.stride
    size = max(stride, -(-sample_size // stride) * stride)
    raw = _sample_input(model, size)
    normalised = _normalise(raw, model.normalization)
    with torch.inference_mode():
        probs = probability_net(model)(torch.from_numpy(normalised)).numpy().astype(np.float32)
    np.save(files["test_input"], raw)
    np.save(files["test_output"], probs)
    files["cover"].write_bytes(_cover_png(raw, probs, list(model.class_colors)))
    files["documentation"].write_text(_documentation(model), encoding="utf-8")
    rdf = build_rdf(model, files, torch.__version__.split("+")[0])
    text = yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True)
    (folder / "rdf.yaml").write_text(text, encoding="utf-8")


def export_bioimageio(
    model: ModelFile,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    sample_size: int = 256,
) -> Path:
    """Write a bioimage.io package: a folder, or a zip when ``out`` ends with ``.zip``.

    Raises
    ------
    OutputExistsError
        ``out`` exists (a non-empty folder or a file) and ``overwrite`` is False.
    """
    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"folder {out.parent} does not exist; create it first")
    is_zip = out.suffix.lower() == ".zip"
    if out.exists() and not overwrite and (is_zip or out.is_file() or any(out.iterdir())):
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".bioimageio-") as tmp:
        folder = Path(tmp) / "package"
        folder.mkdir()
        _write_folder(model, folder, sample_size)
        if is_zip:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(folder.iterdir()):
                    zf.write(path, path.name)
            return atomic_write(out, lambda f: f.write(buffer.getvalue()), overwrite=overwrite)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        shutil.move(str(folder), str(out))
    return out


# --------------------------------------------------------------------------- reading


class _Package:
    """Files of a package folder or zip, read as bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise InputError(f"bioimage.io package {path} does not exist")
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        if self.zip is not None:
            names = self.zip.namelist()
            rdf = [n for n in names if n.rsplit("/", 1)[-1] in ("rdf.yaml", "bioimageio.yaml")]
            if not rdf:
                raise InputError(f"{path} holds no rdf.yaml; is it a bioimage.io model package?")
            self.prefix = rdf[0][: -len(rdf[0].rsplit("/", 1)[-1])]
            self.rdf_name = rdf[0][len(self.prefix):]
        else:
            self.prefix = ""
            found = [n for n in ("rdf.yaml", "bioimageio.yaml") if (path / n).is_file()]
            if not found:
                raise InputError(f"{path} holds no rdf.yaml; is it a bioimage.io model package?")
            self.rdf_name = found[0]

    def read(self, name: str) -> bytes:
        if "://" in name:
            raise InputError(f"remote file {name} in the package is not supported; download "
                             "the package as a zip first")
        try:
            if self.zip is not None:
                return self.zip.read(self.prefix + name)
            return (self.path / name).read_bytes()
        except (KeyError, OSError):
            raise InputError(f"{name} is missing from the package {self.path}") from None

    def rdf(self) -> dict[str, Any]:
        import yaml

        data = yaml.safe_load(self.read(self.rdf_name))
        if not isinstance(data, dict) or data.get("type") != "model":
            raise InputError(f"{self.path} is not a bioimage.io *model* package")
        return data


def read_rdf(package: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed rdf.yaml of a package folder or zip."""
    return _Package(Path(package)).rdf()


def import_bioimageio(package: str | os.PathLike[str]) -> ModelFile:
    """A :class:`ModelFile` from a bioimage.io package whose architecture is ours.

    Reads ``rdf.yaml`` and the ``pytorch_state_dict`` weights (``weights_only=True``);
    nothing from the package is executed. Class names, colours, tiling and temporal mode
    come from ``config.napari-cryoseg`` when present; the normalisation from the
    ``scale_range`` (and ``clip``) pre-processing.
    """
    pkg = _Package(Path(package))
    rdf = pkg.rdf()
    weights = (rdf.get("weights") or {}).get("pytorch_state_dict")
    if not weights:
        raise ModelFileError(f"{package} has no pytorch_state_dict weights; only those are "
                             "imported")
    arch = weights.get("architecture") or {}
    callable_name = str(arch.get("callable", ""))
    if callable_name != ARCHITECTURE_CALLABLE:
        raise ModelFileError(
            f"{package} uses the architecture {callable_name!r}, not napari-cryoseg's "
            f"{ARCHITECTURE_CALLABLE}; only napari-cryoseg U-Nets can be imported")
    try:
        config = UNetConfig.from_dict(dict(arch.get("kwargs") or {}))
    except InputError as err:
        raise ModelFileError(f"{package}: {err}") from None
    raw = pkg.read(str(weights["source"]))
    expected = weights.get("sha256")
    if expected and hashlib.sha256(raw).hexdigest() != expected:
        raise ModelFileError(f"{package}: weights do not match their sha256 (damaged?)")
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is a refusal
        raise ModelFileError(f"{package}: the weights are not a plain state_dict: "
                             f"{str(err).splitlines()[0][:160]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ModelFileError(f"{package}: the weights are not a state_dict of tensors")
    extra = (rdf.get("config") or {}).get(CONFIG_KEY) or {}
    norm = _normalization_from(rdf, extra)
    tiling = extra.get("tiling") or {}
    model = ModelFile(
        config=config,
        state_dict=dict(state),
        normalization=norm,
        class_names=list(extra.get("class_names") or []),
        class_colors=list(extra.get("class_colors") or []),
        tiling=TilingConfig(**tiling) if tiling else TilingConfig(),
        pixel_size_nm=extra.get("pixel_size_nm"),
        temporal_context=int(extra.get("temporal_context", 0)),
        background_subtraction=str(extra.get("background_subtraction", "none")),
        provenance={"created": now_iso(), "parent": str(package), "kind": "import-bioimageio",
                    "name": str(rdf.get("name", "")), "steps": 0, "metrics": {}},
    )
    model.build("cpu")  # weights and config must agree
    return model


def _normalization_from(rdf: dict[str, Any], extra: dict[str, Any]) -> NormalizationConfig:
    if extra.get("normalization"):
        return NormalizationConfig.from_dict(extra["normalization"])
    low, high, clip = 1.0, 99.0, 0.5
    inputs = rdf.get("inputs") or [{}]
    for step in inputs[0].get("preprocessing") or []:
        kwargs = step.get("kwargs") or {}
        if step.get("id") == "scale_range":
            low = float(kwargs.get("min_percentile", low))
            high = float(kwargs.get("max_percentile", high))
        elif step.get("id") == "clip" and "max" in kwargs:
            clip = max(float(kwargs["max"]) - 1.0, 0.0)
    return NormalizationConfig(low=low, high=high, clip=clip)


def validate_package(package: str | os.PathLike[str]) -> tuple[bool, str]:
    """Check a package we wrote: file hashes, and the standalone ``unet.py`` + weights
    reproduce ``test_output.npy`` from ``test_input.npy``; then ``bioimageio.spec`` if
    installed. Returns ``(ok, message)``.

    This runs the package's ``unet.py``: use it on packages you wrote, not on foreign ones.
    """
    pkg = _Package(Path(package))
    rdf = pkg.rdf()
    problems = []
    weights = rdf["weights"]["pytorch_state_dict"]
    for entry in (weights, weights["architecture"], rdf["inputs"][0]["test_tensor"],
                  rdf["outputs"][0]["test_tensor"]):
        if hashlib.sha256(pkg.read(entry["source"])).hexdigest() != entry.get("sha256"):
            problems.append(f"sha256 of {entry['source']} does not match")
    with tempfile.TemporaryDirectory() as tmp:
        arch_path = Path(tmp) / "cryoseg_bioimageio_unet.py"
        arch_path.write_bytes(pkg.read(weights["architecture"]["source"]))
        spec = importlib.util.spec_from_file_location("cryoseg_bioimageio_unet", arch_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look the module up
        try:
            spec.loader.exec_module(module)
            net = getattr(module, weights["architecture"]["callable"])(
                **weights["architecture"]["kwargs"])
        finally:
            sys.modules.pop(spec.name, None)
    net.load_state_dict(torch.load(io.BytesIO(pkg.read(weights["source"])),
                                   map_location="cpu", weights_only=True))
    net.eval()
    raw = np.load(io.BytesIO(pkg.read(rdf["inputs"][0]["test_tensor"]["source"])))
    expected = np.load(io.BytesIO(pkg.read(rdf["outputs"][0]["test_tensor"]["source"])))
    norm = _normalization_from(rdf, {})
    with torch.inference_mode():
        got = net(torch.from_numpy(_normalise(raw, norm))).numpy()
    diff = float(np.abs(got - expected).max())
    if diff > 1e-4:
        problems.append(f"unet.py output differs from test_output.npy by {diff:.3g}")
    if problems:
        return False, "; ".join(problems)
    message = f"files and test tensors OK (standalone unet.py reproduces the test output, " \
              f"max diff {diff:.2g})"
    try:
        from bioimageio.spec import load_description  # type: ignore[import-not-found]
    except ImportError:
        return True, message + "; bioimageio.spec not installed, spec validation skipped " \
                               "(pip install bioimageio.spec to run it)"
    summary = load_description(str(package))
    status = getattr(getattr(summary, "validation_summary", None), "status", "unknown")
    return status in ("passed", "valid-format"), message + f"; bioimageio.spec: {status}"
