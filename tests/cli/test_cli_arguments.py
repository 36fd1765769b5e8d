"""Every ``cryoseg`` sub-command with wrong, out-of-range and unusable arguments.

Each case runs in-process through :func:`napari_cryoseg.cli.main` and must end with exit
code 2, exactly one line on stderr that says what was wrong (the key phrase of the case),
nothing on stdout and no traceback. Values tried per flag: wrong type, negative, zero,
huge, NaN, inf; for paths: missing, folder, empty, wrong content, empty string.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cryoseg.cli import main
from napari_cryoseg.core.classify import ObjectClassifier
from napari_cryoseg.io import write_labels_tiff
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import preset


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """Files the cases refer to as ``{name}``; ``{tmp}`` is a fresh folder per case."""
    base = tmp_path_factory.mktemp("args")
    rng = np.random.default_rng(0)
    for folder in ("images", "masks", "emptydir", "outputs_only"):
        (base / folder).mkdir()
    for i in range(2):
        image = (rng.random((64, 64)) * 255).astype(np.uint8)
        tifffile.imwrite(base / "images" / f"a{i}.tif", image)
        tifffile.imwrite(base / "masks" / f"a{i}.tif", (image > 128).astype(np.uint8))
    save_model(ModelFile.new(preset("tiny"), class_names=["background", "cell"], seed=0),
               base / "model.pt")
    labels = np.zeros((64, 64), np.uint8)
    labels[10:20, 10:20] = 1
    write_labels_tiff(base / "labels.tif", labels, class_names=["background", "cell"])
    write_labels_tiff(base / "outputs_only" / "a0_labels.tif", labels,
                      class_names=["background", "cell"])
    tree = {"left": np.array([1, -1, -1], np.int32), "right": np.array([2, -1, -1], np.int32),
            "feature": np.array([0, 0, 0], np.int32), "threshold": np.array([50.0, -2, -2]),
            "value": np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])}
    ObjectClassifier(["small", "large"], ["area_px"], [tree]).save(base / "clf.npz")
    (base / "text.txt").write_text("not an image, not a model\n" * 20)
    (base / "text.pt").write_text("not a model\n" * 20)
    (base / "text.npz").write_text("not a classifier\n" * 20)
    (base / "empty.pt").write_bytes(b"")
    (base / "existing.json").write_text("{}")
    names = {"images": "images", "masks": "masks", "emptydir": "emptydir",
             "outputs_only": "outputs_only", "model": "model.pt", "labels": "labels.tif",
             "clf": "clf.npz", "textfile": "text.txt", "textpt": "text.pt",
             "textnpz": "text.npz", "emptypt": "empty.pt", "existingjson": "existing.json",
             "missing": "does-not-exist"}
    return {key: str(base / name) for key, name in names.items()}


def _seg(extra: str) -> str:
    return f"segment {{images}} --model {{model}} --out {{tmp}}/out --device cpu {extra}"


def _train(extra: str) -> str:
    return ("train --images {images} --masks {masks} --out {tmp}/m.pt --preset tiny "
            f"--steps 1 --patch 32 --batch-size 2 --device cpu {extra}")


def _ft(extra: str) -> str:
    return ("finetune --model {model} --images {images} --masks {masks} --out {tmp}/f.pt "
            f"--steps 1 --device cpu {extra}")


def _ev(extra: str) -> str:
    return f"evaluate --model {{model}} --images {{images}} --masks {{masks}} {extra}"


def _iw(extra: str) -> str:
    return f"import-weights {{model}} --out {{tmp}}/i.pt {extra}"


def _me(extra: str) -> str:
    return f"measure --labels {{labels}} --out {{tmp}}/o.csv {extra}"


CASES = [
    # ---- the command itself
    ("no-such-command", "nosuchcommand", "invalid choice"),
    ("unknown-global-flag", "--bogus", "unrecognized arguments"),
    ("unknown-flag", _seg("--seed -1"), "unrecognized arguments: --seed"),
    ("missing-required", "segment {images}", "required: --out"),
    # ---- segment
    ("seg-no-input", "segment --out {tmp}/out", "required: INPUT"),
    ("seg-tile-text", _seg("--tile abc"), "'abc' is not a whole number"),
    ("seg-tile-float", _seg("--tile 1e3"), "not a whole number"),
    ("seg-tile-0", _seg("--tile 0"), "tile edge in pixels from 16"),
    ("seg-tile-negative", _seg("--tile -512"), "tile edge in pixels from 16"),
    ("seg-tile-huge", _seg("--tile 1000000000"), "tile edge in pixels from 16"),
    ("seg-overlap-nan", _seg("--overlap nan"), "not a finite number"),
    ("seg-overlap-inf", _seg("--overlap inf"), "not a finite number"),
    ("seg-overlap-negative", _seg("--overlap -1"), "fraction in [0, 0.5]"),
    ("seg-overlap-text", _seg("--overlap half"), "'half' is not a number"),
    ("seg-batch-0", _seg("--batch-size 0"), "batch size from 1"),
    ("seg-batch-negative", _seg("--batch-size -4"), "batch size from 1"),
    ("seg-batch-huge", _seg("--batch-size 10000000000"), "batch size from 1"),
    ("seg-threshold-nan", _seg("--threshold nan"), "not a finite number"),
    ("seg-threshold-inf", _seg("--threshold inf"), "not a finite number"),
    ("seg-threshold-2", _seg("--threshold 2"), "threshold in (0, 1)"),
    ("seg-threshold-negative", _seg("--threshold -0.5"), "threshold in (0, 1)"),
    ("seg-device-bad-index", _seg("--device cuda:abc"), "unknown device"),
    ("seg-device-negative-index", _seg("--device cuda:-1"), "unknown device"),
    ("seg-device-empty", _seg("--device ''"), "unknown device"),
    ("seg-tta-3", _seg("--tta 3"), "invalid choice: 3"),
    ("seg-tta-text", _seg("--tta many"), "invalid int value"),
    ("seg-block-0", _seg("--block 0"), "block edge from 256"),
    ("seg-block-negative", _seg("--block -5"), "block edge from 256"),
    ("seg-block-text", _seg("--block big"), "not a whole number"),
    ("seg-scheduler-space", _seg("--scheduler 'foo bar'"), "--scheduler 'foo bar'"),
    ("seg-scheduler-local-0", _seg("--scheduler local:0"), "local:N (N >= 1"),
    ("seg-scheduler-local-text", _seg("--scheduler local:x"), "--scheduler 'local:x'"),
    ("seg-output-format", _seg("--output-format png"), "invalid choice: 'png'"),
    ("seg-model-empty-string", "segment {images} --model '' --out {tmp}/out", "path is empty"),
    ("seg-model-folder", "segment {images} --model {emptydir} --out {tmp}/out", "is a folder"),
    ("seg-model-missing", "segment {images} --model {missing} --out {tmp}/out",
     "does not exist"),
    ("seg-model-empty-file", "segment {images} --model {emptypt} --out {tmp}/out",
     "empty (0 bytes)"),
    ("seg-model-text", "segment {images} --model {textpt} --out {tmp}/out",
     "not a readable pytorch file"),
    ("seg-out-empty-string", "segment {images} --model {model} --out ''", "path is empty"),
    ("seg-out-is-file", "segment {images} --model {model} --out {textfile}", "is a file"),
    ("seg-input-empty-string", "segment '' --model {model} --out {tmp}/out",
     "path is empty"),
    ("seg-input-missing", "segment {missing} --model {model} --out {tmp}/out",
     "does not exist"),
    ("seg-input-empty-folder", "segment {emptydir} --model {model} --out {tmp}/out",
     "no images"),
    ("seg-input-only-outputs", "segment {outputs_only} --model {model} --out {tmp}/out",
     "only earlier cryoseg outputs"),
    ("seg-input-text", "segment {textfile} --model {model} --out {tmp}/out",
     "unsupported file type"),
    # ---- train
    ("train-seed-negative", _train("--seed -1"), "seed from 0 to 4294967295"),
    ("train-seed-huge", _train("--seed 4294967296"), "seed from 0 to 4294967295"),
    ("train-seed-float", _train("--seed 1.5"), "not a whole number"),
    ("train-steps-0", _train("--steps 0"), "number of steps from 1"),
    ("train-steps-negative", _train("--steps -5"), "number of steps from 1"),
    ("train-epochs-nan", "train --images {images} --masks {masks} --out {tmp}/m.pt "
     "--epochs nan", "not a finite number"),
    ("train-epochs-inf", "train --images {images} --masks {masks} --out {tmp}/m.pt "
     "--epochs inf", "not a finite number"),
    ("train-epochs-0", "train --images {images} --masks {masks} --out {tmp}/m.pt "
     "--epochs 0", "number of epochs in (0"),
    ("train-time-budget-nan", "train --images {images} --masks {masks} --out {tmp}/m.pt "
     "--time-budget nan", "not a finite number"),
    ("train-time-budget-negative", "train --images {images} --masks {masks} --out "
     "{tmp}/m.pt --time-budget -1", "time in seconds in (0, 604800]"),
    ("train-steps-and-epochs", _train("--epochs 2"), "not allowed with argument --steps"),
    ("train-val-fraction-1", _train("--val-fraction 1"), "fraction in [0, 1)"),
    ("train-val-fraction-nan", _train("--val-fraction nan"), "not a finite number"),
    ("train-batch-0", "train --images {images} --masks {masks} --out {tmp}/m.pt "
     "--batch-size 0", "batch size from 1"),
    ("train-batch-too-big-for-memory", _train("--batch-size 65536 --patch 64"),
     "needs about"),
    ("train-patch-8", _train("--patch 8"), "patch edge in pixels from 16"),
    ("train-patch-huge", _train("--patch 1000000"), "patch edge in pixels from 16"),
    ("train-lr-0", _train("--lr 0"), "learning rate in (0, 1]"),
    ("train-lr-negative", _train("--lr -0.1"), "learning rate in (0, 1]"),
    ("train-lr-nan", _train("--lr nan"), "not a finite number"),
    ("train-lr-inf", _train("--lr inf"), "not a finite number"),
    ("train-lr-huge", _train("--lr 5"), "learning rate in (0, 1]"),
    ("train-class-weighting", _train("--class-weighting foo"), "invalid choice: 'foo'"),
    ("train-oversample-2", _train("--oversample-rare 2"), "probability in [0, 1]"),
    ("train-oversample-nan", _train("--oversample-rare nan"), "not a finite number"),
    ("train-temporal-negative", _train("--temporal-context -1"), "number of frames from 0"),
    ("train-temporal-huge", _train("--temporal-context 1000000"), "number of frames from 0"),
    ("train-background-mode", _train("--background-subtraction mean"),
     "invalid choice: 'mean'"),
    ("train-elastic-negative", _train("--elastic -3"), "displacement in pixels in [0"),
    ("train-elastic-nan", _train("--elastic nan"), "not a finite number"),
    ("train-elastic-spacing-0", _train("--elastic-spacing 0"), "distance in pixels from 1"),
    ("train-preset", _train("--preset huge"), "invalid choice: 'huge'"),
    ("train-classes-text", _train("--classes a"), "comma-separated mask values"),
    ("train-classes-negative", _train("--classes=-1"), "non-negative mask values"),
    ("train-classes-duplicate", _train("--classes 1,1"), "duplicates"),
    ("train-class-names-count", _train("--classes 1 --class-names a,b"),
     "class names for 1 classes"),
    ("train-images-missing", "train --images {missing} --masks {masks} --out {tmp}/m.pt",
     "does not exist"),
    ("train-images-empty", "train --images {emptydir} --masks {masks} --out {tmp}/m.pt",
     "no images"),
    ("train-masks-missing", "train --images {images} --masks {missing} --out {tmp}/m.pt",
     "does not exist"),
    ("train-out-folder", "train --images {images} --masks {masks} --out {emptydir}",
     "is a folder"),
    ("train-out-empty-string", "train --images {images} --masks {masks} --out ''",
     "path is empty"),
    ("train-out-parent-missing", "train --images {images} --masks {masks} --out "
     "{missing}/m.pt", "does not exist"),
    # ---- finetune
    ("ft-seed-negative", _ft("--seed -1"), "seed from 0"),
    ("ft-steps-0", _ft("--steps 0").replace("--steps 1 ", ""), "number of steps from 1"),
    ("ft-time-budget-nan", "finetune --model {model} --images {images} --masks {masks} "
     "--out {tmp}/f.pt --time-budget nan", "not a finite number"),
    ("ft-lr-inf", _ft("--lr inf"), "not a finite number"),
    ("ft-holdout-1", _ft("--holdout-fraction 1"), "fraction in [0, 1)"),
    ("ft-holdout-nan", _ft("--holdout-fraction nan"), "not a finite number"),
    ("ft-blend-0", _ft("--parent-blend 0"), "weight in (0, 1]"),
    ("ft-blend-2", _ft("--parent-blend 2"), "weight in (0, 1]"),
    ("ft-holdout-layout", _ft("--holdout-layout diagonal"), "invalid choice: 'diagonal'"),
    ("ft-valid-missing", _ft("--valid {missing}"), "does not exist"),
    ("ft-model-missing", "finetune --model {missing} --images {images} --masks {masks} "
     "--out {tmp}/f.pt", "does not exist"),
    ("ft-model-folder", "finetune --model {emptydir} --images {images} --masks {masks} "
     "--out {tmp}/f.pt", "is a folder"),
    ("ft-out-folder", "finetune --model {model} --images {images} --masks {masks} "
     "--out {emptydir}", "is a folder"),
    # ---- evaluate
    ("ev-json-folder", _ev("--json {emptydir}"), "is a folder"),
    ("ev-plot-folder", _ev("--plot {emptydir}"), "is a folder"),
    ("ev-json-parent-missing", _ev("--json {missing}/r.json"), "does not exist"),
    ("ev-json-exists", _ev("--json {existingjson}"), "already exists"),
    ("ev-json-is-plot", _ev("--json {tmp}/r --plot {tmp}/r"), "two different files"),
    ("ev-json-empty-string", _ev("--json ''"), "path is empty"),
    ("ev-tta-5", _ev("--tta 5"), "invalid choice: 5"),
    ("ev-classes-text", _ev("--classes x"), "comma-separated mask values"),
    ("ev-classes-too-many", _ev("--classes 3,4,5"), "3 foreground classes"),
    ("ev-model-missing", "evaluate --model {missing} --images {images} --masks {masks}",
     "does not exist"),
    ("ev-device", _ev("--device gpu"), "unknown device"),
    # ---- info
    ("info-folder", "info {emptydir}", "is a folder"),
    ("info-missing", "info {missing}", "does not exist"),
    ("info-empty", "info {emptypt}", "empty (0 bytes)"),
    ("info-text", "info {textpt}", "not a readable pytorch file"),
    ("info-empty-string", "info ''", "path is empty"),
    ("info-two-models", "info {model} {model}", "unrecognized arguments"),
    # ---- import-weights
    ("iw-state-dict-folder", "import-weights {emptydir} --out {tmp}/i.pt", "is a folder"),
    ("iw-state-dict-missing", "import-weights {missing} --out {tmp}/i.pt", "does not exist"),
    ("iw-state-dict-empty", "import-weights {emptypt} --out {tmp}/i.pt", "empty (0 bytes)"),
    ("iw-pixel-size-negative", _iw("--pixel-size=-3"), "pixel size in nm in (0"),
    ("iw-pixel-size-0", _iw("--pixel-size 0"), "pixel size in nm in (0"),
    ("iw-pixel-size-nan", _iw("--pixel-size nan"), "not a finite number"),
    ("iw-pixel-size-text", _iw("--pixel-size 5nm"), "'5nm' is not a number"),
    ("iw-norm-low-nan", _iw("--norm-low nan"), "not a finite number"),
    ("iw-norm-low-negative", _iw("--norm-low -1"), "percentile in [0, 100]"),
    ("iw-norm-high-101", _iw("--norm-high 101"), "percentile in [0, 100]"),
    ("iw-norm-low-above-high", _iw("--norm-low 50 --norm-high 10"), "low < high"),
    ("iw-tile-8", _iw("--tile 8"), "tile edge in pixels from 16"),
    ("iw-classes-empty-name", _iw("--classes background,,cell"), "empty name"),
    ("iw-out-folder", "import-weights {model} --out {emptydir}", "is a folder"),
    ("iw-out-empty-string", "import-weights {model} --out ''", "path is empty"),
    # ---- measure
    ("me-labels-missing", "measure --labels {missing}", "does not exist"),
    ("me-labels-folder", "measure --labels {emptydir}", "is a folder"),
    ("me-labels-text", "measure --labels {textfile} --out {tmp}/o.csv",
     "unsupported file type"),
    ("me-image-folder", _me("--image {emptydir}"), "is a folder"),
    ("me-min-size-negative", _me("--min-size -1"), "number of pixels >= 0"),
    ("me-min-size-text", _me("--min-size few"), "not a whole number"),
    ("me-max-size-negative", _me("--max-size -1"), "number of pixels >= 0"),
    ("me-max-below-min", _me("--min-size 10 --max-size 5"), "below --min-size"),
    ("me-pixel-size-negative", _me("--pixel-size=-3"), "pixel size in nm in (0"),
    ("me-pixel-size-inf", _me("--pixel-size inf"), "not a finite number"),
    ("me-classifier-text", _me("--classifier {textnpz}"), "not a readable object classifier"),
    ("me-classifier-folder", _me("--classifier {emptydir}"), "is a folder"),
    ("me-classifier-missing", _me("--classifier {missing}"), "does not exist"),
    ("me-classifier-model-file", _me("--classifier {model}"),
     "not a napari-cryoseg object classifier"),
    ("me-out-folder", "measure --labels {labels} --out {emptydir}", "is a folder"),
    ("me-out-is-labels", "measure --labels {labels} --out {labels} --overwrite",
     "is the --labels input"),
    # ---- export / import-bioimageio (their checks live in their modules)
    ("export-tolerance-text", "export {model} --onnx {tmp}/m.onnx --tolerance tiny",
     "invalid float value"),
    ("export-nothing", "export {model}", "nothing to export"),
    ("export-model-missing", "export {missing} --onnx {tmp}/m.onnx", "does not exist"),
    ("export-onnx-folder", "export {model} --onnx {emptydir}", "is a folder"),
    ("bioimageio-missing", "import-bioimageio {missing} --out {tmp}/b.pt", "does not exist"),
    ("bioimageio-empty-folder", "import-bioimageio {emptydir} --out {tmp}/b.pt",
     "rdf.yaml in this folder"),
]


@pytest.mark.parametrize(("argv", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument_is_one_line_exit_2(argv, phrase, env, tmp_path, capsys):
    args = shlex.split(argv.format(tmp=tmp_path, **env))
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert ": error: " in lines[0], lines[0]
    assert phrase.lower() in lines[0].lower(), lines[0]
    assert out == ""
    # Nothing was written into the per-case folder.
    assert list(Path(tmp_path).iterdir()) == []


def test_usage_errors_name_the_command_and_point_to_help(capsys):
    assert main(["train", "--steps", "x"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("cryoseg train: error: argument --steps: 'x' is not a whole number")
    assert line.endswith("(see 'cryoseg train --help')")


def test_help_and_version_exit_0(capsys):
    assert main(["--help"]) == 0
    assert "segment" in capsys.readouterr().out
    assert main(["segment", "--help"]) == 0
    assert "--overwrite" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert "napari-cryoseg" in capsys.readouterr().out


def test_unexpected_exception_is_one_line_exit_1(monkeypatch, env, tmp_path, capsys):
    """A bug (not a user error) is one ``internal error`` line; CRYOSEG_DEBUG re-raises."""
    import napari_cryoseg.cli.info as cli_info

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(cli_info, "describe_devices", broken)
    assert main(["info", env["model"]]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: ZeroDivisionError" in err
    assert "CRYOSEG_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("CRYOSEG_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["info", env["model"]])


def test_file_system_error_is_one_line_exit_2(monkeypatch, env, tmp_path, capsys):
    """An OSError the checks did not foresee (here: permission denied) is one line."""
    import napari_cryoseg.cli.info as cli_info

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", env["model"])

    monkeypatch.setattr(cli_info, "load_model_arg", denied)
    assert main(["info", env["model"]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cryoseg info: error: '" in err and "permission denied" in err
