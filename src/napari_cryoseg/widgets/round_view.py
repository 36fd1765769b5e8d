"""What the Train new model and Fine-tune sections share as views of a training round.

Mixed into their QWidgets, which have ``runner`` (the JobRunner), ``round`` (their
:class:`~napari_cryoseg.viewer.training_round.TrainingRound`), ``plot`` (a LossPlot),
``preview_shown`` (a Signal) and their own ``_on_result`` and ``_on_finish``.
"""

from __future__ import annotations

from typing import Any


class RoundView:
    """Hand a prepared round to the job runner, draw its curve, relay its previews."""

    runner: Any
    round: Any
    plot: Any
    preview_shown: Any

    def _start_round(self, start: Any, preview: Any) -> Any:
        """Start ``start`` (a RoundStart) through the runner; the job."""
        job = self.runner.start(
            self.round.kind, start.job, *start.args, desc=start.desc,
            on_event=self._on_event, on_result=self._on_result,
            on_error=self.round.failed, on_finish=self._on_finish)
        self.plot.clear()
        self.plot.total_steps = start.total_steps
        self.plot.title = start.title
        self.round.started(job, preview)
        return job

    def _on_event(self, event: Any) -> None:
        self.plot.show(event)  # the curve is the view's; the lines are the round's
        step = self.round.on_event(event)
        if step is not None:
            self.preview_shown.emit(step)

    def _on_result(self, value: Any) -> None:  # pragma: no cover - each section's own
        raise NotImplementedError

    def _on_finish(self, job: Any) -> None:  # pragma: no cover - each section's own
        raise NotImplementedError
