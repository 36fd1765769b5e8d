"""The job runner: the one place where engine generators become napari workers.

Every long job of the dock (segment, batch, fine-tune, re-segment, uncertainty, and
training from annotations) goes through :meth:`JobRunner.start`:

* ``session.begin(kind)`` before, ``session.end(kind)`` after: one job per viewer;
* a :class:`napari.utils.progress` bar in napari's activity dock, advanced from the
  engine's events (:class:`~napari_cryoseg.engine.events.Progress` tiles,
  :class:`~napari_cryoseg.engine.events.TrainStep` steps or seconds of the budget);
* every event goes to the caller's ``on_event`` on the main thread (loss curves, status
  lines, a live preview layer: the only place layers change, with ``on_result``);
* one error relay: a one-line napari notification, then ``on_error(message)``;
* ``finished`` (also after Cancel or an error) frees the session and calls ``on_finish``.

The runner is a QObject with signals (``started``, ``event``, ``finished``) that views
and tests wait on (``qtbot.waitSignal(runner.finished)``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.engine.events import Progress, TrainStep
from napari_cryoseg.viewer.words import dock_words

#: Resolution of progress bars of training jobs (fractions of the step or time budget).
_TRAIN_TICKS = 1000


def error_message(err: BaseException) -> str:
    """One line for the user: CryoSeg errors as-is, anything else with a hint."""
    if isinstance(err, CryoSegError):  # engine errors name CLI flags: say the dock's field
        return dock_words(str(err).splitlines()[0]) if str(err) else type(err).__name__
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    name = type(err).__name__
    if "out of memory" in text.lower():
        return f"{name}: {text} - try a smaller tile or batch size, or the cpu device"
    return (f"{name}: {text} (unexpected error; see the napari console/log for details and "
            "report it with the image size and model)")


class WorkerFailed(CryoSegError):
    """An engine error re-raised under a type superqt's worker reports.

    superqt's ``GeneratorWorker`` treats a ``RuntimeError`` from the generator as "the
    worker was deleted": it emits neither ``errored`` nor ``finished``, so a panel would
    stay busy forever. torch raises ``RuntimeError`` for most failures.
    """


def guarded(func: Callable[..., Generator[Any, Any, Any]], *args: Any, **kwargs: Any):
    """Run the engine generator ``func``; turn RuntimeError into :class:`WorkerFailed`."""
    try:
        return (yield from func(*args, **kwargs))
    except RuntimeError as err:
        text = str(err).strip()
        raise WorkerFailed(
            f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__
        ) from err


def progress_fraction(event: Any) -> float | None:
    """How far a job is, from one engine event (None: this event says nothing)."""
    if isinstance(event, Progress):
        return event.fraction
    if isinstance(event, TrainStep):
        fraction = event.step / event.total_steps if event.total_steps else 0.0
        if event.time_budget_s:
            fraction = max(fraction, event.elapsed_s / event.time_budget_s)
        return min(fraction, 1.0)
    return None


class Job:
    """A running job: its worker, progress bar and outcome.

    Attributes
    ----------
    kind, desc : str
        Job kind (``"segment"``, ``"finetune"``, ...) and the progress bar's text.
    cancelled : bool
        Cancel was asked (the result, if one still arrives, is dropped).
    result : Any
        What the generator returned (None until then, or when cancelled / failed).
    error : str or None
        The one-line error message when the job failed.
    """

    def __init__(self, kind: str, desc: str, worker: Any, bar: Any) -> None:
        self.kind = kind
        self.desc = desc
        self.worker = worker
        self.bar = bar
        self.cancelled = False
        self.returned = False
        self.result: Any = None
        self.error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def cancel(self) -> None:
        """Ask the worker to stop (takes effect at its next yield)."""
        self.cancelled = True
        self.worker.quit()


class JobRunner(QObject):
    """Runs one job at a time for a session (see the module docstring)."""

    #: A job started (the :class:`Job`).
    started = Signal(object)
    #: A job sent an event: (job, event).
    event = Signal(object, object)
    #: A job ended, whatever the outcome (the :class:`Job`).
    finished = Signal(object)

    EXTENSION_KEY = "jobs"

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.job: Job | None = None

    @classmethod
    def for_session(cls, session: Any) -> JobRunner:
        """The session's runner (created on first use, kept in ``session.extensions``)."""
        runner = session.extensions.get(cls.EXTENSION_KEY)
        if runner is None:
            runner = cls(session)
            session.extensions[cls.EXTENSION_KEY] = runner
        return runner

    @property
    def busy(self) -> bool:
        return self.job is not None

    def cancel(self) -> None:
        """Cancel the running job, if any."""
        if self.job is not None:
            self.job.cancel()

    def start(
        self,
        kind: str,
        generator_func: Callable[..., Generator[Any, Any, Any]],
        *args: Any,
        desc: str,
        total: int | None = None,
        on_event: Callable[[Any], None] | None = None,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_finish: Callable[[Job], None] | None = None,
        **kwargs: Any,
    ) -> Job:
        """Run ``generator_func(*args, **kwargs)`` in a worker thread.

        ``total`` is the progress bar's length in the units of the job's
        :class:`Progress` events (tiles); training jobs leave it None and advance by
        fractions of their step or time budget.

        Raises :class:`CryoSegError` (before any thread starts) if another job runs.
        """
        self.session.begin(kind)
        try:
            worker = create_worker(guarded, generator_func, *args, _start_thread=False,
                                   _ignore_errors=True, **kwargs)
        except Exception:
            self.session.end(kind)
            raise
        ticks = int(total) if total else _TRAIN_TICKS
        bar = progress(total=max(ticks, 1), desc=desc)
        job = Job(kind, desc, worker, bar)
        bar_state = {"target": 0, "updating": False}

        def yielded(event: Any) -> None:
            # napari's progress bar processes Qt events while it updates, so later events
            # (and ``returned``) can arrive inside ``bar.update``: tell the view first,
            # drop events that arrive after the result, and let only the outermost call
            # move the bar (nested calls just raise its target; no recursion).
            if job.returned:
                return
            if on_event is not None:
                on_event(event)
            self.event.emit(job, event)
            fraction = progress_fraction(event)
            if fraction is None:
                return
            bar_state["target"] = max(bar_state["target"], round(fraction * bar.total))
            if bar_state["updating"]:
                return
            bar_state["updating"] = True
            try:
                while bar.n < bar_state["target"] and not job.returned:
                    bar.update(bar_state["target"] - bar.n)
            finally:
                bar_state["updating"] = False

        def returned(value: Any) -> None:
            job.returned = True
            if job.cancelled:
                return
            job.result = value
            if on_result is not None:
                on_result(value)

        def errored(err: BaseException) -> None:
            job.error = error_message(err)
            show_error(f"CryoSeg: {job.error}")
            if on_error is not None:
                on_error(job.error)

        def finished() -> None:
            self.session.end(kind)
            if job.returned and not job.cancelled and bar.n < bar.total:
                bar.n = bar.total  # done: show it full (not via update: no more events)
            bar.close()
            if self.job is job:
                self.job = None
            if job.cancelled:
                show_info(f"CryoSeg: {desc} cancelled")
            try:
                if on_finish is not None:
                    on_finish(job)
            finally:
                self.finished.emit(job)

        worker.yielded.connect(yielded)
        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.finished.connect(finished)
        self.job = job
        self.started.emit(job)
        worker.start()
        return job
