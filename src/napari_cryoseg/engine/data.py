"""Training data: class mapping, image/mask pairing and a seeded random-patch sampler.

Everything here works on numpy arrays already in memory (file reading belongs to the
``io`` layer and the CLI). Patches are drawn in-process from a seeded
:class:`numpy.random.Generator` (no DataLoader workers: the target machines have few
cores and the augmentations are cheap next to a U-Net step), so a run is reproducible.
The one exception is :func:`elastic_deform`, which resamples whole batches in torch on the
training device (a per-pixel warp is costly in numpy on few cores but nearly free on a GPU).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.normalization import NormalizationConfig, normalize, percentile_range
from napari_cryoseg.core.temporal import stack_context

#: Target value of pixels that do not count in the loss (outside the ``valid`` mask).
IGNORE_INDEX = -1

# Suffixes stripped before pairing by stem, longest first ("a.ome.tif" pairs with "a.tif").
_STEM_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".mrcs", ".mrc", ".map", ".st")


# --------------------------------------------------------------------------- classes


@dataclass(frozen=True)
class ClassMapping:
    """Which mask values become which model classes.

    Class 0 is background; class ``i`` (1-based) is mask value ``values[i - 1]``. Mask
    values not listed become background.

    Attributes
    ----------
    values : tuple of int
        Mask values of the foreground classes, in class order.
    names : tuple of str
        Class names including ``"background"`` first (``len(values) + 1`` names).
    """

    values: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise InputError("no foreground class given; pass e.g. --classes 1 or --classes 1,2")
        if len(set(self.values)) != len(self.values):
            raise InputError(f"class values {list(self.values)} contain duplicates")
        if any(v < 0 for v in self.values):
            raise InputError(f"class values {list(self.values)} must be non-negative mask values")
        if len(self.names) != len(self.values) + 1:
            raise InputError(
                f"{len(self.names) - 1} class names for {len(self.values)} classes; give one "
                "name per class value (background is added automatically)"
            )

    @classmethod
    def parse(
        cls, classes: str | Sequence[int], names: str | Sequence[str] | None = None
    ) -> ClassMapping:
        """Build from ``--classes`` (``"3"`` or ``"1,2,3,4"``) and ``--class-names``.

        ``"3"`` gives a binary model of ``mask == 3``; ``"1,2,3,4"`` gives 4 classes plus
        background where mask value ``v_i`` becomes class ``i``.
        """
        if isinstance(classes, str):
            try:
                values = tuple(int(v) for v in classes.replace(" ", "").split(",") if v)
            except ValueError:
                raise InputError(
                    f"--classes {classes!r} must be comma-separated mask values, e.g. 1,2,3"
                ) from None
        else:
            values = tuple(int(v) for v in classes)
        if names is None:
            fg_names: tuple[str, ...] = tuple(f"class {v}" for v in values)
        elif isinstance(names, str):
            fg_names = tuple(n.strip() for n in names.split(","))
        else:
            fg_names = tuple(str(n) for n in names)
        if fg_names and fg_names[0] == "background" and len(fg_names) == len(values) + 1:
            fg_names = fg_names[1:]  # tolerate names given with background
        return cls(values, ("background", *fg_names))

    @classmethod
    def from_masks(
        cls, masks: Sequence[np.ndarray], names: str | Sequence[str] | None = None
    ) -> ClassMapping:
        """All non-zero values present in ``masks`` (sorted), e.g. ``(1,)`` -> binary."""
        present: set[int] = set()
        for mask in masks:
            present.update(int(v) for v in np.unique(mask))
        values = sorted(v for v in present if v != 0)
        if not values:
            raise InputError(
                "the masks contain only background (0); label some pixels with values >= 1"
            )
        if len(values) > 32:
            raise InputError(
                f"the masks contain {len(values)} distinct values; are they instance labels? "
                "pass the semantic class values with --classes"
            )
        return cls.parse(values, names)

    @property
    def n_classes(self) -> int:
        """Classes including background."""
        return len(self.values) + 1

    def apply(self, mask: np.ndarray) -> np.ndarray:
        """Mask values -> class indices (uint8); unlisted values -> 0."""
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            mask = mask.astype(np.uint8)
        if not np.issubdtype(mask.dtype, np.integer):
            raise InputError(f"mask has {mask.dtype} values; masks must hold integer labels")
        out = np.zeros(mask.shape, dtype=np.uint8)
        for index, value in enumerate(self.values, start=1):
            out[mask == value] = index
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for model provenance."""
        return {"values": list(self.values), "names": list(self.names)}


