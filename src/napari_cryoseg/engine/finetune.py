"""Fine-tuning an existing model on user corrections, as a cancellable generator.

A *copy* of the model is trained (the input :class:`ModelFile` and its tensors are never
touched, so cancelling at any time leaves it as it was). The recipe moves as far from the
parent as the user's corrections say it should:

1. Part of the corrections is held out (:mod:`napari_cryoseg.engine.holdout`) and the
   parent is scored there.
2. The BatchNorm statistics are re-estimated on the user's images (corrected and
   unlabelled ones); the adapted start is kept when it scores at least as well on the
   held-out corrections (``adapt_batchnorm``).
3. The weights train on patches of the corrections, half of them placed where the parent
   was wrong (``focus_errors``), the decoder faster than the encoder (``head_lr_factor``),
   keeping the best weights on the held-out part.
4. The best weights are averaged with the start (``parent_blend``): with the blend chosen
   on the held-out part, preferring the weights nearest the parent unless moving further
   is clearly better there.
5. If the result does not beat the parent on the held-out part, the parent's weights are
   returned and a message says so.

With a time budget, the whole run (scoring, adaptation, training and blending) fits in it.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.adapt import adapt_batchnorm, blend_states, choose_blend
from napari_cryoseg.engine.augment import AugmentConfig
from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.device import resolve_device
from napari_cryoseg.engine.events import Message, Preview, TrainStep, Validation
from napari_cryoseg.engine.fitting import (
    SCHEDULES,
    FitSettings,
    FitState,
    cpu_state,
    fit,
    model_from_state,
    subsample_history,
)
from napari_cryoseg.engine.holdout import HOLDOUT_LAYOUTS, split_holdout
from napari_cryoseg.engine.preview import PreviewRequest, preview_function
from napari_cryoseg.engine.sampling import PatchSampler, check_pair
from napari_cryoseg.engine.scoring import predict_scores
from napari_cryoseg.model.checkpoint import ModelFile, now_iso

__all__ = ["FinetuneConfig", "FinetuneResult", "blend_states", "finetune"]

DEFAULT_STEPS = 200  # when neither steps nor a time budget is given
#: ``adapt_batchnorm`` choices.
ADAPT_MODES = ("auto", "always", "never")
#: Blend weights tried when ``parent_blend`` is None (chosen on the held-out corrections).
BLEND_CANDIDATES = (0.5, 0.75, 1.0)
#: Held-out checks early in a run: few-shot fine-tuning often peaks within tens of steps
#: and then over-fits the one or two corrected images, so the best weights are kept.
EARLY_VALIDATION_STEPS = (10, 25, 50, 100, 200)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a fine-tuning run (stored as the new model's recipe).

    Attributes
    ----------
    steps, time_budget_s : optional
        Optimiser steps and/or wall seconds for the whole run (whichever ends first);
        default :data:`DEFAULT_STEPS` steps.
    lr, weight_decay : float
        AdamW peak learning rate (of the encoder) and weight decay.
    head_lr_factor : float
        The decoder and head learn this many times faster than the encoder.
    schedule, warmup_fraction : str, float
        Learning-rate schedule (see :func:`~napari_cryoseg.engine.fitting.lr_factor`).
    freeze_encoder : bool
        Train only the decoder and head.
    freeze_batchnorm : bool
        Keep BatchNorm running statistics fixed (eval mode) while the weights train, at
        the parent's values or at those re-estimated by ``adapt_batchnorm``. Off by
        default: the statistics then follow the corrected images as the weights move,
        which a new class needs (its features have no statistics in the parent) and
        which scored as well or better on the CDeep3M domain shift (docs/quality.md).
    adapt_batchnorm : str
        ``"auto"``: re-estimate the BatchNorm statistics on the user's images and start
        from them when they score at least as well as the parent's on the held-out
        corrections (always without a holdout); ``"always"``; ``"never"``.
    batch_size, patch : int
        Patches per step and patch edge (rounded up to the network stride).
    holdout_fraction : float
        Fraction of the corrections held out to check the result (0 = none; then the
        trained weights are returned without a check).
    holdout_layout : str
        With fewer than 4 corrected images: ``"blocks"`` holds out square blocks
        scattered over each image, ``"rows"`` its bottom rows.
    val_every : int, optional
        Steps between held-out evaluations (default: about 5 per run, plus early ones).
    augment : AugmentConfig
        Patch augmentations (flips and 90-degree rotations by default: EM has no preferred
        orientation, and one corrected image is few patterns).
    oversample_rare : float
        Probability of centring a patch on the rarest class present.
    focus_errors : float
        Probability of placing a patch around a pixel the parent got wrong (where its
        labels differ from the corrections); the rest are placed at random.
    parent_blend : float or None
        The returned weights are ``start + w * (fine-tuned - start)`` (a weight-space
        average with the start, as WiSE-FT, Wortsman et al. 2022). None: ``w`` is chosen
        among :data:`BLEND_CANDIDATES` on the held-out corrections (:func:`choose_blend`,
        within ``blend_tolerance`` of the best with fewer than 4 images, the best with
        more); a number fixes it (1 = no averaging).
    blend_tolerance : float
        Held-out Dice a blend nearer the parent may give up (fewer than 4 images: their
        held-out pixels come from the corrected images themselves and favour the weights
        that fit those images hardest).
    dice_weight : float
        Weight of the soft Dice term next to the (binary) cross-entropy.
    seed : int
        Seeds the holdout, patch sampling, augmentation and dropout.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
    mixed_precision : bool
        bf16 (or fp16) autocast where the device runs it fast.
    """

    steps: int | None = None
    time_budget_s: float | None = None
    lr: float = 5e-4
    head_lr_factor: float = 1.0
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_fraction: float = 0.05
    freeze_encoder: bool = False
    freeze_batchnorm: bool = False
    adapt_batchnorm: str = "auto"
    batch_size: int = 4
    patch: int = 256
    holdout_fraction: float = 0.25
    holdout_layout: str = "blocks"
    val_every: int | None = None
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        brightness=0.0, contrast=0.0, gamma=0.0, noise=0.0))
    oversample_rare: float = 0.0
    focus_errors: float = 0.5
    parent_blend: float | None = None
    blend_tolerance: float = 0.01
    dice_weight: float = 10.0
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.steps is not None and self.steps < 1:
            problems.append(f"steps {self.steps} must be >= 1")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            problems.append(f"time budget {self.time_budget_s} s must be > 0")
        if not self.lr > 0:
            problems.append(f"learning rate {self.lr} must be > 0")
        if not self.head_lr_factor > 0:
            problems.append(f"head learning-rate factor {self.head_lr_factor} must be > 0")
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
        if self.parent_blend is not None and not 0.0 < self.parent_blend <= 1.0:
            problems.append(f"parent blend {self.parent_blend} must be in (0, 1]")
        if not self.blend_tolerance >= 0:
            problems.append(f"blend tolerance {self.blend_tolerance} must be >= 0")
        if not 0.0 <= self.focus_errors <= 1.0:
            problems.append(f"focus on errors {self.focus_errors} must be in [0, 1]")
        if self.holdout_layout not in HOLDOUT_LAYOUTS:
            problems.append(f"holdout layout {self.holdout_layout!r} must be one of "
                            f"{', '.join(HOLDOUT_LAYOUTS)}")
        if self.adapt_batchnorm not in ADAPT_MODES:
            problems.append(f"adapt_batchnorm {self.adapt_batchnorm!r} must be one of "
                            f"{', '.join(ADAPT_MODES)}")
        if problems:
            raise InputError("invalid fine-tuning settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (the recipe stored in the model file)."""
        return asdict(self)


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
        True when ``model`` differs from the parent (better on the holdout, or no
        holdout); False when the parent weights were kept.
    steps : int
        Optimiser steps done.
    elapsed_s : float
        Wall time.
    n_corrected_pixels : int
        Reviewed pixels (sum of the valid masks, or all mask pixels).
    best_step : int
        Step of the returned weights (0 = parent or the adapted start).
    message : str
        One line summarising the outcome.
    history : list of [step, loss]
        Sub-sampled training loss.
    validations : list of dict
        Held-out evaluations during the run.
    parent_blend : float
        Share of the fine-tuning step in the returned weights (1 = not averaged).
    adapted_batchnorm : bool
        True when training started from re-estimated BatchNorm statistics.
    blend_scores : dict
        Held-out Dice of every blend weight scored (empty without a holdout).
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
    adapted_batchnorm: bool = False
    blend_scores: dict[float, float] = field(default_factory=dict)


def _targets(
    model: ModelFile,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    valid_masks: Sequence[np.ndarray] | None,
    class_mapping: ClassMapping | None,
    names: list[str],
) -> list[np.ndarray]:
    """Class-index targets of the corrections, checked against the model's classes."""
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
    return targets


def _parent_errors(
    model: ModelFile, images: Sequence[np.ndarray], targets: Sequence[np.ndarray],
    valid: Sequence[np.ndarray] | None, device: torch.device,
) -> list[np.ndarray]:
    """Per image, the reviewed pixels where ``model``'s labels differ from the target."""
    from napari_cryoseg.engine.events import drain
    from napari_cryoseg.engine.predict import segment

    errors = []
    for i, (image, target) in enumerate(zip(images, targets)):
        labels = drain(segment(image, model, device=str(device))).labels
        wrong = labels != target
        errors.append(wrong if valid is None else wrong & valid[i])
    return errors


def finetune(
    model: ModelFile,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    valid_masks: Sequence[np.ndarray] | None = None,
    config: FinetuneConfig | None = None,
    *,
    class_mapping: ClassMapping | None = None,
    names: Sequence[str] | None = None,
    unlabelled: Sequence[np.ndarray] = (),
    preview: PreviewRequest | None = None,
) -> Generator[TrainStep | Validation | Message | Preview, None, FinetuneResult]:
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
    unlabelled : sequence of numpy.ndarray
        Other 2D images of the user's data (no corrections): used only to re-estimate
        the BatchNorm statistics.
    preview : PreviewRequest, optional
        A region to predict every few seconds with the current weights.

    Yields
    ------
    TrainStep, Validation, Message, Preview

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
    targets = _targets(model, images, masks, valid_masks, class_mapping, names)
    valid = None if valid_masks is None else [np.asarray(v).astype(bool) for v in valid_masks]
    n_corrected = int(sum(v.sum() for v in valid)) if valid is not None else int(
        sum(t.size for t in targets))
    if n_corrected == 0:
        raise InputError("no reviewed pixels: the valid masks are empty; correct some pixels")
    device = resolve_device(config.device)
    patch = -(-config.patch // model.config.stride) * model.config.stride
    few_images = len(images) < 4
    train_images, train_targets, train_valid, holdout, holdout_info = split_holdout(
        images, targets, valid, config.holdout_fraction, config.holdout_layout, config.seed
    )
    torch.manual_seed(config.seed)
    parent_state = cpu_state_of(model)

    def score(state: dict[str, torch.Tensor]) -> dict[str, float]:
        return predict_scores(model_from_state(model, state, {}), holdout, device).metrics(
            model.class_names)

    before: dict[str, float] = {}
    score_s = 0.0
    if holdout:
        yield Message(f"scoring the parent model on the held-out corrections ({holdout_info})")
        began = time.perf_counter()
        before = score(parent_state)
        score_s = time.perf_counter() - began
    # model.build() copies the weights into a new network: the parent's tensors are
    # never handed to the optimiser.
    net = model.build(device)
    start_state, start_metrics, adapted = parent_state, before, False
    if config.adapt_batchnorm != "never":
        yield Message("re-estimating the BatchNorm statistics on your images")
        if adapt_batchnorm(net, [*images, *unlabelled], model.normalization, device,
                           patch=patch, seed=config.seed,
                           mixed_precision=config.mixed_precision):
            candidate = cpu_state(net)
            candidate_metrics = score(candidate) if holdout else {}
            if (config.adapt_batchnorm == "always" or not holdout
                    or candidate_metrics["dice"] >= before["dice"]):
                start_state, start_metrics, adapted = candidate, candidate_metrics, True
                if holdout:
                    yield Message(f"adapted BatchNorm statistics: held-out Dice "
                                  f"{before['dice']:.4f} -> {candidate_metrics['dice']:.4f}")
            else:
                net.load_state_dict(start_state)
                yield Message(f"kept the parent's BatchNorm statistics (held-out Dice "
                              f"{before['dice']:.4f}, adapted "
                              f"{candidate_metrics['dice']:.4f})")
    focus = None
    if config.focus_errors > 0:
        focus = _parent_errors(model_from_state(model, start_state, {}), train_images,
                               train_targets, train_valid, device)
    sampler = PatchSampler(
        train_images, train_targets, model.config.n_classes, patch, model.normalization,
        config.augment, valid_masks=train_valid, oversample_rare=config.oversample_rare,
        seed=config.seed, focus_masks=focus, focus=config.focus_errors,
    )
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
    blends = (BLEND_CANDIDATES if config.parent_blend is None else (config.parent_blend,))
    budget = None
    if config.time_budget_s is not None:
        # The whole run fits the budget: what is spent already and the blends scored at
        # the end (one held-out scoring each) come off the training time.
        reserve = score_s * sum(1 for w in blends if w < 1.0)
        budget = max(config.time_budget_s - (time.perf_counter() - started) - reserve, 1.0)
    validate = None
    if holdout:
        def validate(trained: torch.nn.Module) -> tuple[float, float, dict[str, float]]:
            metrics = predict_scores(model.with_weights(trained), holdout, device).metrics(
                model.class_names)
            return metrics["dice"], metrics.get("loss", float("nan")), metrics

    settings = FitSettings(
        batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
        schedule=config.schedule, warmup_fraction=config.warmup_fraction,
        total_steps=total_steps, time_budget_s=budget,
        val_every=config.val_every or (max(5, total_steps // 5) if total_steps else None),
        mixed_precision=config.mixed_precision, dice_weight=config.dice_weight,
        early_val_steps=EARLY_VALIDATION_STEPS, head_lr_factor=config.head_lr_factor,
        max_val_share=0.25,
        **({"preview_every_s": preview.every_s} if preview is not None else {}),
    )
    state = FitState()
    yield Message(
        f"fine-tuning {model.name} on {n_corrected:,} corrected pixels in {len(images)} "
        f"image(s) on {device}" + (f"; holdout: {holdout_info}" if holdout else "")
    )
    net.train()
    try:
        yield from fit(net, sampler, settings, device=device, validate=validate,
                       initial_best=(start_metrics["dice"], start_state) if holdout else None,
                       frozen=frozen, state=state,
                       preview=None if preview is None else preview_function(
                           model, preview, device))
        final_state = cpu_state(net)
    finally:
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    outcome = yield from _choose(config, state, start_state, final_state, start_metrics,
                                 blends, few_images, score if holdout else None)
    chosen, after, blend, blend_scores = outcome
    improved = (after["dice"] > before["dice"]) if holdout else True
    if holdout and not improved:
        chosen, after, blend = parent_state, dict(before), 1.0
    best_step = state.best_step if improved else 0
    message = _describe(holdout, improved, before, after, state, blend, adapted and improved)
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
            "best_step": best_step,
            "parent_blend": blend,
            "blend_scores": {f"{w:g}": round(d, 5) for w, d in blend_scores.items()},
            "adapted_batchnorm": bool(adapted and improved),
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
        model=new_model, before=before, after=after, improved=improved, steps=state.steps,
        elapsed_s=elapsed, n_corrected_pixels=n_corrected, best_step=best_step,
        message=message, history=subsample_history(state.history),
        validations=state.validations, parent_blend=blend,
        adapted_batchnorm=bool(adapted and improved), blend_scores=blend_scores,
    )


def cpu_state_of(model: ModelFile) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model file's weights."""
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict.items()}


def _choose(
    config: FinetuneConfig,
    state: FitState,
    start_state: dict[str, torch.Tensor],
    final_state: dict[str, torch.Tensor],
    start_metrics: dict[str, float],
    blends: Sequence[float],
    few_images: bool,
    score: Any,
) -> Generator[Message, None, tuple[dict[str, torch.Tensor], dict[str, float], float,
                                 dict[float, float]]]:
    """The returned weights: the best (or last) trained weights blended with the start.

    Returns the weights, their held-out metrics, the blend weight and the held-out Dice
    of every blend scored.
    """
    if score is None:  # no holdout: the last weights, blended as asked (or not at all)
        weight = config.parent_blend if config.parent_blend is not None else 1.0
        return blend_states(start_state, final_state, weight), {}, weight, {}
    if state.best_step == 0 or state.best_state is None:  # nothing beat the start
        return start_state, dict(start_metrics), 1.0, {}
    best_validation = next(v for v in state.validations if v["step"] == state.best_step)
    scores = {1.0: best_validation["metrics"]}
    for weight in blends:
        if weight < 1.0:
            yield Message(f"scoring the average with the start (blend {weight:g}) on the "
                          "held-out corrections")
            scores[weight] = score(blend_states(start_state, state.best_state, weight))
    if config.parent_blend is None:  # chosen on the held-out corrections
        tolerance = config.blend_tolerance if few_images else 0.0
        weight = choose_blend({w: scores[w]["dice"] for w in blends}, tolerance)
    elif few_images:  # a fixed blend is what was asked for
        weight = config.parent_blend
    else:  # many images: their held-out images are independent, so they may refuse it
        weight = choose_blend({w: m["dice"] for w, m in scores.items()}, 0.0)
    chosen = (state.best_state if weight == 1.0
              else blend_states(start_state, state.best_state, weight))
    return chosen, scores[weight], weight, {w: m["dice"] for w, m in scores.items()}


def _describe(holdout: list, improved: bool, before: dict[str, float],
              after: dict[str, float], state: FitState, blend: float, adapted: bool) -> str:
    """One line on the outcome."""
    extras = []
    if adapted:
        extras.append("BatchNorm statistics adapted")
    if blend < 1:
        extras.append(f"averaged with the start, blend {blend:g}")
    extra = ("; " + ", ".join(extras)) if extras else ""
    if not holdout:
        return f"fine-tuned for {state.steps} steps (no holdout: not checked{extra})"
    if not improved:
        return ("fine-tuning did not beat the parent on the held-out corrections "
                f"(Dice {before['dice']:.4f}); the parent's weights are kept")
    kept = (f"kept step {state.best_step} of {state.steps}" if state.best_step
            else f"no training step beat the start after {state.steps} steps")
    return f"held-out Dice {before['dice']:.4f} -> {after['dice']:.4f} ({kept}{extra})"
