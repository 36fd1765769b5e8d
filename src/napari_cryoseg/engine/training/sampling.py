"""Training data in memory: pair checks, class weights and a seeded random-patch sampler.

Everything here works on numpy arrays already in memory (file reading and pairing belong
to the ``io`` layer and the CLI). Patches are drawn in-process from a seeded
:class:`numpy.random.Generator` (no DataLoader workers: the target machines have few
cores and the augmentations are cheap next to a U-Net step), so a run is reproducible.
Elastic deformation is the exception: it resamples whole batches in torch on the training
device (:func:`napari_cryoseg.engine.training.augment.elastic_deform`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.normalization import NormalizationConfig, normalize, percentile_range
from napari_cryoseg.core.temporal import stack_context
from napari_cryoseg.engine.classes import check_pair
from napari_cryoseg.engine.training.augment import AugmentConfig

#: Target value of pixels that do not count in the loss (outside the ``valid`` mask).
IGNORE_INDEX = -1


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
    focus_masks : sequence of numpy.ndarray, optional
        Per-image bool masks of pixels to learn most from (fine-tuning: where the parent
        model was wrong); with probability ``focus`` a patch contains a random one.
    focus : float
        Probability of placing a patch around a ``focus_masks`` pixel.
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
        focus_masks: Sequence[np.ndarray] | None = None,
        focus: float = 0.0,
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
            target = np.asarray(mask).astype(np.int32)  # any class count, and IGNORE_INDEX
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
            self._valid_coords, self._valid_p = self._pixel_pool(
                [t != IGNORE_INDEX for t in self.targets])
        self.counts = class_pixel_counts(self.targets, n_classes)
        self.rare_class = self._rarest_class()
        self._rare_coords: list[np.ndarray] = []
        if self.rare_class is not None and self.oversample_rare > 0:
            self._rare_coords, self._rare_p = self._pixel_pool(
                [t == self.rare_class for t in self.targets])
        if not 0.0 <= focus <= 1.0:
            raise InputError(f"focus {focus} must be between 0 and 1")
        self.focus = float(focus) if focus_masks is not None else 0.0
        self._focus_coords: list[np.ndarray] = []
        if self.focus > 0:
            if len(focus_masks) != len(self.targets):
                raise InputError(f"{len(self.targets)} images but {len(focus_masks)} focus masks")
            pools = []
            for target, mask in zip(self.targets, focus_masks):
                padded = _pad_to(np.asarray(mask, dtype=bool), self.patch, "constant")
                pools.append(padded & (target != IGNORE_INDEX))
            self._focus_coords, self._focus_p = self._pixel_pool(pools)

    def _pixel_pool(
        self, masks: Sequence[np.ndarray], cap: int = 50_000
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Coordinates of the True pixels per image (a random subsample of at most
        ``cap``: just as good a set of centres, at bounded memory) and the probability of
        drawing each image; empty lists when no pixel is True."""
        pool = []
        for mask in masks:
            coords = np.argwhere(mask)
            if len(coords) > cap:
                coords = coords[self.rng.choice(len(coords), cap, replace=False)]
            pool.append(coords)
        sizes = np.array([len(c) for c in pool], dtype=np.float64)
        if sizes.sum() == 0:
            return [], np.zeros(0)
        return pool, sizes / sizes.sum()

    def _rarest_class(self) -> int | None:
        fg = [(int(self.counts[c]), c) for c in range(1, self.n_classes) if self.counts[c] > 0]
        return min(fg)[1] if fg else None

    def _crop(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.patch
        rare = (
            bool(self._rare_coords)
            and self.oversample_rare > 0
            and self.rng.random() < self.oversample_rare
        )
        if not rare and self._focus_coords and self.rng.random() < self.focus:
            index = int(self.rng.choice(len(self.images), p=self._focus_p))
            coords = self._focus_coords[index]
            cy, cx = coords[self.rng.integers(len(coords))]
            h, w = self.images[index].shape[-2:]
            y = int(np.clip(cy - self.rng.integers(p), 0, h - p))
            x = int(np.clip(cx - self.rng.integers(p), 0, w - p))
        elif rare:
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
