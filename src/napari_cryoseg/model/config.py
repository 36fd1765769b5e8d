"""UNetConfig: the one dataclass that describes a network, shared by CLI, widget and file."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from napari_cryoseg.core.errors import InputError

UPSAMPLING_MODES = ("transpose", "nearest", "bilinear")

#: Upper bounds that keep every accepted config buildable. A model file is untrusted
#: input: a crafted ``base_channels`` could otherwise ask for terabytes before a single
#: weight is checked. The presets are far below (``thesis``: 31 M parameters).
MAX_IN_CHANNELS = 64
MAX_CLASSES = 1024
MAX_BASE_CHANNELS = 1024
MAX_PARAMETERS = 500_000_000  # 2 GB of float32 weights

_INT_FIELDS = ("in_channels", "n_classes", "depth", "base_channels")
_BOOL_FIELDS = ("batch_norm", "skip_connections")
#: State-dict entries that are statistics, not trained parameters.
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a 2D U-Net.

    Attributes
    ----------
    in_channels : int
        Input channels (1 for grayscale EM; 5 for temporal context t-2..t+2).
    n_classes : int
        Classes including background (label 0). ``n_classes == 2`` gives a single
        sigmoid output (foreground probability), more gives softmax over classes.
    depth : int
        Number of 2x down-samplings; tiles must be multiples of ``2**depth``.
    base_channels : int
        Channels of the first level, doubled at each level.
    batch_norm : bool
        BatchNorm after each 3x3 convolution.
    upsampling : str
        ``"transpose"`` (2x2 transposed conv, as the seed thesis), ``"nearest"`` or
        ``"bilinear"`` (upsample then 3x3 conv + BN + ReLU, as the public U_Net code).
    dropout : float
        Dropout2d probability at the bottleneck and in the decoder (0 disables;
        also enables MC-dropout uncertainty when > 0).
    skip_connections : bool
        Concatenate encoder features in the decoder (False = plain encoder-decoder,
        for ablations).
    """

    in_channels: int = 1
    n_classes: int = 2
    depth: int = 4
    base_channels: int = 16
    batch_norm: bool = True
    upsampling: str = "transpose"
    dropout: float = 0.0
    skip_connections: bool = True

    def __post_init__(self) -> None:
        problems = self._type_problems()
        if problems:  # ranges of wrongly typed values are meaningless
            raise InputError("invalid U-Net config: " + "; ".join(problems))
        if not 1 <= self.in_channels <= MAX_IN_CHANNELS:
            problems.append(f"in_channels={self.in_channels} must be between 1 and "
                            f"{MAX_IN_CHANNELS}")
        if not 2 <= self.n_classes <= MAX_CLASSES:
            problems.append(f"n_classes={self.n_classes} must be between 2 (background + one "
                            f"class) and {MAX_CLASSES}")
        if not 1 <= self.depth <= 6:
            problems.append(f"depth={self.depth} must be between 1 and 6")
        if not 1 <= self.base_channels <= MAX_BASE_CHANNELS:
            problems.append(f"base_channels={self.base_channels} must be between 1 and "
                            f"{MAX_BASE_CHANNELS}")
        if self.upsampling not in UPSAMPLING_MODES:
            problems.append(f"upsampling={self.upsampling!r} must be one of {UPSAMPLING_MODES}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must be in [0, 1)")
        if not problems and self.parameter_count() > MAX_PARAMETERS:
            problems.append(
                f"{self.parameter_count():,} parameters (base_channels={self.base_channels}, "
                f"depth={self.depth}) is more than the {MAX_PARAMETERS:,} allowed"
            )
        if problems:
            raise InputError("invalid U-Net config: " + "; ".join(problems))

    def _type_problems(self) -> list[str]:
        """Check (and normalise numpy scalars to) the field types; a list of problems."""
        problems = []
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                problems.append(f"{name}={value!r} must be a whole number, "
                                f"not {type(value).__name__}")
            else:
                object.__setattr__(self, name, int(value))
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool) and type(value).__name__ != "bool_":
                problems.append(f"{name}={value!r} must be true or false, "
                                f"not {type(value).__name__}")
            else:
                object.__setattr__(self, name, bool(value))
        if not isinstance(self.upsampling, str):
            problems.append(f"upsampling={self.upsampling!r} must be text, "
                            f"not {type(self.upsampling).__name__}")
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not (
                math.isfinite(dropout)):
            problems.append(f"dropout={dropout!r} must be a finite number")
        else:
            object.__setattr__(self, "dropout", float(dropout))
        return problems

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every entry of the :class:`~napari_cryoseg.model.unet.UNet`
        state_dict for this config.

        Derived from the config alone (nothing is allocated), so a model file's weights
        are checked against its config before any network is built;
        ``tests/model/test_checkpoint.py`` checks it against the real network.
        BatchNorm's ``num_batches_tracked`` is the only integer entry (shape ``()``).
        """
        shapes: dict[str, tuple[int, ...]] = {}

        def conv(prefix: str, cout: int, cin: int, k: int) -> None:
            shapes[f"{prefix}.weight"] = (cout, cin, k, k)
            shapes[f"{prefix}.bias"] = (cout,)

        def norm(prefix: str, channels: int) -> None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}.{name}"] = (channels,)
            shapes[f"{prefix}.num_batches_tracked"] = ()

        def block(prefix: str, cin: int, cout: int) -> None:  # ConvBlock
            index = 0
            for channels_in in (cin, cout):
                conv(f"{prefix}.conv.{index}", cout, channels_in, 3)
                index += 1
                if self.batch_norm:
                    norm(f"{prefix}.conv.{index}", cout)
                    index += 1
                index += 1  # ReLU

        widths = [self.base_channels * 2**level for level in range(self.depth + 1)]
        channels = self.in_channels
        for level, width in enumerate(widths):
            block(f"encoders.{level}", channels, width)
            channels = width
        for j, width in enumerate(reversed(widths[:-1])):  # deepest first
            if self.upsampling == "transpose":  # ConvTranspose2d weight: (in, out, k, k)
                shapes[f"ups.{j}.up.0.weight"] = (2 * width, width, 2, 2)
                shapes[f"ups.{j}.up.0.bias"] = (width,)
            else:  # Upsample, 3x3 conv (+ BN), ReLU
                conv(f"ups.{j}.up.1", width, 2 * width, 3)
                if self.batch_norm:
                    norm(f"ups.{j}.up.2", width)
            block(f"decoders.{j}", 2 * width if self.skip_connections else width, width)
        conv("head", self.out_channels, widths[0], 1)
        return shapes

    def parameter_count(self) -> int:
        """Trainable parameters of the network (BatchNorm running statistics excluded)."""
        return sum(
            math.prod(shape) for name, shape in self.state_shapes().items()
            if not name.endswith(_BUFFERS)
        )

    @property
    def out_channels(self) -> int:
        """Network output channels: 1 (sigmoid) for binary, else ``n_classes``."""
        return 1 if self.n_classes == 2 else self.n_classes

    @property
    def stride(self) -> int:
        """Total down-sampling factor; image tiles must be multiples of it."""
        return 2**self.depth

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (primitives only) for model files."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Build from a dict, rejecting unknown keys and wrong types with a clear message."""
        if not isinstance(data, dict):
            raise InputError(f"U-Net config is a {type(data).__name__}, not a dict of fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown U-Net config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def with_(self, **changes: Any) -> UNetConfig:
        """Copy with some fields changed (validated)."""
        return replace(self, **changes)


#: Named architectures. ``thesis`` is the seed cryo-SEM model (~31 M parameters).
PRESETS: dict[str, UNetConfig] = {
    "thesis": UNetConfig(base_channels=64, depth=4, batch_norm=True, upsampling="transpose"),
    "medium": UNetConfig(base_channels=32, depth=4),
    "small": UNetConfig(base_channels=16, depth=4),
    "tiny": UNetConfig(base_channels=8, depth=3),
}


def preset(name: str, **changes: Any) -> UNetConfig:
    """The preset ``name`` with optional field changes (e.g. ``n_classes=4``)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].with_(**changes) if changes else PRESETS[name]
