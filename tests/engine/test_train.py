"""Training: data pipeline, losses, the training loop, splits, seeds, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.events import Message, TrainStep, Validation, drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.engine.training.augment import AugmentConfig
from napari_cryoseg.engine.training.fitting import lr_factor
from napari_cryoseg.engine.training.losses import segmentation_loss
from napari_cryoseg.engine.training.sampling import (
    IGNORE_INDEX,
    PatchSampler,
    check_pair,
    median_frequency_weights,
)
from napari_cryoseg.engine.training.scoring import THRESHOLD_CANDIDATES, tune_threshold
from napari_cryoseg.engine.training.train import TrainConfig, split_blocks, train
from napari_cryoseg.io.pairing import pair_by_stem
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset


def _samples(seeds, size=128):
    config = SampleConfig(shape=(size, size))
    pairs = [make_sample(s, config) for s in seeds]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _disks(n, size=96, seed=0):
    """Bright disks on noisy background (an easy binary task) with masks of value 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(4):
            cy, cx, r = rng.integers(10, size - 10, 2).tolist() + [int(rng.integers(6, 14))]
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
        image = (60 + 120 * mask + rng.normal(0, 20, mask.shape)).clip(0, 255).astype(np.uint8)
        images.append(image)
        masks.append(mask)
    return images, masks


TINY = dict(preset="tiny", batch_size=4, patch=64, seed=0, device="cpu")


# --------------------------------------------------------------------------- data


def test_class_mapping_binary_and_multiclass():
    mask = np.array([[0, 1, 2], [3, 4, 9]], np.uint16)
    binary = ClassMapping.parse("3", "grid bar")
    assert binary.n_classes == 2 and binary.names == ("background", "grid bar")
    assert binary.apply(mask).tolist() == [[0, 0, 0], [1, 0, 0]]
    multi = ClassMapping.parse("1,2,3,4")
    assert multi.n_classes == 5
    assert multi.apply(mask).tolist() == [[0, 1, 2], [3, 4, 0]]  # 9 is unlisted -> background
    reorder = ClassMapping.parse("4,2", ["a", "b"])
    assert reorder.apply(mask).tolist() == [[0, 0, 2], [0, 1, 0]]
    assert ClassMapping.from_masks([mask]).values == (1, 2, 3, 4, 9)
    with pytest.raises(InputError, match="class names"):
        ClassMapping.parse("1,2", ["only one"])
    with pytest.raises(InputError, match="comma-separated"):
        ClassMapping.parse("1;2")
    with pytest.raises(InputError, match="only background"):
        ClassMapping.from_masks([np.zeros((4, 4), np.uint8)])


def test_pair_by_stem_and_check_pair(tmp_path):
    images = [tmp_path / "i" / n for n in ("a.tif", "b.tiff", "c.ome.tif")]
    masks = [tmp_path / "m" / n for n in ("c.tif", "a.tif", "b.tif")]
    pairs = pair_by_stem(images, masks)
    assert [(i.name, m.name) for i, m in pairs] == [
        ("a.tif", "a.tif"), ("b.tiff", "b.tif"), ("c.ome.tif", "c.tif")]
    with pytest.raises(InputError, match="no mask .* b.tiff") as err:
        pair_by_stem(images, masks[:2])
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="have no image"):
        pair_by_stem(images[:2], masks)
    with pytest.raises(InputError, match=r"image shape \(4, 5\) differs from mask shape"):
        check_pair(np.zeros((4, 5)), np.zeros((5, 4)), "x.tif")


def test_median_frequency_weights_known_values():
    mask = np.zeros((10, 10), np.uint8)
    mask[:3] = 1  # 30 px
    mask[3:5] = 2  # 20 px; background 50 px
    weights = median_frequency_weights([mask], 3)
    # freq = [0.5, 0.3, 0.2], median 0.3 -> [0.6, 1.0, 1.5]
    np.testing.assert_allclose(weights, [0.6, 1.0, 1.5], rtol=1e-6)
    # A class present in only one of two images: frequency over that image's pixels only.
    other = np.zeros((10, 10), np.uint8)
    weights = median_frequency_weights([mask, other], 4)
    np.testing.assert_allclose(weights, [np.median([150 / 200, 0.3, 0.2]) / 0.75, 1.0, 1.5, 1.0],
                               rtol=1e-6)


