"""Typed progress events yielded by engine generators, and :func:`drain` to run them."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class Progress:
    """Work done so far in one stage (e.g. tiles of an image)."""

    stage: str
    done: int
    total: int
    message: str = ""
    elapsed_s: float = 0.0

    @property
    def fraction(self) -> float:
        """Done / total in [0, 1]."""
        return self.done / self.total if self.total else 1.0

    @property
    def eta_s(self) -> float | None:
        """Estimated seconds left, from the average pace so far."""
        if self.done <= 0 or self.elapsed_s <= 0:
            return None
        return self.elapsed_s / self.done * (self.total - self.done)


@dataclass(frozen=True)
class TrainStep:
    """One optimisation step of training or fine-tuning."""

    step: int
    total_steps: int | None
    loss: float
    lr: float
    elapsed_s: float
    time_budget_s: float | None = None

    @property
    def eta_s(self) -> float | None:
        """Seconds left, from the step budget or the time budget, whichever ends first."""
        etas = []
        if self.total_steps and self.step > 0:
            etas.append(self.elapsed_s / self.step * (self.total_steps - self.step))
        if self.time_budget_s is not None:
            etas.append(max(self.time_budget_s - self.elapsed_s, 0.0))
        return min(etas) if etas else None


@dataclass(frozen=True)
class Validation:
    """Validation metrics measured during training (``dice`` = mean foreground Dice)."""

    step: int
    dice: float
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    is_best: bool = False


@dataclass(frozen=True)
class Message:
    """A line of information for the user (e.g. 'early stopping at step 800').

    ``level`` is ``"info"`` or ``"warning"`` (something the user should act on, e.g. a
    training run that learned nothing).
    """

    text: str
    level: str = "info"


@dataclass(frozen=True)
class Preview:
    """A prediction made with the weights being trained, for a live view while training.

    ``labels`` is the class-index image of the preview region (see
    :class:`~napari_cryoseg.engine.training.fitting.PreviewRequest`); ``step`` the optimiser step
    whose weights made it; ``final`` marks the one made with the weights training ended on.
    """

    step: int
    labels: Any
    elapsed_s: float = 0.0
    seconds: float = 0.0
    final: bool = False


Event = Progress | TrainStep | Validation | Message | Preview


def drain(
    generator: Generator[Any, Any, R], on_event: Callable[[Any], Any] | None = None
) -> R:
    """Run an engine generator to the end, passing each event to ``on_event``.

    This is the synchronous path used by the CLI, scripts and tests; napari widgets
    run the same generators in a worker thread instead.

    Returns
    -------
    The generator's return value.
    """
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


def relay(
    generator: Generator[Any, Any, R], transform: Callable[[Any], Any]
) -> Generator[Any, None, R]:
    """Yield ``transform(event)`` for each event of ``generator``; return its result.

    Used to nest one engine generator in another (e.g. per-image progress inside a
    multi-image job) without losing the inner result.
    """
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        yield transform(event)
