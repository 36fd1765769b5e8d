"""The line under a Time budget field: what it buys here, and a budget that would do.

Shows ``60 s ≈ 10 steps here (3.9 s a step); a useful new model needs about 60 steps``
once the step time of this machine is known. **Measure speed** times a few steps as a
job (seconds on a CPU; cached for the next time); **Use N s** sets the proposed budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.viewer.budget import budget_estimate, measure_job, step_request
from napari_cryoseg.widgets.buttons import button


class BudgetLine(QWidget):
    """Estimate label, Measure speed, Use proposed budget (for ``kind``'s settings)."""

    def __init__(self, session: Any, runner: Any, kind: str,
                 model: Callable[[], Any] = lambda: None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self.runner, self.kind, self._model = session, runner, kind, model
        self.estimate: Any = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        layout.addWidget(self.label)
        row = QHBoxLayout()
        self.measure_btn = button("Measure speed", self.measure,
                                  "Time a few training steps on this machine to see how many "
                                  "steps the time budget buys (takes a few seconds)")
        self.use_btn = button("Use proposed budget", self.use_proposed,
                              "Set Time budget to the proposed value")
        row.addWidget(self.measure_btn)
        row.addWidget(self.use_btn)
        layout.addLayout(row)
        session.settings.on_change(lambda job: self.refresh() if job == kind else None)
        session.on_model_changed(lambda _model: self.refresh())
        runner.started.connect(lambda _job: self._update_buttons())
        runner.finished.connect(lambda _job: self._update_buttons())
        self.refresh()

    def request(self) -> Any:
        return step_request(self.kind, self.session.settings, self.session.device,
                            self._model())

    def refresh(self) -> None:
        """Show the estimate for the current settings (or how to get one)."""
        request = self.request()
        self.estimate = budget_estimate(request)
        if request is None:
            self.label.setText("")
        elif self.estimate is None:
            self.label.setText("How many steps this budget buys here is not known yet: "
                               "press Measure speed.")
        else:
            text = self.estimate.text()
            loop = self.session.settings.loop
            # A preview is made between two steps: it cannot come sooner than a step.
            if loop.preview and self.estimate.step_s > loop.preview_every_s:
                text += (f"; live previews come between steps: about every "
                         f"{self.estimate.step_s:.0f} s here")
            self.label.setText(text)
            self.label.setStyleSheet("" if self.estimate.enough else "color: #e0a000")
        self._update_buttons()

    def _update_buttons(self) -> None:
        request = self.request()
        known = self.estimate is not None
        self.measure_btn.setVisible(request is not None and not known)
        self.measure_btn.setEnabled(not self.runner.busy)
        self.use_btn.setVisible(known and not self.estimate.enough)
        if known:
            self.use_btn.setText(f"Use {self.estimate.proposed_s:.0f} s")

    def measure(self) -> Any:
        """Start timing a few steps (a job); the line updates when it ends."""
        request = self.request()
        if request is None or self.runner.busy:
            return None
        self.label.setText("measuring a few training steps on this machine…")
        try:
            return self.runner.start("measure", measure_job, request,
                                     desc="Measuring training speed",
                                     on_finish=lambda _job: self.refresh())
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            return None

    def use_proposed(self) -> None:
        """Set the section's Time budget to the proposed one."""
        if self.estimate is not None:
            self.session.settings.set(f"{self.kind}.time_budget_s",
                                      float(self.estimate.proposed_s))
