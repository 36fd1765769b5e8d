"""Typed view of a model file's provenance: the one reader of its history.

Training, fine-tuning and the importers write provenance as plain dicts (the model
file stores primitives only). :class:`Provenance` reads every shape they write, so
the dock's Model section and ``cryoseg info`` show the same facts:

* ``cryoseg train``: ``kind="train"``, ``steps``, validation Dice in
  ``metrics["validation"]["dice"]``;
* fine-tuning: ``kind="finetune"``, ``parent={"name", "path", "created"}``, held-out
  Dice in ``finetune["after"]["dice"]`` (also ``metrics["holdout_after"]["dice"]``) and
  the parent's in ``finetune["before"]["dice"]``;
* imports: ``imported_from`` (a plain state_dict) or ``kind="import-bioimageio"`` with
  ``parent`` the package path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("train", "finetune", "imported", "unknown")


def _dice(*candidates: Any) -> float | None:
    """The first ``candidate["dice"]`` that is a number."""
    for metrics in candidates:
        if isinstance(metrics, dict) and isinstance(metrics.get("dice"), int | float):
            return float(metrics["dice"])
    return None


@dataclass(frozen=True)
class Provenance:
    """Where a model came from.

    Attributes
    ----------
    kind : str
        ``"train"``, ``"finetune"``, ``"imported"`` or ``"unknown"`` (older files).
    parent : str or None
        Name of the model it was fine-tuned from, or the imported file / package.
    steps : int or None
        Optimiser steps of the run that made it.
    dice : float or None
        The Dice recorded when it was made: validation Dice for training, held-out
        Dice after fine-tuning.
    dice_before : float or None
        Fine-tuning only: the parent's held-out Dice on the same pixels.
    dice_source : str
        What ``dice`` was measured on (``"validation"``, ``"held-out corrections"``).
    created : str or None
        ISO date and time.
    """

    kind: str = "unknown"
    parent: str | None = None
    steps: int | None = None
    dice: float | None = None
    dice_before: float | None = None
    dice_source: str = ""
    created: str | None = None

    @classmethod
    def of(cls, model: Any) -> Provenance:
        """Read a :class:`~napari_cryoseg.model.checkpoint.ModelFile`'s provenance."""
        return cls.from_dict(getattr(model, "provenance", None) or {})

    @classmethod
    def from_dict(cls, prov: dict[str, Any]) -> Provenance:
        """Read a provenance dict as written by training, fine-tuning or an importer."""
        raw_kind = str(prov.get("kind") or "")
        metrics = prov.get("metrics") if isinstance(prov.get("metrics"), dict) else {}
        finetune = prov.get("finetune") if isinstance(prov.get("finetune"), dict) else {}
        if raw_kind == "finetune" or finetune:
            kind = "finetune"
        elif raw_kind.startswith("import") or prov.get("imported_from"):
            kind = "imported"
        elif raw_kind == "train":
            kind = "train"
        else:
            kind = "unknown"
        parent = prov.get("parent")
        if isinstance(parent, dict):
            parent = parent.get("name") or parent.get("path")
        parent = parent or prov.get("parent_name") or prov.get("imported_from")
        dice = dice_before = None
        source = ""
        if kind == "finetune":
            dice = _dice(finetune.get("after"), metrics.get("holdout_after"))
            dice_before = _dice(finetune.get("before"), metrics.get("holdout_before"))
            source = "held-out corrections" if dice is not None else ""
        else:
            dice = _dice(metrics.get("validation"))
            source = "validation" if dice is not None else ""
        steps = prov.get("steps")
        return cls(
            kind=kind,
            parent=None if parent in (None, "") else str(parent),
            steps=int(steps) if isinstance(steps, int | float) and steps else None,
            dice=dice,
            dice_before=dice_before,
            dice_source=source,
            created=str(prov["created"]) if prov.get("created") else None,
        )

    def describe(self) -> str:
        """One line for people, e.g. ``fine-tuned from m; 40 steps; held-out Dice 0.81``."""
        bits = []
        if self.kind == "finetune":
            bits.append(f"fine-tuned from {self.parent}" if self.parent else "fine-tuned")
        elif self.kind == "imported":
            bits.append(f"imported from {self.parent}" if self.parent else "imported")
        elif self.kind == "train":
            bits.append("trained")
        if self.steps:
            bits.append(f"{self.steps} steps")
        if self.dice is not None:
            label = "held-out Dice" if self.kind == "finetune" else "validation Dice"
            text = f"{label} {self.dice:.3f}"
            if self.dice_before is not None:
                text += f" (parent {self.dice_before:.3f})"
            bits.append(text)
        if self.created:
            bits.append(f"created {self.created[:10]}")
        return "; ".join(bits) if bits else "no training history recorded"
