"""Settings and result of training from scratch
(:func:`napari_cryoseg.engine.training.train.train`).

One frozen dataclass declares every knob once; the dock's Train form, ``cryoseg train``'s
flags and the recipe stored in the model file all read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.core.setting import about, bound_problems, setting
from napari_cryoseg.core.temporal import BACKGROUND_MODES
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.training.augment import AugmentConfig
from napari_cryoseg.engine.training.fitting import (
    SCHEDULES,
    FitSettings,
    lr_setting,
    steps_setting,
    time_budget_setting,
)
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import PRESETS, UNetConfig, preset
from napari_cryoseg.model.file_checks import MAX_TEMPORAL_CONTEXT

__all__ = ["CLASS_WEIGHTINGS", "DEFAULT_STEPS", "TrainConfig", "TrainResult"]

CLASS_WEIGHTINGS = ("none", "median_frequency")
DEFAULT_STEPS = 1000  # when neither steps, epochs nor a time budget is given
#: A training patch and batch are bounded like an inference tile and batch.
_MAX_PATCH = about(TilingConfig, "tile").max
_MAX_BATCH = about(TilingConfig, "batch_size").max


@dataclass(frozen=True)
class TrainConfig:
    """Everything that controls a training run (stored as the model's recipe).

    Attributes
    ----------
    preset : str
        Architecture preset (see :data:`napari_cryoseg.model.config.PRESETS`).
    init : str
        Where the weights start: ``"backbone"`` (the bundled EM backbone with a new output
        head for these classes; used when the architecture is the backbone's: the
        ``small`` preset, one input channel, otherwise random weights with a message),
        ``"random"``, or the path of a model file to start from the same way.
    unet : UNetConfig, optional
        Explicit architecture (overrides ``preset``); ``n_classes`` is always set from
        the class mapping.
    steps, epochs, time_budget_s : optional
        Length of training: optimiser steps, passes over the training pixels, or wall
        seconds. With several, training stops at whichever ends first; with none,
        :data:`DEFAULT_STEPS` steps.
    batch_size, patch : int
        Patches per step and patch edge (rounded up to the network stride).
    lr, weight_decay : float
        AdamW peak learning rate and weight decay.
    schedule : str
        ``"onecycle"`` (warm up from lr/25, cosine down to ~0) or ``"cosine"`` (linear
        warm-up, cosine down to 0); progress is the larger of step and time fraction.
    warmup_fraction : float
        Fraction of training spent warming up.
    val_fraction : float
        Fraction of the images held out for validation, as one contiguous block of files
        (neighbouring EM sections are correlated, so a random split would leak). With one
        image, its bottom rows are held out instead. 0 disables validation.
    val_block : str
        ``"last"`` or ``"first"``: which end of the file list is held out.
    val_every : int, optional
        Steps between validations (default: about 10 validations per run).
    val_crop : int
        Validation images are centre-cropped to at most this edge, for speed.
    patience : int, optional
        Stop after this many validations without a better Dice (None = never).
    seed : int
        Seeds weights, patch sampling and augmentation.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
    mixed_precision : bool
        bf16 (or fp16) autocast on CUDA; ignored elsewhere.
    class_weighting : str
        ``"none"`` or ``"median_frequency"`` cross-entropy weights.
    oversample_rare : float
        Probability of centring a patch on the rarest class present.
    augment : AugmentConfig
        Patch augmentations (``augment.elastic`` > 0 adds elastic deformation, applied
        to each batch on the training device).
    normalization : NormalizationConfig
        Intensity normalisation stored in the model file.
    dice_weight : float
        Weight of the soft Dice term of the loss.
    temporal_context : int
        ``k > 0``: train on ``(T, Y, X)`` time series (masks ``(T, Y, X)``) with the
        frames ``t-k..t+k`` as ``2k+1`` input channels (edges repeated); stored in the
        model file, and inference then stacks frames the same way.
    background_subtraction : str
        ``"none"`` or ``"median"``: subtract each series' per-pixel temporal median
        before normalisation (time series only; stored in the model file and applied
        identically at inference).
    tune_threshold : bool
        Binary models: after training, pick the foreground probability threshold with
        the best validation Dice among :data:`THRESHOLD_CANDIDATES` and store it in the
        model file (kept at 0.5 unless another beats it by 0.002). Off by default: on
        ISBI 2012 the validation block (sections 19-23) chose 0.35 (+0.003 there) and
        the test sections 24-29 lost 0.001 (docs/quality.md); it pays off when the
        validation images are representative of the images to segment.
    """

    preset: str = setting(
        "small", label="Size:", flag="--preset", name="preset", choices=tuple(PRESETS),
        help="Network size (architecture preset): bigger learns more but each step costs "
        "more")
    unet: UNetConfig | None = None
    init: str = setting(
        "backbone", label="Start from:", flag="--init", name="init",
        help="Where the weights start: the bundled EM backbone (pretrained on real EM: "
        "membranes, mitochondria, glia, synapses; it learns your classes from a few "
        "strokes, with the small preset on single-channel images) with a new head for "
        "your classes, random weights (many more steps), or a model file")
    steps: int | None = steps_setting(DEFAULT_STEPS)
    epochs: float | None = setting(
        None, label="Epochs:", flag="--epochs", name="epochs", what="a number of epochs",
        min=0.0, min_open=True, max=1e6, help="Passes over the training pixels")
    time_budget_s: float | None = time_budget_setting()
    batch_size: int = setting(
        8, label="Batch size:", flag="--batch-size", name="batch size", what="a batch size",
        min=1, max=_MAX_BATCH, help="Patches per optimiser step")
    patch: int = setting(
        256, label="Patch:", flag="--patch", name="patch", what="a patch edge in pixels",
        min=16, max=_MAX_PATCH,
        help="Patch edge in pixels (at most the largest image, rounded up to the network "
        "stride)")
    lr: float = lr_setting(1e-3, help="AdamW peak learning rate")
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    warmup_fraction: float = 0.1
    val_fraction: float = setting(
        0.2, label="Validation:", flag="--val-fraction", name="validation fraction",
        what="a fraction", min=0.0, max=1.0, max_open=True,
        help="Fraction of the files (the last block) held out for validation")
    val_block: str = "last"
    val_every: int | None = None
    val_crop: int = 1024
    patience: int | None = None
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True
    class_weighting: str = setting(
        "none", label="Class weights:", flag="--class-weighting", name="class weighting",
        choices=CLASS_WEIGHTINGS, help="Cross-entropy class weights")
    oversample_rare: float = setting(
        0.0, label="Rare classes:", flag="--oversample-rare", name="oversample_rare",
        what="a probability", min=0.0, max=1.0,
        help="Probability of centring a patch on the rarest class")
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    dice_weight: float = 1.0
    temporal_context: int = setting(
        0, label="Temporal context:", flag="--temporal-context", name="temporal context",
        what="a number of frames", min=0, max=MAX_TEMPORAL_CONTEXT,
        help="Time-lapse training: images and masks are (T, Y, X) stacks and frames "
        "t-K..t+K are the 2K+1 input channels (0 = 2D images)")
    background_subtraction: str = setting(
        "none", label="Background:", flag="--background-subtraction",
        name="background subtraction", choices=BACKGROUND_MODES,
        help="Time-lapse only: subtract the per-pixel temporal median of each stack before "
        "normalisation (stored in the model)")
    tune_threshold: bool = setting(
        False, label="Tune threshold", flag="--tune-threshold", name="tune threshold",
        help="Binary models: store the foreground threshold with the best validation Dice "
        "(0.3-0.7) in the model instead of 0.5")

    def __post_init__(self) -> None:
        problems = bound_problems(self)
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule {self.schedule!r} must be one of {', '.join(SCHEDULES)}")
        if self.val_block not in ("last", "first"):
            problems.append(f"val_block {self.val_block!r} must be 'last' or 'first'")
        if not self.init or not str(self.init).strip():
            problems.append("init must be 'backbone', 'random' or a model file")
        if problems:
            raise InputError("invalid training settings: " + "; ".join(problems))

    def architecture(self, n_classes: int) -> UNetConfig:
        """The network this recipe trains for ``n_classes`` classes (``unet`` or the
        preset; one input channel per frame of the temporal context)."""
        return (self.unet or preset(self.preset)).with_(
            n_classes=n_classes, in_channels=2 * self.temporal_context + 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (the recipe stored in the model file)."""
        return asdict(self)

    def fit_settings(self, total_steps: int | None) -> FitSettings:
        """The optimisation settings of this recipe (``total_steps`` from steps/epochs;
        None and no time budget: :data:`DEFAULT_STEPS`)."""
        if total_steps is None and self.time_budget_s is None:
            total_steps = DEFAULT_STEPS
        return FitSettings(
            batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            schedule=self.schedule, warmup_fraction=self.warmup_fraction,
            total_steps=total_steps, time_budget_s=self.time_budget_s,
            val_every=self.val_every, patience=self.patience,
            mixed_precision=self.mixed_precision, dice_weight=self.dice_weight,
        )


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    best : ModelFile
        Weights with the best validation Dice (the last weights without validation).
    last : ModelFile
        Weights after the last step.
    steps : int
        Optimiser steps done.
    elapsed_s : float
        Wall time of the run.
    best_step : int
        Step of ``best``.
    best_dice : float or None
        Validation mean foreground Dice of ``best`` (None without validation).
    stop_reason : str
        ``"steps"``, ``"time budget"`` or ``"early stopping"``.
    history : list of [step, loss]
        Sub-sampled training loss.
    validations : list of dict
        ``{"step", "dice", "loss", "metrics"}`` per validation.
    """

    best: ModelFile
    last: ModelFile
    steps: int
    elapsed_s: float
    best_step: int
    best_dice: float | None
    stop_reason: str
    history: list[list[float]]
    validations: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
