"""``cryoseg segment`` / ``cryoseg info`` end to end on real files, in-process and as a script."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
import torch

from napari_cryoseg.cli import main
from napari_cryoseg.cli._common import ProgressBar
from napari_cryoseg.core.synthetic import make_sample
from napari_cryoseg.engine.events import Progress, TrainStep, Validation
from napari_cryoseg.io import read_labels_class_names, read_labels_tiff
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import preset


@pytest.fixture
def model_path(tmp_path) -> Path:
    model = ModelFile.new(preset("tiny"), class_names=["background", "membrane"], seed=0)
    return save_model(model, tmp_path / "tiny.pt")


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder with a calibrated ImageJ TIFF (uint16) and an MRC (float32)."""
    folder = tmp_path / "images"
    folder.mkdir()
    image, _ = make_sample(1)
    tifffile.imwrite(folder / "cells.tif", image[:200, :260], imagej=True,
                     resolution=(1 / 3.5, 1 / 3.5), metadata={"unit": "nm"})
    with mrcfile.new(folder / "vol.mrc") as mrc:
        mrc.set_data(image[:96, :120].astype(np.float32))
        mrc.voxel_size = 12.0  # Å -> 1.2 nm
    return folder


def _segment(args, capsys):
    code = main(["segment", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_segment_tiff_and_mrc_folder(tmp_path, images, model_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = _segment(
        [images, "--model", model_path, "--out", out, "--tile", 128, "--device", "cpu"], capsys)
    assert code == 0, stderr
    labels, px = read_labels_tiff(out / "cells_labels.tif")
    assert labels.shape == (200, 260)
    assert labels.dtype == np.uint8
    assert px == pytest.approx(3.5, rel=1e-3)
    assert set(np.unique(labels)) <= {0, 1}
    assert read_labels_class_names(out / "cells_labels.tif") == ["background", "membrane"]
    labels, px = read_labels_tiff(out / "vol_labels.tif")
    assert labels.shape == (96, 120)
    assert px == pytest.approx(1.2, rel=1e-3)
    lines = stdout.strip().splitlines()
    assert any(line.startswith(str(images / "cells.tif")) and "200x260" in line
               and "px foreground" in line for line in lines)
    assert lines[-1].startswith("segmented 2 of 2")
    assert not (out / "cells_probabilities.tif").exists()


def test_segment_equals_engine_result(tmp_path, images, model_path, capsys):
    from napari_cryoseg.core.tiling import TilingConfig
    from napari_cryoseg.engine.events import drain
    from napari_cryoseg.engine.inference.predict import segment
    from napari_cryoseg.model.checkpoint import load_model

    out = tmp_path / "out"
    code, _, stderr = _segment([images / "cells.tif", "--model", model_path, "--out", out,
                                "--tile", 128, "--overlap", 0.25, "--threshold", 0.4], capsys)
    assert code == 0, stderr
    image = tifffile.imread(images / "cells.tif")
    expected = drain(segment(image, load_model(model_path), TilingConfig(128, 0.25),
                             threshold=0.4, device="cpu"))
    labels, _ = read_labels_tiff(out / "cells_labels.tif")
    np.testing.assert_array_equal(labels, expected.labels)


def test_probabilities_output(tmp_path, images, model_path, capsys):
    out = tmp_path / "out"
    code, _, stderr = _segment([images / "cells.tif", "--model", model_path, "--out", out,
                                "--tile", 128, "--probabilities"], capsys)
    assert code == 0, stderr
    probs = tifffile.imread(out / "cells_probabilities.tif")
    assert probs.dtype == np.float32
    assert probs.squeeze().shape == (200, 260)  # K = 1 for a binary model
    assert probs.min() >= 0.0
    assert probs.max() <= 1.0
    labels, _ = read_labels_tiff(out / "cells_labels.tif")
    np.testing.assert_array_equal(labels, (probs.squeeze() > 0.5).astype(np.uint8))


def test_stack_input_keeps_shape(tmp_path, model_path, capsys):
    stack = np.random.default_rng(0).normal(100, 10, (3, 40, 56)).astype(np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "out"
    code, stdout, stderr = _segment([tmp_path / "stack.tif", "--model", model_path,
                                     "--out", out, "--probabilities"], capsys)
    assert code == 0, stderr
    labels, _ = read_labels_tiff(out / "stack_labels.tif")
    assert labels.shape == (3, 40, 56)
    assert tifffile.imread(out / "stack_probabilities.tif").squeeze().shape == (3, 40, 56)
    assert "3x40x56" in stdout


def test_refuses_to_overwrite_then_overwrites(tmp_path, images, model_path, capsys):
    out = tmp_path / "out"
    args = [images / "cells.tif", "--model", model_path, "--out", out, "--tile", 128]
    assert _segment(args, capsys)[0] == 0
    target = out / "cells_labels.tif"
    before = target.read_bytes()
    mtime = target.stat().st_mtime_ns
    code, stdout, stderr = _segment(args, capsys)
    assert code == 2
    assert stderr.count("\n") == 1
    assert "already exists" in stderr
    assert "--overwrite" in stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    assert target.read_bytes() == before
    assert target.stat().st_mtime_ns == mtime
    time.sleep(0.01)
    code, _, stderr = _segment([*args, "--overwrite"], capsys)
    assert code == 0, stderr
    assert target.stat().st_mtime_ns != mtime


def test_bad_file_among_good_ones(tmp_path, images, model_path, capsys):
    (images / "broken.tif").write_bytes(b"II*\x00 this is not really a tiff")
    out = tmp_path / "out"
    code, stdout, stderr = _segment([images, "--model", model_path, "--out", out,
                                     "--tile", 128], capsys)
    assert code == 2
    assert (out / "cells_labels.tif").exists()
    assert (out / "vol_labels.tif").exists()
    assert not (out / "broken_labels.tif").exists()
    skipped = [line for line in stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 1
    assert "broken.tif" in skipped[0]
    assert "segmented 2 of 3" in stdout
    assert "Traceback" not in stderr


def test_missing_input_path(tmp_path, model_path, capsys):
    code, _, stderr = _segment([tmp_path / "nope.tif", "--model", model_path,
                                "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert "does not exist" in stderr
    assert stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_out_parent_must_exist(tmp_path, images, model_path, capsys):
    code, _, stderr = _segment([images, "--model", model_path,
                                "--out", tmp_path / "a" / "b"], capsys)
    assert code == 2
    assert "parent" in stderr


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available here")
def test_unavailable_device(tmp_path, images, model_path, capsys):
    code, _, stderr = _segment([images, "--model", model_path, "--out", tmp_path / "out",
                                "--device", "mps"], capsys)
    assert code == 2
    assert "mps" in stderr
    assert "not available" in stderr
    assert stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()  # nothing created before the checks pass


def test_bad_model_file(tmp_path, images, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(2)}, bad)
    code, _, stderr = _segment([images, "--model", bad, "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert "import-weights" in stderr


def test_info_shows_classes_and_parameters(model_path, capsys):
    from napari_cryoseg.model.checkpoint import load_model

    assert main(["info", str(model_path)]) == 0
    out = capsys.readouterr().out
    n = load_model(model_path).n_parameters
    assert "background" in out
    assert "membrane" in out
    assert f"{n:,}" in out
    assert "devices: " in out
    assert "cpu" in out


def test_info_json(model_path, capsys):
    import json

    assert main(["info", str(model_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["classes"] == {"0": "background", "1": "membrane"}
    assert data["architecture"]["base_channels"] == 8
    assert "cpu" in data["devices"]


class _FakeStream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.text = ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_progress_bar_non_tty_writes_about_every_5_percent():
    stream = _FakeStream(tty=False)
    bar = ProgressBar("img", stream=stream, unit="tiles")
    for done in range(0, 201):
        bar(Progress("segment", done, 200, elapsed_s=done * 0.1))
    lines = stream.text.splitlines()
    assert 20 <= len(lines) <= 22
    assert "\r" not in stream.text
    assert lines[-1].startswith("img: 200/200 tiles (100%)")
    assert "tiles/s" in lines[-1]
    assert "ETA" in lines[-1]


def test_progress_bar_tty_redraws_one_line_and_shows_loss():
    """On a terminal a tqdm bar redraws one line in place; other lines go above it."""
    stream = _FakeStream(tty=True)
    bar = ProgressBar("train", stream=stream, unit="steps")
    for step in range(1, 11):
        bar(TrainStep(step, 10, loss=1.0 / step, lr=1e-3, elapsed_s=step * 0.5))
        if step == 5:
            bar(Validation(step=5, dice=0.75, loss=0.3, metrics={}, is_best=True))
    lines = stream.text.split("\n")
    assert stream.text.endswith("\n")
    validation = [line for line in lines if "validation dice 0.7500" in line]
    assert len(validation) == 1 and validation[0].rstrip().endswith("(best)")
    final = lines[-2].split("\r")[-1]  # what the terminal shows last on the bar's line
    assert "10/10" in final and "loss 0.1000" in final and "train" in final
    assert "\r" in stream.text  # redrawn in place, not one line per step
    assert stream.text.count("\n") == 2  # the validation line and the finished bar


def _cryoseg_script() -> str:
    found = shutil.which("cryoseg")
    if found:
        return found
    candidate = Path(sys.executable).parent / "cryoseg"
    if not candidate.exists():
        pytest.skip("the cryoseg script is not installed")
    return str(candidate)


def test_installed_script_reports_errors_without_traceback(tmp_path, model_path):
    result = subprocess.run(
        [_cryoseg_script(), "segment", str(tmp_path / "missing.tif"), "--model",
         str(model_path), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("cryoseg segment: error:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_isbi_unlabeled_folder(tmp_path, shared_data, capsys):
    folder = shared_data / "isbi2012_em_membranes" / "unlabeled"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    model = save_model(ModelFile.new(preset("tiny"), seed=0), tmp_path / "tiny.pt")
    out = tmp_path / "isbi"
    code, stdout, stderr = _segment([folder, "--model", model, "--out", out,
                                     "--tile", 256, "--device", "cpu"], capsys)
    assert code == 0, stderr
    written = sorted(out.glob("*_labels.tif"))
    assert len(written) == 30
    for path in written:
        labels, _ = read_labels_tiff(path)
        assert labels.shape == (512, 512)
    assert "segmented 30 of 30" in stdout


def test_info_summarises_the_loss_history(tmp_path, tiny_model, capsys):
    import json

    from napari_cryoseg.model.checkpoint import save_model

    curve = [[step, 1.0 / step] for step in range(1, 301)]
    curve[150][1] = 0.0001  # the lowest loss, mid-run
    tiny_model.provenance = {"history": curve, "finetune": {"history": curve[:10]}}
    path = save_model(tiny_model, tmp_path / "m.pt")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("history: steps 1-300 (300 points), loss first 1, last 0.003333, min 0.0001 "
            "at step 151") in out
    assert "steps 1-10 (10 points)" in out  # nested curves too
    assert "[300, " not in out
    assert main(["info", str(path), "--full"]) == 0
    assert "[300, 0.0033333" in capsys.readouterr().out
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["history"][-1][0] == 300
