"""How long one optimiser step takes on this machine, and what a time budget buys.

A time budget means nothing to a user until it is turned into steps: on a 2-core CPU the
``small`` preset with 8 patches of 256 px makes a step in several seconds, on a GPU in a
few milliseconds. :func:`measure_step_time` times a few steps of the real network on
random data (the optimiser, loss, mixed precision and memory layout of
:func:`napari_cryoseg.engine.training.fitting.fit`), cached per device, architecture, patch, batch
and thread count, in memory and in a small JSON file under the user's cache folder.
:func:`estimate` says what a budget buys and proposes one that reaches
:func:`min_useful_steps` - the one place that says how many steps are "enough".
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from napari_cryoseg.engine.device import autocast_dtype, resolve_device
from napari_cryoseg.engine.training.losses import segmentation_loss
from napari_cryoseg.model.config import PRESETS, UNetConfig
from napari_cryoseg.model.unet import UNet

__all__ = [
    "MIN_USEFUL_STEPS", "BudgetEstimate", "StepKey", "cached_step_time", "estimate",
    "first_step_extra", "measure_step_time", "min_useful_steps", "record_step_time",
    "step_key",
]

#: The fewest optimiser steps after which a run can be expected to have learned something
#: worth applying, by kind of run. From random weights a U-Net needs tens of steps before
#: its output is more than a guess (on CDeep3M strokes, 6 and 14 steps gave Dice 0.01 and
#: 0.00, about 70 steps Dice 0.58: docs/quality.md); a pretrained start (``train`` with
#: ``pretrained=True``) and fine-tuning move weights that already segment.
MIN_USEFUL_STEPS = {
    "train": 60,
    "train_pretrained": 20,
    "finetune": 20,
}
#: Share of a time budget left for optimiser steps: validation and previews may take 10 %
#: each (FitSettings.max_val_share / max_preview_share); setting up the run the rest.
TRAINING_SHARE = 0.75
#: Seconds a run spends before its first step (sampler, first batch, thread start).
STARTUP_S = 3.0
#: Proposed budgets are rounded up to this many seconds.
ROUND_TO_S = 30
CACHE_ENV = "NAPARI_CRYOSEG_CACHE_DIR"
_CACHE_FILE = "step_time.json"
_memory: dict[str, float] = {}
_lock = threading.Lock()


def min_useful_steps(kind: str, *, pretrained: bool = False) -> int:
    """Minimum useful optimiser steps for ``kind`` (``"train"`` or ``"finetune"``).

    ``pretrained``: a new model that starts from pretrained weights (a backbone) rather
    than random ones needs far fewer steps.
    """
    if kind == "train" and pretrained:
        return MIN_USEFUL_STEPS["train_pretrained"]
    return MIN_USEFUL_STEPS[kind]


@dataclass(frozen=True)
class StepKey:
    """What a step time depends on."""

    device: str
    arch: str
    patch: int
    batch: int
    threads: int
    mixed_precision: bool

    def text(self) -> str:
        return (f"{self.device}|{self.arch}|p{self.patch}|b{self.batch}|t{self.threads}|"
                f"{'amp' if self.mixed_precision else 'fp32'}")


def _arch_name(unet: UNetConfig) -> str:
    for name, config in PRESETS.items():
        if config.with_(n_classes=unet.n_classes, in_channels=unet.in_channels) == unet:
            return name
    digest = hashlib.sha1(repr(unet).encode()).hexdigest()[:10]
    return f"custom-{digest}"


def step_key(unet: UNetConfig, *, patch: int, batch: int, device: str = "auto",
             mixed_precision: bool = True) -> StepKey:
    """The cache key of a step on this machine (device resolved, current thread count)."""
    dev = resolve_device(device)
    name = dev.type
    if dev.type == "cuda":
        name = f"cuda:{torch.cuda.get_device_name(dev)}"
    patch = -(-int(patch) // unet.stride) * unet.stride
    return StepKey(name, _arch_name(unet), patch, int(batch), torch.get_num_threads(),
                   bool(mixed_precision))


def cache_path() -> Path:
    """The JSON cache file: ``$NAPARI_CRYOSEG_CACHE_DIR`` or the user cache folder."""
    folder = os.environ.get(CACHE_ENV)
    if folder:
        return Path(folder) / _CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-cryoseg" / _CACHE_FILE


def _read_disk() -> dict[str, float]:
    try:
        data = json.loads(cache_path().read_text())
        return {str(k): float(v) for k, v in data.items() if float(v) > 0}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}  # no cache yet, or an unreadable one: measure again


def cached_step_time(key: StepKey) -> float | None:
    """Seconds per step known for ``key`` (memory, then the JSON cache), or None."""
    with _lock:
        if key.text() in _memory:
            return _memory[key.text()]
        value = _read_disk().get(key.text())
        if value is not None:
            _memory[key.text()] = value
        return value


def record_step_time(key: StepKey, seconds: float, *, persist: bool = True) -> None:
    """Remember ``seconds`` per step for ``key`` (and write the JSON cache)."""
    if not seconds > 0 or not math.isfinite(seconds):
        return
    with _lock:
        _memory[key.text()] = float(seconds)
        if not persist:
            return
        data = _read_disk()
        data[key.text()] = round(float(seconds), 5)
        path = cache_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError:
            pass  # a read-only cache folder only costs a new measurement next time


def forget_step_times() -> None:
    """Drop the in-memory cache (the JSON file stays)."""
    with _lock:
        _memory.clear()


def measure_step_time(
    unet: UNetConfig, *, patch: int, batch: int, device: str = "auto",
    mixed_precision: bool = True, warmup: int = 1, timed: int = 2, use_cache: bool = True,
    persist: bool = True,
) -> float:
    """Seconds per optimiser step of ``unet`` here, timed on random data.

    ``warmup`` steps (allocations, kernel selection) are not counted; the mean of the
    next ``timed`` steps is returned, and cached unless ``use_cache`` is False.
    """
    key = step_key(unet, patch=patch, batch=batch, device=device,
                   mixed_precision=mixed_precision)
    if use_cache:
        known = cached_step_time(key)
        if known is not None:
            return known
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(0)
    net = UNet(unet).to(dev).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    amp = autocast_dtype(dev) if mixed_precision else None
    x = torch.randn(batch, unet.in_channels, key.patch, key.patch, generator=generator)
    x = x.to(dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, max(unet.n_classes, 2), (batch, key.patch, key.patch),
                      generator=generator).to(dev)
    times = []
    first = None
    for i in range(warmup + timed):
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=amp or torch.float32,
                            enabled=amp is not None):
            logits = net(x)
        loss = segmentation_loss(logits, y)
        loss.backward()
        optimizer.step()
        float(loss.detach())  # waits for the device
        if i >= warmup:
            times.append(time.perf_counter() - began)
        elif i == 0:
            first = time.perf_counter() - began
    seconds = sum(times) / len(times)
    record_step_time(key, seconds, persist=persist and use_cache)
    if first is not None:  # a run pays its first step's set-up once (see first_step_extra)
        record_step_time(_first_key(key), max(first - seconds, 1e-6),
                         persist=persist and use_cache)
    return seconds


def _first_key(key: StepKey) -> StepKey:
    """Where the first step's extra seconds are cached."""
    return replace(key, arch=f"{key.arch}+first-step-extra")


