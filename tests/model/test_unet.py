"""UNet: shapes per preset, parameter count, up-sampling modes, ablations, dropout."""

from __future__ import annotations

import pytest
import torch

from napari_cryoseg.model.config import UNetConfig, preset
from napari_cryoseg.model.unet import UNet, count_parameters


@pytest.mark.parametrize(("name", "shape"), [("tiny", (40, 64)), ("small", (64, 96))])
def test_preset_output_shape_binary(name, shape):
    net = UNet(preset(name)).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, *shape))
    assert out.shape == (2, 1, *shape)


def test_multiclass_has_one_channel_per_class():
    config = preset("tiny", n_classes=4)
    assert config.out_channels == 4
    net = UNet(config).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 48))
    assert out.shape == (1, 4, 32, 48)


def test_temporal_context_input_channels():
    net = UNet(preset("tiny", in_channels=5)).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 5, 16, 16)).shape == (1, 1, 16, 16)
    with pytest.raises(RuntimeError):
        net(torch.randn(1, 1, 16, 16))


def test_thesis_preset_has_about_31_million_parameters():
    n = count_parameters(UNet(preset("thesis")))
    assert 30_000_000 <= n <= 32_000_000, n


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "transpose"])
def test_upsampling_modes_shape_and_modules(mode):
    net = UNet(preset("tiny", upsampling=mode)).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    first = net.ups[0].up[0]
    if mode == "transpose":
        assert isinstance(first, torch.nn.ConvTranspose2d)
        assert len(net.ups[0].up) == 1
    else:
        assert isinstance(first, torch.nn.Upsample)
        assert first.mode == mode


def test_modes_give_different_networks():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32)
    outs = []
    for mode in ("nearest", "bilinear"):
        torch.manual_seed(1)
        with torch.no_grad():
            outs.append(UNet(preset("tiny", upsampling=mode)).eval()(x))
    # Same weights (same seed, same layout), different interpolation -> different output.
    assert not torch.allclose(outs[0], outs[1])


def test_no_skip_variant_has_narrower_decoders_and_runs():
    with_skip = UNet(preset("tiny"))
    without = UNet(preset("tiny", skip_connections=False)).eval()
    assert without.decoders[0].conv[0].in_channels * 2 == with_skip.decoders[0].conv[0].in_channels
    assert count_parameters(without) < count_parameters(with_skip)
    with torch.no_grad():
        assert without(torch.randn(1, 1, 24, 24)).shape == (1, 1, 24, 24)


def test_stride_error_message_names_the_multiple():
    net = UNet(preset("small")).eval()  # depth 4 -> stride 16
    with pytest.raises(ValueError, match="multiple of 16") as info:
        net(torch.randn(1, 1, 40, 48))
    assert "(40, 48)" in str(info.value)


def test_no_batch_norm_variant():
    net = UNet(UNetConfig(depth=2, base_channels=4, batch_norm=False))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net.eval()(torch.randn(1, 1, 8, 8)).shape == (1, 1, 8, 8)


def test_dropout_is_stochastic_in_train_mode_only():
    torch.manual_seed(0)
    net = UNet(preset("tiny", dropout=0.5))
    x = torch.randn(2, 1, 32, 32)
    net.train()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert not torch.allclose(a, b)
    net.eval()
    with torch.no_grad():
        c, d = net(x), net(x)
    assert torch.equal(c, d)


def test_zero_dropout_is_deterministic_in_train_mode():
    torch.manual_seed(0)
    net = UNet(preset("tiny")).train()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
