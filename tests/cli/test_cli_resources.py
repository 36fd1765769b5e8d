"""CLI defaults come from the settings dataclasses; memory is checked before work starts;
a diverged training run is refused instead of written."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_cryoseg.cli import build_parser, main
from napari_cryoseg.engine.training.finetune import FinetuneConfig
from napari_cryoseg.engine.training.train import TrainConfig
from napari_cryoseg.model.checkpoint import ModelFile, load_model, save_model
from napari_cryoseg.model.config import preset


def _data(root: Path, n: int = 2, size: int = 64) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        image = (rng.random((size, size)) * 255).astype(np.uint8)
        tifffile.imwrite(root / "images" / f"a{i}.tif", image)
        tifffile.imwrite(root / "masks" / f"a{i}.tif", (image > 128).astype(np.uint8))
    return str(root / "images"), str(root / "masks")


# --------------------------------------------------------------------------- defaults


def test_train_flags_not_given_are_train_config_defaults(capsys):
    from napari_cryoseg.cli.train import config_from_args

    args = build_parser().parse_args(["train", "--images", "i", "--masks", "m", "--out", "o"])
    assert config_from_args(args) == TrainConfig()
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    defaults = TrainConfig()
    for shown in (f"costs more (default {defaults.preset})",
                  f"patches per optimiser step (default {defaults.batch_size})",
                  f"network stride; default {defaults.patch})",
                  f"peak learning rate (default {defaults.lr:g})",
                  f"random seed (default {defaults.seed})",
                  f"held out for validation (default {defaults.val_fraction:g})",
                  f"class weights (default {defaults.class_weighting})",
                  f"rarest class (default {defaults.oversample_rare:g})",
                  f"default {defaults.augment.elastic:g} = off)",
                  f"is smoother (default {defaults.augment.elastic_spacing})"):
        assert shown.lower() in text.lower(), shown


def test_finetune_flags_not_given_are_finetune_config_defaults(capsys):
    from napari_cryoseg.cli.finetune import config_from_args

    args = build_parser().parse_args(["finetune", "--model", "m", "--images", "i",
                                      "--masks", "k", "--out", "o"])
    assert config_from_args(args) == FinetuneConfig()
    assert main(["finetune", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"random seed (default {FinetuneConfig().seed})" in text
    assert f"peak learning rate (of the encoder; default {FinetuneConfig().lr:g})" in text


# --------------------------------------------------------------------------- memory


def test_patch_larger_than_the_images_is_lowered_with_a_note(tmp_path, capsys):
    """Images are padded to the patch: 60000 on 64-px images would ask for 14 GB each."""
    images, masks = _data(tmp_path)
    out = tmp_path / "m.pt"
    code = main(["train", "--images", images, "--masks", masks, "--out", str(out),
                 "--preset", "tiny", "--steps", "1", "--batch-size", "2", "--patch", "60000",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "note: --patch 60000 is larger than the largest image (64 px); using 64" in err
    assert load_model(out).provenance["recipe"]["patch"] == 64


def test_batch_that_cannot_fit_is_refused_up_front(tmp_path, capsys):
    images, masks = _data(tmp_path)
    started = time.perf_counter()
    code = main(["train", "--images", images, "--masks", masks, "--out",
                 str(tmp_path / "m.pt"), "--preset", "tiny", "--steps", "1",
                 "--batch-size", "65536", "--patch", "64", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--batch-size 65536 with --patch 64 (tiny preset) needs about" in err
    assert "lower --batch-size or --patch" in err
    assert time.perf_counter() - started < 60
    assert not (tmp_path / "m.pt").exists()


def test_training_estimate_covers_the_measured_activations():
    """The estimate scales a narrow network's saved activations; compare with the real
    (wide) network's saved tensors for the small preset."""
    from napari_cryoseg.engine.training import memory as _memory
    from napari_cryoseg.model.unet import UNet

    config = preset("small")
    net = UNet(config)
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in params:
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = net(torch.zeros(2, 1, 128, 128))
    measured = (sum(seen.values()) + 2 * out.numel() * 4) / (2 * 128 * 128)
    estimate = _memory.saved_bytes_per_pixel(config)
    assert measured <= estimate <= 1.1 * measured


def test_segment_tiles_that_cannot_fit_are_refused_per_file(tmp_path, monkeypatch, capsys):
    """With (pretend) 1 MiB free, a batch of 128-px tiles cannot fit: the file is skipped
    with one line. Tiles shrink to the image, so a huge --tile on a small image is fine."""
    from napari_cryoseg.engine.training import memory as _memory

    model = save_model(ModelFile.new(preset("tiny"), seed=0), tmp_path / "m.pt")
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, (np.random.default_rng(1).random((300, 300)) * 255).astype(np.uint8))
    assert main(["segment", str(image), "--model", str(model), "--out", str(tmp_path / "a"),
                 "--tile", "65536", "--batch-size", "65536", "--device", "cpu"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(_memory, "available_bytes", lambda device: 2**20)
    assert main(["segment", str(image), "--model", str(model), "--out", str(tmp_path / "b"),
                 "--tile", "128", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "skipped" in err and "lower --batch-size or --tile" in err and "needs about" in err
    assert not (tmp_path / "b" / "img_labels.tif").exists()


# --------------------------------------------------------------------------- divergence


def test_diverged_training_is_not_written(tmp_path, monkeypatch, capsys):
    """NaN weights would be refused at every later load; the run says so and writes
    nothing. The real engine trains; its result's weights are then made NaN, as a
    diverging run would leave them."""
    import napari_cryoseg.cli.train as cli_train

    real_train = cli_train.train

    def diverging(*args, **kwargs):
        result = yield from real_train(*args, **kwargs)
        for model in (result.best, result.last):
            model.state_dict = {k: v.float() * float("nan") if v.is_floating_point() else v
                                for k, v in model.state_dict.items()}
        return result

    monkeypatch.setattr(cli_train, "train", diverging)
    images, masks = _data(tmp_path)
    code = main(["train", "--images", images, "--masks", masks, "--out",
                 str(tmp_path / "m.pt"), "--preset", "tiny", "--steps", "1", "--patch", "32",
                 "--batch-size", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("cryoseg train: error: training diverged")
    assert "lower --lr" in err
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m-last.pt").exists()


def test_config_defaults_are_dataclass_instances():
    """The CLI modules read defaults from one instance each (no literal copies)."""
    import napari_cryoseg.cli.finetune as cli_finetune
    import napari_cryoseg.cli.train as cli_train

    assert dataclasses.asdict(cli_train.DEFAULTS) == dataclasses.asdict(TrainConfig())
    assert dataclasses.asdict(cli_finetune.DEFAULTS) == dataclasses.asdict(FinetuneConfig())


@pytest.mark.parametrize("flag", ["--norm-low", "--norm-high", "--tile"])
def test_import_weights_defaults_are_the_dataclass_defaults(flag, capsys):
    from napari_cryoseg.core.normalization import NormalizationConfig
    from napari_cryoseg.core.tiling import TilingConfig

    args = build_parser().parse_args(["import-weights", "w.pth", "--out", "o.pt"])
    value = {"--norm-low": (args.norm_low, NormalizationConfig().low),
             "--norm-high": (args.norm_high, NormalizationConfig().high),
             "--tile": (args.tile, TilingConfig().tile)}[flag]
    assert value[0] == value[1]
