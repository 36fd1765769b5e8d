"""``cryoseg export``: a model file as ONNX and/or a bioimage.io model package."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_cryoseg.cli._common import check_new_file, echo, load_model_arg
from napari_cryoseg.core.atomic import check_output_path
from napari_cryoseg.core.errors import InputError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg export``."""
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX or a bioimage.io model package",
        description="Export a napari-cryoseg model file. --onnx writes an ONNX graph "
        "(normalised image in, probabilities out; dynamic batch, H, W) and checks it with "
        "onnxruntime against PyTorch. --bioimageio writes a bioimage.io model package "
        "(a folder, or a .zip; described with bioimageio.spec) with state_dict, TorchScript and "
        "ONNX weights, test tensors and a cover image, then runs bioimageio.core's test.",
    )
    parser.add_argument("model", nargs="?", default=None, metavar="MODEL",
                        help="model file (.pt); default: the bundled model")
    parser.add_argument("--onnx", default=None, metavar="OUT.onnx", help="ONNX file to write")
    parser.add_argument("--bioimageio", default=None, metavar="OUT",
                        help="bioimage.io package to write: a new folder or a .zip file")
    parser.add_argument("--tolerance", type=float, default=1e-4, metavar="F",
                        help="largest accepted |ONNX - PyTorch| difference (default 1e-4)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (in an existing package folder only "
                        "the package's own files; nothing else there is touched)")
    parser.add_argument("--skip-test", action="store_true",
                        help="do not run bioimageio.core's test_model on the written package "
                        "(it runs every weight format on the test input; ~1 min on a CPU)")
    parser.set_defaults(func=run)
    return parser


def is_our_onnx(path: Path) -> bool:
    """True for an ONNX file napari-cryoseg wrote (its metadata says so)."""
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return False
    return any(p.key == "format" and p.value == "napari-cryoseg-onnx"
               for p in proto.metadata_props)


def run(args: argparse.Namespace) -> int:
    """Run ``cryoseg export``."""
    if not args.onnx and not args.bioimageio:
        raise InputError("nothing to export: pass --onnx OUT.onnx and/or --bioimageio OUT")
    # The output rule, checked before the model is read: never the input model (nor a
    # package folder holding it), never a FIFO/device, --overwrite only what cryoseg wrote.
    inputs = [("MODEL", None if args.model is None else Path(args.model).expanduser())]
    if args.onnx:
        check_new_file(args.onnx, "--onnx", args.overwrite, inputs, is_ours=is_our_onnx,
                       what="ONNX file")
    if args.bioimageio:
        check_output_path(Path(args.bioimageio).expanduser(), inputs, flag="--bioimageio",
                          overwrite=True)  # what may be replaced: export_bioimageio
    model = load_model_arg(args.model)
    if getattr(model, "foreign", False):
        raise InputError(f"{args.model} is a bioimage.io model of another architecture; "
                         "only napari-cryoseg models can be exported")
    if args.onnx:
        from napari_cryoseg.model.export import export_onnx

        out = Path(args.onnx).expanduser()
        check = export_onnx(model, out, overwrite=args.overwrite, tolerance=args.tolerance)
        echo(f"wrote {out}; onnxruntime vs PyTorch on a random {check.shape} input: "
             f"max abs diff {check.max_abs_diff:.3g} (tolerance {check.tolerance:g})")
    if args.bioimageio:
        from napari_cryoseg.model.bioimageio import export_bioimageio, validate_package

        out = Path(args.bioimageio).expanduser()
        written = export_bioimageio(model, out, overwrite=args.overwrite)
        echo(f"wrote bioimage.io package {written}")
        if not args.skip_test:
            ok, message = validate_package(written)
            echo(f"bioimage.io validation: {message}", err=not ok)
            if not ok:
                return 1
    return 0
