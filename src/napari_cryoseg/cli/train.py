"""``cryoseg train``: train a new U-Net on a folder of images and a folder of masks."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.cli._common import (
    ProgressBar,
    add_device_argument,
    check_positive,
    echo,
    format_duration,
)
from napari_cryoseg.core.errors import InputError, OutputExistsError
from napari_cryoseg.core.temporal import BACKGROUND_MODES
from napari_cryoseg.engine.augment import AugmentConfig
from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.sampling import check_pair, check_series_pair
from napari_cryoseg.engine.train import CLASS_WEIGHTINGS, TrainConfig, train
from napari_cryoseg.io import list_images, read_image, read_labels_tiff
from napari_cryoseg.io.pairing import pair_by_stem
from napari_cryoseg.model.checkpoint import save_model
from napari_cryoseg.model.config import PRESETS

_TIFF = (".tif", ".tiff")


# --------------------------------------------------------------------------- shared helpers
# (also used by ``cryoseg finetune`` and ``cryoseg evaluate``)


def check_output(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse an existing ``--out`` (unless ``overwrite``) or a missing folder, up front.

    Checked before any training so a long run never ends in "file exists".
    """
    out = Path(path).expanduser()
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a model file path such as model.pt")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise InputError(f"folder {out.parent} of --out does not exist; create it first")
    return out


def read_2d(path: Path, *, labels: bool = False) -> np.ndarray:
    """Read one 2D image (or integer label image) as numpy, with clear errors."""
    if labels and path.suffix.lower() in _TIFF:
        data, _ = read_labels_tiff(path)
    else:
        data = np.asarray(read_image(path).data)
    data = np.squeeze(data)
    if data.ndim != 2:
        raise InputError(
            f"'{path}' has shape {tuple(data.shape)}; training and evaluation use single 2D "
            "images (save each section as its own file)"
        )
    if labels and not (data.dtype == np.bool_ or np.issubdtype(data.dtype, np.integer)):
        raise InputError(f"mask '{path}' has {data.dtype} pixels; masks must be integer labels")
    return data


def read_pairs(
    images_dir: str, masks_dir: str, extra_dir: str | None = None
) -> tuple[list[str], list[np.ndarray], list[np.ndarray], list[np.ndarray] | None, float | None]:
    """Images and masks paired by file stem (plus optional ``valid`` masks), all checked.

    Returns
    -------
    names, images, masks, extras (or None), pixel_size_nm (if all images agree, else None)
    """
    image_paths = list_images(images_dir)
    pairs = pair_by_stem(image_paths, list_images(masks_dir))
    extra_pairs = None
    if extra_dir is not None:
        extra_pairs = dict(pair_by_stem(image_paths, list_images(extra_dir)))
    names, images, masks, extras, sizes = [], [], [], [], set()
    for image_path, mask_path in pairs:
        data = read_image(image_path)
        image = np.squeeze(np.asarray(data.data))
        if image.ndim != 2:
            raise InputError(
                f"'{image_path}' has shape {tuple(image.shape)}; use single 2D images "
                "(save each section as its own file)"
            )
        mask = read_2d(mask_path, labels=True)
        check_pair(image, mask, image_path.name)
        if extra_pairs is not None:
            valid = read_2d(extra_pairs[image_path], labels=True)
            check_pair(image, valid, f"{image_path.name} (valid mask)")
            extras.append(valid != 0)
        names.append(image_path.stem)
        images.append(image)
        masks.append(mask)
        sizes.add(None if data.pixel_size_nm is None else round(float(data.pixel_size_nm), 4))
    pixel_size = next(iter(sizes)) if len(sizes) == 1 else None
    return names, images, masks, (extras if extra_pairs is not None else None), pixel_size


