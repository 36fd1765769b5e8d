"""``cryoseg finetune``: fine-tune a model on corrected masks and write a new model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_cryoseg.cli._args import float_range, int_range, path_text, seed_value
from napari_cryoseg.cli._common import (
    ProgressBar,
    add_device_argument,
    check_not_an_input,
    echo,
    format_duration,
    load_model_arg,
)
from napari_cryoseg.cli.train import (
    MAX_STEPS,
    add_classes_arguments,
    check_output,
    input_files,
    print_metrics,
    read_pairs,
    refuse_diverged,
    split_tokens,
)
from napari_cryoseg.engine.data import ClassMapping
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.finetune import HOLDOUT_LAYOUTS, FinetuneConfig, finetune
from napari_cryoseg.model.checkpoint import save_model

#: The engine's defaults, shown in --help and used when a flag is not given.
DEFAULTS = FinetuneConfig()


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg finetune``."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on corrected masks",
        description="Fine-tune a copy of a model on images with corrected masks (paired by "
        "file name). Part of the corrections is held out; the new model is only kept if it "
        "beats the input model there (else the input weights are written unchanged).",
    )
    parser.add_argument("--model", required=True, type=path_text, metavar="MODEL",
                        help="model file to start from")
    parser.add_argument("--images", required=True, type=path_text, metavar="DIR",
                        help="folder of images")
    parser.add_argument("--masks", required=True, type=path_text, metavar="DIR",
                        help="folder of corrected masks with the same file names")
    parser.add_argument("--valid", default=None, type=path_text, metavar="DIR",
                        help="folder of masks of the reviewed pixels (non-zero = reviewed); "
                        "only those pixels are learned from (default: all pixels)")
    parser.add_argument("--out", required=True, type=path_text, metavar="MODEL2",
                        help="model file to write (a new file: never the --model itself)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", default=DEFAULTS.steps, metavar="N",
                        type=int_range(1, MAX_STEPS, what="a number of steps"),
                        help="optimiser steps (default 200 when no time budget is given)")
    length.add_argument("--time-budget", default=DEFAULTS.time_budget_s, metavar="S",
                        type=float_range(0.0, None, low_open=True,
                                         what="a time in seconds"),
                        help="fine-tune for this many seconds")
    add_classes_arguments(parser, names=False)
    add_device_argument(parser)
    parser.add_argument("--freeze-encoder", action="store_true",
                        default=DEFAULTS.freeze_encoder,
                        help="train only the decoder (less forgetting with few corrections)")
    parser.add_argument("--lr", default=DEFAULTS.lr, metavar="F",
                        type=float_range(0.0, 1.0, low_open=True, what="a learning rate"),
                        help=f"peak learning rate (default {DEFAULTS.lr:g})")
    parser.add_argument("--holdout-fraction", default=DEFAULTS.holdout_fraction, metavar="F",
                        type=float_range(0.0, 1.0, high_open=True, what="a fraction"),
                        help="share of the corrections held out to check the new model "
                        f"(default {DEFAULTS.holdout_fraction:g}; 0 = no check)")
    parser.add_argument("--holdout-layout", choices=HOLDOUT_LAYOUTS,
                        default=DEFAULTS.holdout_layout,
                        help="with 1-3 images, hold out scattered 64-px blocks (default) or "
                        "the bottom rows of each image")
    parser.add_argument("--parent-blend", default=DEFAULTS.parent_blend, metavar="W",
                        type=float_range(0.0, 1.0, low_open=True, what="a weight"),
                        help="with 1-3 images, return parent + W * (fine-tuned "
                        f"- parent) (default {DEFAULTS.parent_blend:g}; 1 = no averaging)")
    parser.add_argument("--seed", type=seed_value, default=DEFAULTS.seed, metavar="N",
                        help=f"random seed (default {DEFAULTS.seed})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return parser


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The :class:`FinetuneConfig` the flags describe (flags not given: its defaults)."""
    return FinetuneConfig(steps=args.steps, time_budget_s=args.time_budget,
                          freeze_encoder=args.freeze_encoder, device=args.device,
                          lr=args.lr, holdout_fraction=args.holdout_fraction,
                          holdout_layout=args.holdout_layout, seed=args.seed,
                          parent_blend=args.parent_blend)


def run(args: argparse.Namespace) -> int:
    """Run ``cryoseg finetune``."""
    out = check_output(args.out, args.overwrite)
    if out.exists():  # --overwrite replaces an earlier result, never an input
        check_not_an_input(out, [("--model", Path(args.model).expanduser()),
                                 *input_files(args)], "--out")
    config = config_from_args(args)  # validated before the model and images are read
    model = load_model_arg(args.model)
    names, images, masks, valid, _ = read_pairs(args.images, args.masks, args.valid)
    classes = split_tokens(args.classes)
    mapping = ClassMapping.parse(",".join(classes), None) if classes else None
    if mapping is not None and mapping.n_classes == model.config.n_classes:
        mapping = ClassMapping(mapping.values, tuple(model.class_names))
    bar = ProgressBar("finetune", unit="steps")
    try:
        result = drain(
            finetune(model, images, masks, valid, config, class_mapping=mapping, names=names),
            on_event=bar,
        )
    finally:
        bar.close()
    refuse_diverged(result.model, "--lr")
    save_model(result.model, out, overwrite=args.overwrite)
    echo(f"wrote {out} ({result.steps} steps in {format_duration(result.elapsed_s)}, "
         f"{result.n_corrected_pixels:,} corrected pixels)")
    echo(result.message)
    if result.before:
        print_metrics(result.before, "held-out corrections, before:")
        print_metrics(result.after, "held-out corrections, after:")
    return 0
