"""The dock's words and states: Fine-tune usable with the bundled model, fine-tuned
models named for what they are, engine advice in the dock's field names."""

from __future__ import annotations

import re

import pytest

from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset
from napari_cryoseg.viewer.words import dock_words, finetuned_name
from napari_cryoseg.widgets.job_runner import error_message

from .conftest import open_dock


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    return viewer, open_dock(viewer, "plugin")


def test_finetune_is_enabled_with_the_bundled_default(dock):
    viewer, widget = dock
    assert widget.session.model is None  # the bundled default is shown, loaded on use
    assert widget.finetune_panel.finetune_btn.isEnabled()
    # pressing it without corrections says what to do, and loads the default
    assert widget.finetune_panel.start_finetune() is None
    assert widget.session.model is not None


def test_finetuned_names_say_parent_round_and_time():
    parent = ModelFile.new(preset("tiny"), seed=0, provenance={"name": "mito-v1"})
    first = finetuned_name(parent, when=0)
    assert re.fullmatch(r"mito-v1 fine-tune 1 \(\d\d:\d\d\)", first["name"])
    child = ModelFile.new(preset("tiny"), seed=0, provenance=first)
    second = finetuned_name(child)
    assert second["name"].startswith("mito-v1 fine-tune 2 (")  # not "... fine-tune 1 ..."


def test_engine_errors_are_shown_with_dock_words():
    from napari_cryoseg.core.errors import InputError

    text = error_message(InputError("--classes gives 2 foreground classes; lower --lr"))
    assert "--" not in text
    assert text.startswith("the class list gives 2 foreground classes; lower the learning")
    assert dock_words("give a longer --time-budget or more --steps") == \
        "give a longer Time budget or more Steps"


def test_step_fields_say_no_limit_not_zero(dock):
    viewer, widget = dock
    for panel, key in ((widget.train_panel, "train.steps"),
                       (widget.finetune_panel, "finetune.steps")):
        field = panel.form[key]
        assert widget.session.settings.get(key) is None
        assert field.native.text() == "no limit", key
        field.value = 40
        assert widget.session.settings.get(key) == 40
        assert isinstance(widget.session.settings.get(key), int)
        assert field.native.text() == "40"
        field.value = 0
        assert widget.session.settings.get(key) is None


def test_background_strokes_are_a_colour_not_a_grey(dock):
    from napari_cryoseg.core.palette import DEFAULT_COLORS

    viewer, widget = dock
    color = widget.train_panel.store.classes.classes[0].color
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    assert max(r, g, b) - min(r, g, b) >= 100  # saturated: visible on any grey
    assert color not in DEFAULT_COLORS[:8]  # not another class's colour
