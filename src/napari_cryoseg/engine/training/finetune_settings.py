"""Settings and result of a fine-tuning run
(:func:`napari_cryoseg.engine.training.finetune.finetune`).

One frozen dataclass declares every knob of the recipe once; the dock's settings form,
``cryoseg finetune``'s flags and the recipe stored in a fine-tuned model file all read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.setting import bound_problems, setting
from napari_cryoseg.engine.training.augment import AugmentConfig
from napari_cryoseg.engine.training.fitting import (
    SCHEDULES,
    FitSettings,
    lr_setting,
    steps_setting,
    time_budget_setting,
)
from napari_cryoseg.engine.training.holdout import HOLDOUT_LAYOUTS
from napari_cryoseg.model.checkpoint import ModelFile

__all__ = ["ADAPT_MODES", "BLEND_CANDIDATES", "DEFAULT_STEPS", "EARLY_VALIDATION_STEPS",
           "FORGETFUL_BLEND",
           "FinetuneConfig", "FinetuneResult"]

DEFAULT_STEPS = 200  # when neither steps nor a time budget is given
#: ``adapt_batchnorm`` choices.
ADAPT_MODES = ("auto", "always", "never")
#: Blend weights tried when ``parent_blend`` is None (chosen on the held-out corrections).
BLEND_CANDIDATES = (0.5, 0.75, 1.0)
#: The blend also tried when the fine-tuned weights forget what the user confirmed
#: (``keep_confirmed``): a quarter of the step keeps most of the parent's answers.
FORGETFUL_BLEND = 0.25
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
        Learning-rate schedule (see :func:`~napari_cryoseg.engine.training.fitting.lr_factor`).
    freeze_encoder : bool
        Train only the decoder and head.
    freeze_batchnorm : bool
        Keep BatchNorm running statistics fixed (eval mode) while the weights train, at
        the parent's values or at those re-estimated by ``adapt_batchnorm``. Off by
        default: the statistics then follow the corrected images as the weights move,
        which a new class needs (its features have no statistics in the parent) and
        which scored as well or better on the CDeep3M domain shift (docs/quality.md).
    adapt_batchnorm : str
        ``"auto"``: when the domain has moved (the parent scores under ``adapt_below``
        on the held-out corrections), re-estimate the BatchNorm statistics on the user's
        images and start from them when they score at least as well as the parent's
        there (always without a holdout); ``"always"``; ``"never"``.
    adapt_below : float
        Held-out Dice of the parent under which ``"auto"`` re-estimates the statistics.
        Statistics estimated on one or two images can fit those images and hurt the
        user's others, which held-out blocks of the same images cannot see: on VNC ->
        ISBI membranes (parent 0.77 on the held-out blocks) they scored the held-out
        blocks as well as the parent's and the 24 other sections 0.43 against 0.70,
        while on VNC -> CDeep3M mitochondria (parent 0.15-0.28) they were the largest
        single gain (docs/quality.md).
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
    check_beyond : bool
        Compare the result with the parent on the pixels nobody corrected (the other
        images handed over and the unreviewed parts of the corrected ones; see
        :mod:`napari_cryoseg.engine.training.change_check`): re-estimated BatchNorm statistics and
        blends are kept only when the change they make there goes the way the
        corrections went, and the result carries the comparison (``change_report``).
    keep_elsewhere : float
        Share of each batch taken from pixels nobody corrected (the user's other images
        and the unreviewed parts of the corrected ones, more than 64 px from any edit)
        with the parent's own labels as targets where it is sure of them
        (:mod:`napari_cryoseg.engine.training.anchors`; one colour of a checkerboard, the change
        check keeps the other): the child changes where the corrections are and keeps
        the parent's answer elsewhere. 0 trains on the corrections alone. Needs
        ``check_beyond``.
    keep_elsewhere_foreground : float
        Share of those patches centred on the parent's (sure) objects rather than on
        any anchor pixel: mostly-background anchors teach "keep the background" and
        let corrections that erase teach "predict less" everywhere.
    keep_confirmed : float
        Least share of the held-out pixels the user left with the parent's label
        (confirmed) that the returned weights must still give that label, for each
        class the corrections shrink; weights and blends that keep less are not used
        (a blend a quarter of the way is tried too), and the parent is kept when none
        does. 0 turns the rule off.
    seed : int
        Seeds the holdout, patch sampling, augmentation and dropout.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
    mixed_precision : bool
        bf16 (or fp16) autocast where the device runs it fast.
    """

    steps: int | None = steps_setting(DEFAULT_STEPS)
    time_budget_s: float | None = time_budget_setting()
    lr: float = lr_setting(5e-4, help="AdamW peak learning rate (of the encoder)")
    head_lr_factor: float = setting(
        1.0, label="Head learning rate:", flag="--head-lr-factor",
        name="head learning-rate factor", what="a factor", min=0.0, min_open=True,
        max=100.0, help="The decoder and head learn this many times faster than the encoder")
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_fraction: float = 0.05
    freeze_encoder: bool = setting(
        False, label="Freeze encoder", flag="--freeze-encoder", name="freeze encoder",
        help="Train only the decoder and head: faster, and less forgetting with few "
        "corrections")
    freeze_batchnorm: bool = False
    adapt_batchnorm: str = setting(
        "auto", label="Adapt BatchNorm:", flag="--adapt-batchnorm", name="adapt_batchnorm",
        choices=ADAPT_MODES,
        help="Re-estimate the BatchNorm statistics on your images first: 'auto' does when "
        "the model scores under the adapt-below Dice on the held-out corrections, and keeps "
        "them when those say so")
    adapt_below: float = setting(
        0.5, label="Adapt below:", flag="--adapt-below", name="adapt_below", what="a Dice",
        min=0.0, max=1.0,
        help="Held-out Dice of the model under which 'auto' re-estimates the BatchNorm "
        "statistics")
    batch_size: int = 4
    patch: int = 256
    holdout_fraction: float = setting(
        0.25, label="Held out:", flag="--holdout-fraction", name="holdout fraction",
        what="a fraction", min=0.0, max=1.0, max_open=True,
        help="Share of the corrections held out to check the new model (0 = no check)")
    holdout_layout: str = setting(
        "blocks", label="Holdout layout:", flag="--holdout-layout", name="holdout layout",
        choices=HOLDOUT_LAYOUTS,
        help="With 1-3 images, hold out scattered 64-px blocks or the bottom rows of each "
        "image")
    val_every: int | None = None
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        brightness=0.0, contrast=0.0, gamma=0.0, noise=0.0))
    oversample_rare: float = 0.0
    focus_errors: float = setting(
        0.5, label="Focus on errors:", flag="--focus-errors", name="focus on errors",
        what="a share of patches", min=0.0, max=1.0,
        help="Share of patches placed where the input model is wrong")
    parent_blend: float | None = setting(
        None, label="Parent blend:", flag="--parent-blend", name="parent blend",
        what="'auto' or a weight", min=0.0, min_open=True, max=1.0,
        help="Return start + W * (fine-tuned - start): 'auto' (the default) chooses W on the "
        "held-out corrections, a number fixes it (1 = no averaging)")
    blend_tolerance: float = 0.01
    dice_weight: float = 10.0
    check_beyond: bool = True
    keep_elsewhere: float = setting(
        0.5, label="Keep elsewhere:", flag="--keep-elsewhere", name="keep_elsewhere",
        what="a share of patches", min=0.0, max=1.0, max_open=True,
        help="Share of patches taken from pixels nobody corrected (other images, "
        "unreviewed parts) with the input model's own sure labels as targets, so the new "
        "model changes where the corrections are (0 = off)")
    keep_elsewhere_foreground: float = 0.5
    keep_confirmed: float = 0.9
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        problems = bound_problems(self)
        if self.batch_size < 1:
            problems.append(f"batch size {self.batch_size} must be >= 1")
        if self.patch < 16:
            problems.append(f"patch {self.patch} must be >= 16 pixels")
        if not self.dice_weight >= 0:
            problems.append(f"dice weight {self.dice_weight} must be >= 0")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule {self.schedule!r} must be one of {', '.join(SCHEDULES)}")
        for name in ("keep_elsewhere_foreground", "keep_confirmed"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name.replace('_', ' ')} {getattr(self, name)} must be "
                                "between 0 and 1")
        if not self.blend_tolerance >= 0:
            problems.append(f"blend tolerance {self.blend_tolerance} must be >= 0")
        if problems:
            raise InputError("invalid fine-tuning settings: " + "; ".join(problems))

    @property
    def total_steps(self) -> int | None:
        """The step limit of the run: ``steps``, or :data:`DEFAULT_STEPS` when neither
        steps nor a time budget is given (None: the time budget alone)."""
        if self.steps is None and self.time_budget_s is None:
            return DEFAULT_STEPS
        return self.steps

    def fit_settings(self, time_budget_s: float | None, max_val_share: float) -> FitSettings:
        """The optimisation settings of this recipe.

        ``time_budget_s`` is the training loop's share of the run's budget (the held-out
        checks and blends come off it) and ``max_val_share`` the share of it validation
        may take (see :func:`~napari_cryoseg.engine.training.overheads.validation_share`).
        """
        total = self.total_steps
        return FitSettings(
            batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            schedule=self.schedule, warmup_fraction=self.warmup_fraction,
            mixed_precision=self.mixed_precision, dice_weight=self.dice_weight,
            total_steps=total, time_budget_s=time_budget_s,
            val_every=self.val_every or (max(5, total // 5) if total else None),
            early_val_steps=EARLY_VALIDATION_STEPS, head_lr_factor=self.head_lr_factor,
            max_val_share=max_val_share)

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
    change_report : ChangeReport or None
        The new model against the parent on the pixels nobody corrected (None when not
        checked); ``change_report.flagged``: the change is not supported by the
        corrections and the user should decide.
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
    change_report: Any = None

    @property
    def flagged(self) -> bool:
        """True when the new model changes the user's other images in a way the
        corrections do not support (apply it only when the user says so)."""
        return bool(self.improved and self.change_report is not None
                    and self.change_report.flagged)