def test_sampler_shapes_padding_ignore_and_seed():
    image = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50)
    mask = (image % 3 == 0).astype(np.uint8)
    valid = np.zeros_like(mask, bool)
    valid[:20] = True
    sampler = PatchSampler([image], [mask], 2, patch=64, valid_masks=[valid], seed=3)
    x, y = sampler.sample_numpy(5)
    assert x.shape == (5, 1, 64, 64) and x.dtype == np.float32
    assert y.shape == (5, 64, 64) and set(np.unique(y)) <= {IGNORE_INDEX, 0, 1}
    assert (y == IGNORE_INDEX).any() and (y >= 0).any()  # crops contain reviewed pixels
    again = PatchSampler([image], [mask], 2, patch=64, valid_masks=[valid], seed=3)
    np.testing.assert_array_equal(again.sample_numpy(5)[0], x)
    plain = PatchSampler([image], [mask], 2, patch=32, augment=AugmentConfig.none(), seed=0)
    x, _ = plain.sample_numpy(2)
    assert x.min() >= -0.5 and x.max() <= 1.5


def test_oversampling_raises_rare_class_share():
    images, masks = _samples([1, 2], size=192)
    mapping = ClassMapping.parse("1,2,3")
    targets = [mapping.apply(m) for m in masks]

    def share(p):
        sampler = PatchSampler(images, targets, 4, patch=32, oversample_rare=p, seed=0)
        rare = sampler.rare_class
        _, y = sampler.sample_numpy(200)
        return rare, float((y == rare).mean())

    rare, base = share(0.0)
    rare2, boosted = share(0.8)
    assert rare == rare2
    assert boosted > 2 * base


def test_losses_ignore_and_weights():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 16, 16))
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    loss = segmentation_loss(logits, target)
    loss.backward()
    assert loss.item() > 0 and logits.grad is not None
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert segmentation_loss(perfect, target).item() < 0.01
    # Ignored pixels do not matter, whatever the logits there.
    ignored = target.clone()
    ignored[:, :8] = IGNORE_INDEX
    noisy = perfect.clone()
    noisy[:, :, :8] = torch.randn(2, 3, 8, 16) * 50
    assert segmentation_loss(noisy, ignored).item() < 0.01
    assert segmentation_loss(noisy, torch.full_like(target, IGNORE_INDEX)).item() == 0.0
    # Binary: one logit channel.
    fg = (target == 1).long()
    binary = (fg.float() * 2 - 1).unsqueeze(1) * 50
    assert segmentation_loss(binary, fg).item() < 0.01
    weighted = segmentation_loss(torch.zeros(2, 1, 16, 16), fg, torch.tensor([1.0, 5.0]))
    assert weighted.item() > segmentation_loss(torch.zeros(2, 1, 16, 16), fg).item()


def test_split_blocks_is_contiguous():
    assert split_blocks(10, 0.2) == (list(range(8)), [8, 9])
    assert split_blocks(10, 0.2, "first") == (list(range(2, 10)), [0, 1])
    assert split_blocks(3, 0.1) == ([0, 1], [2])  # at least one
    assert split_blocks(1, 0.5) == ([0], [])
    assert split_blocks(5, 0.0) == (list(range(5)), [])


def test_lr_schedules():
    assert lr_factor(0.0, "onecycle", 0.1) == pytest.approx(1 / 25)
    assert lr_factor(0.1, "onecycle", 0.1) == pytest.approx(1.0)
    assert lr_factor(1.0, "onecycle", 0.1) < 1e-3
    assert lr_factor(0.05, "cosine", 0.1) == pytest.approx(0.5)
    assert lr_factor(1.0, "cosine", 0.1) == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def disk_run():
    images, masks = _disks(5)
    events = []
    result = drain(train(images, masks, TrainConfig(steps=60, val_every=30, lr=3e-3,
                                                    tune_threshold=True, **TINY),
                         ClassMapping.parse("1", ["disk"]), names=list("abcde")),
                   events.append)
    return images, masks, events, result


