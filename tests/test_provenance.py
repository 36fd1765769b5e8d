"""The one reader of model provenance, on what training / fine-tuning really write."""

from __future__ import annotations

import numpy as np

from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.training.finetune import FinetuneConfig, finetune
from napari_cryoseg.model.checkpoint import ModelFile, load_model, save_model
from napari_cryoseg.model.config import preset
from napari_cryoseg.model.provenance import Provenance


def test_finetuned_model_file_round_trip(tmp_path):
    parent = save_model(ModelFile.new(preset("tiny"), seed=0), tmp_path / "parent.pt")
    model = load_model(parent)
    rng = np.random.default_rng(0)
    image = rng.random((64, 64)).astype(np.float32)
    mask = (image > 0.5).astype(np.uint8)
    result = drain(finetune(model, [image], [mask], [np.ones_like(mask, bool)],
                            FinetuneConfig(steps=2, device="cpu", patch=32)))
    path = save_model(result.model, tmp_path / "child.pt")
    prov = Provenance.of(load_model(path))
    assert prov.kind == "finetune" and prov.parent == "parent" and prov.steps == 2
    assert prov.dice == result.after["dice"]
    assert prov.dice_before == result.before["dice"]
    line = prov.describe()
    assert line.startswith("fine-tuned from parent; 2 steps; held-out Dice ")
    assert "{" not in line


def test_train_import_and_old_shapes():
    train = Provenance.from_dict({"kind": "train", "parent": None, "steps": 5104,
                                  "metrics": {"validation": {"dice": 0.98367}},
                                  "created": "2026-11-22T10:50:49+00:00"})
    assert (train.kind, train.steps, train.dice, train.dice_source) == (
        "train", 5104, 0.98367, "validation")
    assert train.describe() == "trained; 5104 steps; validation Dice 0.984; created 2026-11-22"
    imported = Provenance.from_dict({"parent": None, "steps": 0, "metrics": {},
                                     "imported_from": "unet.pth"})
    assert (imported.kind, imported.parent, imported.dice) == ("imported", "unet.pth", None)
    assert imported.describe() == "imported from unet.pth"
    bioimageio = Provenance.from_dict({"kind": "import-bioimageio", "parent": "/p/pkg.zip"})
    assert (bioimageio.kind, bioimageio.parent) == ("imported", "/p/pkg.zip")
    assert Provenance.from_dict({}).describe() == "no training history recorded"
