"""Crafted or damaged object classifiers and state_dicts fail fast with one line.

An object-classifier ``.npz`` holds a random forest as plain index arrays. A tree whose
child points back at itself made ``cryoseg measure`` loop forever; an index beyond the
arrays crashed it with a traceback; NaN probabilities silently gave the first class.
Each must now be refused on load, in one line, before anything is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cryoseg.cli import main
from napari_cryoseg.core import classify
from napari_cryoseg.core.classify import ObjectClassifier
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.io import write_labels_tiff
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset


def _tree() -> dict[str, np.ndarray]:
    """A valid 5-node tree: area <= 50 -> (circularity <= 0.5 -> a, b), else b."""
    return {
        "left": np.array([1, 3, -1, -1, -1], np.int32),
        "right": np.array([2, 4, -1, -1, -1], np.int32),
        "feature": np.array([0, 1, 0, 0, 0], np.int32),
        "threshold": np.array([50.0, 0.5, -2.0, -2.0, -2.0]),
        "value": np.array([[0.5, 0.5], [0.7, 0.3], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]),
    }


def _write(path: Path, header: dict | bytes | None = None, trees: list | None = None) -> Path:
    """An .npz laid out as ObjectClassifier.save writes it, with any content."""
    trees = [_tree()] if trees is None else trees
    if header is None:
        header = {"format": classify.FORMAT_NAME, "format_version": 1,
                  "classes": ["a", "b"], "feature_names": ["area_px", "circularity"],
                  "n_trees": len(trees), "info": {}}
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    arrays = {"header": np.frombuffer(raw, dtype=np.uint8)}
    for i, tree in enumerate(trees):
        arrays.update({f"tree{i}_{key}": value for key, value in tree.items()})
    np.savez_compressed(path, **arrays)
    return path


def _edit(**changes) -> list[dict[str, np.ndarray]]:
    tree = _tree()
    for key, (index, value) in changes.items():
        tree[key] = tree[key].copy()
        tree[key][index] = value
    return [tree]


def _chain(depth: int) -> list[dict[str, np.ndarray]]:
    """A degenerate tree: a chain of ``depth`` inner nodes (node i -> 2i+1, 2i+2)."""
    n = 2 * depth + 1
    left, right = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    for i in range(depth):
        node = 2 * i
        left[node], right[node] = node + 1, node + 2
    return [{"left": left, "right": right, "feature": np.zeros(n, np.int32),
             "threshold": np.zeros(n), "value": np.full((n, 2), 0.5)}]


BAD = [
    ("self-loop", dict(trees=_edit(left=(0, 0), right=(0, 0))), "has a cycle"),
    ("cycle-back-to-root", dict(trees=_edit(left=(1, 0))), "has a cycle"),
    ("shared-child", dict(trees=_edit(left=(1, 2))), "two parents"),
    ("child-out-of-range", dict(trees=_edit(left=(0, 1000))), "beyond its 5 nodes"),
    ("negative-child", dict(trees=_edit(right=(0, -7))), "only one child"),
    ("one-child", dict(trees=_edit(right=(1, -1))), "only one child"),
    ("feature-out-of-range", dict(trees=_edit(feature=(0, 99))), "beyond the 2 stored"),
    ("nan-threshold", dict(trees=_edit(threshold=(1, np.nan))), "NaN or infinite thresholds"),
    ("nan-probability", dict(trees=_edit(value=(3, np.nan))), "NaN or infinite class"),
    ("float-indices", dict(trees=[{**_tree(), "left": _tree()["left"].astype(float)}]),
     "dtype float64"),
    ("value-shape", dict(trees=[{**_tree(), "value": np.zeros((5, 3))}]), "expected (5, 2)"),
    ("short-arrays", dict(trees=[{**_tree(), "right": np.array([2, 4], np.int32)}]),
     "different or wrong shapes"),
    ("too-deep", dict(trees=_chain(1200)), "deeper than 1000 levels"),
    ("header-not-json", dict(header=b"\xff\xfe not json"), "unreadable header"),
    ("header-a-list", dict(header=b"[1, 2]"), "not a napari-cryoseg object classifier"),
    ("classes-a-number", dict(header={"format": classify.FORMAT_NAME, "classes": 5,
                                      "feature_names": ["area_px"], "n_trees": 1}),
     "classes must be a non-empty list of text"),
    ("n-trees-huge", dict(header={"format": classify.FORMAT_NAME, "classes": ["a", "b"],
                                  "feature_names": ["area_px", "circularity"],
                                  "n_trees": 10**9}), "n_trees is 1000000000"),
    ("n-trees-missing-arrays", dict(header={"format": classify.FORMAT_NAME,
                                            "classes": ["a", "b"],
                                            "feature_names": ["area_px", "circularity"],
                                            "n_trees": 3}), "is incomplete: no array"),
    ("unknown-feature", dict(header={"format": classify.FORMAT_NAME, "classes": ["a", "b"],
                                     "feature_names": ["area_px", "secret_sauce"],
                                     "n_trees": 1}), "secret_sauce are not numeric"),
]


@pytest.fixture
def labels_file(tmp_path) -> Path:
    labels = np.zeros((64, 64), np.uint8)
    labels[5:15, 5:15] = 1
    labels[30:60, 30:40] = 1
    return write_labels_tiff(tmp_path / "cells_labels.tif", labels,
                             class_names=["background", "cell"])


def test_valid_classifier_predicts(tmp_path, labels_file, capsys):
    """The crafted-file helper writes a classifier that works (so the cases below are
    refused for what they change, not for the layout)."""
    path = _write(tmp_path / "ok.npz")
    clf = ObjectClassifier.load(path)
    assert clf.predict(np.array([[10.0, 0.9], [10.0, 0.1], [100.0, 0.1]])) == ["b", "a", "b"]
    assert main(["measure", "--labels", str(labels_file), "--classifier", str(path)]) == 0
    capsys.readouterr()
    assert "predicted class" in (tmp_path / "cells_objects.csv").read_text().splitlines()[0]


@pytest.mark.parametrize(("kwargs", "phrase"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_crafted_classifier_is_refused_in_one_line(tmp_path, labels_file, capsys, kwargs,
                                                   phrase):
    path = _write(tmp_path / "crafted.npz", **kwargs)
    code = main(["measure", "--labels", str(labels_file), "--classifier", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert phrase in err, err
    assert not (tmp_path / "cells_objects.csv").exists()


def test_self_referencing_tree_does_not_hang_measure(tmp_path, labels_file):
    """Run as a separate process with a deadline: this case used to loop forever."""
    path = _write(tmp_path / "loop.npz", trees=_edit(left=(0, 0), right=(0, 0)))
    result = subprocess.run(
        [sys.executable, "-m", "napari_cryoseg.cli", "measure", "--labels", str(labels_file),
         "--classifier", str(path)], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "has a cycle" in result.stderr


def test_classifier_that_unpacks_to_too_much_is_refused(tmp_path, monkeypatch):
    """The archive's unpacked size is read from its directory, before anything is unpacked
    (the limit is lowered here so that the test file stays small)."""
    monkeypatch.setattr(classify, "MAX_FILE_BYTES", 2**20)
    tree = {**_tree(), "value": np.zeros((5, 2))}
    trees = [tree, {**tree, "threshold": np.zeros(200_000)}]  # 1.6 MB of zeros
    path = _write(tmp_path / "big.npz", trees=trees)
    assert path.stat().st_size < 100_000
    with pytest.raises(InputError, match="unpacks to 2 MiB"):
        ObjectClassifier.load(path)


# --------------------------------------------------------------------------- state_dicts


def _bigmb_state_dict(model: ModelFile) -> dict[str, torch.Tensor]:
    """Our tiny network's weights under the public U_Net's key names."""
    from napari_cryoseg.model.import_weights import _invert

    depth = model.config.depth
    return {_invert(k, depth): v.clone() for k, v in model.state_dict.items()
            if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_import_weights_refuses_nan_weights(tmp_path, capsys, value):
    model = ModelFile.new(preset("tiny"), seed=0)
    state = _bigmb_state_dict(model)
    torch.save(state, tmp_path / "ok.pth")
    assert main(["import-weights", str(tmp_path / "ok.pth"), "--out",
                 str(tmp_path / "ok.pt")]) == 0
    state["Up_conv2.conv.0.weight"][0, 0, 0, 0] = value
    torch.save(state, tmp_path / "bad.pth")
    capsys.readouterr()
    assert main(["import-weights", str(tmp_path / "bad.pth"), "--out",
                 str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds NaN or infinite values" in err
    assert not (tmp_path / "bad.pt").exists()


def test_import_weights_refuses_an_absurd_architecture_cheaply(tmp_path, capsys):
    """A 'state_dict' whose shapes imply a 7-level, 2048-channel network (small tensors
    with big shapes are impossible, so the file claims them with one wide tensor)."""
    state = _bigmb_state_dict(ModelFile.new(preset("tiny"), seed=0))
    state["Conv1.conv.0.weight"] = torch.zeros(2048, 1, 3, 3)
    torch.save(state, tmp_path / "wide.pth")
    assert main(["import-weights", str(tmp_path / "wide.pth"), "--out",
                 str(tmp_path / "w.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "base_channels=2048 must be between 1 and 1024" in err


@pytest.mark.parametrize("size", [-3.0, 0.0, float("nan"), float("inf")])
def test_measure_objects_refuses_a_pixel_size_that_is_not_positive(size):
    """A negative pixel size gave negative areas and diameters, silently."""
    from napari_cryoseg.core.measure import measure_objects

    labels = np.zeros((16, 16), np.uint8)
    labels[4:8, 4:8] = 1
    with pytest.raises(InputError, match="must be a positive number"):
        measure_objects(labels, pixel_size_nm=size)
    assert measure_objects(labels, pixel_size_nm=2.0)["area_nm2"][0] == 16 * 4.0


@pytest.mark.parametrize("kind", ["model", "classifier"])
def test_randomly_damaged_files_load_or_fail_in_one_line(tmp_path, kind):
    """150 seeded corruptions (byte changes, truncation) of a valid file: each one loads
    or is refused with a one-line CryoSegError; zlib, zip, unicode, pickle and torch
    errors never escape (the seed and the counts make failures reproducible)."""
    from napari_cryoseg.core.errors import CryoSegError
    from napari_cryoseg.model.checkpoint import load_model, save_model

    if kind == "model":
        good = save_model(ModelFile.new(preset("tiny"), seed=0), tmp_path / "good.pt")
        load = load_model
    else:
        good = _write(tmp_path / "good.npz")
        load = ObjectClassifier.load
    data = good.read_bytes()
    rng = np.random.default_rng(2024)
    messages: list[str] = []
    for trial in range(150):
        damaged = bytearray(data)
        for _ in range(int(rng.integers(1, 20))):
            damaged[int(rng.integers(len(damaged)))] = int(rng.integers(256))
        if rng.random() < 0.2:
            damaged = damaged[: int(rng.integers(len(damaged)))]
        path = tmp_path / f"damaged{trial}{good.suffix}"
        path.write_bytes(bytes(damaged))
        try:
            load(path)
        except CryoSegError as err:
            messages.append(str(err))
        path.unlink()
    assert len(messages) >= 50  # most corruptions are caught (a flipped weight byte may load)
    assert not [m for m in messages if "\n" in m or not m.strip()]
