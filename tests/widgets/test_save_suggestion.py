"""Save model… proposes the model's own name in the project folder, never the cwd."""

from __future__ import annotations

from pathlib import Path

from napari_cryoseg.model.bundled import load_default_model
from napari_cryoseg.viewer.review import CorrectionStore
from napari_cryoseg.viewer.words import model_file_suggestion

from .conftest import open_dock


class _Model:
    name = "cryoseg-default fine-tune 2 (14:05)"


def test_suggestion_is_named_after_the_model_and_never_an_existing_file(tmp_path):
    first = model_file_suggestion(_Model(), tmp_path)
    assert first == tmp_path / "cryoseg-default fine-tune 2 (14-05).pt"
    first.write_bytes(b"someone's model")
    assert model_file_suggestion(_Model(), tmp_path).name == \
        "cryoseg-default fine-tune 2 (14-05) (1).pt"
    odd = type("M", (), {"name": "../../etc/passwd"})()
    assert model_file_suggestion(odd, tmp_path).parent == tmp_path


def test_save_dialog_starts_in_the_project_folder(make_napari_viewer, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    widget.session.set_model(load_default_model(), keep_previous=False)
    project = tmp_path / "project"
    project.mkdir()
    CorrectionStore.for_session(widget.session).project_dir = project
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *args, **kw: (asked.append(args[2]), ("", ""))[1])
    widget.finetune_panel.save_model_dialog()
    (suggested,) = asked
    assert Path(suggested).parent == project
    assert Path(suggested).name == f"{widget.session.model.name}.pt"
    assert list(project.iterdir()) == []  # cancelled: nothing written
