"""Which weights of a bioimage.io package need code from it, and whether the user trusts it.

A bioimage.io package is data from a stranger. Some weight formats are loaded as data by
their runtime (``torchscript``, ``onnx``); others need code: ``pytorch_state_dict``
imports an architecture (a Python file inside the package, ``source:`` + ``callable:``,
the old ``architecture: file.py:Net``, or any installed module named by
``import_from:``), and the TensorFlow / Keras formats carry graphs with custom layers.
Such weights are used only when the user trusts that package explicitly: with the
sha256 of each code file (printed in the refusal) or with the package's own path. The
napari-cryoseg U-Net is never taken from a package: its architecture comes from the
installed code (:func:`napari_cryoseg.model.bioimageio_package.import_bioimageio`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_cryoseg.core.errors import ModelFileError

#: Weight formats their runtimes load as data (no Python file from the package).
DATA_FORMATS = ("torchscript", "onnx")
#: The order in which usable formats are chosen (bioimageio.core's own preference).
FORMAT_ORDER = ("pytorch_state_dict", "torchscript", "onnx", "tensorflow_saved_model_bundle",
                "keras_hdf5", "keras_v3", "tensorflow_js")
#: Largest code file hashed for the message (a Python file is small).
MAX_CODE_BYTES = 16 << 20
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class CodeRef:
    """One piece of code a weight format needs: a package file or an installed module."""

    kind: str  # "file" (inside the package) or "import" (an installed module)
    name: str
    sha256: str = ""

    def describe(self) -> str:
        if self.kind == "file":
            return f"the Python file {self.name} (sha256 {self.sha256})"
        return f"code imported from the installed module {self.name}"


def _architecture_refs(arch: Any) -> list[CodeRef]:
    if isinstance(arch, str):  # spec 0.4: "file.py:Net" or "package.module.Net"
        head, _, _tail = arch.partition(":")
        if _tail and (head.endswith(".py") or "/" in head or "\\" in head):
            return [CodeRef("file", head.strip())]
        return [CodeRef("import", arch.strip())]
    if isinstance(arch, dict):
        if isinstance(arch.get("source"), str):
            return [CodeRef("file", arch["source"].strip())]
        module = arch.get("import_from")
        return [CodeRef("import", f"{module}:{arch.get('callable')}")]
    return [CodeRef("import", repr(arch)[:80])]


def code_needed(data: dict[str, Any]) -> dict[str, list[CodeRef]]:
    """For each weight format in the description: the code it needs (empty: data only)."""
    weights = data.get("weights")
    found: dict[str, list[CodeRef]] = {}
    if not isinstance(weights, dict):
        return found
    for fmt, entry in weights.items():
        if not isinstance(entry, dict):
            continue
        if fmt in DATA_FORMATS:
            found[str(fmt)] = []
        elif fmt == "pytorch_state_dict":
            found[fmt] = _architecture_refs(entry.get("architecture"))
        else:  # TensorFlow / Keras graphs can hold custom (Python) layers
            source = entry.get("source")
            found[str(fmt)] = [CodeRef("file", source if isinstance(source, str) else str(fmt))]
    return found


def _hashed(package: Any, ref: CodeRef) -> CodeRef:
    if ref.kind != "file":
        return ref
    return CodeRef("file", ref.name, package.sha256(ref.name))


def _names_package(item: str, package_path: Path) -> bool:
    path = Path(item).expanduser()
    if path.name in ("rdf.yaml", "bioimageio.yaml") and path.is_file():
        path = path.parent
    try:
        return path.exists() and os.path.samefile(path, package_path)
    except OSError:
        return False


def choose_format(
    package: Any, data: dict[str, Any], trust: Sequence[str] = (),
) -> tuple[str, list[str]]:
    """The weight format to run and one log line per trusted piece of code.

    Raises
    ------
    ModelFileError
        Every format present needs code the user did not trust: one line naming the
        first such file and its sha256, and how to trust it.
    """
    needs = code_needed(data)
    trusted_package = any(_names_package(t, package.path) for t in trust if not
                          _SHA256.match(str(t).strip()))
    hashes = {str(t).strip().lower() for t in trust if _SHA256.match(str(t).strip())}
    blocked: list[tuple[str, CodeRef]] = []
    for fmt in sorted(needs, key=lambda f: FORMAT_ORDER.index(f) if f in FORMAT_ORDER else 99):
        refs = [_hashed(package, r) for r in needs[fmt]]
        if not refs:
            return fmt, []
        ok = trusted_package or all(r.kind == "file" and r.sha256 in hashes for r in refs)
        if ok:
            how = "the package path" if trusted_package else "its sha256"
            return fmt, [f"trusted {r.describe()} of {package.path} ({fmt} weights; "
                         f"trusted by {how})" for r in refs]
        blocked += [(fmt, r) for r in refs]
    if not blocked:
        raise ModelFileError(f"bioimage.io package '{package.path}' lists no weights")
    fmt, ref = blocked[0]
    how = (f"--trust-code {ref.sha256}" if ref.kind == "file"
           else f"--trust-code {package.path}")
    raise ModelFileError(
        f"bioimage.io package '{package.path}': its {fmt} weights need {ref.describe()}, and "
        "code from a model package is never run unless you trust it; read that code, then "
        f"pass {how}")


def trust_values(values: Iterable[str] | None) -> list[str]:
    """The ``--trust-code`` values, stripped (empty ones dropped)."""
    return [str(v).strip() for v in (values or []) if str(v).strip()]
