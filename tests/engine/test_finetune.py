"""Fine-tuning: the parent stays untouched, holdout metrics, best weights, budget, cancel."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.events import Message, TrainStep, drain
from napari_cryoseg.engine.training.finetune import FinetuneConfig, blend_states, finetune
from napari_cryoseg.engine.training.holdout import split_holdout
from napari_cryoseg.model.checkpoint import ModelFile, save_model
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
        image = (60 + 120 * mask + rng.normal(0, 20, mask.shape)).clip(0, 255).astype(np.uint8)
        images.append(image)
        masks.append(mask)
    return images, masks


FAST = dict(batch_size=4, patch=64, seed=0, device="cpu")


@pytest.fixture
def parent(tmp_path) -> ModelFile:
    model = ModelFile.new(preset("tiny"), class_names=["background", "disk"], seed=0)
    save_model(model, tmp_path / "parent.pt")  # gives it a name and a path
    return model


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict.items()}


def _assert_unchanged(model, snapshot):
    assert model.state_dict.keys() == snapshot.keys()
    for key, value in snapshot.items():
        assert torch.equal(model.state_dict[key], value), key


@pytest.mark.slow
def test_weak_model_improves_and_parent_is_untouched(parent):
    images, masks = _disks(4)
    before = _snapshot(parent)
    provenance = dict(parent.provenance)
    events = []
    result = drain(finetune(parent, images, masks, None,
                            FinetuneConfig(steps=30, lr=3e-3, val_every=15, **FAST)),
                   events.append)
    _assert_unchanged(parent, before)
    assert parent.provenance == provenance
    assert result.improved and result.best_step > 0
    assert result.after["dice"] > result.before["dice"] + 0.1
    assert any(isinstance(e, Message) and "->" in e.text for e in events)
    prov = result.model.provenance
    assert prov["kind"] == "finetune"
    assert prov["parent"] == {"name": "parent", "path": str(parent.source_path),
                              "created": parent.provenance["created"]}
    assert prov["n_corrected_pixels"] == 4 * 64 * 64 == result.n_corrected_pixels
    assert prov["steps"] == 30 and prov["time_s"] > 0
    assert prov["finetune"]["holdout"] == "last 1 of 4 images"
    assert prov["finetune"]["before"]["dice"] == pytest.approx(result.before["dice"])
    assert prov["finetune"]["after"]["dice"] == pytest.approx(result.after["dice"])
    assert result.model.state_dict is not parent.state_dict
    assert not torch.equal(result.model.state_dict["head.weight"], parent.state_dict["head.weight"])


def test_blend_states_averages_float_tensors_only():
    parent = {"w": torch.zeros(3), "n": torch.tensor(5)}
    child = {"w": torch.tensor([2.0, 4.0, -2.0]), "n": torch.tensor(9)}
    blended = blend_states(parent, child, 0.25)
    assert torch.allclose(blended["w"], torch.tensor([0.5, 1.0, -0.5]))
    assert blended["n"].item() == 9  # counters come from the child
    assert torch.equal(blend_states(parent, child, 1.0)["w"], child["w"])


@pytest.mark.slow
def test_a_fixed_blend_lies_halfway_between_parent_and_fine_tuned(parent):
    images, masks = _disks(2, size=160)  # 9 blocks of 64 px: scattered-block holdout
    config = dict(steps=60, lr=3e-3, val_every=20, adapt_batchnorm="never", **FAST)
    blended = drain(finetune(parent, images, masks, None,
                             FinetuneConfig(parent_blend=0.5, **config)))
    plain = drain(finetune(parent, images, masks, None,
                           FinetuneConfig(parent_blend=1.0, **config)))
    assert plain.improved and plain.parent_blend == 1.0
    assert blended.improved and blended.parent_blend == 0.5
    assert blended.after["dice"] > blended.before["dice"]
    assert blended.model.provenance["finetune"]["parent_blend"] == 0.5
    assert "averaged with the start" in blended.message
    # Same seed, same steps: the blend lies halfway between parent and fine-tuned weights.
    assert blended.best_step == plain.best_step
    key = "head.weight"
    expected = (parent.state_dict[key] + plain.model.state_dict[key]) / 2
    assert torch.allclose(blended.model.state_dict[key], expected, atol=1e-6)
    with pytest.raises(InputError, match="parent blend 0 must be in"):
        FinetuneConfig(parent_blend=0)


@pytest.mark.slow
def test_the_automatic_blend_is_the_nearest_within_tolerance(parent):
    images, masks = _disks(2, size=160)
    result = drain(finetune(parent, images, masks, None, FinetuneConfig(
        steps=60, lr=3e-3, val_every=20, blend_tolerance=0.01, **FAST)))
    assert result.improved
    scores = result.blend_scores
    assert set(scores) == {0.5, 0.75, 1.0}
    best = max(scores.values())
    # The chosen weight is within the tolerance of the best; every smaller one is not.
    assert scores[result.parent_blend] >= best - 0.01
    assert all(scores[w] < best - 0.01 for w in scores if w < result.parent_blend)
    assert result.after["dice"] == pytest.approx(scores[result.parent_blend])
    stored = result.model.provenance["finetune"]["blend_scores"]
    assert stored == {f"{w:g}": round(d, 5) for w, d in scores.items()}
    # With no tolerance the best-scoring blend is taken.
    strict = drain(finetune(parent, images, masks, None, FinetuneConfig(
        steps=60, lr=3e-3, val_every=20, blend_tolerance=0.0, **FAST)))
    assert strict.blend_scores[strict.parent_blend] == max(strict.blend_scores.values())


def test_no_improvement_keeps_parent_weights(parent):
    # The parent predicts background everywhere and the held-out rows hold no foreground:
    # its held-out Dice is 1 (both empty), which no fine-tuned step can beat.
    parent.state_dict["head.bias"].fill_(-50.0)
    images, masks = _disks(2)
    for mask in masks:
        mask[40:] = 0
    result = drain(finetune(parent, images, masks, None,
                            FinetuneConfig(steps=3, lr=1e-2, **FAST)))
    assert result.before["dice"] == 1.0
    assert not result.improved and result.best_step == 0
    assert "parent" in result.message
    assert result.after == result.before
    _assert_unchanged(result.model, _snapshot(parent))


def test_cancel_leaves_parent_unchanged(parent):
    images, masks = _disks(2)
    before = _snapshot(parent)
    gen = finetune(parent, images, masks, None, FinetuneConfig(steps=500, lr=1e-2, **FAST))
    for event in gen:
        if isinstance(event, TrainStep) and event.step == 3:
            break
    gen.close()
    _assert_unchanged(parent, before)


def test_valid_masks_time_budget_and_block_holdout(parent):
    images, masks = _disks(2, size=96)
    valid = [np.zeros_like(m, bool) for m in masks]
    for v in valid:
        v[10:80, 20:70] = True
    budget = 1.5
    started = time.perf_counter()
    events = []
    result = drain(finetune(parent, images, masks, valid,
                            FinetuneConfig(time_budget_s=budget, freeze_encoder=True, **FAST)),
                   events.append)
    steps = [e for e in events if isinstance(e, TrainStep)]
    assert steps and steps[-1].elapsed_s < budget + 3.0  # the loop stops at the budget
    assert time.perf_counter() - started < budget + 30  # + scoring before/after
    assert result.n_corrected_pixels == sum(int(v.sum()) for v in valid)
    assert "scattered 64-px blocks" in result.model.provenance["finetune"]["holdout"]
    assert {"dice", "dice/disk"} <= set(result.before) and {"dice"} <= set(result.after)


def test_split_holdout_rows_hold_the_right_share():
    image = np.zeros((100, 10))
    valid = np.zeros((100, 10), bool)
    valid[20:60] = True  # 400 reviewed pixels
    _, targets, train_valid, holdout, info = split_holdout(
        [image], [image.astype(np.uint8)], [valid], 0.25, layout="rows")
    held = holdout[0][2].sum()
    assert held == 100 and train_valid[0].sum() == 300
    assert info.startswith("bottom rows")


def test_split_holdout_blocks_are_scattered_disjoint_and_seeded():
    image = np.arange(512 * 512, dtype=np.float32).reshape(512, 512)
    target = (image % 7 == 0).astype(np.uint8)
    images, targets, train_valid, holdout, info = split_holdout(
        [image], [target], None, 0.25, layout="blocks", seed=3)
    scored = holdout[0][2]
    kept = train_valid[0]
    # Whole image kept as context; about a quarter of it held out, in 64-px blocks.
    assert images[0].shape == image.shape and holdout[0][0] is image
    assert 0.25 <= scored.mean() < 0.25 + 64 * 64 / 512**2 + 1e-9
    assert "16 blocks" in info
    # No held-out pixel trains, nor any pixel within the guard ring around a block.
    assert not (scored & kept).any()
    ring = np.zeros_like(scored)
    ys, xs = np.nonzero(scored)
    ring[np.clip(ys - 4, 0, 511), xs] = True
    ring[ys, np.clip(xs + 4, 0, 511)] = True
    assert not (ring & kept).any()
    # Blocks spread over the image: held-out pixels in each quarter of the rows.
    rows = scored.reshape(4, 128, 512).sum(axis=(1, 2))
    assert (rows > 0).all(), rows
    # The same seed gives the same blocks; another seed other blocks.
    again = split_holdout([image], [target], None, 0.25, layout="blocks", seed=3)[3][0][2]
    other = split_holdout([image], [target], None, 0.25, layout="blocks", seed=4)[3][0][2]
    assert np.array_equal(again, scored) and not np.array_equal(other, scored)


def test_split_holdout_blocks_follow_reviewed_pixels_and_fall_back_to_rows():
    image = np.zeros((256, 256), np.float32)
    valid = np.zeros((256, 256), bool)
    valid[:, :128] = True  # 8 blocks reviewed
    _, _, train_valid, holdout, _ = split_holdout([image], [image.astype(np.uint8)], [valid],
                                                  0.25, layout="blocks")
    scored = holdout[0][2]
    assert not scored[:, 128:].any() and not train_valid[0][:, 128:].any()
    assert scored.sum() == 2 * 64 * 64  # 2 of 8 blocks hold a quarter
    # Reviewed pixels inside one block cannot be split into blocks: bottom rows instead.
    small = np.zeros((256, 256), bool)
    small[10:50, 10:50] = True
    _, _, train_valid, holdout, info = split_holdout(
        [image], [image.astype(np.uint8)], [small], 0.25, layout="blocks")
    assert info.startswith("bottom rows (rows from")
    assert holdout[0][2].sum() == 400 and train_valid[0].sum() == 1200


def test_bad_input(parent):
    images, masks = _disks(1)
    with pytest.raises(InputError, match="values up to 3"):
        drain(finetune(parent, images, [masks[0] * 3], None, FinetuneConfig(steps=1, **FAST)))
    with pytest.raises(InputError, match="valid masks are empty"):
        drain(finetune(parent, images, masks, [np.zeros_like(masks[0], bool)],
                       FinetuneConfig(steps=1, **FAST)))



@pytest.mark.slow
def test_weights_that_forget_confirmed_objects_are_not_returned(parent):
    images, masks = _disks(4)
    parent = drain(finetune(parent, images, masks, None, FinetuneConfig(
        steps=30, lr=1e-2, val_every=10, parent_blend=1.0, keep_elsewhere=0.0,
        **FAST))).model  # finds the disks
    erased = []
    for mask in masks:  # the user erases every other disk (they look alike) and keeps the rest
        objects, n = ndi.label(mask)
        erased.append(np.where(np.isin(objects, range(1, n + 1, 2)), 0, mask))
    config = dict(steps=30, lr=3e-3, val_every=5, keep_elsewhere=0.0, **FAST)
    free = drain(finetune(parent, images, erased, None,
                          FinetuneConfig(keep_confirmed=0.0, **config)))
    # Learning "fewer disks" from the erasures costs some of the disks the user kept.
    assert free.improved and free.after["kept"] < 1.0
    assert "of the held-out disk pixels you left as they were" in free.message
    needed = round(free.after["kept"] + 0.005, 3)  # more than the free run kept
    guarded = drain(finetune(parent, images, erased, None,
                             FinetuneConfig(keep_confirmed=needed, **config)))
    if guarded.improved:  # a blend nearer the start that keeps enough of them
        assert guarded.after["kept"] >= needed and guarded.parent_blend < 1.0
    else:
        assert f"objects you left as they were ({needed:.0%} needed)" in guarded.message
        _assert_unchanged(guarded.model, _snapshot(parent))
