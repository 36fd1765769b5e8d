"""Engine messages in the dock's words: the fields and buttons, not the command's flags.

The engine's warnings are shared with ``cryoseg train`` / ``cryoseg finetune`` and name
their flags; the dock shows the same advice with the names of its own fields.
"""

from __future__ import annotations

import re
import time
from typing import Any

__all__ = ["DOCK_WORDS", "bundled_model_available", "dock_words", "finetuned_name",
           "model_file_suggestion"]

#: Command-line flag -> what the dock calls it.
DOCK_WORDS = {
    "--time-budget": "Time budget",
    "--steps": "Steps",
    "--classes": "the class list",
    "--lr": "the learning rate",
    "--device": "the device (Model section)",
    "--preset": "Size",
    "--patch": "the patch size",
    "--batch-size": "the batch size",
}


def dock_words(text: str) -> str:
    """``text`` with every known flag replaced by the dock's name for it."""
    def replace(match: re.Match[str]) -> str:
        return DOCK_WORDS.get(match.group(0), match.group(0))

    return re.sub(r"--[a-z][a-z-]*", replace, text)


def finetuned_name(parent: Any, when: float | None = None) -> dict[str, Any]:
    """Provenance giving a fine-tuned model a name that says what it is.

    ``{"name": "cryoseg-default fine-tune 2 (14:05)", "base_name": ..., "round": 2}``:
    the first ancestor's name, the fine-tuning round and the time of day.
    """
    provenance = getattr(parent, "provenance", None) or {}
    base = str(provenance.get("base_name") or parent.name)
    round_ = int(provenance.get("round") or 0) + 1
    stamp = time.strftime("%H:%M", time.localtime(when))
    return {"name": f"{base} fine-tune {round_} ({stamp})", "base_name": base,
            "round": round_}


def bundled_model_available() -> bool:
    """True when the bundled default model file is installed (it is loaded on use)."""
    from napari_cryoseg.model.bundled import default_model_path

    return default_model_path().is_file()


def model_file_suggestion(model: Any, folder: Any) -> Any:
    """Where Save model… proposes to write ``model``: ``folder/<its name>.pt``, the name
    made safe for a file name and never one that exists (`` (1)``, `` (2)``, ...)."""
    from pathlib import Path

    from napari_cryoseg.core.atomic import unique_path

    name = str(getattr(model, "name", "") or "model")
    stem = re.sub(r"[^A-Za-z0-9._ ()-]+", "-", name).strip(" .-") or "model"
    return unique_path(Path(folder) / f"{stem[:100]}.pt")
