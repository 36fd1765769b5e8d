"""The CryoSeg dock: Model, Segment, Batch and Export sections (and fine-tuning if present)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget
from superqt import QCollapsible

from napari_cryoseg.session import Session
from napari_cryoseg.widgets.batch_panel import BatchPanel
from napari_cryoseg.widgets.export_panel import ExportPanel
from napari_cryoseg.widgets.measure_panel import MeasurePanel
from napari_cryoseg.widgets.model_panel import ModelPanel
from napari_cryoseg.widgets.segment_panel import SegmentPanel

try:
    from napari_cryoseg.widgets.finetune_panel import FinetunePanel
except ImportError:
    FinetunePanel = None


class CryoSegWidget(QWidget):
    """Dock widget; all panels share the viewer's :class:`Session`."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = Session.for_viewer(napari_viewer)
        self.model_panel = ModelPanel(napari_viewer, self.session)
        self.segment_panel = SegmentPanel(napari_viewer, self.session)
        self.batch_panel = BatchPanel(napari_viewer, self.session, self.segment_panel)
        self.export_panel = ExportPanel(napari_viewer, self.session)
        self.measure_panel = MeasurePanel(napari_viewer, self.session,
                                          folder=lambda: self.export_panel.folder.text())
        self.finetune_panel = FinetunePanel(napari_viewer, self.session) if FinetunePanel else None

        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.setContentsMargins(2, 2, 2, 2)
        body_layout.setSpacing(4)
        self.sections: dict[str, QCollapsible] = {}
        sections = [("Model", self.model_panel, True), ("Segment", self.segment_panel, True),
                    ("Batch", self.batch_panel, False), ("Export", self.export_panel, False),
                    ("Objects", self.measure_panel, False)]
        if self.finetune_panel is not None:
            sections.append(("Correct & fine-tune", self.finetune_panel, False))
        for title, panel, expanded in sections:
            section = QCollapsible(title.replace("&", "&&"))  # '&' is a Qt mnemonic
            # superqt's default margins leave a tall empty band under collapsed headers.
            section.layout().setContentsMargins(0, 0, 0, 0)
            section.addWidget(panel)
            if expanded:
                section.expand(animate=False)
            else:
                section.collapse(animate=False)
            body_layout.addWidget(section)
            self.sections[title] = section
        body_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(340)

    def show_section(self, title: str, only: bool = False) -> None:
        """Expand one section (collapsing the others when ``only``)."""
        for name, section in self.sections.items():
            if name == title:
                section.expand(animate=False)
            elif only:
                section.collapse(animate=False)
