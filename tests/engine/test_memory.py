"""The one patch/memory policy of every training path (engine/training/memory.py)."""

from __future__ import annotations

import pytest

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.training import memory
from napari_cryoseg.engine.training.memory import fit_training_patch
from napari_cryoseg.model.config import preset


def test_patch_is_capped_to_the_largest_image_and_rounded_to_the_stride():
    unet = preset("tiny")  # stride 8
    fit = dict(what="{batch} x {patch}", advice="lower it", device="cpu")
    assert fit_training_patch(unet, 256, 2, [(60, 50), (3, 70, 20)], **fit) == 72
    assert fit_training_patch(unet, 30, 2, [(500, 500)], **fit) == 32  # rounded up only
    assert fit_training_patch(unet, 256, 2, [(5, 5)], **fit) == 16  # never below 16 px


def test_a_step_that_cannot_fit_is_refused_with_the_callers_words(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**20)  # 1 MiB left
    with pytest.raises(InputError) as info:
        fit_training_patch(preset("tiny"), 128, 64, [(512, 512)], "cpu",
                           what="--batch-size {batch} with --patch {patch}",
                           advice="lower --batch-size or --patch")
    message = str(info.value)
    assert message.startswith("--batch-size 64 with --patch 128 needs about"), message
    assert message.endswith("lower --batch-size or --patch")
