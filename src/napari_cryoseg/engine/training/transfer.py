"""Where a new model's weights start: the bundled EM backbone, a model file, or random.

Training from a handful of strokes on a CPU makes tens of steps in a minute. From random
weights that learns next to nothing; from a network that has already seen real EM it only
has to learn which of the features it knows mean the user's classes. So new models start
from the EM backbone by default (a new output head for the user's classes, see
:func:`napari_cryoseg.model.heads.transfer_head`), and random weights stay one setting away.
"""

from __future__ import annotations

from pathlib import Path

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.training.train_settings import TrainConfig
from napari_cryoseg.model.bundled import backbone_path, load_backbone
from napari_cryoseg.model.checkpoint import ModelFile, load_model
from napari_cryoseg.model.heads import transfer_head

#: ``TrainConfig.init`` values that are not a path.
INIT_CHOICES = ("backbone", "random")


def _start_model(init: str) -> ModelFile:
    if init == "backbone":
        return load_backbone()
    path = Path(init).expanduser()
    if not path.is_file():
        raise InputError(f"start model {init!r} is not a file; give 'backbone', 'random' or "
                         "the path of a CryoSeg model file")
    return load_model(path)


def start_weights(template: ModelFile, config: TrainConfig) -> tuple[ModelFile, str]:
    """``template`` with its starting weights, and one line saying where they came from.

    ``template`` is the freshly initialised model of the run (its classes, colours,
    normalisation and input mode). With ``config.init == "backbone"`` the bundled backbone
    is used when it fits (one input channel, no background subtraction, no explicit
    architecture and the backbone's preset, ``small``); otherwise the run starts from
    random weights and the line says why. A model file given as ``init`` must fit
    (one input channel, the same input mode) or the run is refused.
    """
    init = str(config.init)
    if init == "random":
        return template, "starting from random weights"
    if init == "backbone" and not backbone_path().is_file():
        return template, ("starting from random weights: the bundled EM backbone is missing "
                          "(reinstall napari-cryoseg to get it)")
    start = _start_model(init)
    what = "the EM backbone" if init == "backbone" else f"'{start.name}'"
    misfit = []
    if template.config.in_channels != start.config.in_channels:
        misfit.append(f"{template.config.in_channels} input channels (temporal context), "
                      f"{what} takes {start.config.in_channels}")
    if template.background_subtraction != start.background_subtraction:
        misfit.append(f"background subtraction {template.background_subtraction!r}, "
                      f"{what} uses {start.background_subtraction!r}")
    if init == "backbone" and (config.unet is not None
                               or config.preset != start.provenance.get("recipe", {}).get(
                                   "preset", "small")):
        misfit.append(f"size {config.preset if config.unet is None else 'custom'}, "
                      f"{what} is a {start.provenance.get('recipe', {}).get('preset', 'small')} "
                      "U-Net")
    if misfit:
        if init == "backbone":
            return template, ("starting from random weights: " + "; ".join(misfit)
                              + " (choose Size small without temporal context to start "
                                "from the EM backbone)")
        raise InputError(f"cannot start from {what}: " + "; ".join(misfit))
    made, source = transfer_head(start, template.class_names, template.class_colors)
    made.normalization = start.normalization
    made.pixel_size_nm = template.pixel_size_nm
    made.temporal_context = template.temporal_context
    made.provenance = {**template.provenance, **made.provenance}
    kept = [f"{name} <- {known}" for name, known in source.items() if known and known != name]
    kept += [name for name, known in source.items() if known and known == name]
    fresh = [name for name, known in source.items() if known is None]
    note = (f"starting from {what} ({start.provenance.get('steps', '?')} steps on "
            f"{', '.join(start.provenance.get('training_data', {})) or 'EM'})"
            + (f"; classes it knows: {', '.join(kept)}" if kept else "")
            + (f"; new: {', '.join(fresh)}" if fresh else ""))
    return made, note


def starts_pretrained(config: TrainConfig) -> bool:
    """Whether a run with ``config`` starts from pretrained weights (without loading them):
    a model file given as ``init``, or the backbone when it fits (see :func:`start_weights`)."""
    init = str(config.init)
    if init == "random":
        return False
    if init != "backbone":
        return True
    return (backbone_path().is_file() and config.unet is None and config.preset == "small"
            and config.temporal_context == 0 and config.background_subtraction == "none")