def split_tokens(values: list[str] | None) -> list[str] | None:
    """``["1,2", "3"]`` -> ``["1", "2", "3"]`` (comma- or space-separated both work)."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def mapping_from_args(args: argparse.Namespace, masks: list[np.ndarray]) -> ClassMapping:
    """``--classes`` / ``--class-names`` (or every non-zero mask value) as a ClassMapping."""
    classes = split_tokens(getattr(args, "classes", None))
    names = split_tokens(getattr(args, "class_names", None))
    if classes:
        return ClassMapping.parse(",".join(classes), names)
    return ClassMapping.from_masks(masks, names)


def add_classes_arguments(parser: argparse.ArgumentParser, names: bool = True) -> None:
    """``--classes`` (and ``--class-names``)."""
    parser.add_argument(
        "--classes", nargs="+", default=None, metavar="V",
        help="mask values to learn, e.g. '3' (binary: mask == 3) or '1,2,3,4' (value v_i -> "
        "class i); other values are background (default: every non-zero value present)",
    )
    if names:
        parser.add_argument(
            "--class-names", nargs="+", default=None, metavar="NAME",
            help="names of the classes, comma-separated, e.g. cell,ice,'grid bar'",
        )


def print_metrics(metrics: dict[str, float], title: str) -> None:
    """Print ``dice/<class>`` metrics as one line per class on stdout."""
    echo(title)
    for key, value in metrics.items():
        if key.startswith("dice/"):
            echo(f"  {key[5:]:<20} Dice {value:.4f}   IoU {metrics.get('iou/' + key[5:], 0):.4f}")
    if "dice" in metrics:
        echo(f"  {'mean foreground':<20} Dice {metrics['dice']:.4f}")


# --------------------------------------------------------------------------- command


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg train``."""
    parser = subparsers.add_parser(
        "train",
        help="train a new U-Net on images and masks",
        description="Train a U-Net on a folder of images and a folder of masks paired by file "
        "name. The model with the best validation Dice (validation = the last block of files) "
        "is written to --out, and the weights after the last step to <out>-last.pt.",
    )
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of images")
    parser.add_argument("--masks", required=True, metavar="DIR",
                        help="folder of integer masks with the same file names")
    parser.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.pt)")
    parser.add_argument("--preset", default="small", choices=list(PRESETS),
                        help="architecture (default: small)")
    add_classes_arguments(parser)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, default=None, metavar="N",
                        help="passes over the training pixels")
    length.add_argument("--steps", type=int, default=None, metavar="N",
                        help="optimiser steps (default 1000 when no length is given)")
    length.add_argument("--time-budget", type=float, default=None, metavar="S",
                        help="train for this many seconds")
    parser.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="fraction of files (the last block) for validation (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed")
    add_device_argument(parser)
    parser.add_argument("--batch-size", type=int, default=8, metavar="N",
                        help="patches per step (default 8)")
    parser.add_argument("--patch", type=int, default=256, metavar="N",
                        help="patch edge in pixels (default 256)")
    parser.add_argument("--lr", type=float, default=1e-3, metavar="F",
                        help="peak learning rate (default 1e-3)")
    parser.add_argument("--class-weighting", default="none", choices=list(CLASS_WEIGHTINGS),
                        help="cross-entropy class weights (default none)")
    parser.add_argument("--oversample-rare", type=float, default=0.0, metavar="P",
                        help="probability of centring a patch on the rarest class (default 0)")
    parser.add_argument("--temporal-context", type=int, default=0, metavar="K",
                        help="time-lapse training: images and masks are (T, Y, X) stacks and "
                        "frames t-K..t+K are the 2K+1 input channels (default 0 = 2D images)")
    parser.add_argument("--background-subtraction", default="none",
                        choices=list(BACKGROUND_MODES),
                        help="time-lapse only: subtract the per-pixel temporal median of each "
                        "stack before normalisation (stored in the model; default none)")
    # Defaults come from AugmentConfig, so changing the library default changes the CLI's.
    augment = AugmentConfig()
    parser.add_argument("--elastic", type=float, default=augment.elastic, metavar="PIXELS",
                        help="elastic deformation: standard deviation in pixels of smooth "
                        "random displacements, as in the U-Net paper (e.g. 10; default "
                        "%(default)g = off)")
    parser.add_argument("--elastic-spacing", type=int, default=augment.elastic_spacing,
                        metavar="PIXELS",
                        help="distance between the control points of the elastic "
                        "displacement field; larger is smoother (default %(default)d)")
    parser.add_argument("--tune-threshold", action="store_true",
                        help="binary models: store the foreground threshold with the best "
                        "validation Dice (0.3-0.7) in the model instead of 0.5")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (and <out>-last.pt)")
    parser.set_defaults(func=run)
    return parser


