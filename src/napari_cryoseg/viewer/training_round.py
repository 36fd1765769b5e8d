"""What Train new model and Fine-tune share: one training round's state (napari glue, no Qt).

A round is started by a panel, runs in a worker, reports events, ends with a result (or
is cancelled, or fails) and may then segment images with the new model. The
:class:`TrainingRound` owns everything about it that outlives a click - the running job,
the live preview layer, the model kept aside, whether to segment when the job has ended,
and the lines the dock shows (``status``, ``metrics``, ``warning``) - so the Qt panels
only bind widgets to it and hand :class:`RoundStart` to the job runner.

Subclasses: :class:`~napari_cryoseg.viewer.finetune_round.FinetuneRound` and
:class:`~napari_cryoseg.viewer.train_round.TrainRound`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.engine.events import Message, Preview, Progress, TrainStep
from napari_cryoseg.viewer.words import dock_words


class RoundRefused(CryoSegError):
    """A round was not started because of something the user can do (one line, a warning
    rather than an error: no corrections yet, a job is running, a class needs a name)."""


class Cancellable(Protocol):
    """The runner's handle of a running job, as far as a round needs it."""

    def cancel(self) -> None: ...


@dataclass(frozen=True)
class RoundStart:
    """What the job runner needs to start a round, and what the curve shows.

    ``job(*args)`` is the worker generator; ``desc`` names the job in napari's activity
    dock; ``total_steps`` (None: a time budget) and ``title`` set up the loss curve.
    """

    job: Callable[..., Any]
    args: tuple[Any, ...]
    desc: str
    total_steps: int | None
    title: str


class TrainingRound:
    """State of the training rounds of one dock section; see the module docstring."""

    #: The session's job kind ("train", "finetune"); set by subclasses.
    kind = ""
    #: The status line after Cancel.
    cancelled_text = "cancelled"

    def __init__(self, session: Any) -> None:
        self.session = session
        self.job: Cancellable | None = None
        self.preview: Any = None  # LivePreview of the running round, or None
        self.kept_aside: Any = None  # a result the user must apply or discard
        self.status = ""
        self.metrics = ""
        self.warning = ""
        self.segment_after = False  # segment with the new model once the job has ended
        self._listeners: list[Callable[[], None]] = []

    # --- binding -----------------------------------------------------------------------
    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change of the state a view shows."""
        self._listeners.append(callback)

    def changed(self, **texts: str) -> None:
        """Set some of ``status``, ``metrics``, ``warning`` and tell the views."""
        for name, text in texts.items():
            if name not in ("status", "metrics", "warning"):
                raise AttributeError(f"a round has no line {name!r}")
            setattr(self, name, text)
        for callback in list(self._listeners):
            callback()

    @property
    def running(self) -> bool:
        return self.job is not None

    # --- lifecycle ---------------------------------------------------------------------
    def started(self, job: Cancellable, preview: Any = None) -> None:
        """The runner started the round's job (``preview``: its live preview or None)."""
        self.job = job
        self.preview = preview
        self.kept_aside = None
        self.segment_after = False
        self.changed(status="starting…", metrics="", warning="")

    def cancel(self) -> None:
        """Stop at the next step (what is kept then is the subclass's rule)."""
        if self.job is not None:
            self.job.cancel()
            self.changed(status="cancelling…")

    def on_event(self, event: Any) -> int | None:
        """Update the status line and the live preview from one engine event.

        Returns the training step of a preview that was shown (None otherwise); the loss
        curve is the view's (it draws :class:`TrainStep` and ``Validation`` itself).
        """
        if isinstance(event, TrainStep):
            eta = f", about {event.eta_s:.0f} s left" if event.eta_s is not None else ""
            self.changed(status=f"step {event.step}: loss {event.loss:.4f}{eta}")
        elif isinstance(event, Preview):
            if self.preview is not None and self.preview.show(
                    event.labels, event.step, event.final) is not None:
                return int(event.step)
        elif isinstance(event, Message):
            self.on_message(event)
        elif isinstance(event, Progress):
            self.changed(status=event.message or event.stage)
        return None

    def on_message(self, event: Message) -> None:
        self.changed(status=dock_words(event.text))

    def failed(self, message: str) -> None:
        self.changed(status=f"{self.kind} failed: {message}")

    def finished(self, job: Any) -> bool:
        """The job ended (done, cancelled or failed): drop the preview layer; True when
        the images should now be segmented with the new model (once per round)."""
        if self.job is job:
            self.job = None
        if self.preview is not None:
            self.preview.remove()
            self.preview = None
        if getattr(job, "cancelled", False):
            self.changed(status=self.cancelled_text)
        else:
            self.changed()
        segment, self.segment_after = self.segment_after, False
        return segment
