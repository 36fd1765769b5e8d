"""Fault injection: cancel at random moments, SIGKILL during saves.

Already covered elsewhere (referenced in docs/reliability.md, not repeated here):

- simulated CUDA out-of-memory:
  ``tests/engine/test_predict.py::test_oom_halves_the_batch_and_completes``
- an exception/full disk during a write keeps the old file:
  ``tests/io/test_labels.py::test_atomic_write_failure_keeps_old_file``,
  ``tests/io/test_labels.py::test_atomic_write_disk_full_becomes_input_error``,
  ``tests/model/test_checkpoint.py::test_failed_save_leaves_previous_file_intact``
- autosaved corrections survive a restart (new viewer):
  ``tests/test_corrections_store.py::test_autosave_then_restore_in_new_viewer`` and
  ``tests/widgets/test_finetune_panel.py::test_autosave_only_corrected_and_restore``
"""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.engine.training.finetune import FinetuneConfig, finetune
from napari_cryoseg.io import list_images, read_labels_tiff, write_labels_tiff
from napari_cryoseg.model.checkpoint import ModelFile, load_model, save_model
from napari_cryoseg.model.config import preset

SEED = 20260
SEGMENT_TRIALS = 12
FINETUNE_TRIALS = 8
KILL_TRIALS = 6  # per target kind (model file, labels file)


def _weights(model: ModelFile) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict.items()}


def _identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def model_on_disk(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "parent.pt"
    return save_model(ModelFile.new(preset("tiny"), class_names=["background", "cell"], seed=3),
                      path)


def _close_after(generator, n_events: int) -> int:
    """Advance ``generator`` by up to ``n_events`` events, then close it (= Cancel)."""
    seen = 0
    try:
        while seen < n_events:
            next(generator)
            seen += 1
    except StopIteration:
        pass
    generator.close()
    return seen


def test_cancel_segmentation_at_random_points(model_on_disk):
    rng = np.random.default_rng(SEED)
    file_bytes = model_on_disk.read_bytes()
    model = load_model(model_on_disk)
    weights = _weights(model)
    image = (rng.random((96, 130)) * 1000).astype(np.uint16)
    image_copy = image.copy()
    corrections = rng.integers(0, 2, size=image.shape, dtype=np.uint8)  # a labels layer
    corrections_copy = corrections.copy()
    tiling = TilingConfig(tile=32, overlap=0.25, batch_size=2)
    stops = []
    for _ in range(SEGMENT_TRIALS):
        stop_after = int(rng.integers(0, 12))
        stops.append(_close_after(segment(image, model, tiling, device="cpu"), stop_after))
        assert _identical(_weights(model), weights)
        np.testing.assert_array_equal(image, image_copy)
        np.testing.assert_array_equal(corrections, corrections_copy)
    assert model_on_disk.read_bytes() == file_bytes
    assert _identical(_weights(load_model(model_on_disk)), weights)
    assert len(set(stops)) > 3  # the cancels really landed at different points


def test_cancel_finetune_at_random_points(model_on_disk):
    rng = np.random.default_rng(SEED + 1)
    file_bytes = model_on_disk.read_bytes()
    model = load_model(model_on_disk)
    weights = _weights(model)
    provenance = repr(model.provenance)
    images = [(rng.random((64, 64)) * 255).astype(np.uint8) for _ in range(2)]
    masks = [(im > 128).astype(np.uint8) for im in images]  # the user's corrections
    masks_copy = [m.copy() for m in masks]
    config = FinetuneConfig(steps=6, patch=32, batch_size=2, val_every=2, device="cpu",
                            mixed_precision=False)
    stops = []
    for _ in range(FINETUNE_TRIALS):
        stop_after = int(rng.integers(0, 9))
        stops.append(_close_after(finetune(model, images, masks, None, config), stop_after))
        assert _identical(_weights(model), weights)
        assert repr(model.provenance) == provenance
        for mask, copy in zip(masks, masks_copy):
            np.testing.assert_array_equal(mask, copy)
    assert model_on_disk.read_bytes() == file_bytes
    assert len(set(stops)) > 2


# --------------------------------------------------------------------------- SIGKILL


def _writer(kind: str, target: Path, versions: list, report_fd: int) -> None:
    """Child process: overwrite ``target`` forever, alternating ``versions``.

    Writes one byte to ``report_fd`` when ready and one after each completed save.
    """
    torch.set_num_threads(1)
    os.write(report_fd, b"r")
    i = 0
    while True:
        if kind == "model":
            save_model(versions[i % 2], target, overwrite=True)
        else:
            write_labels_tiff(target, versions[i % 2], overwrite=True)
        os.write(report_fd, b"w")
        i += 1


def _kill_during_writes(kind: str, target: Path, versions: list,
                        rng: np.random.Generator) -> int:
    """Fork a writer, SIGKILL it at a random moment; return its completed saves."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_fd)
            _writer(kind, target, versions, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 60)  # never hang the suite
        assert ready and os.read(read_fd, 1) == b"r", "writer process did not start"
        time.sleep(float(rng.uniform(0.05, 0.6)))
    finally:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        completed = pipe.read().count(b"w")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return completed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
@pytest.mark.parametrize("kind", ["model", "labels"])
def test_sigkill_during_save_never_leaves_a_broken_file(kind, tmp_path):
    rng = np.random.default_rng(SEED + (kind == "labels"))
    target = tmp_path / ("model.pt" if kind == "model" else "cells_labels.tif")
    # Made here, before the fork: the child only serialises and writes.
    if kind == "model":
        # A model of a few MB so that a write takes long enough to be interrupted.
        versions = [ModelFile.new(preset("small"), seed=s) for s in (1, 2)]
        save_model(versions[0], target)
        valid = [_weights(v) for v in versions]
    else:
        gen = np.random.default_rng(0)
        versions = [gen.integers(0, 4, size=(1024, 1024), dtype=np.uint8) for _ in range(2)]
        write_labels_tiff(target, versions[0])
    stray_trials = completed = 0
    for _ in range(KILL_TRIALS):
        completed += _kill_during_writes(kind, target, versions, rng)
        if kind == "model":
            loaded = _weights(load_model(target))  # old or new, never broken
            assert any(_identical(loaded, v) for v in valid)
        else:
            labels, _ = read_labels_tiff(target)
            assert any(np.array_equal(labels, v) for v in versions)
        strays = [n for n in os.listdir(tmp_path) if n != target.name]
        # Only hidden temp files of the interrupted write may be left over.
        assert all(n.startswith(".") and n.endswith(".tmp") for n in strays), strays
        stray_trials += bool(strays)
    assert completed > 0  # the writers really were overwriting the file when killed
    if kind == "labels":
        (tmp_path / "other.tif").write_bytes(target.read_bytes())
        assert [p.name for p in list_images(tmp_path)] == [target.name, "other.tif"]
    print(f"{kind}: {KILL_TRIALS} kills after {completed} completed saves, "
          f"{stray_trials} trial(s) left a hidden .tmp file")