@pytest.mark.slow
def test_training_learns_and_reports(disk_run):
    images, masks, events, result = disk_run
    losses = [e.loss for e in events if isinstance(e, TrainStep)]
    assert len(losses) == 60 == result.steps
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    validations = [e for e in events if isinstance(e, Validation)]
    assert [v.step for v in validations] == [30, 60]
    assert isinstance(events[0], Message)
    # Validation Dice on the held-out image is far above an all-background prediction (0).
    assert result.best_dice > 0.7
    model = result.best
    assert model.class_names == ["background", "disk"] and model.config.n_classes == 2
    prov = model.provenance
    assert prov["steps"] == 60 and prov["training_data"]["n_images"] == 5
    assert prov["training_data"]["val"] == ["e"]  # the last block of files
    assert prov["training_data"]["pixel_counts"]["disk"] == int(sum(m.sum() for m in masks))
    assert prov["metrics"]["validation"]["dice"] == pytest.approx(result.best_dice)
    assert prov["recipe"]["preset"] == "tiny" and prov["history"]
    assert result.last.provenance["selected"] == "last"


def test_threshold_is_tuned_on_validation_and_used_by_default(disk_run):
    images, _, events, result = disk_run
    for model in (result.best, result.last):
        tuning = model.provenance["threshold_tuning"]
        assert model.threshold == tuning["threshold"] and model.threshold in THRESHOLD_CANDIDATES
        assert len(tuning["scores"]) == len(THRESHOLD_CANDIDATES)
        assert tuning["dice"] >= tuning["dice_at_0.5"]
    assert any(isinstance(e, Message) and "threshold" in e.text for e in events)
    model = result.best
    model.threshold = 0.8
    default = drain(segment(images[4], model, device="cpu", return_probabilities=True))
    np.testing.assert_array_equal(default.labels, default.probabilities[0] > 0.8)
    explicit = drain(segment(images[4], model, device="cpu", threshold=0.2))
    assert explicit.labels.sum() > default.labels.sum()


def test_tune_threshold_finds_the_cut_that_made_the_truth():
    model = ModelFile.new(preset("tiny"), seed=1)
    model.state_dict["head.weight"] *= 20  # spread the random model's probabilities over 0-1
    images, _ = _disks(2, size=64)
    items = []
    for image in images:
        probs = drain(segment(image, model, device="cpu", return_probabilities=True))
        truth = (probs.probabilities[0] > 0.65).astype(np.uint8)
        assert 0 < truth.mean() < 1
        items.append((image, truth, None))
    threshold, info = tune_threshold(model, items, "cpu")
    assert threshold == 0.65 and info["dice"] == pytest.approx(1.0)
    assert info["dice_at_0.5"] < 1.0
    with pytest.raises(InputError, match="binary"):
        tune_threshold(ModelFile.new(preset("tiny", n_classes=3)), items, "cpu")


def test_same_seed_same_weights():
    images, masks = _disks(3, size=64)
    config = TrainConfig(steps=4, val_fraction=0.0, **TINY)
    a = drain(train(images, masks, config))
    b = drain(train(images, masks, config))
    for key, value in a.last.state_dict.items():
        assert torch.equal(value, b.last.state_dict[key]), key
    c = drain(train(images, masks, TrainConfig(**{**config.to_dict(), "seed": 1,
                                                     "augment": config.augment,
                                                     "normalization": config.normalization})))
    assert not torch.equal(a.last.state_dict["head.weight"], c.last.state_dict["head.weight"])


def test_cancel_mid_run_by_close():
    images, masks = _disks(3, size=64)
    gen = train(images, masks, TrainConfig(steps=1000, **TINY))
    steps = 0
    for event in gen:
        if isinstance(event, TrainStep):
            steps = event.step
            if steps == 3:
                break
    gen.close()
    assert steps == 3
    with pytest.raises(StopIteration):
        next(gen)


def test_multiclass_with_median_frequency_and_oversampling():
    images, masks = _samples([5, 6, 7], size=96)
    config = TrainConfig(steps=6, class_weighting="median_frequency", oversample_rare=0.5,
                         epochs=0.5, val_every=3, **TINY)
    result = drain(train(images, masks, config, ClassMapping.parse("1,2,3", "cell,ice,grid bar")))
    assert result.best.config.n_classes == 4 and result.best.config.out_channels == 4
    assert len(result.best.provenance["recipe"]["class_weights"]) == 4
    assert result.steps <= 6
    assert set(result.validations[-1]["metrics"]) >= {"dice/cell", "dice/ice", "dice/grid bar"}


