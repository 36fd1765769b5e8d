"""A matrix of bad (and awkward but valid) inputs, each run through the real ``cryoseg`` CLI.

Every bad input must end with exit code 2, no traceback and exactly one line on stderr
that says what was wrong (the ``error:`` line of :func:`napari_cryoseg.cli.main`, or, for
a file that fails inside a ``cryoseg segment`` folder run, its ``skipped <file>: ...``
line; see :func:`_problem_lines`). Awkward inputs that a user may legitimately have
(tiny, constant, NaN/Inf, bool/int64/uint32, non-ASCII paths, ...) must work.

Counts for docs/reliability.md come from ``BAD_CASES`` and ``GOOD_CASES`` below.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
import torch

from napari_cryoseg.cli import main
from napari_cryoseg.io import read_image, read_labels_tiff
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import preset

RNG = np.random.default_rng(7)
IMG = (RNG.random((48, 56)) * 4000).astype(np.uint16)  # a small valid image


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Model files shared by all cases: good, 3-channel, corrupt, old, newer, plain dict."""
    base = tmp_path_factory.mktemp("models")
    good = ModelFile.new(preset("tiny"), class_names=["background", "membrane"], seed=0)
    paths = {"good": save_model(good, base / "tiny.pt")}
    paths["rgb"] = save_model(ModelFile.new(preset("tiny", in_channels=3), seed=0),
                              base / "three_channels.pt")
    corrupt = base / "corrupt.pt"
    corrupt.write_bytes(paths["good"].read_bytes()[:1500])  # truncated zip
    paths["corrupt"] = corrupt
    paths["empty"] = base / "empty.pt"
    paths["empty"].write_bytes(b"")
    old = good.to_payload()
    del old["format"], old["format_version"]  # an "old", format-less file
    torch.save(old, base / "old.pt")
    paths["old"] = base / "old.pt"
    no_version = good.to_payload()
    del no_version["format_version"]
    torch.save(no_version, base / "no_version.pt")
    paths["no_version"] = base / "no_version.pt"
    newer = good.to_payload()
    newer["format_version"] = 99
    torch.save(newer, base / "newer.pt")
    paths["newer"] = base / "newer.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3), "head.bias": torch.zeros(2)},
               base / "unknown_keys.pth")
    paths["unknown_keys"] = base / "unknown_keys.pth"
    return paths


