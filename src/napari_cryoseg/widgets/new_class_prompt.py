"""The "add class?" prompt of the Fine-tune section.

Shown while the user's corrections hold label values the model has no class for
(:func:`~napari_cryoseg.viewer.new_classes.find_new_labels`): one row per value with
an editable name (default ``"class <value>"``) in the colour the class will get, and
one button, **Add class '<name>' and fine-tune**. Hidden otherwise.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFrame, QGridLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from napari_cryoseg.widgets.buttons import button


class NewClassPrompt(QFrame):
    """Names for new classes, and the button that adds them and fine-tunes."""

    #: The user accepted: add the named classes and fine-tune.
    accepted = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        self.header = QLabel("")
        self.header.setWordWrap(True)
        layout.addWidget(self.header)
        self.grid = QGridLayout()
        layout.addLayout(self.grid)
        self.accept_btn = button("Add class and fine-tune", self.accepted.emit,
                                 "Grow the model by these classes (what it knew stays) and "
                                 "fine-tune it on your corrections")
        layout.addWidget(self.accept_btn)
        self.labels: list[Any] = []
        self.fields: dict[int, QLineEdit] = {}
        self._typed: dict[int, str] = {}  # names the user typed, kept across refreshes
        self.setVisible(False)

    def set_labels(self, labels: list[Any], model_name: str) -> None:
        """Show the prompt for ``labels`` (:class:`NewLabel`), or hide it when empty."""
        values = [label.value for label in labels]
        if values == [label.value for label in self.labels]:
            self.labels = list(labels)  # same rows: keep the fields (and the focus)
            self.setVisible(bool(labels))
            return
        for value, field in self.fields.items():
            self._typed[value] = field.text()
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.labels = list(labels)
        self.fields = {}
        for row, label in enumerate(labels):
            swatch = QLabel(f"label {label.value}")
            swatch.setStyleSheet(f"border-left: 12px solid {label.color}; padding-left: 4px")
            swatch.setToolTip(f"{label.pixels:,} pixels in {', '.join(label.layers)}")
            field = QLineEdit(self._typed.get(label.value, label.default_name))
            field.setToolTip("Name of the new class (stored in the model file)")
            field.textChanged.connect(lambda _text: self._update_button())
            self.grid.addWidget(swatch, row, 0)
            self.grid.addWidget(field, row, 1)
            self.fields[label.value] = field
        plural = "s" if len(labels) > 1 else ""
        self.header.setText(
            f"Your corrections use label{plural} "
            f"{', '.join(str(v) for v in values)}, which '{model_name}' has no class for. "
            f"Add {'them' if plural else 'it'} as new class{'es' if plural else ''}?")
        self._update_button()
        self.setVisible(bool(labels))

    def names(self) -> dict[int, str]:
        """Label value -> the name typed for its class."""
        return {value: field.text().strip() for value, field in self.fields.items()}

    def _update_button(self) -> None:
        names = list(self.names().values())
        self.accept_btn.setText(f"Add class '{names[0]}' and fine-tune" if len(names) == 1
                                else f"Add {len(names)} classes and fine-tune")
