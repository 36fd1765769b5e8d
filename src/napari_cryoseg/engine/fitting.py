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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.augment import elastic_deform
from napari_cryoseg.engine.device import autocast_dtype
from napari_cryoseg.engine.events import Message, TrainStep, Validation
from napari_cryoseg.engine.losses import segmentation_loss
from napari_cryoseg.engine.sampling import PatchSampler
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.unet import UNet

SCHEDULES = ("onecycle", "cosine")
DEFAULT_STEPS = 1000  # when neither steps nor a time budget is given
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


def cpu_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``net``'s state_dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def fit(
    net: UNet,
    sampler: PatchSampler,
    *,
    device: torch.device,
    batch_size: int,
    lr: float,
    weight_decay: float,
    schedule: str,
    warmup_fraction: float,
    total_steps: int | None,
    time_budget_s: float | None,
    val_every: int | None,
    validate: Callable[[UNet], tuple[float, float, dict[str, float]]] | None,
    patience: int | None = None,
    class_weights: torch.Tensor | None = None,
    mixed_precision: bool = True,
    dice_weight: float = 1.0,
    initial_best: tuple[float, dict[str, torch.Tensor]] | None = None,
    frozen: Sequence[torch.nn.Module] = (),
    state: FitState | None = None,
    early_val_steps: Sequence[int] = (),
) -> Generator[TrainStep | Validation | Message, None, FitState]:
    """The optimisation loop shared by training and fine-tuning.

    Runs AdamW steps on patches from ``sampler`` until ``total_steps`` or
    ``time_budget_s`` is reached (or early stopping), validating every ``val_every``
    steps and at the end with ``validate(net) -> (dice, loss, metrics)``, keeping a CPU
    copy of the best weights. ``initial_best`` (dice, state) is a baseline that must be
    beaten (fine-tuning passes the parent). Modules in ``frozen`` stay in eval mode.
    ``early_val_steps`` adds validations at these steps (fine-tuning peaks early).
    With ``sampler.augment.elastic > 0`` each batch is elastically deformed on ``device``
    (:func:`~napari_cryoseg.engine.augment.elastic_deform`) before the forward pass.
    The caller's ``state`` object is filled in as it goes, so it is valid after a close().
    """
    state = state or FitState()
    if initial_best is not None:
        state.best_dice, state.best_state = initial_best[0], initial_best[1]
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    amp_dtype = autocast_dtype(device) if mixed_precision else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if class_weights is not None:
        class_weights = class_weights.to(device)
    if total_steps is None and time_budget_s is None:
        total_steps = DEFAULT_STEPS
    # About 10 validations per run: by steps, or by time when only a time budget is known.
    every = val_every or (max(10, total_steps // 10) if total_steps else None)
    every_s = time_budget_s / 10 if every is None and time_budget_s else None
    next_val_s = every_s
    stale = 0
    augment = sampler.augment
    warp_generator = None
    if augment.elastic > 0:
        # Elastic deformation runs here, on the device, after the batch leaves the sampler.
        # Its torch generator is seeded from the sampler's numpy generator (itself seeded by
        # the run's seed), so runs are reproducible; the draw only happens with elastic on,
        # so runs without it sample exactly the patches they sampled before.
        warp_generator = torch.Generator().manual_seed(int(sampler.rng.integers(2**63 - 1)))
    started = time.perf_counter()

    def run_validation(step: int) -> Generator[Validation | Message, None, bool]:
        nonlocal stale
        net.eval()
        try:
            dice, loss, metrics = validate(net)
        finally:
            net.train()
            for module in frozen:
                module.eval()
        best = state.best_dice is None or dice > state.best_dice
        if best:
            state.best_dice, state.best_step, state.best_state = dice, step, cpu_state(net)
            stale = 0
        else:
            stale += 1
        state.validations.append({"step": step, "dice": dice, "loss": loss, "metrics": metrics})
        yield Validation(step, dice, loss, metrics, is_best=best)
        if patience is not None and stale >= patience:
            yield Message(f"early stopping at step {step}: validation Dice has not improved "
                          f"for {patience} validations (best {state.best_dice:.4f} at step "
                          f"{state.best_step})")
            return True
        return False

    net.train()
    for module in frozen:
        module.eval()
    step = 0
    while True:
        elapsed = time.perf_counter() - started
        if total_steps is not None and step >= total_steps:
            state.stop_reason = "steps"
            break
        if time_budget_s is not None and elapsed >= time_budget_s and step > 0:
            state.stop_reason = "time budget"
            break
        progress = max(
            step / total_steps if total_steps else 0.0,
            elapsed / time_budget_s if time_budget_s else 0.0,
        )
        current_lr = lr * lr_factor(progress, schedule, warmup_fraction)
        for group in optimizer.param_groups:
            group["lr"] = current_lr
        x, y = sampler.sample(batch_size, device)
        if warp_generator is not None:
            x, y = elastic_deform(x, y, augment.elastic, augment.elastic_spacing,
                                  generator=warp_generator)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = net(x)
        loss = segmentation_loss(logits, y, class_weights, dice_weight)
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
        yield TrainStep(step, total_steps, loss_value, current_lr, state.elapsed_s, time_budget_s)
        due = (
            (every is not None and step % every == 0)
            or (next_val_s is not None and state.elapsed_s >= next_val_s)
            or step in early_val_steps
        )
        if validate is not None and due:
            if next_val_s is not None and every_s is not None:
                next_val_s += every_s
            if (yield from run_validation(step)):
                state.stop_reason = "early stopping"
                break
    if validate is not None and (not state.validations or state.validations[-1]["step"] != step):
        yield from run_validation(step)
    state.elapsed_s = time.perf_counter() - started
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
