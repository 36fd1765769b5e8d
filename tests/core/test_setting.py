"""Self-describing settings: one place for a setting's bounds, label, help and flag."""

from __future__ import annotations

import dataclasses

import pytest

from napari_cryoseg.cli import build_parser
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.setting import about
from napari_cryoseg.core.tiling import TilingConfig


@pytest.mark.parametrize(("name", "bad"), [("tile", 15), ("overlap", 0.51), ("overlap", -0.1),
                                           ("batch_size", 0), ("overlap", float("nan"))])
def test_the_settings_class_refuses_values_outside_its_described_bounds(name, bad):
    meta = about(TilingConfig, name)
    with pytest.raises(InputError, match=f"^{meta.name} "):
        TilingConfig(**{name: bad})


def test_cli_flags_are_generated_from_the_field_metadata():
    segment = build_parser()._subparsers._group_actions[0].choices["segment"]
    actions = {a.dest: a for a in segment._actions}
    for field in dataclasses.fields(TilingConfig):
        meta = about(TilingConfig, field.name)
        action = actions[field.name]
        assert meta.flag in action.option_strings and action.help == meta.help
        assert action.type(str(meta.min)) == meta.min  # the bounds are the metadata's
        assert action.type(str(meta.max)) == meta.max
        with pytest.raises(Exception, match=meta.what):
            action.type(str(meta.max * 2 + 1))
