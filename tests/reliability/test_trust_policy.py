"""No code from a bioimage.io package runs unless the user trusts that package.

A package whose pytorch_state_dict architecture is a Python file inside it is refused
with one line naming the file and its sha256 (``segment`` and ``evaluate``, folder and
zip); with ``--trust-code <sha256>`` or ``--trust-code <package path>`` it runs and the
log names what was trusted. Building the network writes a marker file, so the tests see
whether the package's code ran.
"""

from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pytest
import tifffile

from bioimageio_helpers import code_package
from napari_cryoseg.cli import main

pytest.importorskip("bioimageio.core")


def _run(capsys, args):
    code = main(args)
    return code, capsys.readouterr().err.strip()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, np.random.default_rng(0).random((40, 40)).astype(np.float32))
    return path


def _code_sha(package) -> str:
    with zipfile.ZipFile(package) as zf:
        return hashlib.sha256(zf.read("evil.py")).hexdigest()


@pytest.mark.parametrize("zip_it", [True, False], ids=["zip", "folder"])
def test_segment_refuses_a_package_that_carries_code(tmp_path, capsys, image, zip_it):
    marker = tmp_path / "MARKER"
    package = code_package(tmp_path, marker, zip_it=zip_it)
    sha = hashlib.sha256(EVIL_BYTES(tmp_path)).hexdigest()
    code, err = _run(capsys, ["segment", str(image), "--model", str(package),
                              "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "evil.py" in err and sha in err and "--trust-code" in err
    assert not marker.exists(), "the package's code ran"
    assert not (tmp_path / "out" / "img_labels.tif").exists()


def EVIL_BYTES(tmp_path) -> bytes:  # noqa: N802 - the source the helper packed
    return (tmp_path / "evil_src" / "evil.py").read_bytes()


def test_evaluate_refuses_a_package_that_carries_code(tmp_path, capsys, image):
    marker = tmp_path / "MARKER"
    package = code_package(tmp_path, marker)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", tifffile.imread(image))
    tifffile.imwrite(tmp_path / "masks" / "a.tif", np.zeros((40, 40), np.uint8))
    code, err = _run(capsys, ["evaluate", "--model", str(package), "--images",
                              str(tmp_path / "images"), "--masks", str(tmp_path / "masks")])
    assert code == 2 and "evil.py" in err and len(err.splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("how", ["sha256", "path"])
def test_trusted_package_runs_and_the_log_names_what_was_trusted(tmp_path, capsys, image,
                                                                 how):
    marker = tmp_path / "MARKER"
    package = code_package(tmp_path, marker)
    sha = _code_sha(package)
    trust = sha if how == "sha256" else str(package)
    code, err = _run(capsys, ["segment", str(image), "--model", str(package), "--out",
                              str(tmp_path / "out"), "--device", "cpu", "--trust-code", trust])
    assert code == 0, err
    assert marker.exists()
    trusted = [line for line in err.splitlines() if "trusted" in line]
    assert trusted and "evil.py" in trusted[0] and sha in trusted[0]
    assert (tmp_path / "out" / "img_labels.tif").is_file()


def test_a_wrong_hash_trusts_nothing(tmp_path, capsys, image):
    marker = tmp_path / "MARKER"
    package = code_package(tmp_path, marker)
    code, err = _run(capsys, ["segment", str(image), "--model", str(package), "--out",
                              str(tmp_path / "out"), "--trust-code", "0" * 64])
    assert code == 2 and "evil.py" in err and not marker.exists()


OLD_STYLE = """type: model
format_version: 0.4.10
name: old style
authors: [{name: x}]
cite: [{text: x, doi: 10.5281/zenodo.5764892}]
license: MIT
documentation: README.md
inputs: []
outputs: []
test_inputs: [in.npy]
test_outputs: [out.npy]
weights:
  pytorch_state_dict:
    source: weights.pt
    architecture: %s
"""


@pytest.mark.parametrize("arch", ["../outside.py:Net", "/tmp/outside.py:Net"])
def test_old_style_architecture_outside_the_package_is_refused(tmp_path, capsys, image,
                                                               arch):
    (tmp_path / "outside.py").write_text("raise SystemExit('ran')\n")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "rdf.yaml").write_text(OLD_STYLE % arch)
    for args in (["import-bioimageio", str(package), "--out", str(tmp_path / "m.pt")],
                 ["segment", str(image), "--model", str(package), "--out",
                  str(tmp_path / "out")]):
        code, err = _run(capsys, args)
        assert code == 2 and "outside the package" in err, err
        assert len(err.splitlines()) == 1


def test_old_style_architecture_inside_needs_trust(tmp_path, capsys, image):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "net.py").write_text("class Net:\n    pass\n")
    for name in ("README.md", "in.npy", "out.npy", "weights.pt"):
        (package / name).write_bytes(b"x")
    (package / "rdf.yaml").write_text(OLD_STYLE % "net.py:Net")
    code, err = _run(capsys, ["segment", str(image), "--model", str(package), "--out",
                              str(tmp_path / "out")])
    assert code == 2 and "net.py" in err, err
    assert hashlib.sha256(b"class Net:\n    pass\n").hexdigest() in err


@pytest.mark.parametrize("second", ["bioimageio.yaml", "other.bioimageio.yaml"])
def test_a_zip_with_two_descriptions_is_refused(tmp_path, capsys, image, second):
    marker = tmp_path / "MARKER"
    package = code_package(tmp_path, marker)
    with zipfile.ZipFile(package) as zf:
        rdf = zf.read("rdf.yaml")
    with zipfile.ZipFile(package, "a") as zf:  # a harmless-looking one for a checker
        zf.writestr(second, rdf.replace(b"pytorch_state_dict", b"torchscript"))
    for args in (["segment", str(image), "--model", str(package), "--out",
                  str(tmp_path / "out"), "--trust-code", _code_sha(package)],
                 ["import-bioimageio", str(package), "--out", str(tmp_path / "m.pt")]):
        code, err = _run(capsys, args)
        assert code == 2 and "descriptions" in err, err
    assert not marker.exists()
