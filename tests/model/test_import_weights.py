"""Importing bigmb-layout U_Net state_dicts: identical outputs, CLI, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_cryoseg.cli import main
from napari_cryoseg.core.errors import InputError, ModelFileError
from napari_cryoseg.model.checkpoint import load_model
from napari_cryoseg.model.import_weights import import_state_dict, import_weights_file
from napari_cryoseg.model.unet import UNet

# --- A reference network with the public U_Net's module names and structure -----------
# Written here from the layout description (encoder/decoder blocks hold a `conv`
# Sequential, up blocks an `up` Sequential); the width is a parameter for speed.


class RefConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.conv(x)


class RefUpConv(nn.Module):
    def __init__(self, cin: int, cout: int, transpose: bool) -> None:
        super().__init__()
        if transpose:  # the seed thesis variant: a lone 2x2 stride-2 transposed conv
            self.up = nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2))
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            )

    def forward(self, x):
        return self.up(x)


class RefUNet(nn.Module):
    def __init__(self, in_ch: int = 1, out_ch: int = 1, n1: int = 4, transpose: bool = False):
        super().__init__()
        f = [n1, n1 * 2, n1 * 4, n1 * 8, n1 * 16]
        self.Maxpool1 = nn.MaxPool2d(2, 2)
        self.Maxpool2 = nn.MaxPool2d(2, 2)
        self.Maxpool3 = nn.MaxPool2d(2, 2)
        self.Maxpool4 = nn.MaxPool2d(2, 2)
        self.Conv1 = RefConvBlock(in_ch, f[0])
        self.Conv2 = RefConvBlock(f[0], f[1])
        self.Conv3 = RefConvBlock(f[1], f[2])
        self.Conv4 = RefConvBlock(f[2], f[3])
        self.Conv5 = RefConvBlock(f[3], f[4])
        self.Up5 = RefUpConv(f[4], f[3], transpose)
        self.Up_conv5 = RefConvBlock(f[4], f[3])
        self.Up4 = RefUpConv(f[3], f[2], transpose)
        self.Up_conv4 = RefConvBlock(f[3], f[2])
        self.Up3 = RefUpConv(f[2], f[1], transpose)
        self.Up_conv3 = RefConvBlock(f[2], f[1])
        self.Up2 = RefUpConv(f[1], f[0], transpose)
        self.Up_conv2 = RefConvBlock(f[1], f[0])
        self.Conv = nn.Conv2d(f[0], out_ch, 1)

    def forward(self, x):
        e1 = self.Conv1(x)
        e2 = self.Conv2(self.Maxpool1(e1))
        e3 = self.Conv3(self.Maxpool2(e2))
        e4 = self.Conv4(self.Maxpool3(e3))
        e5 = self.Conv5(self.Maxpool4(e4))
        d5 = self.Up_conv5(torch.cat((e4, self.Up5(e5)), dim=1))
        d4 = self.Up_conv4(torch.cat((e3, self.Up4(d5)), dim=1))
        d3 = self.Up_conv3(torch.cat((e2, self.Up3(d4)), dim=1))
        d2 = self.Up_conv2(torch.cat((e1, self.Up2(d3)), dim=1))
        return self.Conv(d2)


def _reference(in_ch=1, out_ch=1, transpose=False, seed=0) -> RefUNet:
    torch.manual_seed(seed)
    net = RefUNet(in_ch, out_ch, n1=4, transpose=transpose)
    # Random BN statistics and affine terms: identity BN would hide a mis-mapped layer.
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.2)
            module.num_batches_tracked.fill_(17)
    return net.eval()


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "transpose", "n_classes", "mode"),
    [(1, 1, False, 2, "nearest"), (1, 1, True, 2, "transpose"), (3, 4, False, 4, "nearest")],
)
def test_imported_network_matches_reference(tmp_path, in_ch, out_ch, transpose, n_classes, mode):
    ref = _reference(in_ch, out_ch, transpose)
    path = tmp_path / "ref.pth"
    torch.save(ref.state_dict(), path)
    model = import_weights_file(path)
    cfg = model.config
    assert (cfg.in_channels, cfg.n_classes, cfg.depth, cfg.base_channels, cfg.upsampling) == (
        in_ch, n_classes, 4, 4, mode)
    assert model.provenance["imported_from"] == "ref.pth"
    layout = "transpose" if transpose else "upsample"
    assert model.provenance["source_layout"] == f"bigmb U_Net ({layout})"
    x = torch.randn(2, in_ch, 48, 64)
    with torch.no_grad():
        expected = ref(x)
        got = model.build()(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_checkpoint_dict_with_state_dict_key_and_module_prefix():
    ref = _reference()
    wrapped = {"epoch": 3, "model_state_dict": {f"module.{k}": v
                                                for k, v in ref.state_dict().items()}}
    model = import_state_dict(wrapped, class_names=["background", "membrane"],
                              pixel_size_nm=4.0)
    assert model.class_names == ["background", "membrane"]
    assert model.pixel_size_nm == 4.0
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.build()(x), ref(x), atol=1e-5, rtol=1e-5)


def test_cli_import_weights_then_load_model(tmp_path, capsys):
    ref = _reference(transpose=True)
    sd = tmp_path / "thesis_weights.pt"
    torch.save({"state_dict": ref.state_dict()}, sd)
    out = tmp_path / "imported.pt"
    code = main(["import-weights", str(sd), "--out", str(out), "--classes", "background,cell",
                 "--pixel-size", "7.5", "--norm-low", "0.5", "--norm-high", "99.5"])
    assert code == 0, capsys.readouterr().err
    assert "bigmb U_Net (transpose)" in capsys.readouterr().out
    model = load_model(out)
    assert model.class_names == ["background", "cell"]
    assert model.pixel_size_nm == 7.5
    assert (model.normalization.low, model.normalization.high) == (0.5, 99.5)
    assert model.provenance["imported_from"] == "thesis_weights.pt"
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(model.build()(x), ref(x), atol=1e-5, rtol=1e-5)
    # A second run without --overwrite is refused, one line, exit 2.
    assert main(["import-weights", str(sd), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_keys_are_listed():
    sd = dict(_reference().state_dict())
    sd["Att5.W_g.0.weight"] = torch.zeros(1)
    with pytest.raises(ModelFileError, match="Att5.W_g.0.weight"):
        import_state_dict(sd)


def test_missing_keys_are_listed():
    sd = dict(_reference().state_dict())
    del sd["Up_conv3.conv.3.weight"]
    with pytest.raises(ModelFileError, match=r"Up_conv3\.conv\.3\.weight"):
        import_state_dict(sd)


def test_missing_bn_counters_are_tolerated():
    ref = _reference()
    sd = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = import_state_dict(sd)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.build()(x), ref(x), atol=1e-5, rtol=1e-5)


def test_not_a_unet_state_dict():
    with pytest.raises(ModelFileError, match="Conv1.conv.0.weight"):
        import_state_dict({"layer1.weight": torch.zeros(3, 3)})


def test_our_own_model_file_is_pointed_out(tmp_path, tiny_model):
    with pytest.raises(ModelFileError, match="already a napari-cryoseg model file"):
        import_state_dict(tiny_model.to_payload())


def test_wrong_number_of_class_names():
    with pytest.raises(InputError, match="2 classes"):
        import_state_dict(_reference().state_dict(), class_names=["a", "b", "c"])


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"Conv1.conv.0.weight": torch.zeros(1), "x": Evil()}, path)
    with pytest.raises(ModelFileError, match="refused"):
        import_weights_file(path)
    assert not marker.exists()


def test_imported_keys_cover_our_unet_exactly():
    model = import_state_dict(_reference().state_dict())
    assert set(model.state_dict) == set(UNet(model.config).state_dict())