def read_series_pairs(
    images_dir: str, masks_dir: str
) -> tuple[list[str], list[np.ndarray], list[np.ndarray], float | None]:
    """(T, Y, X) time-lapse stacks and (T, Y, X) masks paired by file stem, all checked."""
    pairs = pair_by_stem(list_images(images_dir), list_images(masks_dir))
    names, images, masks, sizes = [], [], [], set()
    for image_path, mask_path in pairs:
        data = read_image(image_path)
        series = np.squeeze(np.asarray(data.data))
        if mask_path.suffix.lower() in _TIFF:
            mask = np.squeeze(read_labels_tiff(mask_path)[0])
        else:
            mask = np.squeeze(np.asarray(read_image(mask_path).data))
        if not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.integer)):
            raise InputError(f"mask '{mask_path}' has {mask.dtype} pixels; masks must be "
                             "integer labels")
        check_series_pair(series, mask, image_path.name)
        names.append(image_path.stem)
        images.append(series)
        masks.append(mask)
        sizes.add(None if data.pixel_size_nm is None else round(float(data.pixel_size_nm), 4))
    pixel_size = next(iter(sizes)) if len(sizes) == 1 else None
    return names, images, masks, pixel_size


def last_model_path(out: Path) -> Path:
    """Where ``cryoseg train`` writes the last weights next to the best: ``<stem>-last.pt``."""
    return out.with_name(f"{out.stem}-last{out.suffix or '.pt'}")


def run(args: argparse.Namespace) -> int:
    """Run ``cryoseg train``."""
    out = check_output(args.out, args.overwrite)
    last_out = check_output(last_model_path(out), args.overwrite)
    check_positive(args.time_budget, "--time-budget")
    defaults = AugmentConfig()  # checked here, before any image is read
    augment = AugmentConfig(
        elastic=getattr(args, "elastic", defaults.elastic),
        elastic_spacing=getattr(args, "elastic_spacing", defaults.elastic_spacing),
    )
    context = getattr(args, "temporal_context", 0) or 0
    background = getattr(args, "background_subtraction", "none") or "none"
    if context < 0:
        raise InputError("--temporal-context must be >= 0")
    if context or background != "none":
        names, images, masks, pixel_size = read_series_pairs(args.images, args.masks)
    else:
        names, images, masks, _, pixel_size = read_pairs(args.images, args.masks)
    mapping = mapping_from_args(args, masks)
    config = TrainConfig(
        preset=args.preset, steps=args.steps, epochs=args.epochs,
        time_budget_s=args.time_budget, batch_size=args.batch_size, patch=args.patch,
        lr=args.lr, val_fraction=args.val_fraction, seed=args.seed, device=args.device,
        class_weighting=args.class_weighting, oversample_rare=args.oversample_rare,
        temporal_context=context, background_subtraction=background, augment=augment,
        tune_threshold=getattr(args, "tune_threshold", False),
    )
    echo(f"training on {len(images)} image(s): classes {', '.join(mapping.names)}", err=True)
    bar = ProgressBar("train", unit="steps")
    try:
        result = drain(
            train(images, masks, config, mapping, names=names, pixel_size_nm=pixel_size,
                  model_name=out.stem),
            on_event=bar,
        )
    finally:
        bar.close()
    save_model(result.best, out, overwrite=args.overwrite)
    save_model(result.last, last_out, overwrite=args.overwrite)
    echo(f"wrote {out} ({result.steps} steps in {format_duration(result.elapsed_s)}, "
         f"stopped by {result.stop_reason}; kept step {result.best_step})")
    echo(f"wrote {last_out} (the weights after step {result.steps})")
    if result.best.config.n_classes == 2 and result.best.threshold != 0.5:
        echo(f"foreground threshold {result.best.threshold:g} (tuned on the validation images)")
    metrics = result.best.provenance.get("metrics", {}).get("validation", {})
    if metrics:
        print_metrics(metrics, "validation:")
    for warning in result.warnings:  # repeated last, where it cannot be missed
        echo(f"WARNING: {warning}", err=True)
    return 0
