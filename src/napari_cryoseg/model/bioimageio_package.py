"""Reading bioimage.io model packages safely (no code run, nothing outside the package).

A package is a folder holding ``bioimageio.yaml`` / ``rdf.yaml`` or a ``.zip`` of one.
Packages come from strangers, so everything here fails cleanly and cheaply with a
one-line :class:`~napari_cryoseg.core.errors.ModelFileError`:

* a ``.zip`` that is not a zip, or whose description is missing;
* a description that is empty, not YAML, larger than 1 MiB, uses YAML aliases (the
  "billion laughs" bomb needs them; bioimage.io descriptions never do), or has missing
  keys / wrong types where the reader needs them;
* a file reference that leaves the package (``../``, absolute paths, URLs) -- it is
  refused, never read.

:func:`import_bioimageio` turns a package of a napari-cryoseg U-Net (architecture
``CryoSegUNet``) into a :class:`ModelFile` from its state_dict weights
(``torch.load(weights_only=True)``); nothing from the package is executed.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from napari_cryoseg.core.errors import InputError, ModelFileError
from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.model.checkpoint import ModelFile, now_iso
from napari_cryoseg.model.config import UNetConfig

ARCHITECTURE_CALLABLE = "CryoSegUNet"
CONFIG_KEY = "napari-cryoseg"
DESCRIPTION_NAMES = ("bioimageio.yaml", "rdf.yaml")
MAX_DESCRIPTION_BYTES = 1 << 20


def is_package_path(path: str | os.PathLike[str]) -> bool:
    """True for a folder holding a bioimage.io description or a ``.zip`` file."""
    p = Path(path)
    if p.is_dir():
        return any((p / name).is_file() for name in DESCRIPTION_NAMES)
    return p.suffix.lower() == ".zip"


def _bad(package: Path, what: str) -> ModelFileError:
    return ModelFileError(f"bioimage.io package '{package}': {what}")


class Package:
    """The files of a package folder or zip, read as bytes, never outside the package."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise InputError(f"bioimage.io package '{path}' does not exist; check the path")
        self.zip: zipfile.ZipFile | None = None
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise _bad(path, "not a zip file (damaged, or another format renamed to "
                                 ".zip); download or export the package again")
            try:
                self.zip = zipfile.ZipFile(path)
                names = self.zip.namelist()
            except (zipfile.BadZipFile, OSError, ValueError) as err:
                raise _bad(path, f"the zip cannot be read ({err})") from None
            found = [n for n in names if "/" not in n.strip("/") and n in DESCRIPTION_NAMES]
            found += [n for n in names if n.rsplit("/", 1)[-1] in DESCRIPTION_NAMES
                      and n.count("/") == 1 and n not in found]
            if not found:
                raise _bad(path, "no bioimageio.yaml / rdf.yaml inside; is it a bioimage.io "
                                 "model package?")
            self.prefix = found[0][: -len(found[0].rsplit("/", 1)[-1])]
            self.rdf_name = found[0][len(self.prefix):]
        else:
            self.prefix = ""
            found = [n for n in DESCRIPTION_NAMES if (path / n).is_file()]
            if not found:
                raise _bad(path, "no bioimageio.yaml / rdf.yaml in this folder; is it a "
                                 "bioimage.io model package?")
            self.rdf_name = found[0]

    def _member(self, name: str) -> str:
        """``name`` checked to stay inside the package (relative, no '..', no URL)."""
        text = str(name).strip()
        if "://" in text or text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":"):
            raise _bad(self.path, f"the file reference {text!r} points outside the package "
                                  "(absolute path or URL); refused")
        parts = PurePosixPath(text.replace("\\", "/")).parts
        if not parts or ".." in parts:
            raise _bad(self.path, f"the file reference {text!r} points outside the package; "
                                  "refused")
        return "/".join(parts)

    def read(self, name: str, limit: int | None = None) -> bytes:
        """Bytes of the package file ``name`` (at most ``limit`` bytes, else refused)."""
        member = self._member(name)
        try:
            if self.zip is not None:
                info = self.zip.getinfo(self.prefix + member)
                if limit is not None and info.file_size > limit:
                    raise _bad(self.path, f"{member} is larger than {limit} bytes; refused")
                return self.zip.read(info)
            root = self.path.resolve()
            target = (root / member).resolve()
            if root not in target.parents:  # a symlink that leaves the package
                raise _bad(self.path, f"{member} points outside the package; refused")
            if limit is not None and target.stat().st_size > limit:
                raise _bad(self.path, f"{member} is larger than {limit} bytes; refused")
            return target.read_bytes()
        except (KeyError, OSError):
            raise _bad(self.path, f"{member} is missing from the package") from None
        except (zipfile.BadZipFile, ValueError, EOFError) as err:
            raise _bad(self.path, f"{member} cannot be read from the zip ({err})") from None

    def description(self) -> dict[str, Any]:
        """The parsed model description (checked: a mapping of type ``model``)."""
        import yaml

        raw = self.read(self.rdf_name, limit=MAX_DESCRIPTION_BYTES)
        if not raw.strip():
            raise _bad(self.path, f"{self.rdf_name} is empty")
        try:
            text = raw.decode("utf-8")
            if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
                raise _bad(self.path, f"{self.rdf_name} uses YAML aliases, which bioimage.io "
                                      "descriptions do not need; refused")
            data = yaml.safe_load(text)
        except ModelFileError:
            raise
        except (UnicodeDecodeError, yaml.YAMLError) as err:
            first = " ".join(str(err).split())[:160]
            raise _bad(self.path, f"{self.rdf_name} is not valid YAML ({first})") from None
        if not isinstance(data, dict):
            raise _bad(self.path, f"{self.rdf_name} is not a mapping of fields")
        if data.get("type") != "model":
            raise _bad(self.path, f"{self.rdf_name} describes a {data.get('type')!r}, not a "
                                  "model")
        return data


