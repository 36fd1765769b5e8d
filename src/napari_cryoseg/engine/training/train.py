"""Training a U-Net from scratch on images with masks, as a cancellable generator.

:func:`train` yields :class:`~napari_cryoseg.engine.events.TrainStep` after every step,
:class:`~napari_cryoseg.engine.events.Validation` after each validation and
:class:`~napari_cryoseg.engine.events.Message` for notable moments, and returns a
:class:`TrainResult` with the best (by validation Dice) and the last model file.
Closing the generator stops training at the next step; nothing is written anywhere.

The optimisation loop is :func:`napari_cryoseg.engine.training.fitting.fit`, shared with
fine-tuning; scoring lives in :mod:`napari_cryoseg.engine.training.scoring`.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence

import numpy as np
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.temporal import preprocess_series
from napari_cryoseg.engine.classes import ClassMapping, check_pair
from napari_cryoseg.engine.device import resolve_device
from napari_cryoseg.engine.events import Message, Preview, TrainStep, Validation
from napari_cryoseg.engine.inference.fit_check import intensity_stats
from napari_cryoseg.engine.training.fitting import (
    FitState,
    cpu_state,
    fit,
    model_from_state,
    subsample_history,
)
from napari_cryoseg.engine.training.holdout import split_holdout
from napari_cryoseg.engine.training.preview import PreviewRequest, preview_function
from napari_cryoseg.engine.training.sampling import (
    IGNORE_INDEX,
    PatchSampler,
    check_series_pair,
    class_pixel_counts,
    median_frequency_weights,
)
from napari_cryoseg.engine.training.scoring import center_crop, predict_scores, tune_threshold
from napari_cryoseg.engine.training.train_settings import (
    TrainConfig,
    TrainResult,
)
from napari_cryoseg.engine.training.transfer import start_weights
from napari_cryoseg.engine.training.verdict import choose_selection
from napari_cryoseg.model.checkpoint import ModelFile, now_iso
from napari_cryoseg.model.unet import UNet

#: A run whose best validation Dice stays below this learned (next to) nothing.
__all__ = ["TrainConfig", "TrainResult", "learning_warnings", "split_blocks", "train"]

LEARNED_NOTHING_DICE = 0.2
#: Fewer optimiser steps than this cannot train a U-Net from scratch.
TOO_FEW_STEPS = 50


def learning_warnings(state: FitState) -> list[str]:
    """Plain-language warnings when a run learned little or nothing (empty when fine)."""
    warnings = []
    if state.steps < TOO_FEW_STEPS:
        warnings.append(
            f"only {state.steps} training steps were made: far too few to train a U-Net; "
            "give a longer --time-budget or more --steps, or use a GPU")
    if state.best_dice is not None and state.best_dice < LEARNED_NOTHING_DICE:
        warnings.append(
            f"the best validation Dice is {state.best_dice:.3f}: this model learned (next "
            "to) nothing; train longer, and check that --classes names the mask values")
    losses = [loss for _, loss in state.history]
    if len(losses) >= 20:
        tenth = max(len(losses) // 10, 2)
        first, last = float(np.mean(losses[:tenth])), float(np.mean(losses[-tenth:]))
        if last >= 0.9 * first:
            warnings.append(f"the training loss did not go down ({first:.3f} -> {last:.3f}); "
                            "try a lower learning rate or check the masks")
    return warnings


# --------------------------------------------------------------------------- helpers


def split_blocks(n: int, val_fraction: float, block: str = "last") -> tuple[list[int], list[int]]:
    """Indices ``(train, val)`` with validation one contiguous block of files.

    ``round(n * val_fraction)`` files (at least 1 when the fraction is > 0 and n >= 2, and
    never all of them) form the block at the ``"last"`` or ``"first"`` end.
    """
    if n < 2 or val_fraction <= 0:
        return list(range(n)), []
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    if block == "first":
        return list(range(n_val, n)), list(range(n_val))
    return list(range(n - n_val)), list(range(n - n_val, n))


# --------------------------------------------------------------------------- train


def _split(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    names: Sequence[str],
    config: TrainConfig,
) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[np.ndarray, np.ndarray, None]], dict]:
    """Training arrays and validation items; one image is split by rows instead."""
    if len(images) == 1 and config.val_fraction > 0:
        image, target = images[0], targets[0]
        cut = int(round(image.shape[0] * (1 - config.val_fraction)))
        if cut < 16 or image.shape[0] - cut < 16:
            return list(images), list(targets), [], {"val": "none (image too small to split)"}
        val = [(center_crop(image[cut:], config.val_crop), center_crop(target[cut:],
                config.val_crop), None)]
        info = {"train": [names[0]], "val": [f"{names[0]} rows {cut}-{image.shape[0]}"]}
        return [image[:cut]], [target[:cut]], val, info
    train_idx, val_idx = split_blocks(len(images), config.val_fraction, config.val_block)
    val = [(center_crop(images[i], config.val_crop), center_crop(targets[i], config.val_crop),
            None) for i in val_idx]
    info = {"train": [names[i] for i in train_idx], "val": [names[i] for i in val_idx]}
    return [images[i] for i in train_idx], [targets[i] for i in train_idx], val, info


def _painted_counts(images: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                    valid_masks: Sequence[np.ndarray], names: Sequence[str],
                    n_classes: int) -> np.ndarray:
    """Pixels per class among the painted pixels; both sides of a sparse annotation
    must be painted (background strokes tell the model what a class is not)."""
    painted = []
    for image, target, valid, name in zip(images, targets, valid_masks, names):
        check_pair(image, valid, f"{name} (annotated pixels)")
        painted.append(np.where(np.asarray(valid, bool), target, IGNORE_INDEX))
    counts = class_pixel_counts(painted, n_classes)
    if not counts.sum():
        raise InputError("no annotated pixels: paint some strokes of each class first")
    if counts[0] == 0:
        raise InputError("only classes are painted, no background: paint some background "
                         "strokes too (the model must learn what is not a class)")
    if counts[1:].sum() == 0:
        raise InputError("only background is painted: paint some strokes of the classes")
    return counts


def _check_classes_occur(mapping: ClassMapping, counts: np.ndarray, sparse: bool) -> None:
    """Every class the user named must occur (among the painted pixels when sparse)."""
    missing = [f"{value} ({name})" for value, name, count in
               zip(mapping.values, mapping.names[1:], counts[1:]) if count == 0]
    if missing:
        where = "painted strokes" if sparse else "masks"
        raise InputError(
            f"class value(s) {', '.join(missing[:5])} never occur in the {where}; check "
            "--classes against the mask values (or annotate those classes)")


def _split_sparse(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    valid_masks: Sequence[np.ndarray],
    names: Sequence[str],
    config: TrainConfig,
) -> tuple[list, list, list, list, dict]:
    """Training data and held-out annotations when only painted pixels count."""
    valid = []
    for image, mask, name in zip(images, valid_masks, names):
        check_pair(image, mask, f"{name} (annotated pixels)")
        valid.append(np.asarray(mask).astype(bool))
    if not any(v.any() for v in valid):
        raise InputError("no annotated pixels: paint some strokes of each class first")
    train_images, train_targets, train_valid, held, info = split_holdout(
        images, targets, valid, config.val_fraction, "blocks", config.seed)
    split = {"train": list(names), "val": f"annotations held out: {info}"}
    return train_images, train_targets, train_valid, held, split


def train(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    config: TrainConfig | None = None,
    class_mapping: ClassMapping | None = None,
    *,
    names: Sequence[str] | None = None,
    class_colors: Sequence[str] | None = None,
    pixel_size_nm: float | None = None,
    model_name: str | None = None,
    valid_masks: Sequence[np.ndarray] | None = None,
    preview: PreviewRequest | None = None,
) -> Generator[TrainStep | Validation | Message | Preview, None, TrainResult]:
    """Train a new U-Net on 2D images and masks.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        2D grayscale images (any numeric dtype), in file order (the validation block is
        taken from one end of this order).
    masks : sequence of numpy.ndarray
        Integer masks of the same shapes, with the values named in ``class_mapping``.
    config : TrainConfig, optional
        Settings; defaults to ``TrainConfig()``.
    class_mapping : ClassMapping, optional
        Mask values -> classes; default: every non-zero value present is a class.
    names : sequence of str, optional
        Image names for the provenance (default ``image 0``, ...).
    class_colors : sequence of str, optional
        Hex colours per class (default palette).
    pixel_size_nm : float, optional
        Pixel size of the training data, stored as a hint in the model file.
    model_name : str, optional
        Stored as ``provenance["name"]``.
    valid_masks : sequence of numpy.ndarray, optional
        Sparse annotations: bool masks of the pixels that were annotated (painted
        strokes). Only they are learned from and scored; the others are unknown, not
        background (annotated pixels whose mask value is not a class are background).
        Validation then holds out part of the annotations (as fine-tuning does).
    preview : PreviewRequest, optional
        A region to predict every few seconds with the current weights
        (:class:`~napari_cryoseg.engine.events.Preview` events).

    Yields
    ------
    TrainStep, Validation, Message, Preview

    Returns
    -------
    TrainResult
    """
    config = config or TrainConfig()
    if len(images) != len(masks):
        raise InputError(f"{len(images)} images but {len(masks)} masks")
    if not images:
        raise InputError("no training images given")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    context = config.temporal_context
    series_mode = context > 0 or config.background_subtraction != "none"
    for image, mask, name in zip(images, masks, names):
        (check_series_pair if series_mode else check_pair)(image, mask, name)
    mapping = class_mapping or ClassMapping.from_masks(masks)
    n_classes = mapping.n_classes
    unet = config.architecture(n_classes)
    device = resolve_device(config.device)
    patch = -(-config.patch // unet.stride) * unet.stride
    targets = [mapping.apply(m) for m in masks]
    counts = class_pixel_counts(targets, n_classes)
    if counts[1:].sum() == 0:
        raise InputError(
            f"no mask pixel has any of the class values {list(mapping.values)}; "
            "check --classes against the mask values"
        )
    if valid_masks is not None and not series_mode:
        counts = _painted_counts(images, targets, valid_masks, names, n_classes)
    if class_mapping is not None:
        _check_classes_occur(mapping, counts, sparse=valid_masks is not None)
    if valid_masks is None:
        train_images, train_targets, val_items, split_info = _split(images, targets, names,
                                                                    config)
        train_valid = None
    else:
        if series_mode:
            raise InputError("sparse annotations (valid masks) are for 2D images, not series")
        train_images, train_targets, train_valid, val_items, split_info = _split_sparse(
            images, targets, valid_masks, names, config)
    started_at = now_iso()
    template = ModelFile.new(
        unet,
        class_names=list(mapping.names),
        seed=config.seed,
        normalization=config.normalization,
        class_colors=list(class_colors) if class_colors else [],
        pixel_size_nm=pixel_size_nm,
        provenance={"name": model_name} if model_name else {},
        temporal_context=context,
        background_subtraction=config.background_subtraction,
    )
    template, start_note = start_weights(template, config)
    yield Message(start_note)
    patch = -(-config.patch // template.config.stride) * template.config.stride
    torch.manual_seed(config.seed)  # dropout and anything else drawing from torch's RNG
    if series_mode:  # validation series stay raw: segment() preprocesses them itself
        train_images = [preprocess_series(s, config.background_subtraction)
                        for s in train_images]
    sampler = PatchSampler(
        train_images, train_targets, n_classes, patch, config.normalization, config.augment,
        valid_masks=train_valid, oversample_rare=config.oversample_rare, seed=config.seed,
        temporal_context=context if series_mode else None,
    )
    total_steps = config.steps
    if config.epochs is not None:
        epoch_steps = math.ceil(config.epochs * sampler.patches_per_epoch / config.batch_size)
        total_steps = min(total_steps or epoch_steps, epoch_steps)
    class_weights = None
    if config.class_weighting == "median_frequency":
        # Only painted pixels count: unpainted ones are not background, they are unknown.
        weighted = train_targets if train_valid is None else [
            np.where(np.asarray(v, bool), t, IGNORE_INDEX)
            for t, v in zip(train_targets, train_valid)]
        weights = median_frequency_weights(weighted, n_classes)
        class_weights = torch.from_numpy(weights)
    net = template.build(device).train()
    validate = None
    if val_items:
        def validate(model_net: UNet) -> tuple[float, float, dict[str, float]]:
            acc = predict_scores(template.with_weights(model_net), val_items, device)
            metrics = acc.metrics(mapping.names)
            return metrics["dice"], metrics.get("loss", float("nan")), metrics

    yield Message(
        f"training {template.config.base_channels}-channel U-Net "
        f"({template.n_parameters:,} parameters, {n_classes} classes) on {device}: "
        f"{len(train_images)} training / {len(val_items)} validation images, patch {patch}"
    )
    state = FitState()
    settings = config.fit_settings(total_steps)
    preview_fn = None
    if preview is not None:
        preview_fn = preview_function(template, preview, device)
        settings = settings.with_(preview_every_s=preview.every_s,
                                  preview_at_start=template.provenance.get("parent") is not None)
    try:
        yield from fit(net, sampler, settings, device=device, validate=validate,
                       class_weights=class_weights, state=state, preview=preview_fn)
        last_state = cpu_state(net)
    finally:
        # Free accelerator memory promptly, also when the run is cancelled.
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    best_validation = next(
        (v for v in state.validations if v["step"] == state.best_step), None
    )
    warnings = learning_warnings(state)
    for warning in warnings:
        yield Message(f"WARNING: {warning}", level="warning")
    provenance = {
        "created": now_iso(),
        "started": started_at,
        "parent": template.provenance.get("parent"),
        "initialised_from": template.provenance.get("initialised_from"),
        "kind": "train",
        "steps": state.steps,
        "time_s": round(state.elapsed_s, 2),
        "device": str(device),
        "stop_reason": state.stop_reason,
        "training_data": {
            "n_images": len(images),
            "names": names,
            "shapes": [list(np.shape(im)) for im in images],
            "pixel_counts": {mapping.names[c]: int(counts[c]) for c in range(n_classes)},
            # what the dock compares new images with (engine/inference/fit_check.py)
            "intensity": intensity_stats(images),
            "class_values": list(mapping.values),
            **split_info,
        },
        "history": subsample_history(state.history),
        "recipe": {**config.to_dict(), "class_mapping": mapping.to_dict(), "patch": patch,
                   "total_steps": total_steps,
                   "class_weights": None if class_weights is None
                   else [float(w) for w in class_weights]},
        "validations": [{"step": v["step"], "dice": v["dice"]} for v in state.validations],
        "validation_s": round(state.validation_s, 2),
        "preview_s": round(state.preview_s, 2),
        "warnings": warnings,
    }
    last_metrics = state.validations[-1]["metrics"] if state.validations else {}
    last = model_from_state(template, last_state, {
        **provenance, "metrics": {"validation": last_metrics}, "selected": "last"})
    # "Best by validation" only when there are enough steps and checks to compare:
    # in a short run the best of two checks is an early, untrained state.
    pretrained = template.provenance.get("parent") is not None
    if state.best_state is not None and choose_selection(
            state.steps, state.validations, pretrained=pretrained) == "best":
        best = model_from_state(template, state.best_state, {
            **provenance,
            "metrics": {"validation": best_validation["metrics"] if best_validation else {}},
            "selected": f"best validation Dice at step {state.best_step}",
            "best_step": state.best_step,
        })
    else:
        best = last
    if config.tune_threshold and n_classes == 2 and val_items:
        yield Message("tuning the foreground threshold on the validation images")
        for model in (best,) if best is last else (best, last):
            model.threshold, info = tune_threshold(model, val_items, device)
            model.provenance["threshold_tuning"] = info
        info = best.provenance["threshold_tuning"]
        yield Message(f"threshold {best.threshold:g}: validation Dice "
                      f"{info['dice_at_0.5']:.4f} at 0.5 -> {info['dice']:.4f}")
    return TrainResult(
        best=best,
        last=last,
        steps=state.steps,
        elapsed_s=state.elapsed_s,
        best_step=state.best_step if best is not last else state.steps,
        best_dice=state.best_dice if best is not last else (
            state.validations[-1]["dice"] if state.validations else None),
        stop_reason=state.stop_reason,
        history=subsample_history(state.history),
        validations=state.validations,
        warnings=warnings,
    )
