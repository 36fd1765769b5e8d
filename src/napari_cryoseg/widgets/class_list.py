"""The class list of a new model: a thin Qt view of the session's class editor.

One row per class: a colour button, the name, **Paint** (selects the brush with that
class on the annotation layer of the selected image) and, except for background, a
remove button. Every edit goes to the
:class:`~napari_cryoseg.viewer.annotations.AnnotationStore` (and its
:class:`~napari_cryoseg.viewer.class_editor.ClassEditor`), which refuses bad input with
one line; the rows are rebuilt from it after every change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QColorDialog,
    QGridLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.viewer.annotations import AnnotationStore
from napari_cryoseg.widgets.buttons import button


def _swatch(color: str) -> str:
    return f"background-color: {color}; border: 1px solid #888; min-width: 18px;"


class ClassList(QWidget):
    """Rows of (colour, name, Paint, remove) and an **Add class** button."""

    def __init__(self, store: AnnotationStore, parent: QWidget | None = None,
                 *, pick_color: Callable[[str], str | None] | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.editor = store.classes
        #: ``pick_color(current) -> "#rrggbb" or None``; a colour dialog by default.
        self.pick_color = pick_color or self._dialog_color
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(4)
        layout.addLayout(self.grid)
        self.add_btn = button("Add class", self.add_class,
                              "Add a class (name it, then paint some strokes of it)")
        layout.addWidget(self.add_btn)
        self.rows: dict[int, dict[str, Any]] = {}
        self.editor.on_change(self.rebuild)
        self.rebuild()

    # --- actions -----------------------------------------------------------------------
    def _try(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            self.rebuild()  # show the classes as they are (a refused name is put back)
            return None

    def add_class(self) -> Any:
        return self._try(self.editor.add)

    def rename(self, value: int, name: str) -> Any:
        if self.editor.by_value(value).name == name.strip():
            return None
        return self._try(lambda: self.editor.rename(value, name))

    def recolor(self, value: int) -> Any:
        color = self.pick_color(self.editor.by_value(value).color)
        if not color:
            return None
        return self._try(lambda: self.editor.recolor(value, color))

    def remove(self, value: int) -> Any:
        return self._try(lambda: self.store.remove_class(value))

    def paint(self, value: int) -> Any:
        return self._try(lambda: self.store.paint_with(value))

    def _dialog_color(self, current: str) -> str | None:
        chosen = QColorDialog.getColor(QColor(current), self, "Class colour")
        return chosen.name() if chosen.isValid() else None

    # --- view --------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Rows from the editor's classes (after any change)."""
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.rows = {}
        for row, spec in enumerate(self.editor.classes):
            swatch = QPushButton("")
            swatch.setStyleSheet(_swatch(spec.color))
            swatch.setToolTip("Choose this class's colour")
            swatch.clicked.connect(lambda *_, v=spec.value: self.recolor(v))
            name = QLineEdit(spec.name)
            name.setToolTip("The class name, stored in the model file")
            name.editingFinished.connect(
                lambda v=spec.value, field=name: self.rename(v, field.text()))
            paint = button("Paint", lambda v=spec.value: self.paint(v),
                           "Paint this class on the annotation layer of the selected image")
            widgets = {"color": swatch, "name": name, "paint": paint}
            if row == 0:
                name.setReadOnly(True)
                name.setToolTip("What is none of your classes: paint some of it too "
                                "(unpainted pixels are ignored)")
            else:
                remove = button("✕", lambda v=spec.value: self.remove(v),
                                "Remove this class (only while it has no strokes)")
                remove.setMaximumWidth(28)
                widgets["remove"] = remove
            for column, key in enumerate(("color", "name", "paint", "remove")):
                if key in widgets:
                    self.grid.addWidget(widgets[key], row, column)
            self.rows[spec.value] = widgets
