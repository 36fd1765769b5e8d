"""New models start from a pretrained network: head transfer, start choice, bundled backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.events import Message, drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.engine.training.train import TrainConfig, train
from napari_cryoseg.model.bundled import backbone_path, load_backbone
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import preset
from napari_cryoseg.model.heads import matched_class, transfer_head

BACKBONE_CLASSES = ["background", "membrane", "glia / extracellular", "mitochondrion",
                    "synapse"]


def _five_class_model(seed=0):
    model = ModelFile.new(preset("tiny", n_classes=5), class_names=BACKBONE_CLASSES, seed=seed)
    torch.manual_seed(seed)
    model.state_dict["head.bias"] = torch.randn(5)
    return model


def _probabilities(model, x):
    with torch.no_grad():
        logits = model.build()(x)
    if model.config.n_classes == 2:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], 1)
    return torch.softmax(logits, 1)


def test_synonyms_find_the_known_class():
    assert matched_class("Mitochondria", BACKBONE_CLASSES) == 3
    assert matched_class("mito", BACKBONE_CLASSES) == 3
    assert matched_class("membranes", BACKBONE_CLASSES) == 1
    assert matched_class("ribosome", BACKBONE_CLASSES) is None


def test_binary_head_keeps_the_pair_of_known_classes():
    start = _five_class_model()
    made, source = transfer_head(start, ["background", "mitochondria"])
    assert made.config.n_classes == 2 and source == {"background": "background",
                                                      "mitochondria": "mitochondrion"}
    x = torch.rand(1, 1, 32, 32)
    full = _probabilities(start, x)
    pair = full[:, [0, 3]] / full[:, [0, 3]].sum(1, keepdim=True)  # softmax over 2 rows
    assert torch.allclose(_probabilities(made, x), pair, atol=1e-5)
    # Everything but the head is the start's.
    for key, value in start.state_dict.items():
        if not key.startswith("head."):
            assert torch.equal(made.state_dict[key], value)
    assert made.provenance["parent"] == start.name


def test_unknown_class_starts_level_with_background_and_input_is_untouched():
    start = _five_class_model()
    before = {k: v.clone() for k, v in start.state_dict.items()}
    made, source = transfer_head(start, ["background", "membrane", "ribosome"])
    assert source["ribosome"] is None and source["membrane"] == "membrane"
    x = torch.rand(1, 1, 32, 32)
    probs = _probabilities(made, x)
    # level with the background: learnable from the first step, and ties label background
    assert torch.allclose(probs[:, 2], probs[:, 0])
    labels = drain(segment(x[0, 0].numpy(), made, device="cpu")).labels
    assert not (labels == 2).any()
    binary, _ = transfer_head(start, ["background", "ribosome"])
    assert torch.count_nonzero(binary.state_dict["head.bias"]) == 0
    assert not drain(segment(x[0, 0].numpy(), binary, device="cpu")).labels.any()
    assert all(torch.equal(before[k], v) for k, v in start.state_dict.items())
    with pytest.raises(InputError, match="background and at least one class"):
        transfer_head(start, ["background"])


def _disk_data():
    yy, xx = np.mgrid[:64, :64]
    truth = (((yy - 30) ** 2 + (xx - 34) ** 2) < 100).astype(np.uint8)
    image = (60 + 120 * truth + np.random.default_rng(0).normal(0, 10, truth.shape))
    return [image.astype(np.float32)], [truth]


def test_training_starts_from_a_model_file_and_says_so(tmp_path):
    start = _five_class_model(seed=3)
    path = save_model(start, tmp_path / "start.pt")
    images, masks = _disk_data()
    config = TrainConfig(preset="tiny", init=str(path), steps=1, lr=1e-9, batch_size=2,
                         patch=32, val_fraction=0.0, device="cpu", mixed_precision=False)
    events, result = [], None
    gen = train(images, masks, config)
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    notes = [e.text for e in events if isinstance(e, Message)]
    assert any("starting from 'start'" in n for n in notes), notes
    # One step at a vanishing learning rate: the encoder is still the start's.
    key = "encoders.0.conv.0.weight"
    assert torch.allclose(result.last.state_dict[key], start.state_dict[key], atol=1e-5)
    assert result.last.provenance["parent"] == "start"


def test_random_start_and_bad_start_file(tmp_path):
    images, masks = _disk_data()
    base = dict(preset="tiny", steps=1, batch_size=2, patch=32, val_fraction=0.0, device="cpu")
    notes = [e.text for e in drain_events(train(images, masks, TrainConfig(init="random",
                                                                           **base)))]
    assert "starting from random weights" in notes
    with pytest.raises(InputError, match="not a file"):
        drain(train(images, masks, TrainConfig(init=str(tmp_path / "nope.pt"), **base)))


def drain_events(gen):
    out = []
    try:
        while True:
            event = next(gen)
            if isinstance(event, Message):
                out.append(event)
    except StopIteration:
        return out


@pytest.mark.skipif(not backbone_path().is_file(), reason="the bundled EM backbone is not "
                    "in this checkout (bench/train_backbone.py makes it)")
def test_default_start_is_the_bundled_backbone_unless_the_size_differs():
    images, masks = _disk_data()
    base = dict(steps=1, batch_size=1, patch=32, val_fraction=0.0, device="cpu")
    notes = [e.text for e in drain_events(train(images, masks, TrainConfig(**base)))]
    assert any(n.startswith("starting from the EM backbone") for n in notes), notes
    backbone = load_backbone()
    assert backbone.config.n_classes == 5 and "mitochondrion" in backbone.class_names
    assert "licence" in backbone.provenance and "non-commercial" in backbone.provenance[
        "licence"]
    notes = [e.text for e in drain_events(train(images, masks, TrainConfig(preset="tiny",
                                                                           **base)))]
    assert any("starting from random weights: size tiny" in n for n in notes), notes
