"""Engine messages in the dock's words: the fields and buttons, not the command's flags.

The engine's warnings are shared with ``cryoseg train`` / ``cryoseg finetune`` and name
their flags; the dock shows the same advice with the names of its own fields.
"""

from __future__ import annotations

import re

__all__ = ["DOCK_WORDS", "dock_words"]

#: Command-line flag -> what the dock calls it.
DOCK_WORDS = {
    "--time-budget": "Time budget",
    "--steps": "Steps",
    "--classes": "the class names (Train new model) or label values",
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
