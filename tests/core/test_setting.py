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


def test_numeric_choices_and_a_single_value_checked_in_the_same_words():
    from napari_cryoseg.core.setting import check_value, setting

    @dataclasses.dataclass(frozen=True)
    class Knobs:
        copies: int = setting(1, label="Copies:", help="Copies", name="copies",
                              choices=(1, 2, 4))
        share: float = setting(0.5, label="Share:", help="Share", name="share",
                               min=0.0, min_open=True, max=1.0, max_open=True)

    assert about(Knobs, "copies").accepted() == "one of 1, 2, 4"
    assert check_value(Knobs, "copies", 2) == 2 and check_value(Knobs, "share", 0.3) == 0.3
    with pytest.raises(InputError, match=r"^copies 3 must be one of 1, 2, 4$"):
        check_value(Knobs, "copies", 3)
    with pytest.raises(InputError, match=r"^share 1 must be in \(0, 1\)$"):
        check_value(Knobs, "share", 1)
