"""Crafted bioimage.io packages fail fast, before their size or depth costs anything.

Deep YAML is refused by a linear pre-scan (never handed to a parser that is slow on it or
recurses); weights are refused from the sizes in the zip header (or the file size)
before they are read; a symlink that leaves a package folder is refused; ``cryoseg
info`` describes a package of another architecture.
"""

from __future__ import annotations

import struct
import zipfile

import numpy as np
import pytest
import tifffile
import torch

from napari_cryoseg.cli import main
from napari_cryoseg.model.bioimageio_package import file_references, weights_limit
from napari_cryoseg.model.config import UNetConfig
from napari_cryoseg.model.safe_yaml import MAX_DEPTH, nesting_depth
from napari_cryoseg.model.unet import UNet

KWARGS = {"depth": 1, "base_channels": 4}
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


def _one_line(code, err):
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_deep_brackets_are_refused_by_the_pre_scan(tmp_path, capsys):
    package = tmp_path / "pkg"
    package.mkdir()
    depth = 100_000  # 200 KB of brackets: the pure-Python YAML parser took minutes
    (package / "rdf.yaml").write_text("type: model\nname: " + "[" * depth + "]" * depth)
    code, err = _run(capsys, ["import-bioimageio", str(package), "--out",
                              str(tmp_path / "m.pt")])
    _one_line(code, err)
    assert "nested" in err


def test_deep_block_mappings_are_refused_not_a_recursion_error(tmp_path, capsys):
    package = tmp_path / "pkg"
    package.mkdir()
    lines = ["type: model"] + [" " * i + f"k{i}:" for i in range(1200)]
    (package / "rdf.yaml").write_text("\n".join(lines) + " 1\n")
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((32, 32), np.uint8))
    for args in (["import-bioimageio", str(package), "--out", str(tmp_path / "m.pt")],
                 ["segment", str(image), "--model", str(package), "--out",
                  str(tmp_path / "o")], ["info", str(package)]):
        code, err = _run(capsys, args)
        _one_line(code, err)
        assert "nested" in err and "RecursionError" not in err


def test_depth_scan_is_generous_for_real_descriptions():
    assert nesting_depth(RDF) < 10
    assert nesting_depth("a:\n  - - - [x, {y: [1]}]\n") <= 8
    assert nesting_depth("[" * (MAX_DEPTH + 1)) > MAX_DEPTH


def _package_zip(tmp_path, claimed: int | None) -> object:
    """A tiny CryoSeg package zip whose weights header claims ``claimed`` bytes."""
    weights = tmp_path / "weights.pt"
    torch.save(UNet(UNetConfig(**KWARGS)).state_dict(), weights)
    path = tmp_path / "pkg.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("rdf.yaml", RDF)
        zf.write(weights, "weights.pt")
    if claimed is not None:  # patch the central directory: the size readers trust
        data = bytearray(path.read_bytes())
        entry = data.rfind(b"PK\x01\x02")  # weights.pt is the last member
        struct.pack_into("<I", data, entry + 24, claimed)
        path.write_bytes(bytes(data))
    return path


def test_honest_tiny_package_imports(tmp_path, capsys):
    code, err = _run(capsys, ["import-bioimageio", str(_package_zip(tmp_path, None)), "--out",
                              str(tmp_path / "m.pt")])
    assert code == 0, err


@pytest.mark.parametrize("claimed", [0xF000_0000, 200 << 20])
def test_weights_larger_than_the_model_needs_are_refused_before_reading(tmp_path, capsys,
                                                                        claimed):
    # 3.75 GiB: above the absolute limit; 200 MiB: far above what depth 1 x 4 channels
    # can hold (a few KB) -- either way refused from the header, never inflated.
    assert weights_limit(UNetConfig(**KWARGS)) < 200 << 20
    package = _package_zip(tmp_path, claimed)
    code, err = _run(capsys, ["import-bioimageio", str(package), "--out",
                              str(tmp_path / "m.pt")])
    _one_line(code, err)
    assert "refused" in err and ("larger than" in err or "GiB" in err)
    assert not (tmp_path / "m.pt").exists()


def test_symlink_leaving_a_package_folder_is_refused(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "rdf.yaml").write_text(RDF.replace("name: tiny", "name: tiny\n"
                                                  "documentation: README.md"))
    (package / "README.md").symlink_to(secret)
    code, err = _run(capsys, ["import-bioimageio", str(package), "--out",
                              str(tmp_path / "m.pt")])
    _one_line(code, err)
    assert "outside the package" in err


def test_every_spec_key_that_names_a_file_is_checked():
    data = {"test_inputs": ["a.npy"], "sample_outputs": ["b.npy"], "icon": "i.png",
            "attachments": {"files": ["c.txt"]}, "covers": ["d.png"],
            "weights": {"pytorch_state_dict": {"architecture": "../x.py:Net",
                                               "dependencies": "conda:../env.yaml"}},
            "config": {"free": {"source": "whatever"}}}
    refs = set(file_references(data))
    assert {"a.npy", "b.npy", "i.png", "c.txt", "d.png", "../x.py", "../env.yaml"} <= refs
    assert "whatever" not in refs


def test_info_describes_a_package_of_another_architecture(tmp_path, capsys):
    pytest.importorskip("bioimageio.core")
    from bioimageio_helpers import foreign_package

    package = foreign_package(tmp_path)
    assert main(["info", str(package)]) == 0
    out = capsys.readouterr().out
    assert "two class conv" in out and "cannot be fine-tuned" in out
