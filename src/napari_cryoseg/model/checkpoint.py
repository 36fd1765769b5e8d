"""The model file: one self-describing ``.pt`` file that never runs code when loaded.

Layout (every value a primitive, list, dict or tensor, so ``torch.load(weights_only=True)``
reads it; pickled objects are refused)::

    {
      "format": "napari-cryoseg-model",
      "format_version": 1,
      "config": {UNetConfig fields},
      "state_dict": {name: tensor},
      "normalization": {"low": 1.0, "high": 99.0, "clip": 0.5},
      "class_names": ["background", "cell", ...],
      "class_colors": ["#000000", "#33cc66", ...],
      "tiling": {"tile": 512, "overlap": 0.125, "batch_size": 4},
      "pixel_size_nm": 50.0 | None,
      "input_mode": {"temporal_context": 0, "background_subtraction": "none"},
      "threshold": 0.5,   # binary models: foreground probability cut (absent = 0.5)
      "provenance": {"created": iso, "parent": str|None, "training_data": {...},
                     "steps": int, "metrics": {...}, "history": [...], ...},
    }
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from napari_cryoseg import __version__
from napari_cryoseg.core.atomic import atomic_write
from napari_cryoseg.core.errors import ModelFileError
from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.core.palette import DEFAULT_COLORS
from napari_cryoseg.core.temporal import check_background_mode
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.model import file_checks
from napari_cryoseg.model.config import UNetConfig
from napari_cryoseg.model.file_checks import check_weights
from napari_cryoseg.model.unet import UNet

FORMAT_NAME = "napari-cryoseg-model"
FORMAT_VERSION = 1

def default_class_names(n_classes: int) -> list[str]:
    """``["background", "class 1", ...]``."""
    return ["background"] + [f"class {i}" for i in range(1, n_classes)]


def default_class_colors(n_classes: int) -> list[str]:
    """A colour per class, cycling a fixed palette."""
    return [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(n_classes)]


def now_iso() -> str:
    """Current UTC time, ISO 8601, second precision."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class ModelFile:
    """A network with everything needed to use it: preprocessing, classes, hints, history.

    Create one with :meth:`new`, load with :func:`load_model`, save with :func:`save_model`.
    """

    config: UNetConfig
    state_dict: dict[str, torch.Tensor]
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    class_names: list[str] = field(default_factory=list)
    class_colors: list[str] = field(default_factory=list)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    pixel_size_nm: float | None = None
    temporal_context: int = 0
    #: ``"none"`` or ``"median"`` (temporal median subtracted before normalisation).
    background_subtraction: str = "none"
    #: Foreground probability above which a binary model labels a pixel (training tunes
    #: it on the validation block; multi-class models take the most probable class).
    threshold: float = 0.5
    provenance: dict[str, Any] = field(default_factory=dict)
    source_path: Path | None = None

    def __post_init__(self) -> None:
        n = self.config.n_classes
        if not 0.0 < float(self.threshold) < 1.0:  # False for NaN too
            raise ModelFileError(f"threshold {self.threshold} must be between 0 and 1")
        try:
            check_background_mode(self.background_subtraction)
        except Exception as err:  # noqa: BLE001 - report as a model file problem
            raise ModelFileError(str(err)) from None
        if not self.class_names:
            self.class_names = default_class_names(n)
        if not self.class_colors:
            self.class_colors = default_class_colors(n)
        if len(self.class_names) != n or len(self.class_colors) != n:
            raise ModelFileError(
                f"model has {n} classes but {len(self.class_names)} class names and "
                f"{len(self.class_colors)} colours"
            )

    @classmethod
    def new(
        cls,
        config: UNetConfig,
        *,
        class_names: Sequence[str] | None = None,
        seed: int | None = 0,
        **kwargs: Any,
    ) -> ModelFile:
        """A freshly initialised network (seeded) wrapped in a model file."""
        if seed is not None:
            torch.manual_seed(seed)
        net = UNet(config)
        provenance = {"created": now_iso(), "parent": None, "steps": 0, "metrics": {}}
        provenance.update(kwargs.pop("provenance", {}))
        return cls(
            config=config,
            state_dict={k: v.detach().clone() for k, v in net.state_dict().items()},
            class_names=list(class_names or []),
            provenance=provenance,
            **kwargs,
        )

    def build(self, device: torch.device | str = "cpu") -> UNet:
        """A UNet with these weights, in eval mode, on ``device``.

        Raises
        ------
        ModelFileError
            Weights that do not fit the config or hold NaN/inf values (checked before the
            network is allocated).
        """
        check_weights(self.config, self.state_dict, source=self.name)
        net = UNet(self.config)
        try:
            net.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as err:
            raise ModelFileError(f"weights do not match the stored config: {err}") from None
        return net.to(device).eval()

    def with_weights(self, net: torch.nn.Module, **provenance: Any) -> ModelFile:
        """A copy holding ``net``'s weights (moved to CPU) and updated provenance."""
        clone = copy.copy(self)
        clone.state_dict = {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()}
        clone.provenance = {**copy.deepcopy(self.provenance), **provenance}
        clone.source_path = None
        return clone

    @property
    def n_parameters(self) -> int:
        """Number of weights (excluding BatchNorm running statistics)."""
        return sum(
            v.numel() for k, v in self.state_dict.items() if not k.endswith(
                ("running_mean", "running_var", "num_batches_tracked"))
        )

    @property
    def name(self) -> str:
        """A short display name: the file stem, else the provenance name."""
        if self.source_path is not None:
            return self.source_path.stem
        return str(self.provenance.get("name", "unsaved model"))

    def to_payload(self) -> dict[str, Any]:
        """The dict written to disk (primitives and tensors only)."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "writer": f"napari-cryoseg {__version__}",
            "config": self.config.to_dict(),
            "state_dict": {
                k: v.detach().to("cpu").contiguous() for k, v in self.state_dict.items()
            },
            "normalization": self.normalization.to_dict(),
            "class_names": list(self.class_names),
            "class_colors": list(self.class_colors),
            "tiling": {
                "tile": self.tiling.tile,
                "overlap": self.tiling.overlap,
                "batch_size": self.tiling.batch_size,
            },
            "pixel_size_nm": None if self.pixel_size_nm is None else float(self.pixel_size_nm),
            "input_mode": {"temporal_context": int(self.temporal_context),
                           "background_subtraction": str(self.background_subtraction)},
            "threshold": float(self.threshold),
            "provenance": _plain(self.provenance),
        }

    def summary(self) -> dict[str, Any]:
        """What ``cryoseg info`` and the napari dock show."""
        return {
            "name": self.name,
            "classes": dict(enumerate(self.class_names)),
            "architecture": self.config.to_dict(),
            "parameters": self.n_parameters,
            "normalization": self.normalization.to_dict(),
            "tile hint": {"tile": self.tiling.tile, "overlap": self.tiling.overlap},
            "pixel size (nm)": self.pixel_size_nm,
            "temporal context": self.temporal_context,
            "background subtraction": self.background_subtraction,
            **({"threshold": self.threshold} if self.config.n_classes == 2 else {}),
            "provenance": self.provenance,
        }


def _plain(value: Any) -> Any:
    """Deep-convert to primitives so the payload stays loadable with weights_only=True."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return float(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"provenance value {value!r} of type {type(value).__name__} is not storable")


