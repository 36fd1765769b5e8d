"""Small Qt helpers shared by the panels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtWidgets import QPushButton

from napari_cryoseg.core.errors import CryoSegError


def button(text: str, action: Callable[[], Any], tooltip: str = "") -> QPushButton:
    """A push button that calls ``action()`` with no arguments.

    Qt's ``clicked`` signal passes ``checked`` (False); connecting a method with an
    optional first parameter directly would receive it as that parameter.
    """
    widget = QPushButton(text)
    if tooltip:
        widget.setToolTip(tooltip)
    widget.clicked.connect(lambda *_: action())
    return widget


class RunCancel:
    """The Run / Cancel pair of a section that runs one job at a time (Segment, Batch).

    ``start(make_job, running_text)`` calls ``make_job()`` (which starts the job through
    the job runner, or raises :class:`~napari_cryoseg.core.errors.CryoSegError` before
    any thread starts), then disables Run and enables Cancel; ``finished(job)`` (the
    job's ``on_finish``) puts the buttons back. ``job`` is the running job or None.
    """

    def __init__(self, run_button: Any, cancel_button: Any, say: Callable[[str], Any],
                 on_refused: Callable[[str], Any]) -> None:
        self.run_button = run_button
        self.cancel_button = cancel_button
        self.say = say  # the section's status line
        self.on_refused = on_refused  # shows why a job could not start
        self.job: Any = None
        cancel_button.setEnabled(False)

    def start(self, make_job: Callable[[], Any], running_text: Callable[[], str]) -> Any:
        """Start the job; None (after ``on_refused``) when it was refused.

        ``running_text()`` is read once the job started (a model may load at Run)."""
        try:
            job = make_job()
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            self.on_refused(str(err))
            return None
        self.job = job
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.say(running_text())
        return job

    def cancel(self) -> None:
        """Stop the running job after its current tile batch."""
        if self.job is not None:
            self.job.cancel()
            self.say("Cancelling after the current tile batch…")

    def finished(self, job: Any) -> None:
        """The job ended (whatever the outcome): Run again, no Cancel."""
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.job is job:
            self.job = None
