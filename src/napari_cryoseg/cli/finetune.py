"""``cryoseg finetune``: fine-tune a model on corrected masks and write a new model file."""

from __future__ import annotations

import argparse
from typing import Any

from napari_cryoseg.cli._common import (
    ProgressBar,
    add_device_argument,
    check_positive,
    echo,
    format_duration,
    load_model_arg,
)
from napari_cryoseg.cli.train import (
    add_classes_arguments,
    check_output,
    print_metrics,
    read_pairs,
    split_tokens,
)
from napari_cryoseg.engine.augment import AugmentConfig
from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.finetune import ADAPT_MODES, FinetuneConfig, finetune
from napari_cryoseg.engine.holdout import HOLDOUT_LAYOUTS
from napari_cryoseg.io import list_images, read_image
from napari_cryoseg.model.checkpoint import save_model

#: The engine's defaults, shown in --help and used when a flag is not given.
DEFAULTS = FinetuneConfig()


def _blend(text: str) -> float | None:
    """``--parent-blend``: 'auto' (None) or a weight in (0, 1]."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither 'auto' nor a number in (0, 1]") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not in (0, 1]")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg finetune``."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on corrected masks",
        description="Fine-tune a copy of a model on images with corrected masks (paired by "
        "file name). Part of the corrections is held out; the new model is only kept if it "
        "beats the input model there (else the input weights are written unchanged).",
    )
    parser.add_argument("--model", required=True, metavar="MODEL", help="model file to start from")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of images")
    parser.add_argument("--masks", required=True, metavar="DIR",
                        help="folder of corrected masks with the same file names")
    parser.add_argument("--valid", default=None, metavar="DIR",
                        help="folder of masks of the reviewed pixels (non-zero = reviewed); "
                        "only those pixels are learned from (default: all pixels)")
    parser.add_argument("--out", required=True, metavar="MODEL2", help="model file to write")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, metavar="N",
                        help="optimiser steps (default 200 when no time budget is given)")
    length.add_argument("--time-budget", type=float, default=None, metavar="S",
                        help="fine-tune for this many seconds")
    add_classes_arguments(parser, names=False)
    add_device_argument(parser)
    parser.add_argument("--freeze-encoder", action="store_true",
                        help="train only the decoder (less forgetting with few corrections)")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, metavar="F",
                        help=f"peak learning rate (default {DEFAULTS.lr:g})")
    parser.add_argument("--holdout-fraction", type=float,
                        default=DEFAULTS.holdout_fraction, metavar="F",
                        help="share of the corrections held out to check the new model "
                        f"(default {DEFAULTS.holdout_fraction:g}; 0 = no check)")
    parser.add_argument("--holdout-layout", choices=HOLDOUT_LAYOUTS,
                        default=DEFAULTS.holdout_layout,
                        help="with 1-3 images, hold out scattered 64-px blocks (default) or "
                        "the bottom rows of each image")
    parser.add_argument("--parent-blend", type=_blend, default=DEFAULTS.parent_blend,
                        metavar="W", help="return start + W * (fine-tuned - start): 'auto' "
                        "chooses W on the held-out corrections (default), a number in (0, 1] "
                        "fixes it (1 = no averaging)")
    parser.add_argument("--adapt-batchnorm", choices=ADAPT_MODES,
                        default=DEFAULTS.adapt_batchnorm,
                        help="re-estimate BatchNorm statistics on your images first: 'auto' "
                        "keeps them when the held-out corrections say so (default)")
    parser.add_argument("--unlabelled", default=None, metavar="DIR",
                        help="folder of more images of the same kind, without masks: used to "
                        "re-estimate the BatchNorm statistics")
    parser.add_argument("--focus-errors", type=float, default=DEFAULTS.focus_errors,
                        metavar="P", help="share of patches placed where the input model is "
                        f"wrong (default {DEFAULTS.focus_errors:g})")
    parser.add_argument("--head-lr-factor", type=float, default=DEFAULTS.head_lr_factor,
                        metavar="F", help="decoder and head learn F times faster than the "
                        f"encoder (default {DEFAULTS.head_lr_factor:g})")
    parser.add_argument("--no-augment", action="store_true",
                        help="no flips/rotations of the training patches")
    parser.add_argument("--train-batchnorm", action="store_true",
                        help="update BatchNorm statistics while training (default: fixed)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``cryoseg finetune``."""
    out = check_output(args.out, args.overwrite)
    check_positive(args.time_budget, "--time-budget")
    model = load_model_arg(args.model)
    names, images, masks, valid, _ = read_pairs(args.images, args.masks, args.valid)
    classes = split_tokens(args.classes)
    mapping = ClassMapping.parse(",".join(classes), None) if classes else None
    if mapping is not None and mapping.n_classes == model.config.n_classes:
        mapping = ClassMapping(mapping.values, tuple(model.class_names))
    unlabelled = [read_image(p).data for p in list_images(args.unlabelled)] if (
        args.unlabelled) else []
    config = FinetuneConfig(steps=args.steps, time_budget_s=args.time_budget,
                            freeze_encoder=args.freeze_encoder, device=args.device,
                            lr=args.lr, holdout_fraction=args.holdout_fraction,
                            holdout_layout=args.holdout_layout, seed=args.seed,
                            parent_blend=args.parent_blend,
                            adapt_batchnorm=args.adapt_batchnorm,
                            focus_errors=args.focus_errors,
                            head_lr_factor=args.head_lr_factor,
                            freeze_batchnorm=not args.train_batchnorm,
                            **({"augment": AugmentConfig.none()} if args.no_augment else {}))
    bar = ProgressBar("finetune", unit="steps")
    try:
        result = drain(
            finetune(model, images, masks, valid, config, class_mapping=mapping, names=names,
                     unlabelled=unlabelled),
            on_event=bar,
        )
    finally:
        bar.close()
    save_model(result.model, out, overwrite=args.overwrite)
    echo(f"wrote {out} ({result.steps} steps in {format_duration(result.elapsed_s)}, "
         f"{result.n_corrected_pixels:,} corrected pixels)")
    echo(result.message)
    if result.before:
        print_metrics(result.before, "held-out corrections, before:")
        print_metrics(result.after, "held-out corrections, after:")
    return 0
