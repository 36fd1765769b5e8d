"""Show a training run's progress events in a panel (shared by Train new model and Fine-tune)."""

from __future__ import annotations

from typing import Any

from napari_cryoseg.engine.events import Preview, TrainStep, Validation


def show_training_event(event: Any, plot: Any, status_label: Any, preview: Any,
                        preview_shown: Any) -> bool:
    """Curve, status line and live preview for one event; False when it is none of those.

    Parameters
    ----------
    event : engine event
        A :class:`TrainStep`, :class:`Validation` or :class:`Preview` is shown here; the
        caller handles any other event.
    plot : LossPlot
        The panel's loss / Dice curve.
    status_label : QLabel
        The panel's status line.
    preview : LivePreview or None
        The live preview layer of the run (None: previews are dropped).
    preview_shown : Signal
        Emitted with the step of each preview shown.
    """
    if isinstance(event, TrainStep):
        plot.add_loss(event.step, event.loss)
        eta = event.eta_s
        eta_text = f", about {eta:.0f} s left" if eta is not None else ""
        status_label.setText(f"step {event.step}: loss {event.loss:.4f}{eta_text}")
        plot.update()
    elif isinstance(event, Validation):
        plot.add_dice(event.step, event.dice)
        plot.update()
    elif isinstance(event, Preview):
        if preview is not None and preview.show(event.labels, event.step,
                                                event.final) is not None:
            preview_shown.emit(int(event.step))
    else:
        return False
    return True
