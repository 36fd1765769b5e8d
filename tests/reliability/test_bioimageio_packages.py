"""Untrusted bioimage.io packages fail cleanly and cheaply (one line, nothing read outside).

Each case goes through the CLI (``import-bioimageio`` and ``segment --model``): exit code
2, one ``error:`` line, no traceback.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cryoseg.cli import main

MINIMAL = """type: model
format_version: 0.5.4
name: evil model
weights:
  pytorch_state_dict:
    source: {source}
    architecture: {{callable: CryoSegUNet, source: unet.py, kwargs: {{}}}}
    pytorch_version: "2.0"
"""

BAD_DESCRIPTIONS = {
    "empty": "",
    "not yaml": "type: model\nname: [unclosed\n",
    "a list": "- type: model\n- name: x\n",
    "not a model": "type: dataset\nname: x\n",
    "weights a list": "type: model\nname: x\nweights: [1, 2]\n",
    "missing weights": "type: model\nname: x\n",
    "wrong type kwargs": MINIMAL.format(source="w.pt").replace("kwargs: {}", "kwargs: 7"),
    "yaml bomb": "type: model\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a]\n"
                 "c: &c [*b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n",
    "binary": "\x00\xff\xfe garbage",
}


def _run(capsys, args):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def _check_one_line(code, err):
    assert code == 2, err
    lines = err.splitlines()
    assert "Traceback" not in err
    assert any("error:" in line or "skipped" in line for line in lines), err


@pytest.mark.parametrize("case", sorted(BAD_DESCRIPTIONS))
def test_malformed_descriptions_give_one_line(tmp_path, capsys, case):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "rdf.yaml").write_bytes(BAD_DESCRIPTIONS[case].encode("latin-1"))
    code, err = _run(capsys, ["import-bioimageio", str(package), "--out",
                              str(tmp_path / "m.pt")])
    _check_one_line(code, err)
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("source", ["../secret.pt", "/etc/passwd", "sub/../../secret.pt",
                                    "https://example.invalid/w.pt"])
def test_weights_outside_the_package_are_refused_not_read(tmp_path, capsys, source):
    secret = tmp_path / "secret.pt"
    secret.write_bytes(b"not for you")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "rdf.yaml").write_text(MINIMAL.format(source=source))
    code, err = _run(capsys, ["import-bioimageio", str(package), "--out",
                              str(tmp_path / "m.pt")])
    _check_one_line(code, err)
    assert "outside the package" in err or "remote" in err
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((32, 32), np.uint8))
    code, err = _run(capsys, ["segment", str(image), "--model", str(package), "--out",
                              str(tmp_path / "o"), "--device", "cpu"])
    _check_one_line(code, err)
    assert "outside the package" in err or "remote" in err


def test_non_zip_zip_and_zip_without_description(tmp_path, capsys):
    fake = tmp_path / "model.zip"
    fake.write_bytes(b"PK but not really a zip")
    code, err = _run(capsys, ["import-bioimageio", str(fake), "--out", str(tmp_path / "m.pt")])
    _check_one_line(code, err)
    assert "not a zip file" in err
    import zipfile

    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    code, err = _run(capsys, ["segment", str(fake), "--model", str(tmp_path / "empty.zip"),
                              "--out", str(tmp_path / "o")])
    assert code == 2 and "Traceback" not in err