# --------------------------------------------------------------------------- pairing


def _pair_stem(path: Path) -> str:
    name = path.name
    lower = name.lower()
    for suffix in _STEM_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def pair_by_stem(
    image_paths: Sequence[str | os.PathLike[str]], mask_paths: Sequence[str | os.PathLike[str]]
) -> list[tuple[Path, Path]]:
    """Pair images with masks of the same file stem (``a.tif`` with ``a.tif``/``a.tiff``).

    Returns
    -------
    list of (image_path, mask_path)
        In the order of ``image_paths``.

    Raises
    ------
    InputError
        An image has no mask, a mask has no image, or a stem occurs twice.
    """
    images = [Path(p) for p in image_paths]
    masks: dict[str, Path] = {}
    for path in (Path(p) for p in mask_paths):
        stem = _pair_stem(path)
        if stem in masks:
            raise InputError(f"two masks share the name {stem!r}: {masks[stem].name}, {path.name}")
        masks[stem] = path
    pairs, missing, seen = [], [], set()
    for image in images:
        stem = _pair_stem(image)
        if stem in seen:
            raise InputError(f"two images share the name {stem!r}; rename one of them")
        seen.add(stem)
        if stem in masks:
            pairs.append((image, masks[stem]))
        else:
            missing.append(image.name)
    if missing:
        where = f" in {masks[next(iter(masks))].parent}" if masks else ""
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputError(
            f"no mask{where} with the same name as image(s) {', '.join(missing[:3])}{more}; "
            "masks are paired with images by file name"
        )
    orphans = sorted(p.name for s, p in masks.items() if s not in seen)
    if orphans:
        more = f" and {len(orphans) - 3} more" if len(orphans) > 3 else ""
        raise InputError(
            f"mask(s) {', '.join(orphans[:3])}{more} have no image with the same name; "
            "masks are paired with images by file name"
        )
    return pairs


def check_pair(image: Any, mask: Any, name: str = "image") -> None:
    """Raise :class:`InputError` unless ``image`` and ``mask`` are 2D of the same shape."""
    if tuple(image.shape) != tuple(mask.shape):
        raise InputError(
            f"{name}: image shape {tuple(image.shape)} differs from mask shape "
            f"{tuple(mask.shape)}; each mask must have the size of its image"
        )
    if len(image.shape) != 2:
        raise InputError(
            f"{name}: shape {tuple(image.shape)} is not a 2D image; training uses 2D images "
            "(split stacks into single images)"
        )


# --------------------------------------------------------------------------- weights


def class_pixel_counts(masks: Sequence[np.ndarray], n_classes: int) -> np.ndarray:
    """Pixels per class over all ``masks`` (class indices; ``IGNORE_INDEX`` not counted)."""
    counts = np.zeros(n_classes, dtype=np.int64)
    for mask in masks:
        values = np.asarray(mask).ravel()
        values = values[(values >= 0) & (values < n_classes)]
        counts += np.bincount(values.astype(np.int64), minlength=n_classes)[:n_classes]
    return counts


def median_frequency_weights(masks: Sequence[np.ndarray], n_classes: int) -> np.ndarray:
    """Median-frequency balancing weights (Eigen & Fergus 2015).

    ``freq_c`` = pixels of class ``c`` / pixels of the images in which ``c`` occurs;
    ``weight_c = median(freq) / freq_c``. Classes that never occur get weight 1.

    Returns
    -------
    numpy.ndarray
        float32 of shape (n_classes,).
    """
    class_px = np.zeros(n_classes, dtype=np.float64)
    image_px = np.zeros(n_classes, dtype=np.float64)
    for mask in masks:
        counts = class_pixel_counts([mask], n_classes)
        present = counts > 0
        class_px += counts
        image_px[present] += counts.sum()
    present = class_px > 0
    weights = np.ones(n_classes, dtype=np.float32)
    if present.any():
        freq = class_px[present] / image_px[present]
        weights[present] = (np.median(freq) / freq).astype(np.float32)
    return weights


