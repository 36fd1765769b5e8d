"""Settings forms: magicgui widgets bound to the session's settings dataclasses.

A :class:`SettingsForm` shows some fields of the session's
:class:`~napari_cryoseg.viewer.settings.DockSettings` (``"segment.tiling.tile"``,
``"finetune.lr"``, ...). A user's change is written to the settings at once (validated
by the dataclass; a refused value is put back with a one-line notification), and a
change of the settings from elsewhere (a model's tiling hint) is shown without being
taken for a user's edit. The form never keeps a value of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox, Widget
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QLabel

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.core.setting import about


def _same(value: Any) -> Any:
    return value


def _whole(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert`` after rounding a float box's value to a whole number."""
    return lambda value: convert(int(round(value)) if value is not None else value)


def none_as_zero(value: Any) -> Any:
    """Settings ``None`` ("no limit") <-> the spin box's 0 (shown as "no limit")."""
    return 0 if value is None else value


def zero_as_none(value: Any) -> Any:
    return value if value else None


@dataclass(frozen=True)
class FieldSpec:
    """One row of a form.

    Attributes
    ----------
    key : str
        ``"<job>.<field path>"`` in the session's settings.
    label, tooltip : str
        What the user reads.
    widget : type
        A magicgui value widget class.
    options : dict
        Its keyword arguments (``min``, ``max``, ``step``, ``choices``, ...).
    to_widget, from_widget : callable
        Settings value -> widget value, and back (e.g. ``None`` <-> 0 for "no limit").
    special_text : str
        Text a spin box shows at its minimum (e.g. "no limit").
    decimals : int
        Digits a float spin box shows and keeps (0: magicgui's choice from the step).
    """

    key: str
    label: str
    widget: type[Widget]
    tooltip: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    to_widget: Callable[[Any], Any] = _same
    from_widget: Callable[[Any], Any] = _same
    special_text: str = ""
    decimals: int = 0


def described_field(key: str, cls: Any, name: str, widget: type[Widget], *,
                    no_limit: str = "", choices: list[Any] | None = None,
                    to_widget: Callable[[Any], Any] | None = None,
                    note: str = "") -> FieldSpec:
    """The form row of a self-describing setting: label, tooltip, bounds and step from
    the field metadata of ``cls.name`` (:mod:`napari_cryoseg.core.setting`).

    ``no_limit``: the setting's None ("no limit") is the box's 0, shown as this text (the
    setting's own values start above 0). ``choices``: a combo box's ``[(text, value)]``
    when the values need words of their own (default: the setting's choices).
    ``to_widget``: what the box shows for a settings value (the threshold's None is the
    model's own threshold); the box's value is stored as it is. ``note``: what the dock
    does with the setting, added to the tooltip after the setting's help.

    An open bound is the first value the box's decimals show inside it (0.001 above an
    open 0 with 3 decimals).
    """
    meta = about(cls, name)
    low, high = meta.min, meta.max
    inside = 10.0 ** -meta.decimals if meta.decimals else 1
    if no_limit:
        if to_widget is not None:
            raise ValueError(f"{key}: a no-limit row shows None as 0, not through to_widget")
        if low is None or low < 0:
            raise ValueError(f"{key}: 0 means no limit, so its values must start above 0")
        low = 0
    elif low is not None and meta.min_open:
        low = low + inside
    if high is not None and meta.max_open:
        high = high - inside
    options = {k: v for k, v in (("min", low), ("max", high), ("step", meta.step))
               if v is not None}
    if choices is None and meta.choices is not None:
        choices = list(meta.choices)
    if choices is not None:
        options["choices"] = choices
    tooltip = f"{meta.help}. {note}" if note else meta.help
    if no_limit:
        return FieldSpec(key, meta.label, widget, tooltip, options, none_as_zero,
                         zero_as_none, no_limit, decimals=meta.decimals)
    return FieldSpec(key, meta.label, widget, tooltip, options,
                     to_widget=to_widget or _same, decimals=meta.decimals)


class SettingsForm:
    """A magicgui :class:`Container` of :class:`FieldSpec` rows bound to ``settings``.

    ``form[key]`` is the magicgui widget of a field (``.value``, ``.native``).
    ``on_user_change(key, value)`` is called after a user's change was stored.
    """

    def __init__(self, settings: Any, fields: list[FieldSpec],
                 on_user_change: Callable[[str, Any], None] | None = None) -> None:
        self.settings = settings
        self.on_user_change = on_user_change
        self.widgets: dict[str, Widget] = {}
        self._whole: set[str] = set()  # int fields shown in a float box (special text)
        self.fields = {}
        for spec in fields:
            widget_class = spec.widget
            if spec.special_text and widget_class is SpinBox:
                # magicgui's SpinBox is superqt's large-int spin box, which never shows a
                # special text ("no limit" read "0"): a whole-number float box does
                widget_class = FloatSpinBox
                spec = replace(spec, decimals=spec.decimals or 0,
                               from_widget=_whole(spec.from_widget))
                self._whole.add(spec.key)
            widget = widget_class(label=spec.label,
                                  value=spec.to_widget(settings.get(spec.key)),
                                  tooltip=spec.tooltip or None, **spec.options)
            if spec.key in self._whole:
                widget.native.setDecimals(0)
            if spec.special_text and hasattr(widget.native, "setSpecialValueText"):
                widget.native.setSpecialValueText(spec.special_text)
            if spec.decimals:
                # set before the value again: 2 decimals would round 0.125 to 0.13
                widget.native.setDecimals(spec.decimals)
                widget.value = spec.to_widget(settings.get(spec.key))
            widget.changed.connect(lambda value, key=spec.key: self._changed(key, value))
            self.widgets[spec.key] = widget
            self.fields[spec.key] = spec
        self.container = Container(widgets=list(self.widgets.values()), labels=True)
        self.container.margins = (0, 0, 0, 0)
        # one label column: the fields start at the same x whatever their label's length
        labels = self.container.native.findChildren(QLabel)
        # (+12 px: napari's stylesheet, applied once the dock is shown, widens the text)
        self.label_width = max((label.sizeHint().width() for label in labels), default=0) + 12
        for label in labels:
            label.setFixedWidth(self.label_width)
        settings.on_change(lambda _job: self.refresh())

    @property
    def native(self) -> Any:
        """The Qt widget to put in a layout."""
        return self.container.native

    def __getitem__(self, key: str) -> Widget:
        return self.widgets[key]

    def refresh(self) -> None:
        """Show the settings' current values (without counting them as edits)."""
        for key, widget in self.widgets.items():
            value = self.fields[key].to_widget(self.settings.get(key))
            if widget.value != value:
                with widget.changed.blocked():
                    widget.value = value

    def _changed(self, key: str, value: Any) -> None:
        try:
            self.settings.set(key, self.fields[key].from_widget(value))
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            self.refresh()
            return
        if self.on_user_change is not None:
            self.on_user_change(key, value)


__all__ = ["CheckBox", "ComboBox", "FieldSpec", "FloatSpinBox", "SettingsForm", "SpinBox",
           "described_field", "none_as_zero", "zero_as_none"]
