"""The default model shipped inside the package (trained on the procedural sample)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from napari_cryoseg.core.errors import ModelFileError
from napari_cryoseg.model.checkpoint import ModelFile, load_model

DEFAULT_MODEL_NAME = "cryoseg-default.pt"


def default_model_path() -> Path:
    """Path of the bundled default model file (it may not exist in a source checkout)."""
    return Path(str(files("napari_cryoseg") / "models" / DEFAULT_MODEL_NAME))


def load_default_model() -> ModelFile:
    """Load the bundled default model.

    Raises
    ------
    ModelFileError
        The package was installed without it; say how to get a model.
    """
    path = default_model_path()
    if not path.is_file():
        raise ModelFileError(
            f"the bundled default model is missing ({path}); reinstall napari-cryoseg or "
            "pass a model file with --model (train one with `cryoseg train`)"
        )
    return load_model(path)
