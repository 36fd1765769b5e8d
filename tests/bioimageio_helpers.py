"""A bioimage.io package of a foreign architecture, built with bioimageio.spec (no download).

Imported by tests (pytest puts ``tests/`` on ``sys.path`` through its conftest).
"""

from __future__ import annotations

import numpy as np
import torch


def foreign_package(tmp_path):
    """A 2-class conv net of another architecture, described with bioimageio.spec."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5

    class TwoClass(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
            with torch.no_grad():
                self.conv.weight.copy_(torch.tensor([[[[0.0, 0, 0], [0, -1, 0], [0, 0, 0]]],
                                                     [[[0.0, 0, 0], [0, 1, 0], [0, 0, 0]]]]))
                self.conv.bias.zero_()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.conv(x), dim=1)

    folder = tmp_path / "foreign_src"
    folder.mkdir()
    net = TwoClass().eval()
    torch.jit.script(net).save(str(folder / "net.pt"))
    rng = np.random.default_rng(0)
    raw = rng.random((1, 1, 32, 32)).astype(np.float32)
    norm = (raw - raw.mean()) / (raw.std() + 1e-6)
    with torch.no_grad():
        out = net(torch.from_numpy(norm)).numpy()
    np.save(folder / "in.npy", raw)
    np.save(folder / "out.npy", out)
    (folder / "README.md").write_text("# Two class\n\n## Validation\n\nnone\n")
    size = v0_5.ParameterizedSize(min=16, step=8)
    descr = v0_5.ModelDescr(
        name="two class conv", description="a test model", license="MIT",
        authors=[v0_5.Author(name="test")],
        cite=[v0_5.CiteEntry(text="test", doi="10.5281/zenodo.5764892")],
        documentation=v0_5.FileDescr(source=folder / "README.md"),
        inputs=[v0_5.InputTensorDescr(
            id=v0_5.TensorId("image"),
            axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier("raw")]),
                  v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=size),
                  v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=size)],
            test_tensor=v0_5.FileDescr(source=folder / "in.npy"),
            preprocessing=[v0_5.ZeroMeanUnitVarianceDescr()])],
        outputs=[v0_5.OutputTensorDescr(
            id=v0_5.TensorId("prob"),
            axes=[v0_5.BatchAxis(),
                  v0_5.ChannelAxis(channel_names=[v0_5.Identifier("dark"),
                                                  v0_5.Identifier("bright")]),
                  v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId("y"), halo=4,
                                               size=v0_5.SizeReference(
                                                   tensor_id=v0_5.TensorId("image"),
                                                   axis_id=v0_5.AxisId("y"))),
                  v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId("x"), halo=4,
                                               size=v0_5.SizeReference(
                                                   tensor_id=v0_5.TensorId("image"),
                                                   axis_id=v0_5.AxisId("x")))],
            test_tensor=v0_5.FileDescr(source=folder / "out.npy"))],
        weights=v0_5.WeightsDescr(torchscript=v0_5.TorchscriptWeightsDescr(
            source=folder / "net.pt", pytorch_version=v0_5.Version("2.0"))),
    )
    return save_bioimageio_package(descr, output_path=tmp_path / "foreign.zip")


EVIL_SOURCE = '''import pathlib

import torch


class EvilNet(torch.nn.Module):
    def __init__(self, marker: str) -> None:
        super().__init__()
        pathlib.Path(marker).write_text("code from the package ran")
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return torch.softmax(self.conv(x), dim=1)
'''


def code_package(tmp_path, marker, *, zip_it=True, name="evil.py"):
    """A package whose pytorch_state_dict architecture is a Python file in it; building
    the network writes ``marker`` (proof that the package's code ran)."""
    import importlib.util

    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder
    from bioimageio.spec.model import v0_5

    folder = tmp_path / "evil_src"
    folder.mkdir()
    (folder / name).write_text(EVIL_SOURCE)
    spec = importlib.util.spec_from_file_location("evil_for_test", folder / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scratch = tmp_path / "scratch_marker"
    net = module.EvilNet(str(scratch)).eval()
    scratch.unlink()
    torch.save(net.state_dict(), folder / "weights.pt")
    raw = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
    norm = (raw - raw.mean()) / (raw.std() + 1e-6)
    with torch.no_grad():
        out = net(torch.from_numpy(norm)).numpy()
    np.save(folder / "in.npy", raw)
    np.save(folder / "out.npy", out)
    (folder / "README.md").write_text("# Evil\n")
    size = v0_5.ParameterizedSize(min=16, step=8)
    descr = v0_5.ModelDescr(
        name="evil net", description="runs code", license="MIT",
        authors=[v0_5.Author(name="test")],
        cite=[v0_5.CiteEntry(text="test", doi="10.5281/zenodo.5764892")],
        documentation=v0_5.FileDescr(source=folder / "README.md"),
        inputs=[v0_5.InputTensorDescr(
            id=v0_5.TensorId("image"),
            axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier("raw")]),
                  v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=size),
                  v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=size)],
            test_tensor=v0_5.FileDescr(source=folder / "in.npy"),
            preprocessing=[v0_5.ZeroMeanUnitVarianceDescr()])],
        outputs=[v0_5.OutputTensorDescr(
            id=v0_5.TensorId("prob"),
            axes=[v0_5.BatchAxis(),
                  v0_5.ChannelAxis(channel_names=[v0_5.Identifier("a"), v0_5.Identifier("b")]),
                  v0_5.SpaceOutputAxis(id=v0_5.AxisId("y"), size=v0_5.SizeReference(
                      tensor_id=v0_5.TensorId("image"), axis_id=v0_5.AxisId("y"))),
                  v0_5.SpaceOutputAxis(id=v0_5.AxisId("x"), size=v0_5.SizeReference(
                      tensor_id=v0_5.TensorId("image"), axis_id=v0_5.AxisId("x")))],
            test_tensor=v0_5.FileDescr(source=folder / "out.npy"))],
        weights=v0_5.WeightsDescr(pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt", pytorch_version=v0_5.Version("2.0"),
            architecture=v0_5.ArchitectureFromFileDescr(
                source=folder / name, callable=v0_5.Identifier("EvilNet"),
                kwargs={"marker": str(marker)}))),
    )
    if zip_it:
        return save_bioimageio_package(descr, output_path=tmp_path / "evil.zip")
    return save_bioimageio_package_as_folder(descr, output_path=tmp_path / "evil_pkg")
