"""``cryoseg finetune``: fine-tune a model on corrected masks and write a new model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_cryoseg.cli._args import path_text, seed_value
from napari_cryoseg.cli._common import (
    ProgressBar,
    add_device_argument,
    echo,
    format_duration,
    load_model_arg,
)
from napari_cryoseg.cli._settings_flags import (
    add_setting_flag,
    add_setting_flags,
    setting_values,
)
from napari_cryoseg.cli.train import (
    add_classes_arguments,
    check_output,
    input_files,
    note_patch,
    print_metrics,
    read_pairs,
    refuse_diverged,
    split_tokens,
)
from napari_cryoseg.core.errors import InputError, ModelFileError
from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.training.augment import AugmentConfig
from napari_cryoseg.engine.training.finetune import correction_targets, finetune
from napari_cryoseg.engine.training.finetune_settings import FinetuneConfig
from napari_cryoseg.engine.training.memory import fit_patch_to_memory
from napari_cryoseg.io import list_images, read_image
from napari_cryoseg.model.checkpoint import check_savable, save_model
from napari_cryoseg.model.heads import add_classes

#: The engine's defaults, shown in --help and used when a flag is not given.
DEFAULTS = FinetuneConfig()
#: Flags generated from the fields' own description (name, help, default, bounds).
_DESCRIBED = ("freeze_encoder", "lr", "holdout_fraction", "holdout_layout",
              "adapt_batchnorm", "adapt_below", "focus_errors", "keep_elsewhere",
              "head_lr_factor")
_METAVARS = {"adapt_below": "DICE", "focus_errors": "P", "keep_elsewhere": "P"}
_ALL_DESCRIBED = ("steps", "time_budget_s", *_DESCRIBED, "parent_blend")


def _added_class(text: str, default_value: int) -> tuple[str, int]:
    """``--add-class NAME[=VALUE]`` -> (name, mask value)."""
    name, _, value = text.partition("=")
    name = name.strip()
    if not name:
        raise InputError(f"--add-class {text!r}: give a class name, e.g. --add-class lamella=5")
    if not value.strip():
        return name, default_value
    try:
        number = int(value)
    except ValueError:
        raise InputError(f"--add-class {text!r}: the mask value must be a whole number, e.g. "
                         "lamella=5") from None
    if number < 1:
        raise InputError(f"--add-class {text!r}: the mask value must be >= 1 (0 is background)")
    return name, number


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
    add_setting_flags(length, FinetuneConfig, ("steps", "time_budget_s"),
                      {"time_budget_s": "S"})
    add_classes_arguments(parser, names=False)
    add_device_argument(parser)
    add_setting_flags(parser, FinetuneConfig, _DESCRIBED, _METAVARS)
    add_setting_flag(parser, FinetuneConfig, "parent_blend", metavar="W",
                     words={"auto": None})
    parser.add_argument("--unlabelled", default=None, type=path_text, metavar="DIR",
                        help="folder of more images of the same kind, without masks: used to "
                        "re-estimate the BatchNorm statistics and to compare the new model "
                        "with --model on pixels nobody corrected")
    parser.add_argument("--batchnorm-stats", choices=("fixed", "update"),
                        default="fixed" if DEFAULTS.freeze_batchnorm else "update",
                        help="while the weights train, keep the BatchNorm statistics fixed or "
                        "update them from each batch (default %(default)s)")
    parser.add_argument("--no-augment", action="store_true",
                        help="no flips/rotations of the training patches")
    parser.add_argument("--add-class", action="append", default=[], metavar="NAME[=VALUE]",
                        help="add a class the model does not know yet (repeat for more): its "
                        "pixels have mask value VALUE (default: the next class index); the "
                        "model's other classes keep what they learnt")
    parser.add_argument("--seed", type=seed_value, default=DEFAULTS.seed, metavar="N",
                        help=f"random seed (default {DEFAULTS.seed})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return parser


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The :class:`FinetuneConfig` the flags describe (flags not given: its defaults)."""
    return FinetuneConfig(**setting_values(args, _ALL_DESCRIBED), device=args.device,
                          seed=args.seed, freeze_batchnorm=args.batchnorm_stats == "fixed",
                          **({"augment": AugmentConfig.none()} if args.no_augment else {}))


def run(args: argparse.Namespace) -> int:
    """Run ``cryoseg finetune``."""
    # never an input: the model, an image or mask, anything in the --unlabelled folder
    unlabelled_input = [("--unlabelled", Path(args.unlabelled).expanduser())] if (
        args.unlabelled) else []
    out = check_output(args.out, args.overwrite, [("--model", Path(args.model).expanduser()),
                                                  *input_files(args), *unlabelled_input])
    config = config_from_args(args)  # validated before the model and images are read
    model = load_model_arg(args.model)
    if getattr(model, "foreign", False):  # before --add-class touches its (absent) head
        raise InputError(model.not_finetunable)
    added = [_added_class(text, model.config.n_classes + i)
             for i, text in enumerate(args.add_class)]
    names, images, masks, valid, _ = read_pairs(args.images, args.masks, args.valid)
    classes = split_tokens(args.classes)
    if added:
        old_values = classes or [str(v) for v in range(1, model.config.n_classes)]
        model = add_classes(model, [name for name, _ in added])
        try:  # refused now, not after training: the file must load again later
            check_savable(model)
        except ModelFileError as err:
            raise InputError(f"--add-class: {str(err).split(': ', 1)[-1]}") from None
        classes = [*old_values, *(str(value) for _, value in added)]
        echo(f"added class(es) {', '.join(n for n, _ in added)}: the model now has "
             f"{model.config.n_classes - 1} foreground classes", err=True)
    mapping = ClassMapping.parse(",".join(classes), None) if classes else None
    if mapping is not None and mapping.n_classes == model.config.n_classes:
        mapping = ClassMapping(mapping.values, tuple(model.class_names))
    # the masks are checked against the model's classes before anything is printed
    correction_targets(model, images, masks, valid, mapping, names)
    shapes = [image.shape for image in images]
    fitted = fit_patch_to_memory(config, model.config, shapes,
                                 what="fine-tuning {batch} patches of {patch} px",
                                 advice="use fewer or smaller images, or another --device")
    note_patch(config.patch, fitted.patch, shapes, "the fine-tuning patch")
    config = fitted
    unlabelled = [read_image(p).data for p in list_images(args.unlabelled)] if (
        args.unlabelled) else []
    bar = ProgressBar("finetune", unit="steps")
    try:
        result = drain(
            finetune(model, images, masks, valid, config, class_mapping=mapping, names=names,
                     unlabelled=unlabelled),
            on_event=bar,
        )
    finally:
        bar.close()
    refuse_diverged(result.model, "--lr")
    save_model(result.model, out, overwrite=args.overwrite)
    echo(f"wrote {out} ({result.steps} steps in {format_duration(result.elapsed_s)}, "
         f"{result.n_corrected_pixels:,} corrected pixels)")
    echo(result.message)
    report = result.change_report
    if report is not None and report.pixels:
        echo(f"beyond the corrections (--unlabelled images and unreviewed pixels): "
             f"{report.describe()}")
        if result.flagged:
            echo(f"warning: {report.verdict}: the new model changes the other images more "
                 "(or otherwise) than the corrections did; compare it with the parent on "
                 "more of your images before using it", err=True)
    if result.before:
        print_metrics(result.before, "held-out corrections, before:")
        print_metrics(result.after, "held-out corrections, after:")
    return 0
