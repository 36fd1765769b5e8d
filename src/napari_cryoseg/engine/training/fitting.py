"""The optimisation loop shared by training from scratch and fine-tuning.

:func:`fit` runs AdamW steps on sampled patches as a generator of
:class:`~napari_cryoseg.engine.events.TrainStep`, :class:`~napari_cryoseg.engine.events.Validation`
and :class:`~napari_cryoseg.engine.events.Message` events, validating now and then and
keeping a CPU copy of the best weights. Closing the generator stops at the next step.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.setting import setting
from napari_cryoseg.engine.device import autocast_dtype
from napari_cryoseg.engine.events import Message, Preview, TrainStep, Validation
from napari_cryoseg.engine.training.augment import elastic_deform
from napari_cryoseg.engine.training.losses import segmentation_loss
from napari_cryoseg.engine.training.sampling import PatchSampler
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.unet import UNet

SCHEDULES = ("onecycle", "cosine")
#: Longest time budget of a run, a week: the dock's box and ``--time-budget`` stop there.
MAX_TIME_BUDGET_S = 7 * 24 * 3600
#: Most optimiser steps a run accepts: far beyond any useful run, it only refuses typos.
MAX_STEPS = 10**9
_HISTORY_POINTS = 200  # loss history stored in the model file is sub-sampled to this


def lr_factor(progress: float, schedule: str, warmup: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1] of training."""
    progress = min(max(progress, 0.0), 1.0)
    warmup = min(max(warmup, 0.0), 0.9)
    if schedule == "onecycle":
        start, end = 1 / 25, 1e-4  # as torch OneCycleLR's defaults (div 25, final 1e4 below)
        if progress < warmup:
            t = progress / warmup
            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * t))
        t = (progress - warmup) / (1 - warmup)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    t = (progress - warmup) / (1 - warmup)
    return 0.5 * (1 + math.cos(math.pi * t))


def subsample_history(history: list[tuple[int, float]], points: int = _HISTORY_POINTS) -> list:
    """``[[step, mean loss], ...]`` with at most ``points`` entries (bucket means)."""
    if len(history) <= points:
        return [[int(s), float(v)] for s, v in history]
    buckets = np.array_split(np.arange(len(history)), points)
    return [
        [int(history[b[-1]][0]), float(np.mean([history[i][1] for i in b]))] for b in buckets
    ]


def steps_setting(default_steps: int) -> Any:
    """A recipe's ``steps`` field (None: the time budget decides, or ``default_steps``).

    Training and fine-tuning describe their run length the same way; each passes its own
    default step count.
    """
    return setting(
        None, label="Steps:", flag="--steps", name="steps", what="a number of steps",
        min=1, max=MAX_STEPS, step=50,
        help="Optimiser steps; with a time budget too, the run ends at whichever comes "
        f"first (neither given: {default_steps} steps)")


def time_budget_setting() -> Any:
    """A recipe's ``time_budget_s`` field (None: no time limit)."""
    return setting(
        None, label="Time budget:", flag="--time-budget", name="time budget",
        what="a time in seconds", min=0.0, min_open=True, max=MAX_TIME_BUDGET_S, step=10,
        help="Stop after this many seconds (whichever of time and steps ends first)")


def lr_setting(default: float, help: str) -> Any:
    """A recipe's peak learning rate: above 0, at most 1 (AdamW diverges long before)."""
    return setting(
        default, label="Learning rate:", flag="--lr", name="learning rate",
        what="a learning rate", min=0.0, min_open=True, max=1.0, step=1e-5, decimals=6,
        help=help)


