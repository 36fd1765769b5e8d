"""What the dock says about a fine-tune's result, and whether it may swap it in unasked.

Pure Python (no Qt): the Fine-tune section only shows these lines and, when
:attr:`Outcome.ask` is set, keeps the new model aside behind Apply / Discard. A model
whose change on the user's other images is not supported by the corrections
(:mod:`napari_cryoseg.engine.training.change_check`) is never called better on the strength of
the held-out corrections alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """The dock's lines about one fine-tune result."""

    metrics: str
    status: str
    swap: bool  # the new model may replace the current one
    ask: bool  # ... only once the user applies it


def held_out_dice(metrics: Any) -> float | None:
    """The Dice of a result's ``before`` / ``after`` scores, or None."""
    value = metrics.get("dice") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) else None


def describe_outcome(result: Any) -> Outcome:
    """:class:`Outcome` of a :class:`~napari_cryoseg.engine.training.finetune.FinetuneResult`."""
    before, after = held_out_dice(result.before), held_out_dice(result.after)
    metrics = f"{result.steps} steps"
    if before is not None and after is not None:
        metrics = (f"held-out Dice: before {before:.3f} → after {after:.3f} "
                   f"({after - before:+.3f}); {result.steps} steps")
    report = getattr(result, "change_report", None)
    if report is not None and report.pixels:
        metrics += f"\n{report.describe()}"
    if not result.improved:
        return Outcome(f"{metrics}; model not changed",
                       result.message or "fine-tuning did not improve the model", False, False)
    if getattr(result, "flagged", False):
        # the status line stays short (the dock shows it above the buttons); the whole
        # change report, with its reasons, is in the metrics under the curve
        moves = ", ".join(f"{name} {change:+.0%}" for name, change in report.area_change.items())
        return Outcome(
            metrics,
            "not applied: better on the held-out corrections, but on your other images "
            f"({moves or f'{report.changed_share:.1%} of pixels'}) it changes more than your "
            "corrections support (details below). Apply uses it anyway, Discard keeps the "
            "current model; or mark what you checked as reviewed and correct the other "
            "kind of error too.",
            True, True)
    return Outcome(metrics, f"model swapped in. {result.message}".strip(), True, False)
