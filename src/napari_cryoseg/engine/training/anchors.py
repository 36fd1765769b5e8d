"""Keep what the user did not correct: the parent's own labels as training targets there.

Corrections cover part of one or two images and are often one kind of error (false
positives erased in one corner). Trained on them alone, a network learns "predict less"
(or "more") everywhere, not "predict less on what the user erased". Self-distillation
(learning without forgetting, Li & Hoiem 2016) counters that: a share of each batch
comes from pixels nobody corrected, with the parent's labels as targets, so the child
moves where the corrections are and stays where they are not.

Those pixels are the change check's (:class:`~napari_cryoseg.engine.training.change_check.CheckSet`:
the user's other open images and unreviewed parts of corrected images, away from the
edits), whose parent labels are already computed. They are split into a checkerboard of
blocks: training sees one colour, the check the other, so the check still looks at
pixels the child was not taught to copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from napari_cryoseg.engine.training.change_check import CheckSet
from napari_cryoseg.engine.training.sampling import PatchSampler

__all__ = ["ANCHOR_BLOCK", "AnchorSet", "MixedSampler", "anchor_sampler", "checkerboard",
           "describe", "split_anchors"]

#: Edge of the checkerboard blocks that split anchor pixels from checked pixels: about
#: a patch, so an anchor patch mostly holds anchor pixels.
ANCHOR_BLOCK = 128


def checkerboard(shape: tuple[int, ...], block: int, parity: int) -> np.ndarray:
    """bool mask of the blocks of ``block`` pixels whose (row + column) % 2 == parity."""
    h, w = shape[-2:]
    rows = (np.arange(h) // block)[:, None]
    cols = (np.arange(w) // block)[None, :]
    return ((rows + cols) % 2) == parity


@dataclass
class AnchorSet:
    """Images, the parent's labels and the pixels of them to train on."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    masks: list[np.ndarray]

    @property
    def pixels(self) -> int:
        """Anchor pixels in all images."""
        return int(sum(m.sum() for m in self.masks))


def split_anchors(check: CheckSet, block: int = ANCHOR_BLOCK) -> AnchorSet:
    """Take one colour of a checkerboard of ``check``'s pixels as anchors (where the
    parent is confident, when ``check.confident`` says so).

    ``check.masks`` is narrowed in place to the other colour, so the check compares the
    child with its parent on pixels it did not train on.
    """
    images, labels, masks = [], [], []
    for i, (image, label) in enumerate(zip(check.images, check.parent_labels)):
        base = check.masks[i]
        shape = np.shape(label)
        anchor = checkerboard(shape, block, 0)
        kept = ~anchor
        if base is not None:
            anchor = anchor & base
            kept = kept & base
        check.masks[i] = kept
        if check.confident:
            # Only where the parent is sure: where it hesitates, the corrections may be
            # the only evidence, and a copied guess would fight them.
            anchor = anchor & check.confident[i]
        if anchor.any():
            images.append(np.asarray(image))
            labels.append(np.asarray(label))
            masks.append(anchor)
    return AnchorSet(images, labels, masks)


class MixedSampler:
    """Batches from the corrections with a share of patches from anchor pixels.

    Quacks like :class:`PatchSampler` for the training loop (``sample``, ``augment``,
    ``rng``); augmentation and random draws come from the corrections'
    sampler, so a run stays reproducible from its seed.
    """

    def __init__(self, main: PatchSampler, anchors: PatchSampler, share: float) -> None:
        if not 0.0 <= share < 1.0:
            raise ValueError(f"anchor share {share} must be in [0, 1)")
        self.main, self.anchors, self.share = main, anchors, float(share)
        anchors.rng = main.rng  # one random stream

    @property
    def augment(self):  # noqa: ANN201 - the main sampler's AugmentConfig
        return self.main.augment

    @property
    def rng(self) -> np.random.Generator:
        return self.main.rng

    def _anchor_count(self, batch_size: int) -> int:
        """Anchor patches in a batch: ``share * batch_size`` with the fraction drawn at
        random, at most ``batch_size - 1`` so every batch holds a correction."""
        expected = self.share * batch_size
        count = int(expected) + int(self.rng.random() < expected - int(expected))
        return min(count, batch_size - 1)

    def sample_numpy(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch as numpy, the corrections' patches first."""
        n_anchor = self._anchor_count(batch_size)
        x, y = self.main.sample_numpy(batch_size - n_anchor)
        if n_anchor:
            ax, ay = self.anchors.sample_numpy(n_anchor)
            x, y = np.concatenate([x, ax]), np.concatenate([y, ay])
        return x, y

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as tensors on ``device``."""
        x, y = self.sample_numpy(batch_size)
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)


def anchor_sampler(
    anchors: AnchorSet, main: PatchSampler, normalization: object, share: float,
    seed: int, foreground: float = 0.0,
) -> MixedSampler | None:
    """The mixed sampler, or None when there are no anchor pixels or no share."""
    if share <= 0 or not anchors.images:
        return None
    sampler = PatchSampler(anchors.images, anchors.labels, main.n_classes, main.patch,
                           normalization, main.augment, valid_masks=anchors.masks,
                           oversample_rare=foreground, seed=seed)
    return MixedSampler(main, sampler, share)


def describe(anchors: AnchorSet, share: float) -> str:
    """The log line of a run that keeps the parent's labels elsewhere."""
    return (f"keeping the parent's labels on {anchors.pixels:,} pixels nobody corrected "
            f"({len(anchors.images)} image(s)) in {share:.0%} of the patches")

