"""``cryoseg evaluate``: score a model on a folder of images with ground-truth masks."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from napari_cryoseg.cli._args import path_text
from napari_cryoseg.cli._common import (
    ProgressBar,
    add_device_argument,
    add_trust_argument,
    add_tta_argument,
    check_new_file,
    echo,
    load_model_arg,
)
from napari_cryoseg.cli.train import add_classes_arguments, input_files, read_pairs, split_tokens
from napari_cryoseg.core.atomic import atomic_write
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.events import Progress, drain
from napari_cryoseg.engine.inference.evaluate import (
    PLOT_SOFTWARE,
    EvaluationReport,
    evaluate,
    plot_boxplots,
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on images with ground-truth masks",
        description="Segment each image and compare with the mask of the same file name: "
        "recall, precision, Dice, IoU per class and image, pixel error, and means.",
    )
    parser.add_argument("--model", required=True, type=path_text, metavar="MODEL",
                        help="model file (.pt)")
    parser.add_argument("--images", required=True, type=path_text, metavar="DIR",
                        help="folder of images")
    parser.add_argument("--masks", required=True, type=path_text, metavar="DIR",
                        help="folder of integer masks with the same file names")
    add_classes_arguments(parser, names=False)
    parser.add_argument("--json", default=None, type=path_text, metavar="FILE",
                        help="write the report as JSON")
    parser.add_argument("--plot", default=None, type=path_text, metavar="FILE",
                        help="write per-class Dice/IoU box plots (PNG; needs matplotlib)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --json / --plot file")
    add_device_argument(parser)
    add_tta_argument(parser)
    add_trust_argument(parser)
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


def _is_our_report(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"model", "class_names", "images", "mean"} <= set(data)


def _is_our_plot(path: Path) -> bool:
    try:
        from PIL import Image

        with Image.open(path) as image:
            return image.info.get("Software") == PLOT_SOFTWARE
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return False


def _outputs(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """``--json`` and ``--plot``, checked before any image is segmented."""
    inputs = None
    paths: list[Path | None] = []
    for flag, value in (("--json", args.json), ("--plot", args.plot)):
        if value is None:
            paths.append(None)
            continue
        if inputs is None:
            inputs = [("--model", Path(args.model).expanduser()), *input_files(args)]
        ours, what = (_is_our_report, "report") if flag == "--json" else (_is_our_plot, "plot")
        paths.append(check_new_file(value, flag, args.overwrite, inputs, is_ours=ours,
                                    what=what))
    json_path, plot_path = paths
    if plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        raise InputError("--plot needs matplotlib; install it (pip install matplotlib) or "
                         "drop --plot")
    if json_path is not None and plot_path is not None and (
            json_path.resolve() == plot_path.resolve()):
        raise InputError(f"--json and --plot both name {json_path}; give two different files")
    return json_path, plot_path


def _write_plot(report: EvaluationReport, path: Path, overwrite: bool) -> None:
    """The box plots, rendered in a scratch folder, then moved into place atomically."""
    with tempfile.TemporaryDirectory() as scratch:
        png = plot_boxplots(report, Path(scratch) / "plot.png").read_bytes()
    atomic_write(path, lambda f: f.write(png), overwrite=overwrite)


def run(args: argparse.Namespace) -> int:
    """Run ``cryoseg evaluate``."""
    json_path, plot_path = _outputs(args)
    model = load_model_arg(args.model, args.trust_code)
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
    # Written atomically; an existing file is replaced only with --overwrite (checked
    # above, and again at the rename in case one appeared meanwhile).
    if json_path is not None:
        text = (report.to_json() + "\n").encode("utf-8")
        atomic_write(json_path, lambda f: f.write(text), overwrite=args.overwrite)
        echo(f"wrote {json_path}", err=True)
    if plot_path is not None:
        _write_plot(report, plot_path, args.overwrite)
        echo(f"wrote {plot_path}", err=True)
    return 0
