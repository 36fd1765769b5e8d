"""Fine-tuning an existing model on user corrections, as a cancellable generator.

A *copy* of the model is trained (the input :class:`ModelFile` and its tensors are never
touched, so cancelling at any time leaves it as it was). Part of the corrected data is
held out: the last block of images when there are at least 4, else square blocks
scattered over each image (holding ``holdout_fraction`` of its reviewed pixels). The
held-out part is scored before and during training and the best weights are kept. With
fewer than 4 corrected images they are then averaged with the parent's (``parent_blend``):
the held-out pixels of the same images cannot tell whether the model still generalises
to the user's other images. If the returned weights do not beat the parent on the
held-out part, the parent's weights are returned and a message says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.data import AugmentConfig, ClassMapping, PatchSampler, check_pair
from napari_cryoseg.engine.device import resolve_device
from napari_cryoseg.engine.events import Message, TrainStep, Validation
from napari_cryoseg.engine.train import (
    SCHEDULES,
    FitState,
    fit,
    model_from_state,
    predict_scores,
    subsample_history,
)
from napari_cryoseg.model.checkpoint import ModelFile, now_iso

DEFAULT_STEPS = 200  # when neither steps nor a time budget is given

#: Ways to hold out part of one to three corrected images (see ``holdout_layout``).
HOLDOUT_LAYOUTS = ("blocks", "rows")
#: Edge of the scattered held-out blocks, in pixels.
HOLDOUT_BLOCK = 64
#: Pixels around each held-out block that do not train either: a membrane or an edge that
#: crosses the block's border would otherwise be learnt one pixel away from where it is
#: scored, flattering the fine-tuned model against its parent.
HOLDOUT_GUARD = 4


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a fine-tuning run (stored as the new model's recipe).

    Attributes
    ----------
    steps, time_budget_s : optional
        Optimiser steps and/or wall seconds (whichever ends first); default
        :data:`DEFAULT_STEPS` steps.
    lr, weight_decay : float
        AdamW peak learning rate and weight decay. 1e-4, a tenth of training from
        scratch: with 2e-4 the test Dice swung by +-0.03 from one check to the next on one
        corrected section; 1e-4 stayed above zero-shot at 25, 50 and 100 steps.
    schedule, warmup_fraction : str, float
        Learning-rate schedule (see :class:`~napari_cryoseg.engine.train.TrainConfig`).
    freeze_encoder : bool
        Train only the decoder and head (fewer corrections needed, less forgetting).
    freeze_batchnorm : bool
        Keep BatchNorm running statistics fixed (eval mode) while the weights train:
        statistics re-estimated from patches of one or two images drift away from what
        the network learnt on its full training set.
    batch_size, patch : int
        Patches per step and patch edge (rounded up to the network stride).
    holdout_fraction : float
        Fraction of the corrections held out for before/after metrics (0 = none; then
        the trained weights are returned without a check).
    holdout_layout : str
        With fewer than 4 corrected images: ``"blocks"`` holds out square blocks of
        :data:`HOLDOUT_BLOCK` pixels scattered over each image (default), ``"rows"`` its
        bottom rows. Scattered blocks sample the whole image; one band of rows is a
        single correlated region whose score can move against the rest of the data
        (docs/quality.md).
    val_every : int, optional
        Steps between held-out evaluations (default: about 5 per run).
    augment : AugmentConfig
        Patch augmentations; none by default. The corrections come from the very images
        the user segments, so their look is the target: on VNC -> ISBI with one corrected
        section (CPU, small preset), test Dice after 25 steps was 0.801 without
        augmentation against 0.789 with the training augmentations, and 0.705 with flips
        and rotations alone (zero-shot 0.778; docs/quality.md).
    oversample_rare : float
        Probability of centring a patch on the rarest class present.
    parent_blend : float
        With 1-3 corrected images, the returned weights are ``parent + parent_blend *
        (fine-tuned - parent)``: a weight-space average with the parent (as WiSE-FT,
        Wortsman et al. 2022). 1 returns the fine-tuned weights as they are. With one
        corrected ISBI section (CPU, 3 seeds) the fine-tuned weights scored 0.759-0.784
        on 24 other sections against 0.778 zero-shot, and their average with the parent
        0.791-0.796 (docs/quality.md). With 4 or more images the held-out images are an
        independent check, and the blend (this value or 1) that scores best there is used.
    dice_weight : float
        Weight of the soft Dice term next to the (binary) cross-entropy. Higher than for
        training from scratch: on one or two corrected images of a shifted domain the
        cross-entropy mostly pushes the parent's uncertain pixels to background, which
        thins the foreground and lowers Dice on other images (bench/fewshot_cpu_*.py).
    seed : int
        Seeds patch sampling, augmentation and dropout.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
    mixed_precision : bool
        bf16 (or fp16) autocast on CUDA.
    """

    steps: int | None = None
    time_budget_s: float | None = None
    lr: float = 1e-4
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_fraction: float = 0.05
    freeze_encoder: bool = False
    freeze_batchnorm: bool = True
    batch_size: int = 4
    patch: int = 256
    holdout_fraction: float = 0.25
    holdout_layout: str = "blocks"
    val_every: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig.none)
    oversample_rare: float = 0.0
    parent_blend: float = 0.5
    dice_weight: float = 10.0
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.steps is not None and self.steps < 1:
            problems.append(f"steps {self.steps} must be >= 1")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            problems.append(f"time budget {self.time_budget_s} s must be > 0")
        if not self.lr > 0:
            problems.append(f"learning rate {self.lr} must be > 0")
        if self.batch_size < 1:
            problems.append(f"batch size {self.batch_size} must be >= 1")
        if self.patch < 16:
            problems.append(f"patch {self.patch} must be >= 16 pixels")
        if not self.dice_weight >= 0:
            problems.append(f"dice weight {self.dice_weight} must be >= 0")
        if not 0.0 <= self.holdout_fraction < 1.0:
            problems.append(f"holdout fraction {self.holdout_fraction} must be in [0, 1)")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule {self.schedule!r} must be one of {', '.join(SCHEDULES)}")
        if not 0.0 < self.parent_blend <= 1.0:
            problems.append(f"parent blend {self.parent_blend} must be in (0, 1]")
        if self.holdout_layout not in HOLDOUT_LAYOUTS:
            problems.append(f"holdout layout {self.holdout_layout!r} must be one of "
                            f"{', '.join(HOLDOUT_LAYOUTS)}")
        if problems:
            raise InputError("invalid fine-tuning settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (the recipe stored in the model file)."""
        return asdict(self)


#: Held-out checks early in a run: few-shot fine-tuning often peaks within tens of steps
#: and then over-fits the one or two corrected images, so the best weights are kept.
EARLY_VALIDATION_STEPS = (10, 25, 50, 100, 200)


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes
    ----------
    model : ModelFile
        The new model (a copy; the parent's weights when fine-tuning did not help).
    before, after : dict
        Held-out metrics (``"dice"``, ``"dice/<class>"``, ``"iou/<class>"``, ``"loss"``)
        of the parent and of ``model``; empty without a holdout.
    improved : bool
        True when ``model`` has the fine-tuned weights (better on the holdout, or no
        holdout); False when the parent weights were kept.
    steps : int
        Optimiser steps done.
    elapsed_s : float
        Wall time.
    n_corrected_pixels : int
        Reviewed pixels (sum of the valid masks, or all mask pixels).
    best_step : int
        Step of the returned weights (0 = parent).
    message : str
        One line summarising the outcome.
    history : list of [step, loss]
        Sub-sampled training loss.
    validations : list of dict
        Held-out evaluations during the run.
    parent_blend : float
        Share of the fine-tuning step in the returned weights (1 = not averaged with the
        parent; see :attr:`FinetuneConfig.parent_blend`).
    """

    model: ModelFile
    before: dict[str, float]
    after: dict[str, float]
    improved: bool
    steps: int
    elapsed_s: float
    n_corrected_pixels: int
    best_step: int
    message: str
    history: list[list[float]]
    validations: list[dict[str, Any]]
    parent_blend: float = 1.0


def blend_states(
    parent: dict[str, torch.Tensor], child: dict[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """``parent + weight * (child - parent)`` for float tensors; others from ``child``."""
    blended = {}
    for key, value in child.items():
        base = parent[key]
        if value.is_floating_point() and weight != 1.0:
            blended[key] = (base.float() + weight * (value.float() - base.float())).to(value.dtype)
        else:
            blended[key] = value.clone()
    return blended


def _row_cut(valid: np.ndarray | None, height: int, fraction: float) -> int:
    """First held-out row: the bottom rows holding ``fraction`` of the reviewed pixels."""
    if valid is None:
        cut = int(round(height * (1 - fraction)))
    else:
        per_row = valid.sum(axis=1).astype(np.float64)
        total = per_row.sum()
        if total == 0:
            return height
        # First row whose running total exceeds the training share: rows above it train.
        cut = int(np.searchsorted(np.cumsum(per_row), total * (1 - fraction), side="right"))
    return min(max(cut, 1), height - 1)


def _block_holdout(
    valid: np.ndarray | None,
    shape: tuple[int, int],
    fraction: float,
    rng: np.random.Generator,
    block: int = HOLDOUT_BLOCK,
    guard: int = HOLDOUT_GUARD,
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Scattered square blocks holding about ``fraction`` of the reviewed pixels.

    Blocks with reviewed pixels are taken in a random order until they hold ``fraction``
    of them (at least one block, never all). Returns ``(scored, train_valid, n_blocks)``:
    the held-out reviewed pixels, the reviewed pixels left for training (held-out blocks
    and a ``guard``-pixel ring around them removed), and the number of blocks; or None
    when fewer than two blocks hold reviewed pixels (a split needs one for each side).
    """
    height, width = shape
    reviewed = np.ones(shape, bool) if valid is None else valid
    n_y, n_x = -(-height // block), -(-width // block)
    padded = np.zeros((n_y * block, n_x * block), np.int64)
    padded[:height, :width] = reviewed
    counts = padded.reshape(n_y, block, n_x, block).sum(axis=(1, 3)).ravel()
    candidates = np.flatnonzero(counts)
    if len(candidates) < 2:
        return None
    order = rng.permutation(candidates)
    goal = fraction * counts.sum()
    held, total = [], 0
    for index in order[:-1]:  # the last candidate always trains
        held.append(int(index))
        total += counts[index]
        if total >= goal:
            break
    scored = np.zeros(shape, bool)
    train_valid = reviewed.copy()
    for index in held:
        y0, x0 = (index // n_x) * block, (index % n_x) * block
        scored[y0:y0 + block, x0:x0 + block] = True
        train_valid[max(y0 - guard, 0):y0 + block + guard,
                    max(x0 - guard, 0):x0 + block + guard] = False
    scored &= reviewed
    if not train_valid.any():  # tiny reviewed areas: the guard ate the rest
        return None
    return scored, train_valid, len(held)


def split_holdout(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    valid_masks: Sequence[np.ndarray] | None,
    fraction: float,
    layout: str = "blocks",
    seed: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None, list[tuple], str]:
    """Split corrections into training data and held-out items.

    With >= 4 images the last ``ceil(n * fraction)`` images are held out whole
    (contiguous, as neighbouring sections are correlated). With fewer, each image keeps
    ``fraction`` of its reviewed pixels apart: in square blocks scattered over the image
    (``layout="blocks"``; seeded by ``seed``) or in its bottom rows (``"rows"``, and the
    fallback when the reviewed pixels fill fewer than two blocks).

    Returns
    -------
    train_images, train_targets, train_valid (or None), holdout items
    ``(image, target, valid or None)`` and a description.
    """
    n = len(images)
    valid_list = list(valid_masks) if valid_masks is not None else None
    if fraction <= 0:
        return list(images), list(targets), valid_list, [], "none"
    if n >= 4:
        n_hold = min(max(1, math.ceil(n * fraction)), n - 1)
        keep = range(n - n_hold)
        hold = range(n - n_hold, n)
        holdout = [(images[i], targets[i], None if valid_list is None else valid_list[i])
                   for i in hold]
        return ([images[i] for i in keep], [targets[i] for i in keep],
                None if valid_list is None else [valid_list[i] for i in keep], holdout,
                f"last {n_hold} of {n} images")
    rng = np.random.default_rng(seed)
    train_images, train_targets, train_valid, holdout, parts = [], [], [], [], []
    for i, (image, target) in enumerate(zip(images, targets)):
        valid = None if valid_list is None else valid_list[i]
        # Held-out pixels are scored inside the WHOLE image: the network sees the same
        # context and whole-image normalisation as when the user segments it (a crop on
        # its own gets other percentiles and border effects). The network may see their
        # image values as context while training, never their labels.
        blocks = (_block_holdout(valid, image.shape[:2], fraction, rng)
                  if layout == "blocks" else None)
        if blocks is not None:
            scored, kept, n_blocks = blocks
            train_images.append(image)
            train_targets.append(target)
            train_valid.append(kept)
            parts.append(f"{n_blocks} blocks")
        else:
            height = image.shape[0]
            cut = _row_cut(valid, height, fraction)
            train_images.append(image[:cut])
            train_targets.append(target[:cut])
            train_valid.append(np.ones((cut, image.shape[1]), bool) if valid is None
                               else valid[:cut])
            scored = np.zeros(image.shape[:2], dtype=bool)
            scored[cut:] = True if valid is None else valid[cut:]
            parts.append(f"rows from {cut}")
        holdout.append((image, target, scored))
    if all(part.startswith("rows") for part in parts) and valid_list is None:
        train_valid = None  # whole images cut at a row: every training pixel counts
    any_blocks = any(part.endswith("blocks") for part in parts)
    kind = f"scattered {HOLDOUT_BLOCK}-px blocks" if any_blocks else "bottom rows"
    return (train_images, train_targets, train_valid, holdout,
            f"{kind} ({', '.join(parts)}) of {n} image(s)")


def finetune(
    model: ModelFile,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    valid_masks: Sequence[np.ndarray] | None = None,
    config: FinetuneConfig | None = None,
    *,
    class_mapping: ClassMapping | None = None,
    names: Sequence[str] | None = None,
) -> Generator[TrainStep | Validation | Message, None, FinetuneResult]:
    """Fine-tune a copy of ``model`` on corrected masks.

    Parameters
    ----------
    model : ModelFile
        The parent; never modified.
    images : sequence of numpy.ndarray
        2D images.
    masks : sequence of numpy.ndarray
        Corrected masks: the model's class indices (0..n_classes-1), or mask values
        mapped by ``class_mapping``.
    valid_masks : sequence of numpy.ndarray, optional
        bool masks of reviewed pixels; only they count (default: all pixels).
    config : FinetuneConfig, optional
        Settings.
    class_mapping : ClassMapping, optional
        Mask values -> the model's classes.
    names : sequence of str, optional
        Image names for the provenance.

    Yields
    ------
    TrainStep, Validation, Message

    Returns
    -------
    FinetuneResult
    """
    if getattr(model, "foreign", False):  # a bioimage.io model of another architecture
        raise InputError(model.not_finetunable)
    config = config or FinetuneConfig()
    started = time.perf_counter()
    if len(images) != len(masks) or not images:
        raise InputError(f"{len(images)} images but {len(masks)} masks; give matching pairs")
    if valid_masks is not None and len(valid_masks) != len(images):
        raise InputError(f"{len(images)} images but {len(valid_masks)} valid masks")
    if model.temporal_context:
        raise InputError("fine-tuning models with temporal context is not supported")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    n_classes = model.config.n_classes
    if class_mapping is not None and class_mapping.n_classes != n_classes:
        raise InputError(
            f"--classes gives {class_mapping.n_classes - 1} foreground classes but the model "
            f"has {n_classes - 1} ({', '.join(model.class_names[1:])})"
        )
    targets = []
    for i, (image, mask, name) in enumerate(zip(images, masks, names)):
        check_pair(image, mask, name)
        if valid_masks is not None:
            check_pair(image, valid_masks[i], f"{name} (valid mask)")
        target = class_mapping.apply(mask) if class_mapping is not None else np.asarray(mask)
        if target.max(initial=0) >= n_classes or target.min(initial=0) < 0:
            raise InputError(
                f"mask of {name} has values up to {int(target.max())} but the model has "
                f"{n_classes} classes; map mask values to classes with --classes"
            )
        targets.append(target.astype(np.uint8))
    valid = None if valid_masks is None else [np.asarray(v).astype(bool) for v in valid_masks]
    n_corrected = int(sum(v.sum() for v in valid)) if valid is not None else int(
        sum(t.size for t in targets))
    if n_corrected == 0:
        raise InputError("no reviewed pixels: the valid masks are empty; correct some pixels")
    device = resolve_device(config.device)
    stride = model.config.stride
    patch = -(-config.patch // stride) * stride
    train_images, train_targets, train_valid, holdout, holdout_info = split_holdout(
        images, targets, valid, config.holdout_fraction, config.holdout_layout, config.seed
    )
    torch.manual_seed(config.seed)
    sampler = PatchSampler(
        train_images, train_targets, n_classes, patch, model.normalization, config.augment,
        valid_masks=train_valid, oversample_rare=config.oversample_rare, seed=config.seed,
    )
    parent_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict.items()}
    before: dict[str, float] = {}
    validate = None
    initial_best = None
    if holdout:
        yield Message(f"scoring the parent model on the held-out corrections ({holdout_info})")
        before = predict_scores(model, holdout, device).metrics(model.class_names)
        initial_best = (before["dice"], parent_state)

        def validate(net: torch.nn.Module) -> tuple[float, float, dict[str, float]]:
            metrics = predict_scores(model.with_weights(net), holdout, device).metrics(
                model.class_names)
            return metrics["dice"], metrics.get("loss", float("nan")), metrics

    # model.build() copies the weights into a new network: the parent's tensors are
    # never handed to the optimiser.
    net = model.build(device).train()
    frozen: list[torch.nn.Module] = []
    if config.freeze_encoder:
        for param in net.encoders.parameters():
            param.requires_grad_(False)
        frozen = [net.encoders]  # also keep their BatchNorm statistics fixed
    if config.freeze_batchnorm:
        frozen += [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    total_steps = config.steps
    if total_steps is None and config.time_budget_s is None:
        total_steps = DEFAULT_STEPS
    every = config.val_every or (max(5, total_steps // 5) if total_steps else None)
    state = FitState()
    yield Message(
        f"fine-tuning {model.name} on {n_corrected:,} corrected pixels in {len(images)} "
        f"image(s) on {device}" + (f"; holdout: {holdout_info}" if holdout else "")
    )
    try:
        yield from fit(
            net, sampler, device=device, batch_size=config.batch_size, lr=config.lr,
            weight_decay=config.weight_decay, schedule=config.schedule,
            warmup_fraction=config.warmup_fraction, total_steps=total_steps,
            time_budget_s=config.time_budget_s, val_every=every, validate=validate,
            initial_best=initial_best, mixed_precision=config.mixed_precision,
            dice_weight=config.dice_weight, frozen=frozen, state=state,
            early_val_steps=EARLY_VALIDATION_STEPS,
        )
        final_state = {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()}
    finally:
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    few_images = len(images) < 4
    blend = 1.0
    if holdout:
        improved = state.best_step > 0
        chosen = state.best_state if improved else parent_state
        best_validation = next(
            (v for v in state.validations if v["step"] == state.best_step), None)
        after = best_validation["metrics"] if improved and best_validation else dict(before)
        if improved and config.parent_blend < 1.0:
            blended = blend_states(parent_state, chosen, config.parent_blend)
            yield Message(f"scoring the average with the parent (blend "
                          f"{config.parent_blend:g}) on the held-out corrections")
            blended_metrics = predict_scores(
                model_from_state(model, blended, {}), holdout, device).metrics(
                model.class_names)
            # Few images: always blend (their own held-out pixels favour over-fitting).
            # Many: the held-out images are independent, so they choose.
            if few_images or blended_metrics["dice"] >= after["dice"]:
                chosen, after, blend = blended, blended_metrics, config.parent_blend
            improved = after["dice"] > before["dice"]
            if not improved:
                chosen, after, blend = parent_state, dict(before), 1.0
        if improved:
            message = (f"held-out Dice {before['dice']:.4f} -> {after['dice']:.4f} "
                       f"(kept step {state.best_step} of {state.steps}"
                       + (f", averaged with the parent, blend {blend:g})" if blend < 1 else ")"))
        else:
            message = (f"fine-tuning did not beat the parent on the held-out corrections "
                       f"(Dice {before['dice']:.4f}); the parent's weights are kept")
    else:
        improved, chosen, after = True, final_state, {}
        if few_images and config.parent_blend < 1.0:
            blend = config.parent_blend
            chosen = blend_states(parent_state, final_state, blend)
        message = (f"fine-tuned for {state.steps} steps (no holdout: not checked"
                   + (f"; averaged with the parent, blend {blend:g})" if blend < 1 else ")"))
    yield Message(message)
    elapsed = time.perf_counter() - started
    provenance = {
        "created": now_iso(),
        "kind": "finetune",
        "parent": {
            "name": model.name,
            "path": None if model.source_path is None else str(model.source_path),
            "created": model.provenance.get("created"),
        },
        "steps": state.steps,
        "time_s": round(elapsed, 2),
        "device": str(device),
        "n_corrected_pixels": n_corrected,
        "finetune": {
            "before": before,
            "after": after,
            "improved": improved,
            "best_step": state.best_step if improved else 0,
            "parent_blend": blend,
            "holdout": holdout_info,
            "message": message,
            "images": names,
            "recipe": {**config.to_dict(), "patch": patch, "total_steps": total_steps},
        },
        "history": subsample_history(state.history),
        "metrics": {"holdout_before": before, "holdout_after": after},
    }
    new_model = model_from_state(model, chosen, provenance)
    new_model.provenance.pop("name", None)  # the parent's display name is not ours
    return FinetuneResult(
        model=new_model,
        before=before,
        after=after,
        improved=improved,
        steps=state.steps,
        elapsed_s=elapsed,
        n_corrected_pixels=n_corrected,
        best_step=state.best_step if improved else 0,
        message=message,
        history=subsample_history(state.history),
        validations=state.validations,
        parent_blend=blend,
    )
