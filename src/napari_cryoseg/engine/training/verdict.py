"""Is a freshly trained or fine-tuned model worth applying? One decision for both kinds.

A run can end with a model that learned nothing: too few optimiser steps (6 steps from
random weights made a model calling 66 % of a CDeep3M section mitochondria), no gain on
the held-out annotations, or a class that collapsed (painted everywhere, or nowhere).
The dock keeps such a model aside with this report and lets the user choose to apply
it; a model that passes is applied as before. :func:`choose_selection` decides whether
"the best validation step" means anything for a run (it needs enough steps and
validations; otherwise the last weights are the honest result).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from napari_cryoseg.engine.training.step_time import min_useful_steps

__all__ = ["LEARNED_NOTHING_DICE", "MIN_VALIDATIONS", "Verdict", "choose_selection",
           "held_out_score_text", "judge"]

#: A held-out Dice below this from random weights: the model learned (next to) nothing.
LEARNED_NOTHING_DICE = 0.2
#: "Best step" selection needs at least this many validations to compare.
MIN_VALIDATIONS = 3
#: One class (not background) on at least this share of the held-out area: the model
#: collapsed to it. Background on that share is what a good model of small objects
#: predicts (mitochondria cover 8 % of a CDeep3M section, particles less of a
#: micrograph); a model that lost the objects is caught by VANISHED_AREA instead.
COLLAPSE_AREA = 0.9
#: A painted class on less than this share of the held-out area: it is never predicted.
VANISHED_AREA = 0.001


@dataclass
class Verdict:
    """Whether to apply a model, and why not.

    Attributes
    ----------
    apply : bool
        True when the run shows the minimum useful evidence.
    reasons : list of str
        Dock sentences, one per problem (empty when ``apply``).
    steps, min_steps : int
        Steps made and the minimum useful number for this kind of run.
    """

    apply: bool
    reasons: list[str] = field(default_factory=list)
    steps: int = 0
    min_steps: int = 0

    def text(self) -> str:
        if self.apply:
            return ""
        return "kept aside, not applied: " + "; ".join(self.reasons)


def choose_selection(steps: int, validations: Sequence[dict[str, Any]], kind: str = "train",
                     *, pretrained: bool = False) -> str:
    """``"best"`` when best-step selection means something here, else ``"last"``."""
    if steps < min_useful_steps(kind, pretrained=pretrained):
        return "last"
    if len(validations) < MIN_VALIDATIONS:
        return "last"
    return "best"


def _collapse(metrics: dict[str, Any], class_names: Sequence[str]) -> list[str]:
    """Sentences on collapsed classes from ``area/<class>`` and ``painted/<class>``."""
    out = []
    for index, name in enumerate(class_names):
        area = metrics.get(f"area/{name}")
        painted = metrics.get(f"painted/{name}")
        if area is None or painted is None:
            continue
        others_painted = any(metrics.get(f"painted/{o}", 0) > 0 for o in class_names
                             if o != name)
        if index > 0 and area >= COLLAPSE_AREA and others_painted:
            out.append(f"it calls {area:.0%} of the held-out area '{name}' although other "
                       "classes are painted there")
        elif painted > 0 and area < VANISHED_AREA:
            out.append(f"it never predicts '{name}' on the held-out area although it is "
                       "painted there")
    return out


def judge(kind: str, steps: int, class_names: Sequence[str], *,
          after: dict[str, Any] | None = None, before: dict[str, Any] | None = None,
          pretrained: bool = False) -> Verdict:
    """The verdict on a run of ``kind`` (``"train"`` or ``"finetune"``).

    Parameters
    ----------
    steps : int
        Optimiser steps made.
    class_names : sequence of str
        The model's classes.
    after : dict, optional
        Held-out metrics of the model to apply (``dice``, ``area/<class>``, ...); None
        without a held-out part (then only the step count is judged).
    before : dict, optional
        Held-out metrics of the start (fine-tuning's parent); the model must beat it.
    pretrained : bool
        A new model started from pretrained weights (needs fewer steps).
    """
    need = min_useful_steps(kind, pretrained=pretrained)
    reasons = []
    if steps < need:
        what = "a useful new model" if kind == "train" else "fine-tuning"
        reasons.append(f"only {steps} training steps were made and {what} needs about "
                       f"{need}: raise Time budget (the line under it proposes one)")
    if after and "dice" in after:
        dice = float(after["dice"])
        if before and "dice" in before:
            if dice <= float(before["dice"]):
                reasons.append(f"no gain on the held-out pixels (Dice {before['dice']:.3f} "
                               f"before, {dice:.3f} after)")
        elif kind == "train" and not pretrained and dice < LEARNED_NOTHING_DICE:
            reasons.append(f"the Dice on held-out strokes is {dice:.3f}: it learned (next "
                           "to) nothing; train longer or paint more strokes of each class")
        reasons += _collapse(after, class_names)
    return Verdict(not reasons, reasons, steps, need)


def held_out_score_text(dice: float, step: int, what: str = "strokes") -> str:
    """The held-out Dice of a model trained from painted annotations, and why whole
    images score lower.

    The held-out part is a share of what the user painted, and users paint where they
    chose to: the middles of objects, or windows around objects. Whole images hold what
    nobody painted (on CDeep3M, myelin the model calls mitochondria), so they score far
    lower: on CDeep3M mitochondria, held-out 0.82-0.91 against 0.57-0.59 on whole
    sections for strokes, and 0.84-0.90 against 0.52-0.57 for windows painted edge to
    edge (``bench/heldout_score.py``, docs/quality.md). The text says so next to the
    number instead of passing it off as the model's quality. ``what`` names the
    annotation ("strokes" in the dock).
    """
    return (f"Dice on held-out {what} {dice:.3f} (step {step}); whole images score lower "
            "where nothing was painted (on CDeep3M mitochondria 0.86 here meant 0.59 on "
            "whole sections), so judge the model by its labels layer")
