"""Training-patch augmentation settings and the on-device elastic deformation."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from napari_cryoseg.core.errors import InputError


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentations applied to training patches (each switchable).

    Attributes
    ----------
    flips : bool
        Random horizontal / vertical flips.
    rotate90 : bool
        Random multiples of 90° (EM has no preferred orientation).
    brightness : float
        Maximum additive shift of the normalised intensity (0 disables).
    contrast : float
        Maximum relative contrast change, factor in ``[1 - c, 1 + c]`` (0 disables).
    gamma : float
        Maximum log-gamma change, gamma in ``[exp(-g), exp(g)]`` (0 disables).
    noise : float
        Maximum standard deviation of added Gaussian noise (0 disables).
    elastic : float
        Elastic deformation: standard deviation, in pixels, of the random displacements
        at the control points of a smooth displacement field (0 disables). Applied on the
        training device by :func:`elastic_deform` (see
        :func:`~napari_cryoseg.engine.training.fitting.fit`),
        not by :class:`~napari_cryoseg.engine.training.sampling.PatchSampler`.
    elastic_spacing : int
        Distance in pixels between the control points of the elastic displacement field;
        larger is smoother (a 256-pixel patch gets a 5 x 5 grid at 64).
    """

    flips: bool = True
    rotate90: bool = True
    brightness: float = 0.1
    contrast: float = 0.2
    gamma: float = 0.2
    noise: float = 0.03
    elastic: float = 0.0
    elastic_spacing: int = 64

    def __post_init__(self) -> None:
        if not self.elastic >= 0:  # also rejects NaN
            raise InputError(f"elastic deformation {self.elastic} must be >= 0 pixels")
        if self.elastic_spacing < 1:
            raise InputError(f"elastic spacing {self.elastic_spacing} must be >= 1 pixel")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (evaluation-like patches)."""
        return cls(flips=False, rotate90=False, brightness=0.0, contrast=0.0, gamma=0.0,
                   noise=0.0, elastic=0.0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Inverse of :func:`dataclasses.asdict` (e.g. a stored recipe's ``"augment"``).

        Fields missing from ``data`` take their defaults, so recipes written before a
        field existed (e.g. ``elastic``) still load; unknown keys are ignored.
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def elastic_deform(
    images: torch.Tensor,
    targets: torch.Tensor | None,
    magnitude: float,
    spacing: int = 64,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Warp a batch of patches and their targets by one smooth random displacement field.

    As in the U-Net paper (Ronneberger et al. 2015): Gaussian displacement vectors on a
    coarse grid of control points, interpolated bicubically to every pixel. Runs in torch
    on the tensors' device, so it costs next to nothing beside a training step on a GPU.

    Parameters
    ----------
    images : torch.Tensor
        (B, C, H, W) floating-point images; resampled bilinearly.
    targets : torch.Tensor or None
        (B, H, W) integer class indices (``IGNORE_INDEX`` included); resampled with
        nearest neighbour through the same field, so they only take values they held.
    magnitude : float
        Standard deviation of the control-point displacements in pixels; ``<= 0`` returns
        the inputs themselves (untouched).
    spacing : int
        Control-point spacing in pixels (``round(size / spacing) + 1`` points per axis,
        at least 2).
    generator : torch.Generator, optional
        Source of the random field (CPU or the images' device); seed it for reproducible
        runs. The field is drawn on the generator's device and moved to the images'.

    Returns
    -------
    (images, targets)
        Warped copies (same shapes and dtypes).
    """
    if magnitude <= 0:
        return images, targets
    batch, _, height, width = images.shape
    device = images.device
    grid_h = max(2, round(height / spacing) + 1)
    grid_w = max(2, round(width / spacing) + 1)
    draw_on = generator.device if generator is not None else torch.device("cpu")
    coarse = torch.randn((batch, 2, grid_h, grid_w), generator=generator, device=draw_on)
    field = F.interpolate((coarse * magnitude).to(device), size=(height, width),
                          mode="bicubic", align_corners=True)
    # Pixels -> grid_sample's [-1, 1] units (align_corners=False: one pixel is 2 / size);
    # channel 0 moves x, channel 1 moves y, as the last axis of a sampling grid.
    scale = torch.tensor([2.0 / width, 2.0 / height], device=device).view(1, 2, 1, 1)
    identity = F.affine_grid(
        torch.eye(2, 3, device=device).expand(batch, 2, 3), [batch, 1, height, width],
        align_corners=False)
    grid = identity + (field * scale).permute(0, 2, 3, 1)
    # Reflection at the borders: displaced border pixels sample mirrored image content
    # instead of an invented constant (zeros would be fake background in both the image
    # and the target).
    warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection",
                           align_corners=False).to(images.dtype)
    if targets is None:
        return warped, None
    # Nearest neighbour on the class indices as floats (exact for small integers, -1
    # included): a target pixel takes the class of the source pixel its image content
    # came from, never an interpolated in-between class.
    warped_targets = F.grid_sample(targets[:, None].float(), grid, mode="nearest",
                                   padding_mode="reflection", align_corners=False)
    return warped, warped_targets[:, 0].round().to(targets.dtype)
