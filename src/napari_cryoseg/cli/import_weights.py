"""``cryoseg import-weights``: turn a public U_Net state_dict into a model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_cryoseg.cli._common import check_positive, echo
from napari_cryoseg.core.errors import OutputExistsError
from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.model.checkpoint import save_model
from napari_cryoseg.model.import_weights import import_weights_file


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg import-weights``."""
    parser = subparsers.add_parser(
        "import-weights",
        help="convert a U_Net state_dict (bigmb/Unet-Segmentation-Pytorch layout) to a model",
        description="Convert a plain PyTorch state_dict of the public U_Net "
        "(Conv1..Conv5, Up5..Up2, Up_conv5..Up_conv2, Conv; upsample or transposed-conv "
        "variant) into a napari-cryoseg model file. The file is loaded with "
        "weights_only=True: no code in it runs.",
    )
    parser.add_argument("state_dict", metavar="STATE_DICT", help="the .pt/.pth weights file")
    parser.add_argument("--out", required=True, metavar="MODEL", help="model file to write")
    parser.add_argument("--classes", default=None, metavar="NAME,NAME,...",
                        help="class names including background, e.g. background,membrane")
    parser.add_argument("--pixel-size", type=float, default=None, metavar="NM",
                        help="pixel size (nm) of the images the network was trained on")
    parser.add_argument("--norm-low", type=float, default=1.0, metavar="P",
                        help="lower input percentile mapped to 0 (default 1)")
    parser.add_argument("--norm-high", type=float, default=99.0, metavar="P",
                        help="upper input percentile mapped to 1 (default 99)")
    parser.add_argument("--tile", type=int, default=None, metavar="N",
                        help="tile size hint stored in the model (default 512)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Import, save, and print a one-line summary."""
    class_names = None
    if args.classes is not None:
        class_names = [name.strip() for name in args.classes.split(",")]
    check_positive(args.pixel_size, "--pixel-size")
    normalization = NormalizationConfig(low=args.norm_low, high=args.norm_high)
    out = Path(args.out).expanduser()
    if out.exists() and not args.overwrite:
        # Checked before loading so a big file is not read for nothing.
        raise OutputExistsError(
            f"'{out}' already exists; pass --overwrite (or choose another name)"
        )
    model = import_weights_file(
        args.state_dict,
        class_names=class_names,
        pixel_size_nm=args.pixel_size,
        normalization=normalization,
    )
    if args.tile is not None:
        model.tiling = TilingConfig(tile=args.tile)
    save_model(model, out, overwrite=args.overwrite)
    cfg = model.config
    echo(
        f"{args.state_dict} -> {out}: {model.provenance['source_layout']}, depth {cfg.depth}, "
        f"base {cfg.base_channels}, {cfg.in_channels} input channel(s), classes "
        f"{', '.join(model.class_names)}, {model.n_parameters:,} parameters"
    )
    return 0