@dataclass
class FitState:
    """Outcome of :func:`fit`."""

    steps: int = 0
    elapsed_s: float = 0.0
    best_state: dict[str, torch.Tensor] | None = None
    best_step: int = 0
    best_dice: float | None = None
    stop_reason: str = "steps"
    history: list[tuple[int, float]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    validation_s: float = 0.0
    preview_s: float = 0.0


def cpu_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``net``'s state_dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


@dataclass(frozen=True, kw_only=True)
class FitSettings:
    """How :func:`fit` optimises: the knobs shared by training and fine-tuning.

    The recipes build one of these from their own fields
    (:meth:`~napari_cryoseg.engine.training.train_settings.TrainConfig.fit_settings`,
    :meth:`~napari_cryoseg.engine.training.finetune_settings.FinetuneConfig.fit_settings`), so the
    recipe's knobs have no defaults here: a recipe declares them once. It is not stored in
    model files itself.

    Attributes
    ----------
    batch_size : int
        Patches per optimiser step.
    lr, weight_decay : float
        AdamW peak learning rate and weight decay.
    schedule, warmup_fraction : str, float
        Learning-rate schedule (:data:`SCHEDULES`, see :func:`lr_factor`); progress is
        the larger of the step and the time fraction.
    mixed_precision : bool
        bf16/fp16 autocast where the device runs it fast (CUDA; CPUs with AMX or
        AVX512-BF16); losses stay fp32.
    dice_weight : float
        Weight of the soft Dice term next to the cross-entropy.
    total_steps, time_budget_s : optional
        Stop after this many steps or wall seconds, whichever comes first; at least one
        is given (the recipe supplies its default step count).
    val_every : int, optional
        Steps between validations (default: about 10 per run).
    patience : int, optional
        Stop after this many validations without a better Dice.
    channels_last : bool
        Train in the channels-last memory layout, which oneDNN (CPU) and cuDNN convolve
        faster (bench/bench_training.py).
    early_val_steps : tuple of int
        Extra validations at these steps (fine-tuning peaks within tens of steps).
    max_val_share : float
        Validation may take at most this share of the wall time: a check that is due
        waits until the time spent validating so far is below ``max_val_share`` of the
        time elapsed, so a slow check never runs after every step.
    head_lr_factor : float
        The decoder and head learn this many times faster than the encoder (1 = one
        learning rate for all).
    preview_every_s : float
        Seconds between live previews (when :func:`fit` is given a ``preview``).
    max_preview_share : float
        Previews may take at most this share of the wall time (as ``max_val_share``).
    """

    batch_size: int
    lr: float
    weight_decay: float
    schedule: str
    warmup_fraction: float
    mixed_precision: bool
    dice_weight: float
    total_steps: int | None = None
    time_budget_s: float | None = None
    val_every: int | None = None
    patience: int | None = None
    channels_last: bool = True
    early_val_steps: tuple[int, ...] = ()
    max_val_share: float = 0.1
    head_lr_factor: float = 1.0
    preview_every_s: float = 3.0
    max_preview_share: float = 0.1
    #: A pretrained start already segments: show it before the first step.
    preview_at_start: bool = False

    def __post_init__(self) -> None:
        if self.total_steps is None and self.time_budget_s is None:
            # a programming error, not a user's: the recipes always give a length
            raise ValueError("FitSettings needs total_steps or time_budget_s")

    def with_(self, **changes: Any) -> FitSettings:
        """A copy with some fields changed."""
        return replace(self, **changes)


def _param_groups(net: torch.nn.Module, lr: float, head_factor: float) -> list[dict[str, Any]]:
    """Encoder parameters at ``lr``, the rest (decoder, head) at ``lr * head_factor``."""
    trainable = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    if head_factor == 1.0:
        return [{"params": [p for _, p in trainable], "lr_scale": 1.0}]
    encoder = [p for name, p in trainable if name.startswith("encoders.")]
    rest = [p for name, p in trainable if not name.startswith("encoders.")]
    groups = [{"params": encoder, "lr_scale": 1.0}, {"params": rest, "lr_scale": head_factor}]
    return [g for g in groups if g["params"]]


def fit(
    net: UNet,
    sampler: PatchSampler,
    settings: FitSettings,
    *,
    device: torch.device,
    validate: Callable[[UNet], tuple[float, float, dict[str, float]]] | None = None,
    class_weights: torch.Tensor | None = None,
    initial_best: tuple[float, dict[str, torch.Tensor]] | None = None,
    frozen: Sequence[torch.nn.Module] = (),
    state: FitState | None = None,
    preview: Callable[[UNet], Any] | None = None,
) -> Generator[TrainStep | Validation | Message | Preview, None, FitState]:
    """The optimisation loop shared by training and fine-tuning.

    Runs AdamW steps on patches from ``sampler`` until ``settings.total_steps`` or
    ``settings.time_budget_s`` is reached (or early stopping), validating now and then
    and at the end with ``validate(net) -> (dice, loss, metrics)``, keeping a CPU copy
    of the best weights. ``initial_best`` (dice, state) is a baseline that must be
    beaten (fine-tuning passes the parent). Modules in ``frozen`` stay in eval mode.
    With ``sampler.augment.elastic > 0`` each batch is elastically deformed on ``device``
    (:func:`~napari_cryoseg.engine.training.augment.elastic_deform`) before the forward pass.
    ``preview(net)``, called in eval mode about every ``settings.preview_every_s``
    seconds (within ``settings.max_preview_share`` of the time), gives the labels of a
    :class:`~napari_cryoseg.engine.events.Preview` event.
    The caller's ``state`` object is filled in as it goes, so it is valid after a close().
    """
    s = settings
    state = state or FitState()
    if initial_best is not None:
        state.best_dice, state.best_state = initial_best[0], initial_best[1]
    groups = _param_groups(net, s.lr, s.head_lr_factor)
    optimizer = torch.optim.AdamW(groups, lr=s.lr, weight_decay=s.weight_decay)
    amp_dtype = autocast_dtype(device) if s.mixed_precision else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    memory_format = torch.channels_last if s.channels_last else torch.contiguous_format
    if s.channels_last:
        net.to(memory_format=torch.channels_last)
    if class_weights is not None:
        class_weights = class_weights.to(device)
    total_steps = s.total_steps
    # About 10 validations per run: by steps, or by time when only a time budget is known.
    every = s.val_every or (max(10, total_steps // 10) if total_steps else None)
    every_s = s.time_budget_s / 10 if every is None and s.time_budget_s else None
    next_val_s = every_s
    stale = 0
    val_seconds = 0.0
    last_val_step = 0
    preview_seconds = 0.0
    next_preview_s = s.preview_every_s
    augment = sampler.augment
    warp_generator = None
    if augment.elastic > 0:
        # Elastic deformation runs here, on the device, after the batch leaves the sampler.
        # Its torch generator is seeded from the sampler's numpy generator (itself seeded by
        # the run's seed), so runs are reproducible; the draw only happens with elastic on,
        # so runs without it sample exactly the patches they sampled before.
        warp_generator = torch.Generator().manual_seed(int(sampler.rng.integers(2**63 - 1)))
    started = time.perf_counter()

    def eval_mode(call: Callable[[UNet], Any]) -> Any:
        net.eval()
        try:
            return call(net)
        finally:
            net.train()
            for module in frozen:
                module.eval()

    def run_preview(step: int, final: bool = False) -> Preview:
        nonlocal preview_seconds, next_preview_s
        began = time.perf_counter()
        labels = eval_mode(preview)
        took = time.perf_counter() - began
        preview_seconds += took
        now = time.perf_counter() - started
        # The next one after the interval, and late enough to keep previews in their share.
        next_preview_s = max(now + s.preview_every_s, preview_seconds / s.max_preview_share)
        return Preview(step, labels, now, took, final)

    def run_validation(step: int) -> Generator[Validation | Message, None, bool]:
        nonlocal stale, val_seconds, last_val_step
        began = time.perf_counter()
        dice, loss, metrics = eval_mode(validate)
        val_seconds += time.perf_counter() - began
        last_val_step = step
        best = state.best_dice is None or dice > state.best_dice
        if best:
            state.best_dice, state.best_step, state.best_state = dice, step, cpu_state(net)
            stale = 0
        else:
            stale += 1
        state.validations.append({"step": step, "dice": dice, "loss": loss, "metrics": metrics})
        yield Validation(step, dice, loss, metrics, is_best=best)
        if s.patience is not None and stale >= s.patience:
            yield Message(f"early stopping at step {step}: validation Dice has not improved "
                          f"for {s.patience} validations (best {state.best_dice:.4f} at step "
                          f"{state.best_step})")
            return True
        return False

    net.train()
    for module in frozen:
        module.eval()
    step = 0
    if preview is not None and s.preview_at_start:
        yield run_preview(0)
    while True:
        elapsed = time.perf_counter() - started
        if total_steps is not None and step >= total_steps:
            state.stop_reason = "steps"
            break
        if s.time_budget_s is not None and elapsed >= s.time_budget_s and step > 0:
            state.stop_reason = "time budget"
            break
        progress = max(
            step / total_steps if total_steps else 0.0,
            elapsed / s.time_budget_s if s.time_budget_s else 0.0,
        )
        current_lr = s.lr * lr_factor(progress, s.schedule, s.warmup_fraction)
        for group in optimizer.param_groups:
            group["lr"] = current_lr * group["lr_scale"]
        x, y = sampler.sample(s.batch_size, device)
        if warp_generator is not None:
            x, y = elastic_deform(x, y, augment.elastic, augment.elastic_spacing,
                                  generator=warp_generator)
        x = x.contiguous(memory_format=memory_format)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = net(x)
        loss = segmentation_loss(logits, y, class_weights, s.dice_weight)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise InputError(
                f"training diverged at step {step} (loss {loss_value}); lower the learning rate"
            )
        state.history.append((step, loss_value))
        state.steps = step
        state.elapsed_s = time.perf_counter() - started
        yield TrainStep(step, total_steps, loss_value, current_lr, state.elapsed_s,
                        s.time_budget_s)
        due = (
            (every is not None and step % every == 0)
            or (next_val_s is not None and state.elapsed_s >= next_val_s)
            or step in s.early_val_steps
        )
        # A check that is due waits while validation already took its share of the time
        # (it never runs after every step when one check costs more than a step).
        affordable = val_seconds <= s.max_val_share * state.elapsed_s
        if validate is not None and due and affordable and step > last_val_step:
            if next_val_s is not None and every_s is not None:
                next_val_s = max(next_val_s + every_s, state.elapsed_s)
            if (yield from run_validation(step)):
                state.stop_reason = "early stopping"
                break
        if preview is not None and time.perf_counter() - started >= next_preview_s:
            yield run_preview(step)
    if validate is not None and (not state.validations or state.validations[-1]["step"] != step):
        yield from run_validation(step)
    if preview is not None and step > 0:
        yield run_preview(step, final=True)  # the final weights, always sent
    state.elapsed_s = time.perf_counter() - started
    state.validation_s = val_seconds
    state.preview_s = preview_seconds
    if s.channels_last:
        net.to(memory_format=torch.contiguous_format)
    return state


def model_from_state(
    template: ModelFile, state_dict: dict[str, torch.Tensor], provenance: dict[str, Any]
) -> ModelFile:
    """A copy of ``template`` with these weights and provenance (template untouched)."""
    model = copy.copy(template)
    model.state_dict = {k: v.detach().to("cpu").clone() for k, v in state_dict.items()}
    model.provenance = {**copy.deepcopy(template.provenance), **copy.deepcopy(provenance)}
    model.source_path = None
    return model
