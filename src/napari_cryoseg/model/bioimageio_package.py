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
from napari_cryoseg.model.checkpoint import ModelFile, check_savable, now_iso
from napari_cryoseg.model.config import UNetConfig

ARCHITECTURE_CALLABLE = "CryoSegUNet"
CONFIG_KEY = "napari-cryoseg"
DESCRIPTION_NAMES = ("bioimageio.yaml", "rdf.yaml")
MAX_DESCRIPTION_BYTES = 1 << 20
#: No weights file (nor a whole package) above this is read, whatever its description says.
MAX_WEIGHTS_BYTES = 2 << 30
#: Slack above 4 bytes per parameter for a state_dict's pickle framing and buffers.
WEIGHTS_MARGIN_BYTES = 16 << 20
_SYMLINK = 0o120000


def is_description_name(name: str) -> bool:
    """``rdf.yaml``, ``bioimageio.yaml`` or ``<anything>.bioimageio.yaml``."""
    return name in DESCRIPTION_NAMES or name.endswith(".bioimageio.yaml")


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
            self._check_members(path)
            found = [n for n in names if "/" not in n.strip("/") and is_description_name(n)]
            found += [n for n in names if is_description_name(n.rsplit("/", 1)[-1])
                      and n.count("/") == 1 and n not in found]
            if len(found) > 1:  # a checker and a loader could read different ones
                raise _bad(path, f"the zip holds {len(found)} model descriptions "
                                 f"({', '.join(sorted(found)[:3])}); a package has exactly "
                                 "one; refused")
            if not found:
                raise _bad(path, "no bioimageio.yaml / rdf.yaml inside; is it a bioimage.io "
                                 "model package?")
            self.prefix = found[0][: -len(found[0].rsplit("/", 1)[-1])]
            self.rdf_name = found[0][len(self.prefix):]
        else:
            self.prefix = ""
            found = sorted(p.name for p in path.iterdir()
                           if is_description_name(p.name) and p.is_file())
            if len(found) > 1:
                raise _bad(path, f"the folder holds {len(found)} model descriptions "
                                 f"({', '.join(found[:3])}); a package has exactly one; "
                                 "refused")
            if not found:
                raise _bad(path, "no bioimageio.yaml / rdf.yaml in this folder; is it a "
                                 "bioimage.io model package?")
            self.rdf_name = found[0]

    def _check_members(self, path: Path) -> None:
        """Refuse members that would unpack outside the package, links, and zips whose
        header claims more bytes than any model needs (checked before anything is read)."""
        assert self.zip is not None
        total = 0
        for info in self.zip.infolist():
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or (len(name) > 1 and name[1] == ":"):
                raise _bad(path, f"the zip member {info.filename!r} points outside the "
                                 "package; refused")
            if (info.external_attr >> 16) & 0o170000 == _SYMLINK:
                raise _bad(path, f"the zip member {info.filename!r} is a link; refused")
            total += max(info.file_size, 0)
        if total > MAX_WEIGHTS_BYTES + WEIGHTS_MARGIN_BYTES:
            raise _bad(path, f"the zip unpacks to {total / 2**30:.1f} GiB, more than "
                             f"{MAX_WEIGHTS_BYTES >> 30} GiB; refused before reading")

    def size(self, name: str) -> int:
        """Bytes of ``name`` (from the zip header: the larger of its packed and unpacked
        sizes), without reading it."""
        member = self._member(name)
        try:
            if self.zip is not None:
                info = self.zip.getinfo(self.prefix + member)
                return max(info.file_size, info.compress_size)
            return self._folder_file(member).stat().st_size
        except (KeyError, OSError):
            raise _bad(self.path, f"{member} is missing from the package") from None

    def _folder_file(self, member: str) -> Path:
        root = self.path.resolve()
        target = (root / member).resolve()
        if root not in target.parents:  # a symlink that leaves the package
            raise _bad(self.path, f"{member} points outside the package; refused")
        return target

    def sha256(self, name: str, limit: int = MAX_WEIGHTS_BYTES) -> str:
        """sha256 of the package file ``name``, read in blocks (refused above ``limit``)."""
        member = self._member(name)
        if self.size(name) > limit:
            raise _bad(self.path, f"{member} is larger than {limit} bytes; refused")
        digest = hashlib.sha256()
        try:
            opened = (self.zip.open(self.prefix + member) if self.zip is not None
                      else open(self._folder_file(member), "rb"))  # noqa: SIM115
            with opened as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
        except (KeyError, OSError):
            raise _bad(self.path, f"{member} is missing from the package") from None
        except (zipfile.BadZipFile, ValueError, EOFError) as err:
            raise _bad(self.path, f"{member} cannot be read from the zip ({err})") from None
        return digest.hexdigest()

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
                if limit is not None and max(info.file_size, info.compress_size) > limit:
                    raise _bad(self.path, f"{member} is larger than {limit} bytes; refused")
                return self.zip.read(info)
            target = self._folder_file(member)
            if limit is not None and target.stat().st_size > limit:
                raise _bad(self.path, f"{member} is larger than {limit} bytes; refused")
            return target.read_bytes()
        except (KeyError, OSError):
            raise _bad(self.path, f"{member} is missing from the package") from None
        except (zipfile.BadZipFile, ValueError, EOFError) as err:
            raise _bad(self.path, f"{member} cannot be read from the zip ({err})") from None

    def description(self) -> dict[str, Any]:
        """The parsed model description (checked: a mapping of type ``model``)."""
        from napari_cryoseg.model.safe_yaml import YamlRefused, safe_load

        raw = self.read(self.rdf_name, limit=MAX_DESCRIPTION_BYTES)
        if not raw.strip():
            raise _bad(self.path, f"{self.rdf_name} is empty")
        try:
            data = safe_load(raw.decode("utf-8"), self.rdf_name)
        except UnicodeDecodeError:
            raise _bad(self.path, f"{self.rdf_name} is not UTF-8 text (binary?)") from None
        except YamlRefused as err:
            raise _bad(self.path, str(err)) from None
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


