"""``cryoseg import-weights``: turn a public U_Net state_dict into a model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_cryoseg.cli._args import float_range, int_range, path_text
from napari_cryoseg.cli._common import MAX_TILE, check_model_output, echo
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.model.checkpoint import save_model
from napari_cryoseg.model.import_weights import import_weights_file

#: Defaults stored in the new model when a flag is not given (one source: the dataclasses).
NORMALIZATION = NormalizationConfig()
TILING = TilingConfig()


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg import-weights``."""
    parser = subparsers.add_parser(
        "import-weights",
        help="convert a U_Net state_dict (bigmb/Unet-Segmentation-Pytorch layout) to a model",
        description="Convert a plain PyTorch state_dict of the public U_Net "
        "(Conv1..Conv5, Up5..Up2, Up_conv5..Up_conv2, Conv; upsample or transposed-conv "
        "variant) into a napari-cryoseg model file. The file is loaded with "
        "weights_only=True: no code in it runs. Weights holding NaN or infinite values are "
        "refused.",
    )
    parser.add_argument("state_dict", type=path_text, metavar="STATE_DICT",
                        help="the .pt/.pth weights file")
    parser.add_argument("--out", required=True, type=path_text, metavar="MODEL",
                        help="model file to write")
    parser.add_argument("--classes", default=None, metavar="NAME,NAME,...",
                        help="class names including background, e.g. background,membrane")
    parser.add_argument("--pixel-size", default=None, metavar="NM",
                        type=float_range(0.0, 1e9, low_open=True, what="a pixel size in nm"),
                        help="pixel size (nm) of the images the network was trained on")
    percentile = float_range(0.0, 100.0, what="a percentile")
    parser.add_argument("--norm-low", type=percentile, default=NORMALIZATION.low, metavar="P",
                        help="lower input percentile mapped to 0 (default %(default)g)")
    parser.add_argument("--norm-high", type=percentile, default=NORMALIZATION.high,
                        metavar="P", help="upper input percentile mapped to 1 "
                        "(default %(default)g)")
    parser.add_argument("--tile", default=TILING.tile, metavar="N",
                        type=int_range(16, MAX_TILE, what="a tile edge in pixels"),
                        help="tile size hint stored in the model (default %(default)d)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return parser


def _class_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise InputError(f"--classes {text!r} has an empty name; give names separated by "
                         "commas, e.g. background,membrane")
    return names


def run(args: argparse.Namespace) -> int:
    """Import, save, and print a one-line summary."""
    class_names = _class_names(args.classes)
    normalization = NormalizationConfig(low=args.norm_low, high=args.norm_high,
                                        clip=NORMALIZATION.clip)
    # Checked before loading so a big file is not read for nothing; never the input.
    out = check_model_output(args.out, args.overwrite,
                             [("STATE_DICT", Path(args.state_dict).expanduser())])
    model = import_weights_file(
        args.state_dict,
        class_names=class_names,
        pixel_size_nm=args.pixel_size,
        normalization=normalization,
    )
    model.tiling = TilingConfig(tile=args.tile, overlap=TILING.overlap,
                                batch_size=TILING.batch_size)
    save_model(model, out, overwrite=args.overwrite)
    cfg = model.config
    echo(
        f"{args.state_dict} -> {out}: {model.provenance['source_layout']}, depth {cfg.depth}, "
        f"base {cfg.base_channels}, {cfg.in_channels} input channel(s), classes "
        f"{', '.join(model.class_names)}, {model.n_parameters:,} parameters"
    )
    return 0
