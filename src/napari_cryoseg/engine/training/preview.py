"""Live previews while a model trains: what to predict, and how often.

The caller (the napari dock) snapshots a region of an image on the main thread and hands
it to a training or fine-tuning generator as a :class:`PreviewRequest`; every few seconds
the loop predicts it with the weights of the moment and yields a
:class:`~napari_cryoseg.engine.events.Preview` the main thread shows in a layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.model.checkpoint import ModelFile

#: Longest edge of a preview region: predicting more would cost the training too many
#: steps; the caller picks the region (the part in view, or a downsampled image).
MAX_PREVIEW_EDGE = 1024


@dataclass(frozen=True)
class PreviewRequest:
    """A 2D region to predict now and then while training.

    Attributes
    ----------
    image : numpy.ndarray
        The region (2D, at most :data:`MAX_PREVIEW_EDGE` pixels on each side).
    every_s : float
        Seconds between previews (the loop also keeps previews within a share of its
        time: see :attr:`~napari_cryoseg.engine.training.fitting.FitSettings.max_preview_share`).
    """

    image: np.ndarray
    every_s: float = 3.0

    def __post_init__(self) -> None:
        shape = np.shape(self.image)
        if len(shape) != 2:
            raise InputError(f"a preview region must be 2D, got shape {shape}")
        if max(shape) > MAX_PREVIEW_EDGE:
            raise InputError(f"preview region {shape} is larger than {MAX_PREVIEW_EDGE} "
                             "pixels on a side; pass a crop or a downsampled image")
        if not self.every_s > 0:
            raise InputError(f"preview interval {self.every_s} s must be > 0")


def preview_function(
    template: ModelFile, request: PreviewRequest, device: torch.device
) -> Callable[[torch.nn.Module], Any]:
    """``f(net) -> labels`` of ``request.image`` predicted with ``net``'s current weights."""
    image = np.asarray(request.image)

    def predict(net: torch.nn.Module) -> np.ndarray:
        return drain(segment(image, template.with_weights(net), device=str(device))).labels

    return predict
