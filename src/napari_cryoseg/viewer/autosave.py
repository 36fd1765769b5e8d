"""When the corrections are saved, and what came of it (napari glue, no Qt).

An :class:`Autosave` watches a :class:`~napari_cryoseg.viewer.review.CorrectionStore`:
each change restarts a 2 s wait, so a save happens once the user pauses, not on every
brush stroke. The caller owns the clock that wakes it up (the dock's single-shot Qt
timer) and only asks :meth:`Autosave.wait_s` how long to wait and :meth:`Autosave.tick`
what to do when it fires. The store itself writes only corrected or reviewed images.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.viewer.review import CorrectionStore

EXTENSION_KEY = "autosave"
#: Seconds without a change before the corrections are saved.
AUTOSAVE_DELAY_S = 2.0


@dataclass(frozen=True)
class AutosaveOutcome:
    """What one :meth:`Autosave.tick` or :meth:`Autosave.save_now` did.

    Attributes
    ----------
    folder : Path or None
        Where the corrections were written (None: nothing was written).
    error : str or None
        One line on why saving failed.
    wait_s : float or None
        Not yet due: tick again in this many seconds.
    """

    folder: Path | None = None
    error: str | None = None
    wait_s: float | None = None
    at: str = ""  # local time of the save, HH:MM:SS

    @property
    def message(self) -> str:
        """The line to show ("" when there is nothing to say)."""
        if self.error is not None:
            return self.error
        if self.folder is not None:
            return f"corrections saved in {self.folder} ({self.at})"
        return ""


class Autosave:
    """Debounced saving of a store's corrections (see the module docstring)."""

    def __init__(self, store: CorrectionStore, *, delay_s: float = AUTOSAVE_DELAY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.delay_s = float(delay_s)
        self._clock = clock
        self._changed_at: float | None = None  # last change not yet saved
        store.listeners.append(self.note_change)

    @classmethod
    def for_store(cls, store: CorrectionStore) -> Autosave:
        """The one autosave of ``store``'s session (docks of one viewer share it)."""
        extensions = store.session.extensions
        autosave = extensions.get(EXTENSION_KEY)
        if autosave is None or autosave.store is not store:
            autosave = cls(store)
            extensions[EXTENSION_KEY] = autosave
        return autosave

    def note_change(self, _layer: Any = None) -> None:
        """A layer changed: the wait starts again."""
        self._changed_at = self._clock()

    def wait_s(self) -> float | None:
        """Seconds until a save is due: None when nothing is unsaved, 0 when due now."""
        if not self.store.has_unsaved:
            self._changed_at = None
            return None
        now = self._clock()
        if self._changed_at is None:  # unsaved without an event (a new layer): wait too
            self._changed_at = now
        return max(0.0, self.delay_s - (now - self._changed_at))

    def tick(self) -> AutosaveOutcome:
        """Save when due; otherwise say how long to wait (the timer may fire early)."""
        wait = self.wait_s()
        if wait is None:
            return AutosaveOutcome()
        if wait > 0:
            return AutosaveOutcome(wait_s=wait)
        return self.save_now()

    def flush(self) -> AutosaveOutcome:
        """Save at once if anything is unsaved (the dock is closing)."""
        return self.save_now() if self.store.has_unsaved else AutosaveOutcome()

    def save_now(self) -> AutosaveOutcome:
        """Save what changed now (the store writes nothing before a correction)."""
        self._changed_at = None
        try:
            folder = self.store.autosave()
        except (CryoSegError, OSError) as err:
            return AutosaveOutcome(error=f"autosave failed: {_one_line(err)}")
        return AutosaveOutcome(folder=folder, at=time.strftime("%H:%M:%S"))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__
