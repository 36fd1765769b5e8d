"""``cryoseg evaluate``: score a model on a folder of images with ground-truth masks."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from napari_cryoseg.cli._common import (
    ProgressBar,
    add_device_argument,
    add_tta_argument,
    echo,
    load_model_arg,
)
from napari_cryoseg.cli.train import add_classes_arguments, read_pairs, split_tokens
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.evaluate import EvaluationReport, evaluate, plot_boxplots
from napari_cryoseg.engine.events import Progress, drain


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on images with ground-truth masks",
        description="Segment each image and compare with the mask of the same file name: "
        "recall, precision, Dice, IoU per class and image, pixel error, and means.",
    )
    parser.add_argument("--model", required=True, metavar="MODEL", help="model file (.pt)")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of images")
    parser.add_argument("--masks", required=True, metavar="DIR",
                        help="folder of integer masks with the same file names")
    add_classes_arguments(parser, names=False)
    parser.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON")
    parser.add_argument("--plot", default=None, metavar="FILE",
                        help="write per-class Dice/IoU box plots (PNG; needs matplotlib)")
    add_device_argument(parser)
    add_tta_argument(parser)
    parser.set_defaults(func=run)
    return parser


def _fmt(value: float) -> str:
    return "   n/a" if value is None or math.isnan(value) else f"{value:6.4f}"


def print_report(report: EvaluationReport) -> None:
    """Per-image mean foreground Dice, then per-class means, on stdout."""
    for image in report.images:
        echo(f"{image.name:<30} Dice {_fmt(image.mean_foreground_dice)}  "
             f"pixel error {_fmt(image.pixel_error)}")
    mean = report.mean
    echo(f"{'class':<20} {'recall':>7} {'precision':>9} {'Dice':>7} {'IoU':>7}")
    for name in report.class_names:
        s = mean["classes"][name]
        echo(f"{name:<20} {_fmt(s['recall']):>7} {_fmt(s['precision']):>9} "
             f"{_fmt(s['dice']):>7} {_fmt(s['iou']):>7}")
    echo(f"mean foreground Dice {_fmt(mean['mean_foreground_dice'])}, "
         f"pixel error {_fmt(mean['pixel_error'])} ({len(report.images)} images)")


def _check_writable(path: str | None, flag: str) -> Path | None:
    if path is None:
        return None
    out = Path(path).expanduser()
    if not out.parent.is_dir():
        raise InputError(f"folder {out.parent} of {flag} does not exist; create it first")
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``cryoseg evaluate``."""
    json_path = _check_writable(args.json, "--json")
    plot_path = _check_writable(args.plot, "--plot")
    model = load_model_arg(args.model)
    names, images, masks, _, _ = read_pairs(args.images, args.masks)
    classes = split_tokens(args.classes)
    mapping = None
    if classes:
        mapping = ClassMapping.parse(",".join(classes), list(model.class_names[1:])
                                     if len(model.class_names) == len(classes) + 1 else None)
    bar = ProgressBar("evaluate", unit="images")
    try:
        report = drain(
            evaluate(model, images, masks, names, mapping, device=args.device, tta=args.tta),
            on_event=lambda e: bar(e) if isinstance(e, Progress) and e.stage == "evaluate"
            else None,
        )
    finally:
        bar.close()
    print_report(report)
    if json_path is not None:
        report.to_json(json_path)
        echo(f"wrote {json_path}", err=True)
    if plot_path is not None:
        plot_boxplots(report, plot_path)
        echo(f"wrote {plot_path}", err=True)
    return 0
