"""Optional libraries: import them, or fail with a one-line "install the extra" message.

Every optional feature (zarr/OME-Zarr, dask.distributed clusters, ONNX, bioimage.io,
object classifier, plots) imports its library through :func:`require`, so a missing
library ends in ``MissingExtraError`` ("... needs the 'zarr' extra: pip install
'napari-cryoseg[zarr]'") that the CLI and the dock show as one line, never a
``ModuleNotFoundError`` traceback. Pure standard library: no numpy, napari or torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from napari_cryoseg.core.errors import CryoSegError

#: Top-level module -> the pip extra of napari-cryoseg that installs it.
EXTRA_OF_MODULE: dict[str, str] = {
    "zarr": "zarr",
    "ome_zarr": "zarr",
    "distributed": "distributed",
    "bokeh": "distributed",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "bioimageio": "bioimageio",
    "xarray": "bioimageio",
    "sklearn": "objects",
    "matplotlib": "plots",
}

PACKAGE = "napari-cryoseg"


class MissingExtraError(CryoSegError, ImportError):
    """An optional library is not installed; ``str(err)`` says which extra installs it."""

    def __init__(self, message: str, *, extra: str, module: str) -> None:
        super().__init__(message)
        self.extra = extra
        self.module = module


def install_hint(extra: str) -> str:
    """``pip install 'napari-cryoseg[EXTRA]'``."""
    return f"pip install '{PACKAGE}[{extra}]'"


def missing_message(feature: str, module: str, extra: str | None = None) -> str:
    """The one-line message for ``feature`` when ``module`` cannot be imported."""
    extra = extra or EXTRA_OF_MODULE.get(module.split(".")[0], "all")
    return (f"{feature} needs the '{extra}' extra: {install_hint(extra)} "
            f"(the Python module '{module}' is not installed)")


def require(module: str, feature: str, *, extra: str | None = None) -> ModuleType:
    """Import ``module`` for ``feature``, or raise :class:`MissingExtraError`.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"zarr"`` or ``"bioimageio.core"``.
    feature : str
        What the user asked for, used as the message's subject (e.g. ``"writing
        OME-Zarr labels"``).
    extra : str, optional
        The pip extra to name; default: looked up in :data:`EXTRA_OF_MODULE`.

    Returns
    -------
    types.ModuleType
        The imported module.

    Raises
    ------
    MissingExtraError
        The module (or a library it needs) is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        # A module that is present but whose own dependency is missing names that one.
        missing = getattr(err, "name", None) or module
        raise MissingExtraError(
            missing_message(feature, missing if missing.split(".")[0] in EXTRA_OF_MODULE
                            else module, extra),
            extra=extra or EXTRA_OF_MODULE.get(module.split(".")[0], "all"), module=missing,
        ) from None


def available(module: str) -> bool:
    """True when ``module`` imports (used to choose defaults, never to hide errors)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