#: Keys whose text values (or lists of them) name files, in every spec version.
_FILE_KEYS = ("source", "documentation", "covers", "test_inputs", "test_outputs",
              "sample_inputs", "sample_outputs", "files", "attachments", "icon")


def _file_part(key: str, value: str) -> str | None:
    """The file named by a text ``value`` under ``key`` (None: not a file name)."""
    if key == "architecture":  # spec 0.4 "file.py:Net"; "module.Net" is no file
        head, sep, _ = value.partition(":")
        return head if sep and (head.endswith(".py") or "/" in head or "\\" in head) else None
    if key == "dependencies":  # spec 0.4 "conda:environment.yaml"
        return value.partition(":")[2] or value
    if key == "icon" and len(value) <= 2:  # an emoji, not a file
        return None
    return value


def file_references(data: Any) -> list[str]:
    """Every file name a description refers to (weights, architecture, test tensors,
    covers, documentation, attachments, dependencies), in every spec version."""
    found: list[str] = []
    stack = [data]
    while stack:  # iterative: a deep document cannot overflow the Python stack
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                key = str(key)
                if key == "config" and node is data:  # free-form; no reader opens files there
                    continue
                if key in (*_FILE_KEYS, "architecture", "dependencies") and \
                        isinstance(value, str):
                    name = _file_part(key, value)
                    if name is not None:
                        found.append(name)
                elif key in _FILE_KEYS and isinstance(value, list):
                    found += [v for v in value if isinstance(v, str)]
                    stack.extend(v for v in value if isinstance(v, dict | list))
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
        member = package._member(name)  # raises for '..', absolute paths
        if package.zip is None and (package.path / member).exists():
            package._folder_file(member)  # raises for a symlink that leaves the package
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
        :mod:`napari_cryoseg.engine.inference.bioimageio_model`), or a damaged package.
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
    raw = package.read(field(weights, "source", str, package.path),
                       limit=weights_limit(config))
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
    try:  # the checks a model file gets when read back, before anyone writes one
        check_savable(model)
    except ModelFileError as err:
        raise _bad(package.path, str(err).replace("the model cannot be saved as it is: ",
                                                  "settings a model file cannot hold: ")
                   ) from None
    return model


def weights_limit(config: UNetConfig) -> int:
    """Most bytes the state_dict of ``config`` can take (4 per parameter plus a margin),
    counted without allocating the network."""
    from napari_cryoseg.model.unet import UNet

    with torch.device("meta"):
        n = sum(p.numel() for p in UNet(config).parameters())
    return min(MAX_WEIGHTS_BYTES, 4 * n + n // 4 + WEIGHTS_MARGIN_BYTES)


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
