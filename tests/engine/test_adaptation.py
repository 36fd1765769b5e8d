"""The fine-tuning recipe's parts: BatchNorm re-estimation, blend choice, error-focused
patches, per-layer learning rates, the validation time share and the whole-run budget."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.engine.events import TrainStep, Validation, drain
from napari_cryoseg.engine.training.adapt import adapt_batchnorm, batchnorm_layers, choose_blend
from napari_cryoseg.engine.training.augment import AugmentConfig
from napari_cryoseg.engine.training.finetune import FinetuneConfig, finetune
from napari_cryoseg.engine.training.fitting import fit
from napari_cryoseg.engine.training.sampling import PatchSampler, normalize_image
from napari_cryoseg.engine.training.train_settings import TrainConfig
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset
from napari_cryoseg.model.unet import UNet

DEVICE = torch.device("cpu")


def _disks(n, size=96, seed=0, blur=0.0, noise=20.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(4):
            cy, cx = rng.integers(8, size - 8, 2)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < int(rng.integers(5, 10)) ** 2] = 1
        image = 60 + 120 * mask + rng.normal(0, noise, mask.shape)
        if blur:
            from scipy.ndimage import gaussian_filter

            image = gaussian_filter(image, blur)
        images.append(image.clip(0, 255).astype(np.uint8))
        masks.append(mask)
    return images, masks


def test_batchnorm_statistics_are_those_of_the_new_images():
    torch.manual_seed(0)
    net = UNet(preset("tiny"))
    first = batchnorm_layers(net)[0]
    conv = net.encoders[0].conv[0]
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    images, _ = _disks(3, size=64)
    norm = NormalizationConfig()
    # One batch holding every patch: the running mean must equal the batch mean of the
    # first convolution's output on exactly those (whole-image) patches.
    n = adapt_batchnorm(net, images, norm, DEVICE, patch=64, n_patches=3, batch=3,
                        mixed_precision=False)
    assert n == len(batchnorm_layers(net)) > 0
    assert not net.training and all(not m.training for m in net.modules())
    assert first.momentum == 0.1  # restored after the cumulative average
    # The three crops are the three whole images, in the order the generator drew them.
    rng = np.random.default_rng(0)
    picks = rng.choice(3, size=3, p=np.full(3, 1 / 3))
    x = torch.from_numpy(np.stack([normalize_image(images[i], norm) for i in picks])[:, None])
    with torch.no_grad():
        expected = conv(x.float()).mean(dim=(0, 2, 3))
    assert torch.allclose(first.running_mean, expected, atol=1e-4)
    for key, value in weights.items():  # weights are untouched
        assert torch.equal(net.state_dict()[key], value), key


def test_no_batchnorm_no_adaptation():
    net = UNet(preset("tiny").with_(batch_norm=False))
    images, _ = _disks(1, size=64)
    assert adapt_batchnorm(net, images, NormalizationConfig(), DEVICE, patch=64) == 0


def test_choose_blend_prefers_the_parent_unless_moving_is_clearly_better():
    assert choose_blend({0.5: 0.80, 0.75: 0.805, 1.0: 0.808}, 0.01) == 0.5
    assert choose_blend({0.5: 0.60, 0.75: 0.70, 1.0: 0.75}, 0.01) == 1.0
    assert choose_blend({0.5: 0.60, 0.75: 0.745, 1.0: 0.75}, 0.01) == 0.75
    assert choose_blend({0.5: 0.80, 0.75: 0.805, 1.0: 0.808}, 0.0) == 1.0


@pytest.mark.slow
def test_focus_places_every_patch_around_the_focus_pixels():
    image = np.random.default_rng(0).random((200, 200)).astype(np.float32)
    target = np.zeros((200, 200), np.uint8)
    focus = np.zeros((200, 200), bool)
    focus[150:152, 20:22] = True
    sampler = PatchSampler([image], [target], 2, 32, augment=AugmentConfig.none(), seed=0,
                           focus_masks=[focus], focus=1.0)
    for _ in range(30):
        y, x = _crop_origin(sampler)
        assert y <= 151 and y + 32 > 150 and x <= 21 and x + 32 > 20
    unfocused = PatchSampler([image], [target], 2, 32, augment=AugmentConfig.none(), seed=0,
                             focus_masks=[focus], focus=0.0)
    origins = [_crop_origin(unfocused) for _ in range(30)]
    assert sum(y <= 151 < y + 32 and x <= 21 < x + 32 for y, x in origins) < 10


def _crop_origin(sampler: PatchSampler) -> tuple[int, int]:
    """Where the sampler's next crop starts (found by matching the crop in the image)."""
    patch, _ = sampler._crop()
    image = sampler.images[0]
    size = patch.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size))
    hits = np.argwhere((windows == patch).all(axis=(-2, -1)))
    return int(hits[0][0]), int(hits[0][1])