# --------------------------------------------------------------------------- sampling


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
        training device by :func:`elastic_deform` (see :func:`~napari_cryoseg.engine.train.fit`),
        not by :class:`PatchSampler`.
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


def normalize_image(image: np.ndarray, normalization: NormalizationConfig) -> np.ndarray:
    """Per-image percentile normalisation, exactly as inference does it."""
    value_range = percentile_range(image, normalization)
    return normalize(np.asarray(image), value_range, normalization.clip)


def _pad_to(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    if array.ndim == 3:  # (C, Y, X) multi-channel (temporal context): pad each channel
        return np.stack([_pad_to(channel, size, mode) for channel in array])
    pad_y, pad_x = max(size - array.shape[0], 0), max(size - array.shape[1], 0)
    if not (pad_y or pad_x):
        return array
    # Reflect needs at least 2 pixels and can only mirror up to length - 1 per pass.
    while pad_y or pad_x:
        py, px = min(pad_y, array.shape[0] - 1), min(pad_x, array.shape[1] - 1)
        mode_now = mode if min(array.shape) > 1 else "edge"
        array = np.pad(array, ((0, py), (0, px)), mode=mode_now)
        pad_y, pad_x = pad_y - py, pad_x - px
        if py == 0 and px == 0:  # 1-pixel axis: edge pad the rest at once
            array = np.pad(array, ((0, pad_y), (0, pad_x)), mode="edge")
            break
    return array


class PatchSampler:
    """Random, augmented training patches from images and class-index masks.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        2D images of any numeric dtype (normalised here, per image).
    masks : sequence of numpy.ndarray
        Class-index masks (0..n_classes-1) of the same shapes (see :meth:`ClassMapping.apply`).
    n_classes : int
        Classes including background.
    patch : int
        Patch edge in pixels (a multiple of the model stride). Smaller images are
        reflect-padded.
    normalization : NormalizationConfig
        The model file's normalisation.
    augment : AugmentConfig
        Augmentations. ``augment.elastic`` is not applied here but by the training loop on
        the device (:func:`elastic_deform`).
    valid_masks : sequence of numpy.ndarray, optional
        Per-pixel bool masks: only True pixels count in the loss (others get
        :data:`IGNORE_INDEX`); crops are then placed to contain a reviewed pixel.
    oversample_rare : float
        Probability that a patch is centred on a random pixel of the rarest class present.
    seed : int or numpy.random.Generator
        Seed of the sampler's random generator.
    temporal_context : int or None
        None (default): 2D images. An int ``k`` (0 included): ``images`` and ``masks`` are
        ``(T, Y, X)`` time series; each frame ``t`` becomes one training image whose
        ``2k+1`` channels are the frames ``t-k..t+k`` (edges repeated), normalised over
        the whole series as inference does; its target is ``masks[t]``.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        n_classes: int,
        patch: int = 256,
        normalization: NormalizationConfig | None = None,
        augment: AugmentConfig | None = None,
        valid_masks: Sequence[np.ndarray] | None = None,
        oversample_rare: float = 0.0,
        seed: int | np.random.Generator = 0,
        temporal_context: int | None = None,
    ) -> None:
        if temporal_context is not None:
            images, masks, valid_masks = _series_to_frames(
                images, masks, valid_masks, temporal_context, normalization)
            normalization = None  # already normalised per series
        if not images:
            raise InputError("no training images; give at least one image with a mask")
        if len(images) != len(masks):
            raise InputError(f"{len(images)} images but {len(masks)} masks")
        if valid_masks is not None and len(valid_masks) != len(images):
            raise InputError(f"{len(images)} images but {len(valid_masks)} valid masks")
        if not 0.0 <= oversample_rare <= 1.0:
            raise InputError(f"oversample_rare {oversample_rare} must be between 0 and 1")
        self.n_classes = n_classes
        self.patch = int(patch)
        self.augment = augment or AugmentConfig()
        self.oversample_rare = float(oversample_rare)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        if temporal_context is None:
            normalization = normalization or NormalizationConfig()
        self.images: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        for i, (image, mask) in enumerate(zip(images, masks)):
            plane = image[0] if temporal_context is not None else image  # (C, Y, X) frames
            check_pair(plane, mask, f"image {i}")
            target = np.asarray(mask).astype(np.int16)
            if target.max(initial=0) >= n_classes:
                raise InputError(
                    f"mask {i} has class {int(target.max())} but the model has {n_classes} classes"
                )
            if valid_masks is not None:
                valid = np.asarray(valid_masks[i]).astype(bool)
                check_pair(plane, valid, f"valid mask {i}")
                target[~valid] = IGNORE_INDEX
            normalized = (  # series frames were normalised per series already
                np.asarray(image, dtype=np.float32) if temporal_context is not None
                else normalize_image(image, normalization)
            )
            self.images.append(_pad_to(normalized, self.patch, "reflect"))
            self.targets.append(_pad_to(target, self.patch, "reflect"))
        # Whole-image sampling weighted by area (each pixel equally likely).
        areas = np.array([t.size for t in self.targets], dtype=np.float64)
        self._image_p = areas / areas.sum()
        # With sparse corrections (fine-tuning), random crops would mostly hold ignored
        # pixels: crops are then placed so that they contain a random reviewed pixel.
        self._valid_coords: list[np.ndarray] = []
        if valid_masks is not None:
            for target in self.targets:
                coords = np.argwhere(target != IGNORE_INDEX)
                if len(coords) > 50_000:
                    coords = coords[self.rng.choice(len(coords), 50_000, replace=False)]
                self._valid_coords.append(coords)
            sizes = np.array([len(c) for c in self._valid_coords], dtype=np.float64)
            if sizes.sum() == 0:
                self._valid_coords = []
            else:
                self._valid_p = sizes / sizes.sum()
        self.counts = class_pixel_counts(self.targets, n_classes)
        self.rare_class = self._rarest_class()
        self._rare_coords: list[np.ndarray] = []
        if self.rare_class is not None and self.oversample_rare > 0:
            for target in self.targets:
                coords = np.argwhere(target == self.rare_class)
                if len(coords) > 50_000:  # cap memory; a subsample is just as good a centre
                    coords = coords[self.rng.choice(len(coords), 50_000, replace=False)]
                self._rare_coords.append(coords)
            sizes = np.array([len(c) for c in self._rare_coords], dtype=np.float64)
            self._rare_p = sizes / sizes.sum()

    def _rarest_class(self) -> int | None:
        fg = [(int(self.counts[c]), c) for c in range(1, self.n_classes) if self.counts[c] > 0]
        return min(fg)[1] if fg else None

    def _crop(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.patch
        rare = (
            self.rare_class is not None
            and self.oversample_rare > 0
            and self.rng.random() < self.oversample_rare
        )
        if rare:
            index = int(self.rng.choice(len(self.images), p=self._rare_p))
            coords = self._rare_coords[index]
            cy, cx = coords[self.rng.integers(len(coords))]
            h, w = self.images[index].shape[-2:]
            y = int(np.clip(cy - p // 2, 0, h - p))
            x = int(np.clip(cx - p // 2, 0, w - p))
        elif self._valid_coords:
            index = int(self.rng.choice(len(self.images), p=self._valid_p))
            coords = self._valid_coords[index]
            cy, cx = coords[self.rng.integers(len(coords))]
            h, w = self.images[index].shape[-2:]
            y = int(np.clip(cy - self.rng.integers(p), 0, h - p))
            x = int(np.clip(cx - self.rng.integers(p), 0, w - p))
        else:
            index = int(self.rng.choice(len(self.images), p=self._image_p))
            h, w = self.images[index].shape[-2:]
            y = int(self.rng.integers(0, h - p + 1))
            x = int(self.rng.integers(0, w - p + 1))
        return (
            self.images[index][..., y : y + p, x : x + p],
            self.targets[index][y : y + p, x : x + p],
        )

    def _augment(self, image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        aug, rng = self.augment, self.rng
        if aug.flips:
            if rng.random() < 0.5:
                image, target = image[..., ::-1, :], target[::-1]
            if rng.random() < 0.5:
                image, target = image[..., :, ::-1], target[:, ::-1]
        if aug.rotate90:
            k = int(rng.integers(4))
            image, target = np.rot90(image, k, axes=(-2, -1)), np.rot90(target, k)
        image = np.array(image, dtype=np.float32)  # own copy before in-place changes
        if aug.gamma > 0:
            gamma = float(np.exp(rng.uniform(-aug.gamma, aug.gamma)))
            # Gamma acts on the [0, 1] core; the clipped outlier tails shift along with it.
            core = np.clip(image, 0.0, 1.0)
            image += core**gamma - core
        if aug.contrast > 0:
            factor = float(rng.uniform(1 - aug.contrast, 1 + aug.contrast))
            image = (image - 0.5) * factor + 0.5
        if aug.brightness > 0:
            image += float(rng.uniform(-aug.brightness, aug.brightness))
        if aug.noise > 0:
            sigma = float(rng.uniform(0, aug.noise))
            image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
        return image, np.ascontiguousarray(target)

    def sample_numpy(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch as numpy: images (B, C, P, P) float32, targets (B, P, P) int64.

        C is 1 for 2D images and ``2k+1`` with temporal context ``k``.
        """
        xs, ys = [], []
        for _ in range(batch_size):
            image, target = self._augment(*self._crop())
            xs.append(image)
            ys.append(target)
        batch = np.stack(xs)
        return (batch if batch.ndim == 4 else batch[:, None]), np.stack(ys).astype(np.int64)

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as tensors on ``device``: (B, 1, P, P) float32 and (B, P, P) int64."""
        x, y = self.sample_numpy(batch_size)
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    @property
    def patches_per_epoch(self) -> int:
        """Patches that tile all images once (what one "epoch" means here)."""
        return int(sum(max(1, round(t.size / self.patch**2)) for t in self.targets))


def check_series_pair(series: Any, mask: Any, name: str = "series") -> None:
    """Raise :class:`InputError` unless ``series`` and ``mask`` are (T, Y, X) of one shape."""
    if tuple(series.shape) != tuple(mask.shape):
        raise InputError(
            f"{name}: series shape {tuple(series.shape)} differs from mask shape "
            f"{tuple(mask.shape)}; give one mask frame per image frame"
        )
    if len(series.shape) != 3:
        raise InputError(
            f"{name}: shape {tuple(series.shape)} is not a (T, Y, X) time series; temporal "
            "training uses time-lapse stacks with a mask for every frame"
        )


def _series_to_frames(
    series_list: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    valid_masks: Sequence[np.ndarray] | None,
    context: int,
    normalization: NormalizationConfig | None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None]:
    """(T, Y, X) series -> per-frame (2k+1, Y, X) normalised inputs and 2D masks."""
    if context < 0:
        raise InputError(f"temporal context {context} must be >= 0")
    if len(series_list) != len(masks):
        raise InputError(f"{len(series_list)} series but {len(masks)} masks")
    normalization = normalization or NormalizationConfig()
    frames, targets, valids = [], [], []
    for i, (series, mask) in enumerate(zip(series_list, masks)):
        check_series_pair(series, mask, f"series {i}")
        normalised = normalize_image(np.asarray(series), normalization)
        for t in range(normalised.shape[0]):
            frames.append(stack_context(normalised, t, context))
            targets.append(np.asarray(mask[t]))
            if valid_masks is not None:
                valids.append(np.asarray(valid_masks[i][t]))
    return frames, targets, (valids if valid_masks is not None else None)