def field(data: Any, path: str, kind: type | tuple[type, ...], package: Path) -> Any:
    """``data[a][b]...`` for ``path="a.b"`` checked to be ``kind`` (one-line error)."""
    value = data
    for key in path.split("."):
        if key.isdigit():
            if not isinstance(value, list) or len(value) <= int(key):
                raise _bad(package, f"'{path}' is missing or not a list")
            value = value[int(key)]
        else:
            if not isinstance(value, dict) or key not in value:
                raise _bad(package, f"'{path}' is missing")
            value = value[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _bad(package, f"'{path}' should be a {names}, not {type(value).__name__}")
    return value


def file_references(data: Any) -> list[str]:
    """Every ``source`` / ``documentation`` / ``covers`` file name in a description."""
    found: list[str] = []
    stack = [data]
    while stack:  # iterative: a deep document cannot overflow the Python stack
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("source", "documentation") and isinstance(value, str):
                    found.append(value)
                elif key == "covers" and isinstance(value, list):
                    found += [v for v in value if isinstance(v, str)]
                    stack.extend(v for v in value if isinstance(v, dict))
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))
    return found


def check_package(path: str | os.PathLike[str]) -> tuple[Package, dict[str, Any]]:
    """Open a package and check that every file it references stays inside it."""
    package = Package(Path(path))
    data = package.description()
    for name in file_references(data):
        if "://" in name:
            raise _bad(package.path, f"the file {name!r} is remote; download the package "
                                     "as a .zip (with its files) first")
        package._member(name)  # raises for '..', absolute paths
    return package, data


def package_file_names(folder: str | os.PathLike[str]) -> set[str]:
    """The description file and every file it references (for safe updates)."""
    package, data = check_package(folder)
    return {package.rdf_name, *(package._member(n) for n in file_references(data))}


