"""Code-carrying model files are refused on every path, the CLI included.

``load_model`` itself refusing a crafted pickle (and running none of its code) is covered
by ``tests/model/test_checkpoint.py::test_crafted_pickle_is_refused_and_runs_no_code`` and
``import_weights_file`` by ``tests/model/test_import_weights.py::test_pickled_code_is_refused``;
here the same files go through ``cryoseg info`` / ``segment`` / ``import-weights``, and
TorchScript archives (which carry code) are refused too: there is no ``--trust-code``.
"""

from __future__ import annotations

import pytest
import torch

from napari_cryoseg.cli import main
from napari_cryoseg.core.errors import ModelFileError
from napari_cryoseg.model.checkpoint import ModelFile, load_model
from napari_cryoseg.model.config import preset
from napari_cryoseg.model.import_weights import import_weights_file


class _CreatesFile:
    """Unpickling this would create ``marker`` (a stand-in for any code execution)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture
def evil_files(tmp_path):
    marker = tmp_path / "pwned.txt"
    model_like = ModelFile.new(preset("tiny"), seed=0).to_payload()
    model_like["provenance"] = {"x": _CreatesFile(str(marker))}
    torch.save(model_like, tmp_path / "evil_model.pt")
    state_dict_like = dict(ModelFile.new(preset("tiny"), seed=0).state_dict)
    state_dict_like["extra"] = _CreatesFile(str(marker))
    torch.save(state_dict_like, tmp_path / "evil_weights.pth")
    torch.jit.save(torch.jit.script(_Tiny()), tmp_path / "scripted.pt")
    assert not marker.exists()
    return tmp_path, marker


CLI_CASES = [
    ("info-pickle", lambda d: ["info", str(d / "evil_model.pt")], "refused"),
    ("segment-pickle", lambda d: ["segment", str(d / "img.tif"), "--model",
                                  str(d / "evil_model.pt"), "--out", str(d / "out")], "refused"),
    ("import-weights-pickle", lambda d: ["import-weights", str(d / "evil_weights.pth"),
                                         "--out", str(d / "imp.pt")], "refused"),
    ("info-torchscript", lambda d: ["info", str(d / "scripted.pt")], "torchscript"),
    ("import-weights-torchscript", lambda d: ["import-weights", str(d / "scripted.pt"),
                                              "--out", str(d / "imp.pt")], "torchscript"),
]


@pytest.mark.parametrize(("build", "phrase"), [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_code_carrying_files(evil_files, capsys, build, phrase):
    folder, marker = evil_files
    import numpy as np
    import tifffile

    tifffile.imwrite(folder / "img.tif", np.zeros((32, 32), np.uint8))
    code = main(build(folder))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert phrase in err.lower(), err
    assert "corrupt" not in err.lower(), err  # dangerous, not damaged: say so
    assert not marker.exists()
    assert not (folder / "imp.pt").exists() and not (folder / "out").exists()


def test_torchscript_refused_by_the_api(evil_files):
    folder, _ = evil_files
    with pytest.raises(ModelFileError, match="(?i)torchscript"):
        load_model(folder / "scripted.pt")
    with pytest.raises(ModelFileError, match="(?i)torchscript"):
        import_weights_file(folder / "scripted.pt")
