"""What the dock's time budgets buy here: the step-time request of each section (no Qt).

The Train new model and Fine-tune sections each ask :mod:`napari_cryoseg.engine.training.step_time`
about the network, patch and batch their next run will use; the measurement itself runs
as a job (:func:`measure_job`) and is cached, so a second look costs nothing.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from napari_cryoseg.engine.events import Message
from napari_cryoseg.engine.training import step_time as st
from napari_cryoseg.engine.training.transfer import starts_pretrained
from napari_cryoseg.model.config import UNetConfig, preset

__all__ = ["StepRequest", "budget_estimate", "measure_job", "step_request", "time_split"]


@dataclass(frozen=True)
class StepRequest:
    """The network and batch of a section's next run, and its limits."""

    kind: str
    unet: UNetConfig
    patch: int
    batch: int
    device: str
    mixed_precision: bool
    budget_s: float | None
    max_steps: int | None
    pretrained: bool = False

    def key(self) -> st.StepKey:
        return st.step_key(self.unet, patch=self.patch, batch=self.batch, device=self.device,
                           mixed_precision=self.mixed_precision)


def step_request(kind: str, settings: Any, device: str, model: Any = None) -> StepRequest | None:
    """The request of ``"train"`` (settings.train) or ``"finetune"`` (of ``model``).

    None for fine-tuning without a model of CryoSeg's own architecture.
    """
    if kind == "train":
        config = settings.train
        unet = config.unet or preset(config.preset)
        return StepRequest("train", unet, config.patch, config.batch_size, device,
                           config.mixed_precision, config.time_budget_s, config.steps,
                           pretrained=starts_pretrained(config))
    if model is None or getattr(model, "foreign", False) or getattr(model, "config", None) \
            is None:
        return None
    config = settings.finetune
    return StepRequest("finetune", model.config, config.patch, config.batch_size, device,
                       config.mixed_precision, config.time_budget_s, config.steps)


def budget_estimate(request: StepRequest | None) -> st.BudgetEstimate | None:
    """The estimate for ``request`` when its step time is known (cached), else None."""
    if request is None:
        return None
    step_s = st.cached_step_time(request.key())
    if step_s is None:
        return None
    overhead = 0.0
    if request.kind == "finetune" and request.budget_s is not None:
        from napari_cryoseg.engine.training.overheads import overhead_budget_s

        overhead = overhead_budget_s(request.budget_s)
    overhead += st.first_step_extra(request.key())
    return st.estimate(step_s, request.budget_s, kind=request.kind,
                       max_steps=request.max_steps, pretrained=request.pretrained,
                       overhead_s=overhead)


def measure_job(request: StepRequest) -> Generator[Message, None, float]:
    """Worker job: time a few steps of ``request`` here (cached afterwards)."""
    yield Message(f"measuring the speed of a training step on this machine "
                  f"({request.batch} patches of {request.patch} px)…")
    return st.measure_step_time(request.unet, patch=request.patch, batch=request.batch,
                                device=request.device,
                                mixed_precision=request.mixed_precision)


def time_split(provenance: dict[str, Any]) -> str:
    """Where a run's time went, from its provenance: ``"62 s: 48 s training, ..."``."""
    total = float(provenance.get("time_s") or 0.0)
    if total <= 0:
        return ""
    parts = []
    spent = 0.0
    for key, label in (("adapt_s", "re-estimating BatchNorm statistics"),
                       ("scoring_s", "scoring held-out pixels"),
                       ("validation_s", "checking held-out pixels"),
                       ("preview_s", "live previews")):
        value = provenance.get(key)
        if value:
            parts.append(f"{float(value):.0f} s {label}")
            spent += float(value)
    steps = int(provenance.get("steps") or 0)
    training = max(total - spent, 0.0)
    rest = f"{training:.0f} s training ({steps} steps) and set-up"
    return f"{total:.0f} s: " + ", ".join([rest, *parts])