def save_model(model: ModelFile, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` atomically (temp file + rename): a crash never leaves half a file.

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is False, or its folder is missing/read-only.
    """
    path = Path(path)
    payload = model.to_payload()
    check_savable(model, payload)  # never end a run with a file the loader refuses
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()), overwrite=overwrite)
    model.source_path = path
    return path


def check_savable(model: ModelFile, payload: dict[str, Any] | None = None) -> None:
    """Run the loader's own checks on ``model`` (field types and ranges, class names,
    tiling, pixel size, temporal mode, weights against config) before anything is written.

    Raises
    ------
    ModelFileError
        One line: which field a model file could not hold, and its value.
    """
    payload = model.to_payload() if payload is None else payload
    try:
        checked = _model_from_payload(payload, Path("model"))
        check_weights(checked.config, checked.state_dict, source="the model")
    except (KeyError, TypeError, ValueError, ModelFileError) as err:
        raise ModelFileError(f"the model cannot be saved as it is: {err}") from None


def _names_a_python_object(message: str) -> bool:
    """True when torch's safe loader stopped at a pickled global (class, function)."""
    return any(
        phrase in message
        for phrase in ("Unsupported global", "GLOBAL", "Unsupported class", "not an allowed global")
    )


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (a zip holding ``code/`` and ``constants.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception:  # noqa: BLE001 - not a (readable) zip: torch.load reports the damage
        return False
    return any(
        name.endswith("/constants.pkl") or name.split("/")[1:2] == ["code"] for name in names
    )


def read_payload(path: Path) -> dict[str, Any]:
    """The dict stored in a ``.pt`` file, read safely (``weights_only``), not yet checked.

    Raises
    ------
    ModelFileError
        Missing, folder, empty, TorchScript, pickled-code, corrupt or non-dict files.
    """
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; give the path of a .pt model file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"model file {path} is empty (0 bytes); it was not saved completely")
    if _is_torchscript(path):
        raise ModelFileError(
            f"refused to load {path}: it is a TorchScript archive, which carries code; "
            "napari-cryoseg does not load TorchScript. Save the weights with "
            "torch.save(model.state_dict(), path) and convert them with `cryoseg import-weights`"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _names_a_python_object(str(err)):
            # Random bytes also fail the safe unpickler; that is damage, not danger.
            raise ModelFileError(
                f"{path} is not a readable PyTorch file (corrupt or not a model file)"
            ) from None
        raise ModelFileError(
            f"refused to load {path}: it contains Python objects that could run code "
            f"({str(err).splitlines()[0][:160]}). Only napari-cryoseg model files and plain "
            "state_dicts are loaded; re-export the weights with torch.save(model.state_dict())"
        ) from None
    except Exception as err:  # noqa: BLE001 - damaged files fail in many ways inside torch
        raise ModelFileError(
            f"{path} is not a readable PyTorch file (corrupt or truncated?): "
            f"{str(err).splitlines()[0][:160]}"
        ) from None
    if not isinstance(payload, dict):
        raise ModelFileError(f"{path} holds a {type(payload).__name__}, not a model file")
    return payload


#: Former private name, kept for callers of earlier versions.
_read_payload = read_payload


def is_model_payload(payload: dict[str, Any]) -> bool:
    """True for our format; False for e.g. a plain state_dict."""
    return payload.get("format") == FORMAT_NAME


def load_model(path: str | os.PathLike) -> ModelFile:
    """Load a model file safely (no code runs) and validate it.

    Raises
    ------
    ModelFileError
        Missing, empty, corrupt, pickled-code, foreign (e.g. a bare state_dict: use
        ``cryoseg import-weights``) or newer-version files, each with a message that says
        what to do.
    """
    path = Path(path)
    payload = read_payload(path)
    if not is_model_payload(payload):
        hint = (
            " It looks like a plain state_dict: convert it with `cryoseg import-weights`."
            if payload and all(isinstance(v, torch.Tensor) for v in payload.values())
            else ""
        )
        raise ModelFileError(f"{path} is not a napari-cryoseg model file.{hint}")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{path} has no valid format_version; the file is damaged")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by a newer napari-cryoseg (format {version}, this version "
            f"reads up to {FORMAT_VERSION}); upgrade with `pip install -U napari-cryoseg`"
        )
    try:
        model = _model_from_payload(payload, path)
    except (KeyError, TypeError, ValueError) as err:  # InputError is a ValueError
        raise ModelFileError(f"{path} is damaged or incomplete: {err}") from None
    except ModelFileError as err:
        raise ModelFileError(f"{path} is damaged or was edited: {err}") from None
    # Fail now, not at the first segmentation, if weights and config disagree; this runs
    # before any network is allocated (a crafted config cannot ask for terabytes).
    check_weights(model.config, model.state_dict, source=str(path))
    return model


def _model_from_payload(payload: dict[str, Any], path: Path) -> ModelFile:
    """A :class:`ModelFile` from a loaded payload, every field checked for type and range."""
    if "config" not in payload or "state_dict" not in payload:
        missing = [key for key in ("config", "state_dict") if key not in payload]
        raise KeyError(f"no {' or '.join(missing)}")
    config = UNetConfig.from_dict(payload["config"])
    state_dict = payload["state_dict"]
    if not isinstance(state_dict, dict):
        raise ModelFileError(f"field state_dict is a {type(state_dict).__name__}, not a dict")
    n = config.n_classes
    context, background = file_checks.input_mode_fields(payload.get("input_mode"), config)
    pixel = payload.get("pixel_size_nm")
    provenance = payload.get("provenance", {})
    if not isinstance(provenance, dict):
        raise ModelFileError(f"field provenance is a {type(provenance).__name__}, not a dict")
    return ModelFile(
        config=config,
        state_dict=dict(state_dict),
        normalization=NormalizationConfig(
            **file_checks.normalization_fields(payload.get("normalization"))),
        class_names=file_checks.class_names_field(payload.get("class_names"), n),
        class_colors=file_checks.class_colors_field(payload.get("class_colors"), n),
        tiling=TilingConfig(**file_checks.tiling_fields(payload.get("tiling"))),
        pixel_size_nm=None if pixel is None else file_checks.number_field(
            pixel, "pixel_size_nm", low=0.0, low_open=True),
        temporal_context=context,
        background_subtraction=background,
        threshold=file_checks.number_field(payload.get("threshold", 0.5), "threshold",
                                           low=0.0, high=1.0, low_open=True, high_open=True),
        provenance=dict(provenance),
        source_path=path,
    )
