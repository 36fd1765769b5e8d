"""One rule for every output: never an input, never a FIFO/device, and ``--overwrite``
replaces only what cryoseg itself wrote (model files, our ONNX, our packages, our label
image inside a labels zarr group). SIGTERM cleans up like Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_cryoseg.cli import main
from napari_cryoseg.core.atomic import atomic_write
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import UNetConfig
from napari_cryoseg.model.unet import UNet

RDF = """type: model
format_version: 0.5.4
name: tiny
weights:
  pytorch_state_dict:
    source: weights.pt
    architecture: {callable: CryoSegUNet, source: unet.py, kwargs: {depth: 1, base_channels: 4}}
    pytorch_version: "2.0"
"""


def _run(capsys, args):
    code = main(args)
    return code, capsys.readouterr().err.strip()


def _refused(code, err):
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


@pytest.fixture
def model_path(tmp_path, tiny_model):
    path = tmp_path / "m.pt"
    save_model(tiny_model, path)
    return path


@pytest.fixture
def pairs(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("images", "masks"):
        (tmp_path / name).mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", rng.random((64, 64)).astype(np.float32))
    tifffile.imwrite(tmp_path / "masks" / "a.tif", (rng.random((64, 64)) > 0.5).astype(np.uint8))
    return tmp_path / "images", tmp_path / "masks"


def test_finetune_never_writes_into_the_unlabelled_folder(tmp_path, capsys, model_path, pairs):
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    image = unlabelled / "u.tif"
    tifffile.imwrite(image, np.ones((64, 64), np.uint8))
    before = image.read_bytes()
    code, err = _run(capsys, ["finetune", "--model", str(model_path), "--images",
                              str(pairs[0]), "--masks", str(pairs[1]), "--unlabelled",
                              str(unlabelled), "--out", str(image), "--overwrite",
                              "--steps", "1"])
    _refused(code, err)
    assert image.read_bytes() == before
    new = unlabelled / "model.pt"  # not there yet: still inside a folder the run reads
    code, err = _run(capsys, ["finetune", "--model", str(model_path), "--images",
                              str(pairs[0]), "--masks", str(pairs[1]), "--unlabelled",
                              str(unlabelled), "--out", str(new), "--steps", "1"])
    _refused(code, err)
    assert "--unlabelled" in err and not new.exists()


def test_export_onnx_never_replaces_its_own_input_model(tmp_path, capsys, model_path):
    before = model_path.read_bytes()
    code, err = _run(capsys, ["export", str(model_path), "--onnx", str(model_path),
                              "--overwrite"])
    _refused(code, err)
    assert model_path.read_bytes() == before


def test_export_onnx_overwrite_replaces_only_our_onnx(tmp_path, capsys, model_path):
    foreign = tmp_path / "other.onnx"
    foreign.write_bytes(b"someone else's graph")
    code, err = _run(capsys, ["export", str(model_path), "--onnx", str(foreign),
                              "--overwrite"])
    _refused(code, err)
    assert "not a ONNX file written by napari-cryoseg" in err or "ONNX" in err
    assert foreign.read_bytes() == b"someone else's graph"


def _package(folder: Path) -> Path:
    folder.mkdir()
    (folder / "rdf.yaml").write_text(RDF)
    torch.save(UNet(UNetConfig(depth=1, base_channels=4)).state_dict(), folder / "weights.pt")
    return folder


def test_import_bioimageio_never_writes_into_or_over_its_package(tmp_path, capsys):
    package = _package(tmp_path / "pkg")
    weights = (package / "weights.pt").read_bytes()
    code, err = _run(capsys, ["import-bioimageio", str(package), "--out",
                              str(package / "weights.pt"), "--overwrite"])
    _refused(code, err)
    assert (package / "weights.pt").read_bytes() == weights
    archive = tmp_path / "p.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("rdf.yaml", "weights.pt"):
            zf.write(package / name, name)
    packed = archive.read_bytes()
    code, err = _run(capsys, ["import-bioimageio", str(archive), "--out", str(archive),
                              "--overwrite"])
    _refused(code, err)
    assert archive.read_bytes() == packed


def test_model_outputs_replace_only_model_files(tmp_path, capsys):
    package = _package(tmp_path / "pkg")
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes, not a model")
    code, err = _run(capsys, ["import-bioimageio", str(package), "--out", str(notes),
                              "--overwrite"])
    _refused(code, err)
    assert notes.read_text() == "my notes, not a model"
    good = tmp_path / "good.pt"
    assert main(["import-bioimageio", str(package), "--out", str(good)]) == 0
    assert main(["import-bioimageio", str(package), "--out", str(good), "--overwrite"]) == 0


@pytest.mark.parametrize("name", ["rdf.yaml", "bioimageio.yaml"])
def test_export_bioimageio_never_replaces_a_foreign_description(tmp_path, capsys,
                                                                model_path, name):
    pytest.importorskip("bioimageio.spec")
    folder = tmp_path / "pkgdir"
    folder.mkdir()
    own = folder / name
    own.write_text("type: model\nname: my own model\n")
    code, err = _run(capsys, ["export", str(model_path), "--bioimageio", str(folder),
                              "--overwrite", "--skip-test"])
    _refused(code, err)
    assert own.read_text() == "type: model\nname: my own model\n"
    assert sorted(p.name for p in folder.iterdir()) == [name]


def test_outputs_never_replace_a_fifo_or_device(tmp_path, capsys, model_path):
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    code, err = _run(capsys, ["export", str(model_path), "--onnx", str(fifo), "--overwrite"])
    _refused(code, err)
    assert "FIFO" in err and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    package = _package(tmp_path / "pkg")
    code, err = _run(capsys, ["import-bioimageio", str(package), "--out", str(fifo),
                              "--overwrite"])
    _refused(code, err)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(InputError, match="FIFO"):
        atomic_write(fifo, lambda f: f.write(b"x"), overwrite=True)
    null = tmp_path / "null"
    try:  # a /dev/null twin (needs root); without root only the FIFO case runs
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        return
    with pytest.raises(InputError, match="device"):
        atomic_write(null, lambda f: f.write(b"x"), overwrite=True)
    assert stat.S_ISCHR(os.lstat(null).st_mode)


def test_segment_overwrite_keeps_a_label_image_the_user_added(tmp_path, capsys, model_path):
    pytest.importorskip("ome_zarr")
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((64, 64)).astype(np.float32))
    out = tmp_path / "out"
    args = ["segment", str(image), "--model", str(model_path), "--out", str(out),
            "--output-format", "zarr", "--device", "cpu"]
    assert main(args) == 0
    group = out / "img_labels.zarr"
    mine = group / "mine"
    mine.mkdir()
    (mine / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    meta = json.loads((group / "zarr.json").read_text())
    meta["attributes"]["ome"]["labels"].append("mine")
    (group / "zarr.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 0, capsys.readouterr().err
    assert (mine / "zarr.json").is_file(), "the user's label image was deleted"
    labels = json.loads((group / "zarr.json").read_text())["attributes"]["ome"]["labels"]
    assert set(labels) == {"img", "mine"}
    assert (group / "img" / "zarr.json").is_file()


def test_sigterm_during_zarr_segmentation_removes_the_partial_store(tmp_path, tiny_model):
    pytest.importorskip("ome_zarr")
    model = ModelFile.new(UNetConfig(depth=1, base_channels=4), seed=0)
    model_path = tmp_path / "m.pt"
    save_model(model, model_path)
    image = tmp_path / "big.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((12, 1024, 1024)).astype(
        np.float32))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_cryoseg.cli", "segment", str(image), "--model",
         str(model_path), "--out", str(out), "--output-format", "zarr", "--device", "cpu",
         "--tile", "128"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None and not any(out.glob(".*tmp*")):
            time.sleep(0.05)  # wait for the hidden store to exist (a state, not a time)
        if proc.poll() is not None:
            pytest.fail(f"segmentation ended before it could be stopped: {proc.stderr.read()}")
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=300)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err
    assert list(out.iterdir()) == [], [p.name for p in out.iterdir()]
