"""A setting's default, bounds, label and help are written once, in its dataclass.

For every described field of the recipes (``FinetuneConfig``, ``TrainConfig``), of the
segment settings (``SegmentSettings``: threshold, test-time augmentation, probabilities)
and of the dock's ``LoopSettings``: the ``cryoseg`` flag has the metadata's default, help
and bounds,
the dock row has its label, tooltip and bounds, and a value outside the bounds is refused
in one line by the dataclass and by the command line alike.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from napari_cryoseg.cli import build_parser, main
from napari_cryoseg.cli._settings_flags import value_kind
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.setting import about, default_of, described
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.inference.settings import SegmentSettings
from napari_cryoseg.engine.training.finetune_settings import FinetuneConfig
from napari_cryoseg.engine.training.train_settings import TrainConfig
from napari_cryoseg.viewer.settings import LoopSettings

COMMANDS = {"finetune": FinetuneConfig, "train": TrainConfig, "segment": SegmentSettings}
#: Commands that take some of a class's flags: ``cryoseg evaluate --tta``.
SOME_FLAGS = {"evaluate": (SegmentSettings, ("tta",))}


def _subparser(command: str):
    return build_parser()._subparsers._group_actions[0].choices[command]


def _flagged(cls):
    return [name for name in described(cls) if about(cls, name).flag is not None]


def _outside(cls, name):
    """Values just outside the described bounds (None when the side is unbounded)."""
    meta = about(cls, name)
    whole = value_kind(cls, name) is int
    values = []
    if meta.min is not None:
        values.append(meta.min if meta.min_open else meta.min - (1 if whole else 1e-3))
    if meta.max is not None:
        values.append(meta.max if meta.max_open else meta.max * 2 + 1)
    return [int(v) if whole else v for v in values]


BOUNDED = [(cls, name) for cls in (FinetuneConfig, TrainConfig, LoopSettings, SegmentSettings)
           for name in described(cls) if about(cls, name).min is not None
           or about(cls, name).max is not None]


@pytest.mark.parametrize("command", [*COMMANDS, *SOME_FLAGS])
def test_every_flag_of_a_described_field_has_the_metadata_default_help_and_bounds(command):
    cls, names = SOME_FLAGS.get(command) or (COMMANDS[command], _flagged(COMMANDS[command]))
    actions = {a.dest: a for a in _subparser(command)._actions}
    for name in names:
        meta = about(cls, name)
        action = actions[name]  # every described flag is on the command line
        assert meta.flag in action.option_strings, name
        assert action.default == default_of(cls, name), name  # the class's own default
        assert action.help.replace("%%", "%").startswith(meta.help.rstrip(")")), name
        if meta.choices is not None:
            assert list(action.choices) == list(meta.choices), name
            for choice in meta.choices:  # parsed to the setting's own type
                assert action.type is None or action.type(str(choice)) == choice, name
        elif value_kind(cls, name) in (int, float):
            low = meta.min if not meta.min_open else None
            high = meta.max if not meta.max_open else None
            for bound in (low, high):  # the closed bounds are accepted ...
                if bound is not None:
                    assert action.type(str(bound)) == bound, name
            for bad in _outside(cls, name):  # ... and what lies outside is refused
                with pytest.raises(Exception, match=meta.what):
                    action.type(repr(bad))


@pytest.mark.parametrize(("cls", "name"), BOUNDED,
                         ids=[f"{c.__name__}.{n}" for c, n in BOUNDED])
def test_the_dataclass_refuses_values_outside_the_bounds_in_one_line(cls, name):
    meta = about(cls, name)
    for bad in [*_outside(cls, name), math.nan]:
        if isinstance(bad, float) and math.isnan(bad) and value_kind(cls, name) is int:
            continue
        with pytest.raises(InputError) as err:
            cls(**{name: bad})
        message = str(err.value)
        assert "\n" not in message and f"{meta.name} {bad}" in message, message
        assert meta.accepted() in message, message  # it says what would be accepted


@pytest.mark.parametrize(("command", "flag", "value", "phrase"), [
    ("finetune", "--keep-elsewhere", "1", "share of patches in [0, 1)"),
    ("finetune", "--head-lr-factor", "0", "factor in (0, 100]"),
    ("finetune", "--time-budget", "1e9", "time in seconds in (0, 604800]"),
    ("finetune", "--lr", "2", "learning rate in (0, 1]"),
    ("finetune", "--adapt-below", "1.5", "Dice in [0, 1]"),
    ("train", "--temporal-context", "32", "number of frames from 0 to 31"),
    ("train", "--steps", str(10**10), "number of steps from 1 to 1000000000"),
    ("segment", "--threshold", "1", "probability threshold in (0, 1)"),
    ("segment", "--tta", "3", "invalid choice: 3 (choose from 1, 2, 4, 8)"),
    ("evaluate", "--tta", "16", "invalid choice: 16 (choose from 1, 2, 4, 8)"),
])
def test_the_command_line_refuses_them_in_one_line(command, flag, value, phrase, capsys):
    argv = {"segment": [command, "i", "--out", "o"],
            "evaluate": [command, "--images", "i", "--masks", "m", "--model", "m"]}.get(
        command, [command, "--images", "i", "--masks", "m", "--out", "o"]) + [flag, value]
    if command == "finetune":
        argv += ["--model", "m"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and phrase in lines[0], err


def _expected_low(meta, spec):
    if spec.special_text:  # None = "no limit" = the box's 0
        return 0
    if meta.min_open:
        return meta.min + 10.0 ** -meta.decimals
    return meta.min


def _expected_high(meta):
    return meta.max - 10.0 ** -meta.decimals if meta.max_open else meta.max


def test_the_dock_rows_have_the_metadata_label_help_and_bounds():
    from napari_cryoseg.widgets.finetune_panel import FINETUNE_FIELDS
    from napari_cryoseg.widgets.train_panel import TRAIN_FIELDS

    jobs = {"finetune": FinetuneConfig, "train": TrainConfig, "loop": LoopSettings}
    rows = [*FINETUNE_FIELDS, *TRAIN_FIELDS]
    assert len(rows) == 12
    for spec in rows:
        job, _, name = spec.key.partition(".")
        meta = about(jobs[job], name)
        assert (spec.label, spec.tooltip) == (meta.label, meta.help), spec.key
        if meta.min is not None:
            assert spec.options["min"] == pytest.approx(_expected_low(meta, spec)), spec.key
        if meta.max is not None:
            assert spec.options["max"] == pytest.approx(_expected_high(meta)), spec.key
        if meta.step is not None:
            assert spec.options["step"] == meta.step, spec.key
        if meta.choices is not None and job == "loop":
            assert spec.options["choices"] == list(meta.choices)


def test_the_segment_rows_have_the_metadata_label_help_and_bounds():
    from napari_cryoseg.widgets.segment_panel import segment_fields

    def shown(value):
        return 0.5 if value is None else value

    rows = {spec.key: spec for spec in segment_fields(shown)}
    for key, spec in rows.items():
        path = key.split(".")[1:]
        cls = TilingConfig if path[0] == "tiling" else SegmentSettings
        meta = about(cls, path[-1])
        assert spec.label == meta.label and spec.tooltip.startswith(meta.help), key
        if meta.min is not None:
            assert spec.options["min"] == pytest.approx(_expected_low(meta, spec)), key
        if meta.max is not None:
            assert spec.options["max"] == pytest.approx(_expected_high(meta)), key
        if meta.step is not None:
            assert spec.options["step"] == meta.step, key
        assert spec.decimals == meta.decimals, key
    threshold = rows["segment.threshold"]
    assert (threshold.options["min"], threshold.options["max"]) == pytest.approx((0.001, 0.999))
    assert threshold.to_widget(None) == 0.5  # None shows the model's own threshold
    assert threshold.from_widget(0.4) == 0.4
    words = rows["segment.tta"].options["choices"]
    assert [value for _, value in words] == list(about(SegmentSettings, "tta").choices)
    assert words[0] == ("off", 1) and words[-1] == ("8 copies", 8)


def test_dock_overrides_are_construction_values_not_field_defaults():
    from napari_cryoseg.viewer.settings import (
        DOCK_FINETUNE_BUDGET_S,
        DOCK_TRAIN_BUDGET_S,
        DockSettings,
    )

    settings = DockSettings()
    assert settings.finetune.time_budget_s == DOCK_FINETUNE_BUDGET_S
    assert settings.train.time_budget_s == DOCK_TRAIN_BUDGET_S
    assert default_of(FinetuneConfig, "time_budget_s") is None  # the engine: steps
    assert dataclasses.replace(settings.finetune, time_budget_s=None) == FinetuneConfig()