def _tif(path: Path, data: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if data.ndim == 3 and "photometric" not in kwargs and "imagej" not in kwargs:
        kwargs["photometric"] = "minisblack"  # a stack, not planar RGB
    tifffile.imwrite(path, data, **kwargs)
    return path


def _pairs(tmp: Path, images: list[np.ndarray], masks: list[np.ndarray]) -> tuple[Path, Path]:
    """Folders images/ and masks/ with files a0.tif, a1.tif, ..."""
    for i, (image, mask) in enumerate(zip(images, masks)):
        _tif(tmp / "images" / f"a{i}.tif", image)
        _tif(tmp / "masks" / f"a{i}.tif", mask)
    return tmp / "images", tmp / "masks"


def _segment_args(tmp: Path, models: dict[str, Path], image: Path, *extra: str,
                  model: str = "good") -> list[str]:
    return ["segment", str(image), "--model", str(models[model]), "--out", str(tmp / "out"),
            "--device", "cpu", "--tile", "64", *extra]


def _bad_image(maker: Callable[[Path], Path], *extra: str):
    """A case that segments the file written by ``maker(tmp)``."""
    def build(tmp: Path, models: dict[str, Path]) -> list[str]:
        return _segment_args(tmp, models, maker(tmp), *extra)
    return build


def _text(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(content)
        return path
    return make


def _array(name: str, data: np.ndarray, **kwargs) -> Callable[[Path], Path]:
    return lambda tmp: _tif(tmp / name, data, **kwargs)


def _truncated_tiff(tmp: Path) -> Path:
    path = _tif(tmp / "full.tif", IMG)
    cut = tmp / "truncated.tif"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return cut


def _broken_mrc(tmp: Path) -> Path:
    path = tmp / "broken.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(IMG.astype(np.float32))
    raw = bytearray(path.read_bytes())
    raw[0:12] = np.array([-5, 0, 7], dtype="<i4").tobytes()  # nx=-5, ny=0: impossible
    raw[76:80] = np.array([99], dtype="<i4").tobytes()  # and an unknown mode
    path.write_bytes(bytes(raw))
    return path


def _model_case(model: str, command: str = "segment"):
    def build(tmp: Path, models: dict[str, Path]) -> list[str]:
        if command == "info":
            return ["info", str(models[model])]
        return _segment_args(tmp, models, _tif(tmp / "ok.tif", IMG), model=model)
    return build


def _options(*extra: str):
    return lambda tmp, models: _segment_args(tmp, models, _tif(tmp / "ok.tif", IMG), *extra)


def _out_parent_missing(tmp, models):
    return ["segment", str(_tif(tmp / "ok.tif", IMG)), "--model", str(models["good"]),
            "--out", str(tmp / "missing" / "deeper" / "out"), "--device", "cpu"]


def _out_under_a_file(tmp, models):
    # As root, chmod -w does not stop writes, so "a folder we cannot write to" is simulated
    # by a path below a regular FILE: no one, root included, can create a folder there.
    (tmp / "file.txt").write_text("not a folder")
    return ["segment", str(_tif(tmp / "ok.tif", IMG)), "--model", str(models["good"]),
            "--out", str(tmp / "file.txt" / "sub"), "--device", "cpu"]


def _out_is_a_file(tmp, models):
    (tmp / "out").write_text("not a folder")
    return _segment_args(tmp, models, _tif(tmp / "ok.tif", IMG))


def _output_exists(tmp, models):
    (tmp / "out").mkdir()
    (tmp / "out" / "ok_labels.tif").write_bytes(b"precious")
    return _segment_args(tmp, models, _tif(tmp / "ok.tif", IMG))


def _train_out_exists(tmp, models):
    images, masks = _pairs(tmp, [IMG], [(IMG > 2000).astype(np.uint8)])
    (tmp / "model.pt").write_bytes(b"precious")
    return ["train", "--images", str(images), "--masks", str(masks), "--out",
            str(tmp / "model.pt"), "--steps", "1", "--device", "cpu"]


def _import_out_exists(tmp, models):
    (tmp / "model.pt").write_bytes(b"precious")
    return ["import-weights", str(models["unknown_keys"]), "--out", str(tmp / "model.pt")]


def _finetune_labels_beyond_classes(tmp, models):
    mask = np.zeros(IMG.shape, np.uint8)
    mask[10:20, 10:20] = 5  # the binary model only knows classes 0 and 1
    images, masks = _pairs(tmp, [IMG], [mask])
    return ["finetune", "--model", str(models["good"]), "--images", str(images), "--masks",
            str(masks), "--out", str(tmp / "ft.pt"), "--steps", "1", "--device", "cpu"]


def _train_mask_shape_differs(tmp, models):
    images, masks = _pairs(tmp, [IMG], [np.ones((40, 40), np.uint8)])
    return ["train", "--images", str(images), "--masks", str(masks), "--out",
            str(tmp / "m.pt"), "--steps", "1", "--device", "cpu"]


def _train_all_background(tmp, models):
    images, masks = _pairs(tmp, [IMG, IMG], [np.zeros(IMG.shape, np.uint8)] * 2)
    return ["train", "--images", str(images), "--masks", str(masks), "--out",
            str(tmp / "m.pt"), "--steps", "1", "--device", "cpu"]


def _train_float_mask(tmp, models):
    images, masks = _pairs(tmp, [IMG], [np.full(IMG.shape, 0.5, np.float32)])
    return ["train", "--images", str(images), "--masks", str(masks), "--out",
            str(tmp / "m.pt"), "--steps", "1", "--device", "cpu"]


def _train_3d_image(tmp, models):
    images, masks = _pairs(tmp, [np.stack([IMG, IMG])], [np.ones((2, *IMG.shape), np.uint8)])
    return ["train", "--images", str(images), "--masks", str(masks), "--out",
            str(tmp / "m.pt"), "--steps", "1", "--device", "cpu"]


def _finetune_negative_budget(tmp, models):
    images, masks = _pairs(tmp, [IMG], [np.ones(IMG.shape, np.uint8)])
    return ["finetune", "--model", str(models["good"]), "--images", str(images), "--masks",
            str(masks), "--out", str(tmp / "ft.pt"), "--time-budget", "-5", "--device", "cpu"]


def _import_unknown_keys(tmp, models):
    return ["import-weights", str(models["unknown_keys"]), "--out", str(tmp / "imp.pt")]


def _import_our_model(tmp, models):
    return ["import-weights", str(models["good"]), "--out", str(tmp / "imp.pt")]


def _import_corrupt(tmp, models):
    return ["import-weights", str(models["corrupt"]), "--out", str(tmp / "imp.pt")]


def _missing_input(tmp, models):
    return _segment_args(tmp, models, tmp / "does-not-exist.tif")


def _unsupported_suffix(tmp, models):
    return _segment_args(tmp, models, _text("image.png", b"\x89PNG\r\n")(tmp))


def _empty_folder(tmp, models):
    (tmp / "empty").mkdir()
    return _segment_args(tmp, models, tmp / "empty")


@dataclasses.dataclass(frozen=True)
class Bad:
    id: str
    build: Callable[[Path, dict[str, Path]], list[str]]
    phrase: str  # what the one error line must say (case-insensitive)
    unchanged: str | None = None  # a pre-existing file that must keep its content


BAD_CASES = [
    Bad("empty-file", _bad_image(_text("empty.tif", b"")), "empty"),
    Bad("truncated-tiff", _bad_image(_truncated_tiff), "truncated"),
    Bad("text-renamed-tif", _bad_image(_text("notes.tif", b"just some text\n" * 20)),
        "not a valid tiff"),
    Bad("rgb-tiff", _bad_image(_array("rgb.tif", np.zeros((32, 32, 3), np.uint8),
                                      photometric="rgb")), "rgb"),
    Bad("rgba-tiff", _bad_image(_array("rgba.tif", np.zeros((32, 32, 4), np.uint8),
                                       photometric="rgb", extrasamples=["unassalpha"])), "rgb"),
    Bad("1x1-image", _bad_image(_array("dot.tif", np.ones((1, 1), np.uint16))), "2×2"),
    Bad("1xN-image", _bad_image(_array("line.tif", np.ones((1, 300), np.uint16))), "2×2"),
    Bad("4d-array", _bad_image(_array("4d.tif", np.zeros((2, 3, 16, 16), np.uint16),
                                      imagej=True, metadata={"axes": "TZYX"})), "expected yx"),
    Bad("5d-array", _bad_image(_array("5d.tif", np.zeros((2, 2, 3, 16, 16), np.uint16),
                                      imagej=True, metadata={"axes": "TZCYX"})), "expected yx"),
    Bad("complex-tiff", _bad_image(_array("complex.tif", np.ones((16, 16), np.complex64))),
        "complex"),
    Bad("broken-mrc-header", _bad_image(_broken_mrc), "invalid header"),
    Bad("text-renamed-mrc", _bad_image(_text("notes.mrc", b"just some text\n" * 80)), "mrc"),
    Bad("missing-input", _missing_input, "does not exist"),
    Bad("unsupported-suffix", _unsupported_suffix, "unsupported file type"),
    Bad("folder-without-images", _empty_folder, "no images"),
    Bad("channel-mismatch-in_channels-3", _model_case("rgb"), "input channels"),
    Bad("corrupt-model", _model_case("corrupt"), "not a readable pytorch file"),
    Bad("empty-model", _model_case("empty"), "empty (0 bytes)"),
    Bad("old-format-less-model", _model_case("old"), "not a napari-cryoseg model file"),
    Bad("model-without-format-version", _model_case("no_version"), "no valid format_version"),
    Bad("newer-format-version", _model_case("newer"), "newer napari-cryoseg"),
    Bad("info-corrupt-model", _model_case("corrupt", "info"), "not a readable pytorch file"),
    Bad("info-newer-model", _model_case("newer", "info"), "upgrade"),
    Bad("import-weights-unknown-keys", _import_unknown_keys, "not a u_net state_dict"),
    Bad("import-weights-our-model-file", _import_our_model, "already a napari-cryoseg model"),
    Bad("import-weights-corrupt", _import_corrupt, "not a readable pytorch file"),
    Bad("finetune-labels-beyond-classes", _finetune_labels_beyond_classes,
        "has values up to 5 but the model has 2 classes"),
    Bad("train-mask-shape-differs", _train_mask_shape_differs, "differs from mask shape"),
    Bad("train-all-background-masks", _train_all_background, "only background"),
    Bad("train-float-mask", _train_float_mask, "integer labels"),
    Bad("train-3d-image", _train_3d_image, "2d images"),
    Bad("out-parent-missing", _out_parent_missing, "does not exist"),
    Bad("out-under-a-file-unwritable", _out_under_a_file, "does not exist"),
    Bad("out-is-a-file", _out_is_a_file, "is a file"),
    Bad("output-exists-no-overwrite", _output_exists, "already exists",
        unchanged="out/ok_labels.tif"),
    Bad("train-out-exists", _train_out_exists, "already exists", unchanged="model.pt"),
    Bad("import-weights-out-exists", _import_out_exists, "already exists",
        unchanged="model.pt"),
    Bad("unknown-device", _options("--device", "tpu"), "unknown device"),
    Bad("unavailable-cuda-device", _options("--device", "cuda:7"), "not available"),
    Bad("threshold-above-1", _options("--threshold", "1.5"), "threshold in (0, 1)"),
    Bad("threshold-0", _options("--threshold", "0"), "threshold in (0, 1)"),
    Bad("threshold-nan", _options("--threshold", "nan"), "not a finite number"),
    Bad("negative-tile", _options("--tile", "-64"), "tile edge in pixels from 16"),
    Bad("overlap-above-0.5", _options("--overlap", "0.6"), "fraction in [0, 0.5]"),
    Bad("negative-overlap", _options("--overlap", "-0.1"), "fraction in [0, 0.5]"),
    Bad("batch-size-0", _options("--batch-size", "0"), "batch size from 1"),
    Bad("finetune-negative-time-budget", _finetune_negative_budget, "time in seconds in (0,"),
]

if torch.cuda.is_available():  # "cuda:7" may exist on a big machine; keep the matrix honest
    BAD_CASES = [c for c in BAD_CASES if c.id != "unavailable-cuda-device"]


def _problem_lines(stderr: str) -> list[str]:
    """stderr lines that report a problem.

    ``main()`` prints one ``cryoseg <cmd>: error: ...`` line for a fatal error. In a
    ``cryoseg segment`` run a file that cannot be used is reported by one ``skipped
    <file>: <reason>`` line and the run goes on with the next file (the other stderr
    lines are the start-up line ``model ... on cpu`` and the closing count ``1 image(s)
    failed: <names>``, which repeat no reason).
    """
    return [line for line in stderr.splitlines() if ": error: " in line or ": skipped " in line]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.id for c in BAD_CASES])
