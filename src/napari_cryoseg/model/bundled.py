"""Models shipped inside the package.

- the **default model** (``cryoseg-default.pt``): trained on the procedural cryo-SEM grid
  square sample (cells, ice, grid bars);
- the **EM backbone** (``cryoseg-em-backbone.pt``): a U-Net trained on real EM (membranes,
  glia / extracellular space, mitochondria, synapses; see ``models/README.md``, its model
  card). It segments those classes itself ("EM membranes + mitochondria" in the dock) and
  is where new models start: training from strokes keeps its features and gives it a new
  output head.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from napari_cryoseg.core.errors import ModelFileError
from napari_cryoseg.model.checkpoint import ModelFile, load_model

DEFAULT_MODEL_NAME = "cryoseg-default.pt"
BACKBONE_NAME = "cryoseg-em-backbone.pt"
#: What the dock's model picker calls each bundled model.
BUNDLED_TITLES = {
    DEFAULT_MODEL_NAME: "Grid squares (synthetic cryo-SEM: cell, ice, grid bar)",
    BACKBONE_NAME: "EM membranes + mitochondria (real EM: membrane, glia, mitochondrion, "
                   "synapse)",
}

#: Names that stand for a bundled model where a model file is expected (``--model em``).
BUNDLED_ALIASES = {"default": DEFAULT_MODEL_NAME, "em": BACKBONE_NAME,
                   "backbone": BACKBONE_NAME}


def bundled_path(name: str) -> Path:
    """Path of a model file shipped in the package (it may not exist in a source checkout)."""
    return Path(str(files("napari_cryoseg") / "models" / name))


def default_model_path() -> Path:
    """Path of the bundled default model file."""
    return bundled_path(DEFAULT_MODEL_NAME)


def backbone_path() -> Path:
    """Path of the bundled EM backbone."""
    return bundled_path(BACKBONE_NAME)


def load_bundled(name: str) -> ModelFile:
    """Load the bundled model ``name``.

    Raises
    ------
    ModelFileError
        The package was installed without it; say how to get a model.
    """
    path = bundled_path(name)
    if not path.is_file():
        raise ModelFileError(
            f"the bundled model {name} is missing ({path}); reinstall napari-cryoseg or "
            "pass a model file with --model (train one with `cryoseg train`)"
        )
    return load_model(path)


def load_default_model() -> ModelFile:
    """Load the bundled default model (see :func:`load_bundled`)."""
    return load_bundled(DEFAULT_MODEL_NAME)


def load_backbone() -> ModelFile:
    """Load the bundled EM backbone (see :func:`load_bundled`)."""
    return load_bundled(BACKBONE_NAME)