def read_rdf(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed, checked description of a package folder or zip."""
    return check_package(path)[1]


def is_cryoseg_unet(data: dict[str, Any]) -> bool:
    """True when the description's state_dict weights are napari-cryoseg's U-Net."""
    weights = data.get("weights")
    entry = weights.get("pytorch_state_dict") if isinstance(weights, dict) else None
    arch = entry.get("architecture") if isinstance(entry, dict) else None
    return isinstance(arch, dict) and arch.get("callable") == ARCHITECTURE_CALLABLE


def import_bioimageio(path: str | os.PathLike[str]) -> ModelFile:
    """A :class:`ModelFile` from a bioimage.io package whose architecture is ours.

    Reads the description and the ``pytorch_state_dict`` weights (``weights_only=True``);
    nothing from the package is executed. Class names, colours, tiling and temporal mode
    come from ``config.napari-cryoseg`` when present; the normalisation from the
    ``scale_range`` (and ``clip``) pre-processing.

    Raises
    ------
    ModelFileError
        Not a napari-cryoseg U-Net (it can still segment: see
        :mod:`napari_cryoseg.engine.bioimageio_model`), or a damaged package.
    """
    package, rdf = check_package(path)
    name = str(rdf.get("name", package.path.name))
    if not is_cryoseg_unet(rdf):
        raise ModelFileError(
            f"this bioimage.io model ({name}) can be used to segment but not fine-tuned: "
            "its architecture is not napari-cryoseg's U-Net (open it with --model / Open "
            "model file to segment with it)")
    weights = field(rdf, "weights.pytorch_state_dict", dict, package.path)
    arch = field(weights, "architecture", dict, package.path)
    try:
        config = UNetConfig.from_dict(dict(arch.get("kwargs") or {}))
    except (InputError, TypeError, ValueError) as err:
        raise _bad(package.path, f"architecture kwargs: {err}") from None
    raw = package.read(field(weights, "source", str, package.path))
    expected = weights.get("sha256")
    if expected and hashlib.sha256(raw).hexdigest() != expected:
        raise _bad(package.path, "the weights do not match their sha256 (damaged?)")
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is a refusal
        raise _bad(package.path, "the weights are not a plain state_dict: "
                                 f"{str(err).splitlines()[0][:160]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise _bad(package.path, "the weights are not a state_dict of tensors")
    config_section = rdf.get("config") if isinstance(rdf.get("config"), dict) else {}
    extra = config_section.get(CONFIG_KEY) or {}
    if not isinstance(extra, dict):
        extra = {}
    tiling = extra.get("tiling") if isinstance(extra.get("tiling"), dict) else {}
    try:
        model = ModelFile(
            config=config,
            state_dict=dict(state),
            normalization=_normalization_from(rdf, extra),
            class_names=list(extra.get("class_names") or []),
            class_colors=list(extra.get("class_colors") or []),
            tiling=TilingConfig(**tiling) if tiling else TilingConfig(),
            pixel_size_nm=extra.get("pixel_size_nm"),
            temporal_context=int(extra.get("temporal_context", 0)),
            background_subtraction=str(extra.get("background_subtraction", "none")),
            threshold=float(extra.get("threshold", 0.5)),
            provenance={"created": now_iso(), "parent": str(path), "kind": "import-bioimageio",
                        "name": name, "steps": 0, "metrics": {}},
        )
        model.build("cpu")  # weights and config must agree
    except ModelFileError:
        raise
    except (InputError, TypeError, ValueError, RuntimeError) as err:
        first = " ".join(str(err).split())[:200]
        raise _bad(package.path, f"weights and settings do not fit together ({first})") from None
    return model


def _normalization_from(rdf: dict[str, Any], extra: dict[str, Any]) -> NormalizationConfig:
    if isinstance(extra.get("normalization"), dict):
        return NormalizationConfig.from_dict(extra["normalization"])
    low, high, clip = 1.0, 99.0, 0.5
    inputs = rdf.get("inputs") if isinstance(rdf.get("inputs"), list) else [{}]
    first = inputs[0] if inputs and isinstance(inputs[0], dict) else {}
    steps = first.get("preprocessing") if isinstance(first.get("preprocessing"), list) else []
    for step in steps:
        if not isinstance(step, dict):
            continue
        kwargs = step.get("kwargs") if isinstance(step.get("kwargs"), dict) else {}
        if step.get("id") == "scale_range":
            low = float(kwargs.get("min_percentile", low))
            high = float(kwargs.get("max_percentile", high))
        elif step.get("id") == "clip" and "max" in kwargs:
            clip = max(float(kwargs["max"]) - 1.0, 0.0)
    return NormalizationConfig(low=low, high=high, clip=clip)
