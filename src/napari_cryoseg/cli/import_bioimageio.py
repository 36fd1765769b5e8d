"""``cryoseg import-bioimageio``: a bioimage.io package of a napari-cryoseg U-Net -> model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_cryoseg.cli._common import echo
from napari_cryoseg.model.checkpoint import save_model


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg import-bioimageio``."""
    parser = subparsers.add_parser(
        "import-bioimageio",
        help="convert a bioimage.io package (napari-cryoseg U-Net) into a model file",
        description="Read a bioimage.io model package (folder or .zip) with "
        "pytorch_state_dict weights of the napari-cryoseg U-Net (architecture CryoSegUNet) "
        "and write a napari-cryoseg model file. No code from the package is run.",
    )
    parser.add_argument("package", metavar="PACKAGE", help="package folder or .zip")
    parser.add_argument("--out", required=True, metavar="MODEL", help="model file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``cryoseg import-bioimageio``."""
    from napari_cryoseg.cli._common import check_model_output
    from napari_cryoseg.model.bioimageio_package import import_bioimageio

    out = check_model_output(args.out, args.overwrite,
                             [("PACKAGE", Path(args.package).expanduser())])
    model = import_bioimageio(Path(args.package).expanduser())
    save_model(model, out, overwrite=args.overwrite)
    echo(f"wrote {out}: {model.config.n_classes} classes ({', '.join(model.class_names)}), "
         f"{model.n_parameters:,} parameters")
    return 0