def test_bad_input_exits_2_with_one_clear_line(case: Bad, tmp_path, models, capsys):
    args = case.build(tmp_path, models)
    before = (tmp_path / case.unchanged).read_bytes() if case.unchanged else None
    code = main(args)
    captured = capsys.readouterr()
    stderr = captured.err
    assert code == 2, f"exit {code}\nstdout: {captured.out}\nstderr: {stderr}"
    assert "Traceback" not in stderr
    problems = _problem_lines(stderr)
    assert len(problems) == 1, stderr
    assert case.phrase.lower() in problems[0].lower(), problems[0]
    others = [line for line in stderr.splitlines() if line not in problems]
    # Only the segment start-up line and the closing count may accompany a skipped file.
    assert all(line.startswith("model ") or "image(s) failed" in line for line in others), (
        stderr)
    if ": error: " in problems[0]:
        assert stderr.count("\n") == 1, stderr  # a fatal error: stderr is that one line
    if before is not None:
        assert (tmp_path / case.unchanged).read_bytes() == before


# --------------------------------------------------------------------------- must work


@dataclasses.dataclass(frozen=True)
class Good:
    id: str
    data: np.ndarray
    name: str = "img.tif"
    extra: tuple[str, ...] = ()


def _nan_inf() -> np.ndarray:
    data = RNG.normal(size=(40, 44)).astype(np.float32)
    data[0, :5] = np.nan
    data[5, 5:9] = np.inf
    data[9, :3] = -np.inf
    return data