def test_single_image_is_split_by_rows_and_bad_input():
    images, masks = _disks(1, size=96)
    result = drain(train(images, masks, TrainConfig(steps=2, **TINY)))
    assert "rows" in result.best.provenance["training_data"]["val"][0]
    with pytest.raises(InputError, match="class values"):
        drain(train(images, masks, TrainConfig(steps=2, **TINY), ClassMapping.parse("7")))
    with pytest.raises(InputError, match="differs from mask shape"):
        drain(train(images, [masks[0][:50]], TrainConfig(steps=2, **TINY)))
    with pytest.raises(InputError, match="steps"):
        TrainConfig(steps=0)


@pytest.mark.slow
def test_real_isbi_membranes_smoke(shared_data):
    """Tiny U-Net, ~60 steps on 4 ISBI sections (256² crops), evaluated on 2 others."""
    from napari_cryoseg.engine.inference.evaluate import evaluate
    from napari_cryoseg.io import read_image, read_labels_tiff

    root = shared_data / "isbi2012_em_membranes"

    def load(i):
        image = np.asarray(read_image(root / "images" / f"train_{i:02d}.tif").data)
        mask, _ = read_labels_tiff(root / "masks" / f"train_{i:02d}.tif")
        return image[:256, :256], mask[:256, :256]

    train_set = [load(i) for i in range(4)]
    test_set = [load(i) for i in (20, 21)]
    config = TrainConfig(preset="tiny", steps=60, batch_size=4, patch=128, lr=3e-3,
                         val_fraction=0.0, seed=0, device="cpu")
    result = drain(train([p[0] for p in train_set], [p[1] for p in train_set], config,
                         ClassMapping.parse("1", ["membrane"])))
    report = drain(evaluate(result.best, [p[0] for p in test_set], [p[1] for p in test_set],
                            device="cpu"))
    membrane = report.mean["classes"]["membrane"]["dice"]
    assert membrane > 0.3, f"membrane Dice {membrane:.3f} (all-background would be 0)"


@pytest.mark.gpu
def test_cuda_mixed_precision_training_and_finetune():
    from napari_cryoseg.engine.training.finetune import FinetuneConfig, finetune

    images, masks = _disks(4)
    config = TrainConfig(preset="tiny", steps=40, batch_size=8, patch=64, lr=3e-3,
                         val_every=20, seed=0, device="cuda")
    result = drain(train(images, masks, config))
    assert result.best.provenance["device"].startswith("cuda")
    assert all(v.device.type == "cpu" for v in result.best.state_dict.values())
    assert result.best_dice > 0.5
    tuned = drain(finetune(result.best, images, masks, None,
                           FinetuneConfig(steps=5, batch_size=4, patch=64, device="cuda")))
    assert tuned.model.provenance["device"].startswith("cuda")


def test_a_run_that_learned_nothing_says_so():
    from napari_cryoseg.engine.training.fitting import FitState
    from napari_cryoseg.engine.training.train import learning_warnings

    images, masks = _samples([1, 2])
    events = []
    result = drain(train(images, masks, TrainConfig(preset="tiny", steps=5, batch_size=2,
                                                    patch=64, device="cpu")), events.append)
    warnings = [e for e in events if isinstance(e, Message) and e.level == "warning"]
    assert warnings and "only 5 training steps" in warnings[0].text
    assert result.warnings and result.best.provenance["warnings"] == result.warnings
    # A long run whose loss stays flat and whose validation Dice is near zero.
    flat = FitState(steps=400, best_dice=0.05, history=[(i, 0.7) for i in range(400)])
    text = " ".join(learning_warnings(flat))
    assert "learned (next to) nothing" in text and "did not go down" in text
    assert "steps were made" not in text
    # A run that learned: no warning.
    good = FitState(steps=400, best_dice=0.85,
                    history=[(i, 1.0 / (1 + i / 40)) for i in range(400)])
    assert learning_warnings(good) == []
