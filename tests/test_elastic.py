"""Elastic deformation augmentation: the warp itself, its use in training, the CLI flag."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_cryoseg.cli import build_parser, main
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.training.augment import AugmentConfig, elastic_deform
from napari_cryoseg.engine.training.sampling import IGNORE_INDEX
from napari_cryoseg.engine.training.train import TrainConfig, train
from napari_cryoseg.model.checkpoint import load_model, save_model


def _batch(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two blocky 3-class targets with an ignored corner, and images equal to them."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    target = ((yy // 16 + xx // 16) % 3).to(torch.int64)
    target[:10, :10] = IGNORE_INDEX
    targets = torch.stack([target, target.flip(0)])
    return targets[:, None].float(), targets


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_zero_elastic_is_identity():
    x, y = _batch()
    wx, wy = elastic_deform(x, y, 0.0, generator=_generator())
    assert torch.equal(wx, x) and torch.equal(wy, y)
    assert AugmentConfig().elastic == 0.0 and AugmentConfig.none().elastic == 0.0


def test_warp_changes_image_keeps_classes_and_matches_geometry():
    x, y = _batch()
    wx, wy = elastic_deform(x, y, 4.0, spacing=16, generator=_generator())
    assert wx.shape == x.shape and wx.dtype == x.dtype
    assert wy.shape == y.shape and wy.dtype == y.dtype
    assert not torch.equal(wx, x) and not torch.equal(wy, y)
    # Nearest-neighbour targets only hold values that were there, the ignore value included.
    assert set(wy.unique().tolist()) <= set(y.unique().tolist())
    assert (wy == IGNORE_INDEX).any()
    # The image (= target as float) warped bilinearly agrees with the nearest-warped target
    # except at class edges, where bilinear mixes neighbours: same field, same geometry.
    agreement = (wx[:, 0].round().long() == wy).float().mean().item()
    assert agreement > 0.95


def test_same_seed_same_warp():
    x, y = _batch()
    a = elastic_deform(x, y, 3.0, spacing=16, generator=_generator(7))
    b = elastic_deform(x, y, 3.0, spacing=16, generator=_generator(7))
    c = elastic_deform(x, y, 3.0, spacing=16, generator=_generator(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # Without targets the image gets the same field.
    only_image, no_targets = elastic_deform(x, None, 3.0, spacing=16, generator=_generator(7))
    assert no_targets is None and torch.equal(only_image, a[0])


def test_augment_config_validates_and_loads_old_dicts():
    with pytest.raises(InputError, match="elastic"):
        AugmentConfig(elastic=-1.0)
    with pytest.raises(InputError, match="spacing"):
        AugmentConfig(elastic_spacing=0)
    config = AugmentConfig(elastic=8.0, elastic_spacing=32)
    assert AugmentConfig.from_dict(dataclasses.asdict(config)) == config
    old = {k: v for k, v in dataclasses.asdict(AugmentConfig()).items()
           if not k.startswith("elastic")}
    assert AugmentConfig.from_dict({**old, "future_field": 1}) == AugmentConfig()


def test_training_with_elastic_runs_and_records_it(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    masks = [((yy - 20 - 8 * i) ** 2 + (xx - 32) ** 2 < 120).astype(np.uint8) for i in range(2)]
    images = [(60 + 120 * m + rng.normal(0, 10, m.shape)).clip(0, 255).astype(np.uint8)
              for m in masks]
    config = TrainConfig(preset="tiny", batch_size=2, patch=32, steps=3, val_fraction=0.0,
                         seed=0, device="cpu",
                         augment=AugmentConfig(elastic=5.0, elastic_spacing=16))
    first = drain(train(images, masks, config))
    second = drain(train(images, masks, config))
    assert first.steps == 3
    assert [h[1] for h in first.history] == [h[1] for h in second.history]  # reproducible
    path = tmp_path / "m.pt"
    save_model(first.best, path)
    augment = load_model(path).provenance["recipe"]["augment"]
    assert augment["elastic"] == 5.0 and augment["elastic_spacing"] == 16
    assert AugmentConfig.from_dict(augment) == config.augment


def test_cli_elastic_flag_parses(tmp_path, capsys):
    parser = build_parser()
    base = ["train", "--images", "i", "--masks", "m", "--out", "o.pt"]
    args = parser.parse_args([*base, "--elastic", "10", "--elastic-spacing", "48"])
    assert args.elastic == 10.0 and args.elastic_spacing == 48
    defaults = parser.parse_args(base)
    assert defaults.elastic == AugmentConfig().elastic
    assert defaults.elastic_spacing == AugmentConfig().elastic_spacing
    # A negative magnitude is refused on one line before any image is read.
    out = str(tmp_path / "m.pt")
    assert main(["train", "--images", str(tmp_path / "missing"), "--masks", "m", "--out", out,
                 "--elastic", "-1"]) == 2
    assert "argument --elastic: -1 is out of range" in capsys.readouterr().err
