"""Fine-tuning an existing model on user corrections, as a cancellable generator.

A *copy* of the model is trained (the input :class:`ModelFile` and its tensors are never
touched, so cancelling at any time leaves it as it was). The recipe moves as far from the
parent as the user's corrections say it should:

1. Part of the corrections is held out (:mod:`napari_cryoseg.engine.training.holdout`) and the
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
6. Held-out corrections cannot see the rest of the user's images, so the adapted start
   and the result are compared with the parent on the pixels nobody corrected
   (:mod:`napari_cryoseg.engine.training.change_check`): statistics whose change there the
   corrections do not support are not kept, a flagged result falls back once to a blend
   nearer the start, and the result carries the comparison (``change_report``).

With a time budget, the whole run (scoring, adaptation, training and blending) fits in it.
"""

# Over 450 lines on purpose: one run's stages (held-out split, BatchNorm adaptation, the
# fit, blends, the check beyond the corrections) share its budget and state; split, each
# stage would need half the others' locals passed in.

from __future__ import annotations

import time
from collections.abc import Generator, Sequence

import numpy as np
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.classes import ClassMapping, check_pair, class_index_dtype
from napari_cryoseg.engine.device import resolve_device
from napari_cryoseg.engine.events import Message, Preview, TrainStep, Validation
from napari_cryoseg.engine.training.adapt import adapt_batchnorm, blend_states
from napari_cryoseg.engine.training.anchors import anchor_sampler, split_anchors
from napari_cryoseg.engine.training.anchors import describe as describe_anchors
from napari_cryoseg.engine.training.change_check import (
    ChangeReport,
    CheckSet,
    build_check,
    check_model,
    check_result,
)
from napari_cryoseg.engine.training.finetune_choice import choose_weights, describe_outcome
from napari_cryoseg.engine.training.finetune_settings import (
    ADAPT_MODES,
    BLEND_CANDIDATES,
    FinetuneConfig,
    FinetuneResult,
)
from napari_cryoseg.engine.training.fitting import (
    FitState,
    cpu_state,
    fit,
    model_from_state,
    subsample_history,
)
from napari_cryoseg.engine.training.holdout import split_holdout
from napari_cryoseg.engine.training.overheads import (
    adapt_time_limit,
    affordable_blends,
    validation_share,
)
from napari_cryoseg.engine.training.preview import PreviewRequest, preview_function
from napari_cryoseg.engine.training.sampling import PatchSampler
from napari_cryoseg.engine.training.scoring import predict_scores, shrinking_classes
from napari_cryoseg.model.checkpoint import ModelFile, now_iso

__all__ = ["ADAPT_MODES", "FinetuneConfig", "FinetuneResult", "blend_states", "correction_targets",
           "finetune"]



