"""Fine-tuning's checks (held-out scoring, BatchNorm re-estimation) fit their share of a
time budget, and the run records where its time went."""

from __future__ import annotations

import numpy as np
import torch

from napari_cryoseg.engine.events import Message, drain
from napari_cryoseg.engine.training.adapt import BN_PATCHES, adapt_batchnorm, batchnorm_layers
from napari_cryoseg.engine.training.finetune import FinetuneConfig, finetune
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset


def _disks(n, size=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(3):
            cy, cx = rng.integers(8, size - 8, 2)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < int(rng.integers(5, 10)) ** 2] = 1
        noise = rng.normal(0, 20, mask.shape)
        images.append((60 + 120 * mask + noise).clip(0, 255).astype(np.uint8))
        masks.append(mask)
    return images, masks


def test_batchnorm_reestimation_stops_at_its_time_limit():
    model = ModelFile.new(preset("tiny"), seed=0)
    images, _ = _disks(2, size=64)
    counts = {}
    for limit in (None, 0.0):
        net = model.build("cpu")
        assert adapt_batchnorm(net, images, model.normalization, torch.device("cpu"),
                               patch=64, batch=8, time_limit_s=limit)
        counts[limit] = {int(layer.num_batches_tracked) for layer in batchnorm_layers(net)}
    assert counts[None] == {BN_PATCHES // 8}  # every batch
    assert counts[0.0] == {1}  # the first batch only: a valid (noisier) average


def test_a_short_budget_skips_the_reestimation_and_says_where_the_time_went():
    parent = ModelFile.new(preset("tiny"), class_names=["background", "disk"], seed=0)
    images, masks = _disks(4)
    events = []
    # a quarter of 0.5 s cannot hold a re-estimation: it is skipped, and said so
    config = FinetuneConfig(time_budget_s=0.5, adapt_batchnorm="always", batch_size=2,
                            patch=64, seed=0, device="cpu")
    result = drain(finetune(parent, images, masks, None, config), events.append)
    texts = [e.text for e in events if isinstance(e, Message)]
    assert any("re-estimating them does not fit in the 0.5 s time budget" in t
               for t in texts), texts
    assert not any(t.startswith("re-estimating the BatchNorm") for t in texts)
    provenance = result.model.provenance
    assert provenance["adapt_s"] == 0.0
    for key in ("scoring_s", "validation_s", "preview_s", "time_s"):
        assert provenance[key] >= 0.0
    assert provenance["scoring_s"] > 0  # the parent was scored on the held-out part
    assert np.isfinite(provenance["time_s"])
