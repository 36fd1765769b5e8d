"""Adding classes to a trained model: the output head grows, what it knew stays.

A binary model has one sigmoid output ``z`` (foreground probability ``sigmoid(z)``). The
same probabilities come out of a softmax over the logits ``(0, z)``, so a binary head
becomes a two-row softmax head without changing any prediction. A new class gets a copy of
the background row lowered by :data:`NEW_CLASS_MARGIN`: its logit is always below the
background's, so it is never the most probable class and the model labels every image
exactly as before, until the user's strokes of the new class teach it. The margin is
small enough for a few hundred Adam steps to lift the new class where it belongs (a
logit that starts far below would need many more).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.model.checkpoint import ModelFile, default_class_colors

#: A new class's logit starts this far below the background's (exp(-2): 14 % of its mass).
NEW_CLASS_MARGIN = 2.0
#: In a new model (:func:`transfer_head`) a class the start does not know starts level
#: with the background: nothing is there to keep, and a start below it left the class
#: unlearnt after the ~50 steps a minute buys on a CPU (CDeep3M strokes named "class 1",
#: 60 s: Dice 0.00 with a margin of 2 or 1, 0.56 level; named "mitochondrion": 0.60).
#: Ties go to the background, so the first preview still shows none of it.
NEW_MODEL_CLASS_MARGIN = 0.0


def add_classes(
    model: ModelFile, names: Sequence[str], colors: Sequence[str] | None = None
) -> ModelFile:
    """A copy of ``model`` with the classes ``names`` appended (the input is untouched).

    Parameters
    ----------
    model : ModelFile
        A trained model (binary or multi-class).
    names : sequence of str
        Names of the new classes (not already among the model's).
    colors : sequence of str, optional
        Their display colours (default: the next colours of the default palette).

    Returns
    -------
    ModelFile
        ``n_classes + len(names)`` classes; predictions identical to ``model``'s up to the
        new classes' tiny share of the softmax.
    """
    names = [str(n).strip() for n in names]
    if not names or any(not n for n in names):
        raise InputError("give the name of each class to add")
    clash = sorted({n.lower() for n in names} & {n.lower() for n in model.class_names})
    if clash or len({n.lower() for n in names}) != len(names):
        raise InputError(f"class name(s) {', '.join(clash) or 'given twice'} already exist; "
                         "choose new names")
    old = model.config.n_classes
    new_total = old + len(names)
    palette = default_class_colors(new_total)
    colors = list(colors) if colors is not None else palette[old:]
    if len(colors) != len(names):
        raise InputError(f"{len(names)} new classes but {len(colors)} colours")
    weight = model.state_dict["head.weight"].float()  # (out, C, 1, 1)
    bias = model.state_dict["head.bias"].float()  # (out,)
    if old == 2:  # sigmoid z -> softmax logits (0, z)
        weight = torch.cat([torch.zeros_like(weight), weight])
        bias = torch.cat([torch.zeros_like(bias), bias])
    extra = len(names)
    weight = torch.cat([weight, weight[:1].repeat(extra, 1, 1, 1)])
    bias = torch.cat([bias, bias[:1].repeat(extra) - NEW_CLASS_MARGIN])
    grown = copy.copy(model)
    grown.config = model.config.with_(n_classes=new_total)
    grown.state_dict = {**{k: v.clone() for k, v in model.state_dict.items()},
                        "head.weight": weight.to(model.state_dict["head.weight"].dtype),
                        "head.bias": bias.to(model.state_dict["head.bias"].dtype)}
    grown.class_names = [*model.class_names, *names]
    grown.class_colors = [*model.class_colors, *colors]
    grown.threshold = 0.5  # softmax argmax from now on (the binary cut no longer applies)
    grown.provenance = {**copy.deepcopy(model.provenance),
                        "classes_added": [*model.provenance.get("classes_added", []), *names]}
    grown.source_path = None
    return grown


#: Class names that mean the same structure (lower case), mapped to the backbone's names.
SYNONYMS = {
    "background": "background", "bg": "background",
    "membrane": "membrane", "membranes": "membrane", "boundary": "membrane",
    "boundaries": "membrane", "cell membrane": "membrane",
    "glia": "glia / extracellular", "extracellular": "glia / extracellular",
    "extracellular space": "glia / extracellular", "glia / extracellular": "glia / extracellular",
    "mito": "mitochondrion", "mitos": "mitochondrion", "mitochondria": "mitochondrion",
    "mitochondrion": "mitochondrion",
    "synapse": "synapse", "synapses": "synapse",
}


def matched_class(name: str, known: Sequence[str]) -> int | None:
    """Index in ``known`` of the class ``name`` means (synonyms understood), else None."""
    lowered = [k.strip().lower() for k in known]
    key = name.strip().lower()
    for candidate in (key, SYNONYMS.get(key)):
        if candidate is not None and candidate in lowered:
            return lowered.index(candidate)
    return None


def transfer_head(
    start: ModelFile, names: Sequence[str], colors: Sequence[str] | None = None
) -> tuple[ModelFile, dict[str, str | None]]:
    """A copy of ``start`` with an output head for the classes ``names`` (background first).

    Everything but the 1x1 output convolution is kept. A new class whose name matches one of
    ``start``'s (``"mitochondria"`` finds ``"mitochondrion"``) takes that class's output row,
    so the first prediction already shows what the pretrained network knows about it; any
    other class starts as a copy of the background row (:data:`NEW_MODEL_CLASS_MARGIN`):
    level with it, so ties label the background until the strokes teach the class. A
    binary head (two classes) is the
    foreground row minus the background row: the same probabilities as the softmax over the
    two rows.

    Returns
    -------
    (ModelFile, dict)
        The new model (provenance ``parent`` = ``start``'s name) and, per class name, the
        ``start`` class it was initialised from (None: a new row).
    """
    names = [str(n) for n in names]
    if len(names) < 2:
        raise InputError("a model needs background and at least one class")
    weight = start.state_dict["head.weight"].float()  # (out, C, 1, 1)
    bias = start.state_dict["head.bias"].float()
    if start.config.n_classes == 2:  # sigmoid z -> softmax rows (0, z)
        weight = torch.cat([torch.zeros_like(weight), weight])
        bias = torch.cat([torch.zeros_like(bias), bias])
    known = list(start.class_names)
    source: dict[str, str | None] = {}
    rows_w, rows_b = [], []
    for i, name in enumerate(names):
        index = 0 if i == 0 else matched_class(name, known)
        if index is not None and (i == 0 or index != 0):
            rows_w.append(weight[index])
            rows_b.append(bias[index])
            source[name] = known[index]
        else:
            rows_w.append(weight[0])
            rows_b.append(bias[0] - NEW_MODEL_CLASS_MARGIN)
            source[name] = None
    new_w, new_b = torch.stack(rows_w), torch.stack(rows_b)
    if len(names) == 2:  # one sigmoid output: foreground logit minus background logit
        new_w, new_b = (new_w[1] - new_w[0])[None], (new_b[1] - new_b[0])[None]
    made = copy.copy(start)
    made.config = start.config.with_(n_classes=len(names))
    dtype = start.state_dict["head.weight"].dtype
    made.state_dict = {**{k: v.clone() for k, v in start.state_dict.items()},
                       "head.weight": new_w.to(dtype), "head.bias": new_b.to(dtype)}
    made.class_names = names
    made.class_colors = list(colors) if colors else default_class_colors(len(names))
    made.threshold = 0.5
    made.provenance = {"parent": start.name, "initialised_from": source}
    made.source_path = None
    return made, source