def test_head_learns_faster_than_the_encoder():
    images, masks = _disks(2, size=64)
    sampler = PatchSampler(images, masks, 2, 64, augment=AugmentConfig.none(), seed=0)
    torch.manual_seed(0)
    net = UNet(preset("tiny"))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    settings = TrainConfig(batch_size=2, lr=1e-3, warmup_fraction=0.0, schedule="cosine",
                           mixed_precision=False).fit_settings(1).with_(head_lr_factor=10.0)
    drain(fit(net, sampler, settings, device=DEVICE))
    # One AdamW step moves each weight by about its learning rate (sign of the gradient).
    enc = (net.state_dict()["encoders.0.conv.0.weight"]
           - start["encoders.0.conv.0.weight"]).abs().max()
    head = (net.state_dict()["head.weight"] - start["head.weight"]).abs().max()
    assert head > 5 * enc > 0


def test_slow_validation_takes_at_most_its_share_of_the_time():
    images, masks = _disks(2, size=64)
    sampler = PatchSampler(images, masks, 2, 64, augment=AugmentConfig.none(), seed=0)
    torch.manual_seed(0)
    net = UNet(preset("tiny"))
    checks = []

    def slow_validate(_net):
        time.sleep(0.3)  # a check that costs many steps
        checks.append(1)
        return 0.5, 0.1, {}

    events = []
    settings = TrainConfig(batch_size=2, time_budget_s=3.0, val_every=1).fit_settings(
        None).with_(max_val_share=0.1)
    drain(fit(net, sampler, settings, device=DEVICE, validate=slow_validate), events.append)
    steps = [e.step for e in events if isinstance(e, TrainStep)]
    validations = [e.step for e in events if isinstance(e, Validation)]
    assert len(steps) > 2 * len(validations)  # checks never run after every step
    # At most a 10 % share, plus the first and the final check.
    assert len(checks) * 0.3 <= 0.1 * 3.0 + 2 * 0.3 + 0.05
    assert len(set(validations)) == len(validations)  # never twice at the same step


@pytest.fixture
def shifted():
    """A parent trained on sharp, quiet disks and corrections of blurred, noisy ones."""
    images, masks = _disks(4, size=96, seed=1)
    model = ModelFile.new(preset("tiny"), class_names=["background", "disk"], seed=0)
    from napari_cryoseg.engine.classes import ClassMapping
    from napari_cryoseg.engine.training.train import TrainConfig, train

    trained = drain(train(images, masks, TrainConfig(
        unet=model.config, steps=40, batch_size=4, patch=64, val_fraction=0, device="cpu",
        lr=3e-3), ClassMapping.parse("1", "disk"))).best
    target_images, target_masks = _disks(2, size=128, seed=2, blur=2.0, noise=60.0)
    return trained, target_images, target_masks


