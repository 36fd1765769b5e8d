"""The npe2 manifest validates and every python_name imports."""

from __future__ import annotations

import importlib

from npe2 import PluginManifest


def test_manifest_validates_and_imports():
    manifest = PluginManifest.from_distribution("napari-cryoseg")
    assert manifest.name == "napari-cryoseg"
    assert manifest.display_name == "CryoSeg"
    commands = manifest.contributions.commands
    assert commands
    for command in commands:
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), command.python_name
    assert [w.display_name for w in manifest.contributions.widgets] == ["CryoSeg"]
    assert manifest.contributions.sample_data[0].display_name == (
        "Grid square (cryo-SEM, synthetic)")
