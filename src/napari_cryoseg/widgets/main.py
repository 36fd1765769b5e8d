"""The CryoSeg dock: one collapsible section per feature, all sharing one session.

napari hands the dock a proxy of the viewer (``PublicOnlyProxy``) when it is opened
from the Plugins menu or ``viewer.window.add_plugin_dock_widget``; it is unwrapped here,
once, so every panel, the session and its records hold the real viewer and layers.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QComboBox, QScrollArea, QVBoxLayout, QWidget
from superqt import QCollapsible

from napari_cryoseg.viewer.session import Session, unwrap
from napari_cryoseg.widgets.batch_panel import BatchPanel
from napari_cryoseg.widgets.export_panel import ExportPanel
from napari_cryoseg.widgets.finetune_panel import FinetunePanel
from napari_cryoseg.widgets.job_runner import JobRunner
from napari_cryoseg.widgets.measure_panel import MeasurePanel
from napari_cryoseg.widgets.model_panel import ModelPanel
from napari_cryoseg.widgets.review_panel import ReviewPanel
from napari_cryoseg.widgets.segment_panel import SegmentPanel
from napari_cryoseg.widgets.train_panel import TrainPanel
from napari_cryoseg.widgets.uncertainty_panel import UncertaintyPanel


class _RefitSection(QObject):
    """Keeps an expanded section as tall as its panel needs at its width.

    QCollapsible fixes its content's height from the panel's size hint, which counts a
    word-wrapped text (the status and metrics lines) on one long line. At the dock's
    width such a text takes several lines, and Qt drew it over the curve above it. The
    panel's minimum height is therefore set to what its layout needs at its width, and
    the section re-fitted, whenever the layout changes or the panel is resized."""

    def __init__(self, section: QCollapsible, panel: QWidget) -> None:
        super().__init__(section)
        self.section, self.panel = section, panel

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Resize):
            layout = self.panel.layout()
            if layout is not None and layout.hasHeightForWidth():
                need = layout.totalHeightForWidth(self.panel.width())
                if need > 0 and need != self.panel.minimumHeight():
                    self.panel.setMinimumHeight(need)
                    if self.section.isExpanded():
                        self.section.expand(animate=False)
        return False


class CryoSegWidget(QWidget):
    """Dock widget; all panels share the viewer's :class:`Session` and job runner."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        viewer = unwrap(napari_viewer)
        self.viewer = viewer
        self.session = Session.for_viewer(viewer)
        self.runner = JobRunner.for_session(self.session)
        self.model_panel = ModelPanel(viewer, self.session)
        self.train_panel = TrainPanel(viewer, self.session)
        self.segment_panel = SegmentPanel(viewer, self.session)
        self.batch_panel = BatchPanel(viewer, self.session)
        self.export_panel = ExportPanel(viewer, self.session)
        self.measure_panel = MeasurePanel(viewer, self.session,
                                          folder=lambda: self.export_panel.folder.text())
        self.review_panel = ReviewPanel(viewer, self.session)
        self.finetune_panel = FinetunePanel(viewer, self.session)
        self.uncertainty_panel = UncertaintyPanel(viewer, self.session)
        self.finetune_panel.model_saved.connect(lambda _path: self.model_panel.refresh_recent())

        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.setContentsMargins(2, 2, 2, 2)
        body_layout.setSpacing(4)
        self.sections: dict[str, QCollapsible] = {}
        sections = [("Model", self.model_panel, True),
                    ("Train new model", self.train_panel, False),
                    ("Segment", self.segment_panel, True),
                    ("Batch", self.batch_panel, False), ("Export", self.export_panel, False),
                    ("Objects", self.measure_panel, False),
                    ("Correct & review", self.review_panel, False),
                    ("Fine-tune", self.finetune_panel, False),
                    ("Uncertainty", self.uncertainty_panel, False)]
        for title, panel, expanded in sections:
            section = QCollapsible(title.replace("&", "&&"))  # '&' is a Qt mnemonic
            # superqt's default margins leave a tall empty band under collapsed headers.
            section.layout().setContentsMargins(0, 0, 0, 0)
            section.addWidget(panel)
            panel.installEventFilter(_RefitSection(section, panel))
            if expanded:
                section.expand(animate=False)
            else:
                section.collapse(animate=False)
            body_layout.addWidget(section)
            self.sections[title] = section
        body_layout.addStretch(1)
        # A combo is as wide as its longest entry by default (a long layer name, or the
        # reason an RGB layer cannot be used): the dock would outgrow its area.
        for combo in body.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        self.scroll = scroll
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
