"""Small Qt helpers shared by the panels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QPushButton


def button(text: str, action: Callable[[], Any], tooltip: str = "") -> QPushButton:
    """A push button that calls ``action()`` with no arguments.

    Qt's ``clicked`` signal passes ``checked`` (False); connecting a method with an
    optional first parameter directly would receive it as that parameter.
    """
    widget = QPushButton(text)
    if tooltip:
        widget.setToolTip(tooltip)
    widget.clicked.connect(lambda *_: action())
    return widget
