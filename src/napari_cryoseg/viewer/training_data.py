"""Fine-tuning data from the user's corrections (pure numpy, safe in a worker thread).

:meth:`~napari_cryoseg.viewer.review.CorrectionStore.training_sources` copies the
corrected layers on the main thread; :func:`build_training_data` derives the valid
masks and 2D planes in the fine-tune worker, so pressing Fine-tune does not stall napari.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_cryoseg.core.corrections import confirmed_band, training_mask


@dataclass
class TrainingData:
    """Snapshotted copies handed to the fine-tuning worker (2D planes)."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    valid_masks: list[np.ndarray]
    names: list[str]
    corrected_pixels: int
    reviewed_pixels: int

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class TrainingSource:
    """Copies of one corrected layer, taken on the main thread for a worker."""

    name: str
    image: np.ndarray
    edited: np.ndarray
    predicted: np.ndarray
    reviewed: np.ndarray | None


def build_training_data(sources: list[TrainingSource], band_px: int) -> TrainingData:
    """(image, corrected labels, valid mask) planes from :class:`TrainingSource` copies.

    Pure numpy (safe in a worker thread): the valid mask is the changed pixels, the
    reviewed pixels and a ``band_px`` band around changes (wider when a layer's
    corrections are all of one kind: :func:`~napari_cryoseg.core.corrections.confirmed_band`);
    3D layers are split into their 2D planes that hold valid pixels.
    """
    images, masks, valids, names = [], [], [], []
    corrected = reviewed = 0
    for source in sources:
        band = confirmed_band(source.predicted, source.edited, band_px)
        valid = training_mask(source.predicted, source.edited, source.reviewed, band_px=band)
        corrected += int(np.count_nonzero(valid))
        if source.reviewed is not None:
            reviewed += int(np.count_nonzero(source.reviewed))
        if source.image.ndim == 2:
            planes = [(source.image, source.edited, valid)]
        else:
            planes = [(source.image[i], source.edited[i], valid[i])
                      for i in range(source.image.shape[0]) if valid[i].any()]
        for img, msk, val in planes:
            images.append(img)
            masks.append(msk)
            valids.append(val)
            names.append(source.name)
    return TrainingData(images, masks, valids, names, corrected, reviewed)


#: Uncorrected images handed to fine-tuning for its BatchNorm re-estimation, at most (it
#: draws 24 crops from all of them; more images only cost memory for the copies).
MAX_UNLABELLED = 8


def unlabelled_images(store: Any, sources: list[TrainingSource],
                      limit: int = MAX_UNLABELLED) -> list[np.ndarray]:
    """Copies of segmented images the user has not corrected (main thread, cheap).

    Fine-tuning re-estimates the model's BatchNorm statistics on these and the corrected
    images, so they follow the look of all the user's images, not only the corrected
    ones. Only in-memory 2D images are copied (a lazy or stacked image would be read in
    full for a few crops).
    """
    corrected = {source.name for source in sources}
    images: list[np.ndarray] = []
    for record in store.session.live_records():
        if len(images) >= limit:
            break
        if store.name_of(record) in corrected:
            continue
        data = record.image_layer.data
        if isinstance(data, np.ndarray) and data.ndim == 2 and not record.image_layer.rgb:
            images.append(np.array(data, copy=True))
    return images
