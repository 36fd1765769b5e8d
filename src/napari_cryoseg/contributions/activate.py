"""npe2 ``on_activate`` hook: CryoSeg's reader as the default for CryoSeg's own labels files.

napari chooses between several readers of a file through its reader preferences
(``settings.plugins.extension2reader``, Preferences > Plugins); without one, a file two
plugins can read ends in a "choose a plugin" dialog. CryoSeg's labels files are TIFFs
or zarr folders, which napari's built-in reader also claims, so on activation (the first
time any CryoSeg contribution is used) this adds ``*_labels.tif`` / ``*_labels.tiff`` /
``*_labels.zarr`` -> napari-cryoseg, but only for patterns the user has not assigned.
A preference the user set is never replaced; they can change these in Preferences.
"""

from __future__ import annotations

import os
from typing import Any

PLUGIN = "napari-cryoseg"
#: File-name patterns of CryoSeg's labels outputs (io.labels / cli segment suffixes);
#: napari matches a folder with a trailing separator, hence the second zarr pattern.
LABELS_PATTERNS = ("*_labels.tif", "*_labels.tiff", "*_labels.zarr", f"*_labels.zarr{os.sep}",
                   # never-overwrite names of a second export: "x_labels (1).tif"
                   "*_labels (*).tif", "*_labels (*).tiff", "*_labels (*).zarr",
                   f"*_labels (*).zarr{os.sep}")


def default_reader_preferences(current: dict[str, str]) -> dict[str, str]:
    """``current`` plus CryoSeg's patterns for those not assigned yet (never replaced)."""
    updated = dict(current)
    for pattern in LABELS_PATTERNS:
        updated.setdefault(pattern, PLUGIN)
    return updated


def activate(context: Any = None) -> None:
    """Register the default reader preferences (best effort: never fails activation)."""
    try:
        from napari.settings import get_settings

        plugins = get_settings().plugins
        updated = default_reader_preferences(dict(plugins.extension2reader))
        if updated != dict(plugins.extension2reader):
            plugins.extension2reader = updated
    except Exception:  # noqa: BLE001 - preferences are a convenience, not a requirement
        return
