"""UNetConfig: the one dataclass that describes a network, shared by CLI, widget and file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from napari_cryoseg.core.errors import InputError

UPSAMPLING_MODES = ("transpose", "nearest", "bilinear")


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
        problems = []
        if self.in_channels < 1:
            problems.append(f"in_channels={self.in_channels} must be >= 1")
        if self.n_classes < 2:
            problems.append(f"n_classes={self.n_classes} must be >= 2 (background + one class)")
        if not 1 <= self.depth <= 6:
            problems.append(f"depth={self.depth} must be between 1 and 6")
        if self.base_channels < 1:
            problems.append(f"base_channels={self.base_channels} must be >= 1")
        if self.upsampling not in UPSAMPLING_MODES:
            problems.append(f"upsampling={self.upsampling!r} must be one of {UPSAMPLING_MODES}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must be in [0, 1)")
        if problems:
            raise InputError("invalid U-Net config: " + "; ".join(problems))

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
        """Build from a dict, rejecting unknown keys with a clear message."""
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