def correction_targets(
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
        targets.append(target.astype(class_index_dtype(n_classes)))  # 257 stays 257
    return targets


def errors_from_holdout_labels(
    labels: Sequence[np.ndarray] | None,
    holdout: Sequence[tuple],
    train_images: Sequence[np.ndarray],
    train_targets: Sequence[np.ndarray],
    train_valid: Sequence[np.ndarray] | None,
) -> list[np.ndarray] | None:
    """Where a model is wrong on the training pixels, from its held-out predictions.

    With blocks held out of the training images, each held-out item is the whole training
    image, so the labels predicted to score it also cover the training pixels. None when
    they do not (held-out images of their own, or no labels kept): segment again.
    """
    if labels is None or len(labels) != len(train_images) or len(holdout) != len(labels):
        return None
    if any(item[0] is not image or item[0].shape[:2] != target.shape[:2]
           for item, image, target in zip(holdout, train_images, train_targets)):
        return None
    valid = train_valid if train_valid is not None else [None] * len(labels)
    return [(lab != target) if v is None else (lab != target) & v
            for lab, target, v in zip(labels, train_targets, valid)]


def _parent_errors(
    model: ModelFile, images: Sequence[np.ndarray], targets: Sequence[np.ndarray],
    valid: Sequence[np.ndarray] | None, device: torch.device,
) -> list[np.ndarray]:
    """Per image, the reviewed pixels where ``model``'s labels differ from the target."""
    from napari_cryoseg.engine.events import drain
    from napari_cryoseg.engine.inference.predict import segment

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
    targets = correction_targets(model, images, masks, valid_masks, class_mapping, names)
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

    # Held-out predictions of the candidate start weights, by id of their state: with
    # blocks held out of the training images, the start's prediction of those whole images
    # also tells where it is wrong on the training pixels (focus_errors) for free.
    start_labels: dict[int, list[np.ndarray]] = {}

    scoring = [0.0]  # seconds spent scoring on the held-out part (where the time went)

    # The parent's held-out labels: where they agree with the corrections the user
    # confirmed them, and a candidate must keep enough of that (``keep_confirmed``).
    parent_holdout: list[np.ndarray] = []
    # The classes the corrections shrink: only they can be forgotten where confirmed.
    shrinking: list[str] = []

    def score(state: dict[str, torch.Tensor], keep: bool = False) -> dict[str, float]:
        began = time.perf_counter()
        labels: list[np.ndarray] | None = [] if keep else None
        metrics = predict_scores(model_from_state(model, state, {}), holdout, device,
                                 labels_out=labels,
                                 references=parent_holdout or None).metrics(
                                     model.class_names)
        if labels is not None:
            start_labels[id(state)] = labels
        scoring[0] += time.perf_counter() - began
        return metrics

    before: dict[str, float] = {}
    score_s = 0.0
    if holdout:
        yield Message(f"scoring the parent model on the held-out corrections ({holdout_info})")
        began = time.perf_counter()
        before = score(parent_state, keep=True)
        parent_holdout.extend(start_labels[id(parent_state)])
        shrinking.extend(model.class_names[c] for c in shrinking_classes(
            parent_holdout, holdout, model.config.n_classes))
        score_s = time.perf_counter() - began
    check: CheckSet | None = None
    check_s = 0.0
    # Nothing to compare on when every pixel of the corrected images is reviewed and no
    # other image is given: the run is then exactly the recipe without the check.
    if config.check_beyond and (len(unlabelled) or valid is not None):
        yield Message("segmenting your other images with the parent (to compare the result)")
        began = time.perf_counter()
        # The parent's held-out labels are known, but not how sure it was of them: the
        # corrected images are segmented again for the probabilities (keep_elsewhere and
        # the check's sure-pixel rule use them).
        check = build_check(model, images, targets, valid, unlabelled, device,
                            confidence=True) or None
        check_s = time.perf_counter() - began
    # model.build() copies the weights into a new network: the parent's tensors are
    # never handed to the optimiser.
    net = model.build(device)
    start_state, start_metrics, adapted = parent_state, before, False
    moved = (config.adapt_batchnorm == "always" or not holdout
             or before["dice"] < config.adapt_below)
    if config.adapt_batchnorm == "auto" and not moved:
        yield Message(f"kept the parent's BatchNorm statistics: it scores "
                      f"{before['dice']:.4f} on the held-out corrections already (domain "
                      f"moved little; re-estimated below {config.adapt_below:g})")
    # Checks take at most their share of a time budget (engine/training/overheads.py).
    adapt_limit = adapt_time_limit(config.time_budget_s, score_s, score_s if holdout else 0)
    adapt_s = 0.0
    if config.adapt_batchnorm != "never" and moved and adapt_limit == 0.0:
        moved = False
        yield Message("kept the parent's BatchNorm statistics: re-estimating them does not "
                      f"fit in the {config.time_budget_s:g} s time budget")
    if config.adapt_batchnorm != "never" and moved:
        yield Message("re-estimating the BatchNorm statistics on your images")
        began = time.perf_counter()
        updated = adapt_batchnorm(net, [*images, *unlabelled], model.normalization, device,
                                  patch=patch, seed=config.seed,
                                  mixed_precision=config.mixed_precision,
                                  time_limit_s=adapt_limit)
        adapt_s = time.perf_counter() - began
        if updated:
            candidate = cpu_state(net)
            candidate_metrics = score(candidate, keep=True) if holdout else {}
            accepted = (config.adapt_batchnorm == "always" or not holdout
                        or candidate_metrics["dice"] >= before["dice"])
            bn_report = None
            if accepted and check is not None and config.adapt_batchnorm == "auto":
                # Held-out corrections cannot see the rest of the user's images:
                # statistics that make the model predict more (or less) everywhere can
                # win on corrected pixels the parent got wrong by construction. They
                # are kept only when the change they make elsewhere goes the way the
                # corrections went.
                bn_report = check_model(model_from_state(model, candidate, {}), check,
                                        device)
            if bn_report is not None and bn_report.flagged:
                net.load_state_dict(start_state)
                yield Message("kept the parent's BatchNorm statistics: re-estimated ones "
                              f"{bn_report.describe()}")
            elif accepted:
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
        focus = errors_from_holdout_labels(start_labels.get(id(start_state)), holdout,
                                           train_images, train_targets, train_valid)
        if focus is None:
            focus = _parent_errors(model_from_state(model, start_state, {}), train_images,
                                   train_targets, train_valid, device)
    start_labels.clear()
    sampler = PatchSampler(
        train_images, train_targets, model.config.n_classes, patch, model.normalization,
        config.augment, valid_masks=train_valid, oversample_rare=config.oversample_rare,
        seed=config.seed, focus_masks=focus, focus=config.focus_errors,
    )
    if check is not None and config.keep_elsewhere > 0:
        anchors = split_anchors(check)
        mixed = anchor_sampler(anchors, sampler, model.normalization, config.keep_elsewhere,
                               config.seed, config.keep_elsewhere_foreground)
        if mixed is not None:
            sampler = mixed
            yield Message(describe_anchors(anchors, config.keep_elsewhere))
    frozen: list[torch.nn.Module] = []
    if config.freeze_encoder:
        for param in net.encoders.parameters():
            param.requires_grad_(False)
        frozen = [net.encoders]  # also keep their BatchNorm statistics fixed
    if config.freeze_batchnorm:
        frozen += [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    total_steps = config.total_steps
    blends = (BLEND_CANDIDATES if config.parent_blend is None else (config.parent_blend,))
    if config.parent_blend is None and holdout:
        blends = affordable_blends(blends, config.time_budget_s, scoring[0] + adapt_s,
                                   score_s)
    budget = None
    # Without a time budget the user asked for steps: every due check runs (its time is
    # part of the elapsed time, so a share of 1 never skips one) and a seed gives the
    # same run on any machine and load.
    val_share = 1.0
    if config.time_budget_s is not None:
        # The whole run fits the budget: what is spent already, the final held-out check
        # and the blends scored at the end (one held-out scoring each) come off the
        # training time.
        reserve = score_s * (1 + sum(1 for w in blends if w < 1.0)) if holdout else 0.0
        reserve += 2 * check_s  # the check of the result (and of one fallback)
        budget = max(config.time_budget_s - (time.perf_counter() - started) - reserve, 1.0)
        val_share = validation_share(config.time_budget_s, scoring[0] + adapt_s, reserve,
                                     budget)
    validate = None
    if holdout:
        def validate(trained: torch.nn.Module) -> tuple[float, float, dict[str, float]]:
            metrics = predict_scores(model.with_weights(trained), holdout, device,
                                     references=parent_holdout or None).metrics(
                                         model.class_names)
            return metrics["dice"], metrics.get("loss", float("nan")), metrics

    settings = config.fit_settings(budget, val_share)
    if preview is not None:
        settings = settings.with_(preview_every_s=preview.every_s)
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
    forgot: list[str] = []
    outcome = yield from choose_weights(config, state, start_state, final_state, start_metrics,
                                 blends, few_images, score if holdout else None, forgot,
                                 shrinking)
    chosen, after, blend, blend_scores = outcome
    improved = (after["dice"] > before["dice"]) if holdout else True
    if holdout and not improved:
        chosen, after, blend = parent_state, dict(before), 1.0
    report: ChangeReport | None = None
    if check is not None and improved:
        chosen, after, blend, report = yield from check_result(
            model, check, device, chosen, after, blend, start_state, state, before,
            blend_scores, score if holdout else None)
    best_step = state.best_step if improved else 0
    message = describe_outcome(holdout, improved, before, after, state, blend, adapted and improved)
    if forgot and not improved:
        message = (f"{forgot[0]}, and nothing that keeps them beats the parent on the "
                   "held-out corrections; the parent's weights are kept")
    if report is not None:
        message += f"; {report.describe()}"
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
        "adapt_s": round(adapt_s, 2),
        "scoring_s": round(scoring[0], 2),
        "validation_s": round(state.validation_s, 2),
        "preview_s": round(state.preview_s, 2),
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
            "change_check": None if report is None else report.to_dict(),
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
        change_report=report,
    )


def cpu_state_of(model: ModelFile) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model file's weights."""
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict.items()}
