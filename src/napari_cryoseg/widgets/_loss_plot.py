"""A small QPainter plot of training loss and validation Dice (no matplotlib needed).

Loss uses the left axis (auto-scaled from 0), Dice the right axis (0-1). Painting is
cheap (a few hundred line segments), so the plot can be refreshed while a fine-tune
worker runs without stalling napari's event loop.
"""

from __future__ import annotations

import math
from typing import Any

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_cryoseg.engine.events import TrainStep, Validation

LOSS_COLOR = QColor("#4da6ff")
DICE_COLOR = QColor("#ffa64d")
_MAX_POINTS = 600  # loss points kept for drawing (older ones are thinned out)


def _nice_max(value: float) -> float:
    """Round up to 1, 2 or 5 times a power of ten."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        if value <= m * 10**exp:
            return m * 10**exp
    return 10 ** (exp + 1)  # pragma: no cover


class LossPlot(QWidget):
    """Two curves against the training step: loss (left axis) and Dice (right axis)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loss: list[tuple[int, float]] = []
        self.dice: list[tuple[int, float]] = []
        self.total_steps: int | None = None
        self.title = ""
        #: Shown before the first point (each section says which button trains).
        self.empty_text = "press Fine-tune to train"
        self.setMinimumSize(260, 220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Training loss (left axis) and validation Dice (right axis)")

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(340, 240)

    # --- data --------------------------------------------------------------------------
    def clear(self) -> None:
        self.loss.clear()
        self.dice.clear()
        self.total_steps = None
        self.update()

    def add_loss(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self.loss.append((int(step), float(loss)))
            if len(self.loss) > _MAX_POINTS:
                self.loss = self.loss[::2]

    def add_dice(self, step: int, dice: float) -> None:
        if math.isfinite(dice):
            self.dice.append((int(step), float(dice)))

    def show(self, event: Any) -> None:
        """Draw a training run's loss (:class:`TrainStep`) or held-out Dice
        (:class:`Validation`) event; other events are not the plot's."""
        if isinstance(event, TrainStep):
            self.add_loss(event.step, event.loss)
        elif isinstance(event, Validation):
            self.add_dice(event.step, event.dice)
        else:
            return
        self.update()

    def start_at(self, dice: float | None) -> None:
        """The parent's held-out Dice as the curve's step-0 point."""
        if dice is not None:
            self.dice.insert(0, (0, float(dice)))
            self.update()

    # --- painting ----------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, p: QPainter) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        pal = self.palette()
        fg = pal.color(pal.ColorRole.WindowText)
        grid = QColor(fg)
        grid.setAlpha(50)
        font = QFont(self.font())
        font.setPointSizeF(max(font.pointSizeF() * 0.85, 7.0))
        p.setFont(font)
        fm = p.fontMetrics()
        left, right, top, bottom = 46, 40, 24, 34
        w, h = self.width(), self.height()
        plot = QRectF(left, top, max(w - left - right, 10), max(h - top - bottom, 10))
        steps = [s for s, _ in self.loss] + [s for s, _ in self.dice]
        x_max = max([self.total_steps or 0, *steps, 1])
        loss_max = _nice_max(max([v for _, v in self.loss], default=1.0))

        def px(step: float) -> float:
            return plot.left() + plot.width() * step / x_max

        def py_loss(v: float) -> float:
            return plot.bottom() - plot.height() * min(v / loss_max, 1.0)

        def py_dice(v: float) -> float:
            return plot.bottom() - plot.height() * min(max(v, 0.0), 1.0)

        # grid + ticks
        p.setPen(QPen(grid, 1))
        for i in range(5):
            y = plot.bottom() - plot.height() * i / 4
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        p.setPen(QPen(fg, 1))
        p.drawRect(plot)
        for i in range(5):
            y = plot.bottom() - plot.height() * i / 4
            loss_tick = f"{loss_max * i / 4:.3g}"
            p.setPen(QPen(LOSS_COLOR))
            p.drawText(QRectF(0, y - 8, left - 4, 16),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, loss_tick)
            p.setPen(QPen(DICE_COLOR))
            p.drawText(QRectF(plot.right() + 4, y - 8, right - 4, 16),
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, f"{i / 4:.2f}")
        p.setPen(QPen(fg))
        for i in range(5):
            x = plot.left() + plot.width() * i / 4
            p.drawText(QRectF(x - 30, plot.bottom() + 2, 60, 14),
                       Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop,
                       f"{round(x_max * i / 4)}")
        p.drawText(QRectF(plot.left(), h - 16, plot.width(), 16),
                   Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom, "training step")
        # axis titles (rotated)
        for text, color, x, angle in (("loss", LOSS_COLOR, 10, -90), ("Dice", DICE_COLOR,
                                                                       w - 8, 90)):
            p.save()
            p.setPen(QPen(color))
            p.translate(x, plot.center().y())
            p.rotate(angle)
            p.drawText(QRectF(-40, -8, 80, 16), Qt.AlignmentFlag.AlignCenter, text)
            p.restore()
        # curves
        if len(self.loss) >= 1:
            p.setPen(QPen(LOSS_COLOR, 1.6))
            p.drawPolyline(QPolygonF([QPointF(px(s), py_loss(v)) for s, v in self.loss]))
        if self.dice:
            p.setPen(QPen(DICE_COLOR, 2.0))
            points = [QPointF(px(s), py_dice(v)) for s, v in self.dice]
            if len(points) > 1:
                p.drawPolyline(QPolygonF(points))
            p.setBrush(DICE_COLOR)
            for pt in points:
                p.drawEllipse(pt, 3, 3)
            p.setBrush(Qt.BrushStyle.NoBrush)
        # legend
        entries = [("training loss", LOSS_COLOR), ("validation Dice", DICE_COLOR)]
        x = plot.left() + 4
        y = 4
        for text, color in entries:
            p.setPen(QPen(color, 3))
            p.drawLine(QPointF(x, y + 8), QPointF(x + 16, y + 8))
            p.setPen(QPen(fg))
            p.drawText(QPointF(x + 20, y + 8 + fm.ascent() / 2 - 1), text)
            x += 20 + fm.horizontalAdvance(text) + 14
        if self.title and plot.right() - x > fm.horizontalAdvance(self.title) + 4:
            p.setPen(QPen(fg))
            p.drawText(QRectF(x, y, plot.right() - x, 16),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, self.title)
        if not self.loss and not self.dice:
            p.setPen(QPen(grid.lighter(200)))
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, self.empty_text)