@pytest.mark.slow
def test_batchnorm_modes(shifted):
    parent, images, masks = shifted
    fast = dict(steps=5, batch_size=4, patch=64, device="cpu", lr=1e-3, focus_errors=0.0,
                freeze_batchnorm=True)
    never = drain(finetune(parent, images, masks, None,
                           FinetuneConfig(adapt_batchnorm="never", **fast)))
    always = drain(finetune(parent, images, masks, None,
                            FinetuneConfig(adapt_batchnorm="always", holdout_fraction=0,
                                           **fast)))
    key = "encoders.0.conv.1.running_mean"
    # Frozen BatchNorm while training: "never" keeps the parent's statistics exactly,
    # "always" starts from (and keeps) statistics of the new images.
    if never.improved:
        assert torch.equal(never.model.state_dict[key], parent.state_dict[key])
    assert always.adapted_batchnorm
    assert not torch.allclose(always.model.state_dict[key], parent.state_dict[key])
    assert "BatchNorm statistics adapted" in always.message


@pytest.mark.slow
def test_whole_run_fits_its_time_budget(shifted):
    parent, images, masks = shifted
    started = time.perf_counter()
    result = drain(finetune(parent, images, masks, None, FinetuneConfig(
        time_budget_s=6.0, batch_size=4, patch=64, device="cpu")))
    wall = time.perf_counter() - started
    # Scoring, adaptation, training and blending together: the budget, give or take the
    # last step and the final check (generous: CI machines are shared).
    assert result.steps > 0
    assert wall < 6.0 + 4.0, wall


@pytest.mark.slow
def test_focus_from_held_out_predictions_equals_segmenting_again(shifted):
    """The errors read off the held-out scoring are those a second segmentation finds."""
    from napari_cryoseg.engine.training.finetune import _parent_errors, errors_from_holdout_labels
    from napari_cryoseg.engine.training.holdout import split_holdout
    from napari_cryoseg.engine.training.scoring import predict_scores

    parent, images, masks = shifted
    targets = [m.astype(np.uint8) for m in masks]
    valid = [np.ones(m.shape, bool) for m in masks]
    valid[1][:, :40] = False  # part of one image not reviewed
    train_images, train_targets, train_valid, holdout, _ = split_holdout(
        images, targets, valid, 0.25, "blocks", seed=0)
    labels: list[np.ndarray] = []
    predict_scores(parent, holdout, DEVICE, labels_out=labels)
    reused = errors_from_holdout_labels(labels, holdout, train_images, train_targets,
                                        train_valid)
    again = _parent_errors(parent, train_images, train_targets, train_valid, DEVICE)
    assert reused is not None and len(reused) == len(again) == 2
    for r, a, v in zip(reused, again, train_valid):
        assert np.array_equal(r, a)
        assert not r[~v].any()  # never an error outside the training pixels
    assert sum(int(a.sum()) for a in again) > 0  # the shifted parent is wrong somewhere
    # Held-out images of their own (rows layout cuts the images): segment again.
    rows = split_holdout(images, targets, None, 0.25, "rows", seed=0)
    rows_labels: list[np.ndarray] = []
    predict_scores(parent, rows[3], DEVICE, labels_out=rows_labels)
    assert errors_from_holdout_labels(rows_labels, rows[3], *rows[:3]) is None
    assert errors_from_holdout_labels(None, holdout, train_images, train_targets,
                                      train_valid) is None


@pytest.mark.slow
def test_auto_adapts_batchnorm_only_when_the_domain_has_moved(shifted):
    """'auto' re-estimates the statistics only when the parent scores under adapt_below."""
    parent, images, masks = shifted
    fast = dict(steps=2, batch_size=4, patch=64, device="cpu", focus_errors=0.0)
    texts: list[str] = []
    still = drain(finetune(parent, images, masks, None,
                           FinetuneConfig(adapt_below=0.0, **fast)),
                  lambda e: texts.append(getattr(e, "text", "")))
    assert not still.adapted_batchnorm
    assert any("kept the parent's BatchNorm statistics" in t for t in texts)
    assert not any("re-estimating" in t for t in texts)
    texts.clear()
    moved = drain(finetune(parent, images, masks, None,
                           FinetuneConfig(adapt_below=1.0, **fast)),
                  lambda e: texts.append(getattr(e, "text", "")))
    assert any("re-estimating the BatchNorm statistics" in t for t in texts)
    assert moved.before["dice"] < 1.0
    with pytest.raises(Exception, match="adapt_below"):
        FinetuneConfig(adapt_below=1.5)