GOOD_CASES = [
    Good("smaller-than-a-tile", IMG[:37, :45], extra=("--tile", "128")),
    Good("2x2-image", np.array([[0, 10], [20, 30]], np.uint16)),
    Good("nan-inf-float32", _nan_inf(), extra=("--probabilities",)),
    Good("all-nan-float32", np.full((20, 20), np.nan, np.float32), extra=("--probabilities",)),
    Good("constant-image", np.full((40, 40), 1234, np.uint16), extra=("--probabilities",)),
    Good("constant-huge-float32", np.full((40, 40), 4.5036e15, np.float32)),  # was a crash
    Good("bool-tiff", IMG > 2000),
    Good("int64-tiff", IMG.astype(np.int64) - 2000),
    Good("uint32-tiff", IMG.astype(np.uint32) * 100_000),
    Good("float64-tiff", IMG.astype(np.float64) / 7),
    Good("non-ascii-path", IMG, name="Probe_µm_ä/Grille été 日本.tif"),
    Good("stack-zyx", np.stack([IMG[:32, :32]] * 3)),
    Good("tall-thin", (RNG.random((300, 3)) * 255).astype(np.uint8)),
]


@pytest.mark.parametrize("case", GOOD_CASES, ids=[c.id for c in GOOD_CASES])
def test_awkward_but_valid_input_works(case: Good, tmp_path, models, capsys):
    image = _tif(tmp_path / case.name, case.data)
    out = tmp_path / ("Ausgabe_ø" if case.id == "non-ascii-path" else "out")
    code = main(["segment", str(image), "--model", str(models["good"]), "--out", str(out),
                 "--device", "cpu", "--tile", "64", *case.extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    stem = Path(case.name).stem
    labels, _ = read_labels_tiff(out / f"{stem}_labels.tif")
    assert labels.shape == case.data.shape
    assert set(np.unique(labels)) <= {0, 1}
    if "--probabilities" in case.extra:
        probs = tifffile.imread(out / f"{stem}_probabilities.tif")
        assert np.isfinite(probs).all()
        assert probs.min() >= 0 and probs.max() <= 1


def test_finetune_all_background_corrections_work(tmp_path, models, capsys):
    """All-background corrections are a valid message ("nothing here"): fine-tune runs.

    ``cryoseg train`` refuses all-background masks (there is no class to learn, see the
    matrix case ``train-all-background-masks``); for fine-tuning a model that predicted
    false positives, "everything is background" is exactly the correction to learn.
    """
    # The patch is lowered to the 48x56 images, which keeps two CPU steps fast.
    images, masks = _pairs(tmp_path, [IMG, IMG[::-1]], [np.zeros(IMG.shape, np.uint8)] * 2)
    code = main(["finetune", "--model", str(models["good"]), "--images", str(images),
                 "--masks", str(masks), "--out", str(tmp_path / "ft.pt"), "--steps", "2",
                 "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (tmp_path / "ft.pt").is_file()


def test_lazy_read_does_not_load_the_image(tmp_path, monkeypatch, capsys):
    """An 8000×8000 uint16 TIFF (128 MB) read lazily costs < 100 MB of RSS.

    It is written tile by tile from a generator (never whole in memory), opened with
    ``read_image(lazy=True)`` and a 256×256 crop is computed. The same lazy path is used
    by ``cryoseg segment`` for big files (``LAZY_BYTES``); it is forced here for a small
    file to check the CLI result equals the eager one.
    """
    import napari_cryoseg.cli.segment as cli_segment

    size, tile = 8000, 512
    n = -(-size // tile)

    def tiles():
        for i in range(n):
            for j in range(n):
                yield np.full((tile, tile), i * n + j, np.uint16)

    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, tiles(), shape=(size, size), dtype=np.uint16, tile=(tile, tile))
    page_kb = os.sysconf("SC_PAGE_SIZE") / 1024

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page_kb / 1024

    before = rss_mb()
    image = read_image(path, lazy=True)
    crop = np.asarray(image.data[4000:4256, 4000:4256])
    grown = rss_mb() - before
    assert type(image.data).__module__.startswith("dask")
    assert image.shape == (size, size)
    assert crop[0, 0] == (4000 // tile) * n + 4000 // tile
    assert grown < 100, f"RSS grew by {grown:.0f} MB"
    del image

    small = _tif(tmp_path / "small.tif", IMG)
    assert main(["segment", str(small), "--out", str(tmp_path / "eager"), "--tile", "64",
                 "--device", "cpu"]) == 0
    monkeypatch.setattr(cli_segment, "LAZY_BYTES", 0)
    assert main(["segment", str(small), "--out", str(tmp_path / "lazy"), "--tile", "64",
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    eager, _ = read_labels_tiff(tmp_path / "eager" / "small_labels.tif")
    lazy, _ = read_labels_tiff(tmp_path / "lazy" / "small_labels.tif")
    np.testing.assert_array_equal(eager, lazy)