def first_step_extra(key: StepKey) -> float:
    """Seconds the first step of a run takes beyond the others (0 when not measured).

    Allocations and kernel selection: on the 2-core CPU the first step of the ``small``
    preset took about 18 s against 4 s for the next ones.
    """
    return cached_step_time(_first_key(key)) or 0.0


@dataclass(frozen=True)
class BudgetEstimate:
    """What a time budget buys on this machine, and the budget that would be enough.

    Attributes
    ----------
    step_s : float
        Seconds per optimiser step.
    budget_s : float or None
        The budget asked about (None: no time limit).
    steps : int or None
        Steps that budget buys (or the step limit when it ends first); None without
        either limit.
    min_steps : int
        Minimum useful steps for this kind of run (:func:`min_useful_steps`).
    proposed_s : float
        A budget reaching ``min_steps``, rounded up to :data:`ROUND_TO_S`.
    kind : str
        ``"train"`` or ``"finetune"``.
    """

    step_s: float
    budget_s: float | None
    steps: int | None
    min_steps: int
    proposed_s: float
    kind: str
    overhead_s: float = 0.0

    @property
    def enough(self) -> bool:
        return self.steps is None or self.steps >= self.min_steps

    def text(self) -> str:
        """One line for the dock: ``60 s ≈ 7 steps here; ...``."""
        what = "a useful new model" if self.kind == "train" else "fine-tuning"
        pace = (f"{self.step_s:.1f} s a step" if self.step_s >= 0.1
                else f"{1 / self.step_s:.0f} steps a second")
        if self.budget_s is None:
            bought = ("no time limit" if self.steps is None
                      else f"{self.steps} steps ≈ {self.steps * self.step_s:.0f} s")
        else:
            bought = f"{self.budget_s:.0f} s ≈ {self.steps} step{'' if self.steps == 1 else 's'}"
        line = f"{bought} here ({pace}); {what} needs about {self.min_steps} steps"
        if not self.enough:
            line += f": set Time budget to {self.proposed_s:.0f} s or more"
        return line


def steps_in(budget_s: float, step_s: float, overhead_s: float = 0.0) -> int:
    """Optimiser steps a budget buys when ``overhead_s`` of it goes elsewhere first."""
    usable = (budget_s - STARTUP_S - overhead_s) * TRAINING_SHARE
    return max(int(usable / step_s), 0)


def budget_for(steps: int, step_s: float, overhead_s: float = 0.0) -> float:
    """The budget (rounded up to :data:`ROUND_TO_S`) that buys ``steps`` steps."""
    seconds = steps * step_s / TRAINING_SHARE + STARTUP_S + overhead_s
    return float(max(ROUND_TO_S, math.ceil(seconds / ROUND_TO_S) * ROUND_TO_S))


def estimate(step_s: float, budget_s: float | None, *, kind: str = "train",
             max_steps: int | None = None, pretrained: bool = False,
             overhead_s: float = 0.0) -> BudgetEstimate:
    """What ``budget_s`` (and a step limit ``max_steps``) buys at ``step_s`` per step."""
    need = min_useful_steps(kind, pretrained=pretrained)
    steps = None if budget_s is None else steps_in(budget_s, step_s, overhead_s)
    if max_steps is not None:
        steps = max_steps if steps is None else min(steps, max_steps)
    return BudgetEstimate(step_s, budget_s, steps, need, budget_for(need, step_s, overhead_s),
                          kind, overhead_s)


def describe(value: Any) -> str:
    """``"12.3 s"`` / ``"no limit"`` for a budget field's value."""
    return "no limit" if value is None else f"{float(value):.0f} s"
