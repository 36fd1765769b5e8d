"""Default class colours (no napari, no torch): shared by model files and label readers."""

from __future__ import annotations

#: Background black, then one colour per class (cycled when there are more classes).
DEFAULT_COLORS = (
    "#000000", "#33cc66", "#3399ff", "#ff8833", "#cc33cc", "#ffdd33", "#33dddd", "#ff3355",
)  # fmt: skip


def class_colors_for(n_classes: int) -> list[str]:
    """A ``#rrggbb`` colour per class, cycling :data:`DEFAULT_COLORS`."""
    return [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(n_classes)]
