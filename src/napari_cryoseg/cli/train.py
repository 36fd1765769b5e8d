"""``cryoseg train``: train a new U-Net on a folder of images and a folder of masks."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.cli._args import float_range, int_range, path_text, seed_value
from napari_cryoseg.cli._common import (
    MAX_TILE,
    ProgressBar,
    add_device_argument,
    check_model_output,
    check_not_an_input,
    echo,
    format_duration,
)
from napari_cryoseg.cli._settings_flags import (
    add_setting_flag,
    add_setting_flags,
    setting_values,
)
from napari_cryoseg.core.errors import InputError, ModelFileError
from napari_cryoseg.engine.classes import ClassMapping, check_pair
from napari_cryoseg.engine.device import resolve_device
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.training.memory import fit_patch_to_memory
from napari_cryoseg.engine.training.sampling import check_series_pair
from napari_cryoseg.engine.training.train import train
from napari_cryoseg.engine.training.train_settings import TrainConfig
from napari_cryoseg.engine.training.verdict import held_out_score_text
from napari_cryoseg.io import list_images, read_image, read_labels_tiff
from napari_cryoseg.io.pairing import pair_by_stem
from napari_cryoseg.model.checkpoint import (
    ModelFile,
    is_model_payload,
    read_payload,
    save_model,
)
from napari_cryoseg.model.file_checks import check_weights, class_names_field

_TIFF = (".tif", ".tiff")


# --------------------------------------------------------------------------- shared helpers
# (also used by ``cryoseg finetune`` and ``cryoseg evaluate``)


def check_output(path: str | os.PathLike[str], overwrite: bool,
                 inputs: Iterable[tuple[str, Path | None]] = ()) -> Path:
    """Refuse an existing ``--out`` (unless ``overwrite``, and then only an earlier model
    file), an input, or a missing folder, up front.

    Checked before any training so a long run never ends in "file exists".
    """
    return check_model_output(path, overwrite, inputs)


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
    mapping = (ClassMapping.parse(",".join(classes), names) if classes
               else ClassMapping.from_masks(masks, names))
    try:  # the model file's own rule, checked before training rather than at saving
        class_names_field(list(mapping.names), mapping.n_classes)
    except ModelFileError as err:
        raise InputError(f"--class-names: {str(err).replace('field class_names holds ', '')}"
                         ) from None
    return mapping


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


#: The engine's defaults, shown in --help and used when a flag is not given (one source:
#: changing TrainConfig changes the CLI).
DEFAULTS = TrainConfig()
#: Flags generated from the fields' own description (name, help, default, bounds).
_DESCRIBED = ("batch_size", "patch", "lr", "class_weighting", "oversample_rare",
              "temporal_context", "background_subtraction")
_METAVARS = {"oversample_rare": "P", "temporal_context": "K"}
_ALL_DESCRIBED = ("preset", "init", "epochs", "steps", "time_budget_s", "val_fraction",
                  *_DESCRIBED, "tune_threshold")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg train``."""
    parser = subparsers.add_parser(
        "train",
        help="train a new U-Net on images and masks",
        description="Train a U-Net on a folder of images and a folder of masks paired by file "
        "name. The model with the best validation Dice (validation = the last block of files) "
        "is written to --out, and the weights after the last step to <out>-last.pt.",
    )
    parser.add_argument("--images", required=True, type=path_text, metavar="DIR",
                        help="folder of images")
    parser.add_argument("--masks", required=True, type=path_text, metavar="DIR",
                        help="folder of integer masks with the same file names")
    parser.add_argument("--out", required=True, type=path_text, metavar="MODEL",
                        help="model file to write (.pt)")
    add_setting_flags(parser, TrainConfig, ("preset",))
    add_setting_flag(parser, TrainConfig, "init", metavar="backbone|random|MODEL")
    add_classes_arguments(parser)
    length = parser.add_mutually_exclusive_group()
    add_setting_flags(length, TrainConfig, ("epochs", "steps", "time_budget_s"),
                      {"time_budget_s": "S"})
    add_setting_flags(parser, TrainConfig, ("val_fraction",))
    parser.add_argument("--seed", type=seed_value, default=DEFAULTS.seed, metavar="N",
                        help="random seed (default %(default)d)")
    add_device_argument(parser)
    add_setting_flags(parser, TrainConfig, _DESCRIBED, _METAVARS)
    augment = DEFAULTS.augment
    parser.add_argument("--elastic", default=augment.elastic, metavar="PIXELS",
                        type=float_range(0.0, 1000.0, what="a displacement in pixels"),
                        help="elastic deformation: standard deviation in pixels of smooth "
                        "random displacements, as in the U-Net paper (e.g. 10; default "
                        "%(default)g = off)")
    parser.add_argument("--elastic-spacing", default=augment.elastic_spacing,
                        metavar="PIXELS",
                        type=int_range(1, MAX_TILE, what="a distance in pixels"),
                        help="distance between the control points of the elastic "
                        "displacement field; larger is smoother (default %(default)d)")
    parser.add_argument("--sparse", action="store_true",
                        help="the masks are sparse annotations (painted strokes): 0 = not "
                        "annotated (unknown, not learned from); annotated values not listed "
                        "in --classes are background")
    add_setting_flags(parser, TrainConfig, ("tune_threshold",))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (and <out>-last.pt)")
    parser.set_defaults(func=run)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the flags describe (flags not given: its defaults)."""
    augment = replace(DEFAULTS.augment, elastic=args.elastic,
                      elastic_spacing=args.elastic_spacing)
    return replace(DEFAULTS, **setting_values(args, _ALL_DESCRIBED), seed=args.seed,
                   device=args.device, augment=augment)


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
    inputs = input_files(args)
    out = check_output(args.out, args.overwrite, inputs)
    last_out = check_output(last_model_path(out), args.overwrite, inputs)
    if last_out.exists():  # not named by the user: replaced only if it is an earlier model
        check_is_model_file(last_out)
    config = config_from_args(args)  # validated here, before any image is read
    resolve_device(config.device)  # an unavailable device is refused before reading images
    if config.temporal_context or config.background_subtraction != "none":
        names, images, masks, pixel_size = read_series_pairs(args.images, args.masks)
    else:
        names, images, masks, _, pixel_size = read_pairs(args.images, args.masks)
    for target in (out, last_out):  # --overwrite replaces earlier models, never the data
        if target.exists():
            check_not_an_input(target, input_files(args), "--out")
    sparse = getattr(args, "sparse", False)
    if sparse and not split_tokens(args.classes):
        raise InputError("--sparse needs --classes: name the mask values of the classes (the "
                         "other annotated values are background)")
    valid = [mask != 0 for mask in masks] if sparse else None
    mapping = mapping_from_args(args, masks)
    if sparse and 0 in mapping.values:
        raise InputError("--classes 0 with --sparse: mask value 0 marks unpainted pixels, so "
                         "it cannot be a class; give the mask values of painted classes (>= 1)")
    shapes = [image.shape for image in images]
    fitted = fit_patch_to_memory(
        config, config.architecture(mapping.n_classes), shapes,
        what=f"--batch-size {{batch}} with --patch {{patch}} ({config.preset} preset)",
        advice="lower --batch-size or --patch")
    note_patch(config.patch, fitted.patch, shapes, "--patch")
    config = fitted
    echo(f"training on {len(images)} image(s): classes {', '.join(mapping.names)}", err=True)
    bar = ProgressBar("train", unit="steps")
    try:
        result = drain(
            train(images, masks, config, mapping, names=names, pixel_size_nm=pixel_size,
                  model_name=out.stem, valid_masks=valid),
            on_event=bar,
        )
    finally:
        bar.close()
    refuse_diverged(result.best, "--lr")
    save_model(result.best, out, overwrite=args.overwrite)
    echo(f"wrote {out} ({result.steps} steps in {format_duration(result.elapsed_s)}, "
         f"stopped by {result.stop_reason}; kept step {result.best_step})")
    try:
        refuse_diverged(result.last, "--lr")
    except InputError:
        echo(f"note: {last_out} was not written: the weights after step {result.steps} hold "
             "NaN or infinite values (training diverged after the kept step)", err=True)
    else:
        save_model(result.last, last_out, overwrite=args.overwrite)
        echo(f"wrote {last_out} (the weights after step {result.steps})")
    if result.best.config.n_classes == 2 and result.best.threshold != 0.5:
        echo(f"foreground threshold {result.best.threshold:g} (tuned on the validation images)")
    metrics = result.best.provenance.get("metrics", {}).get("validation", {})
    if metrics:
        print_metrics(metrics, "validation:")
    if valid is not None and result.best_dice is not None:
        echo(held_out_score_text(result.best_dice, result.best_step, "annotations"))
    for warning in result.warnings:  # repeated last, where it cannot be missed
        echo(f"WARNING: {warning}", err=True)
    return 0


def check_is_model_file(path: Path) -> None:
    """Refuse to replace ``path`` unless it is a napari-cryoseg model file (any version)."""
    try:
        ours = is_model_payload(read_payload(path))
    except ModelFileError:
        ours = False
    if not ours:
        raise InputError(
            f"{path} exists and is not a napari-cryoseg model file; --overwrite only replaces "
            "earlier models. Move it away or choose another --out"
        )


def input_files(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """``(flag, file)`` of every image and mask file the command reads."""
    found: list[tuple[str, Path | None]] = []
    for flag in ("--images", "--masks", "--valid"):
        folder = getattr(args, flag[2:], None)
        if folder is not None:
            found += [(flag, Path(folder).expanduser())]  # nothing is written inside it
            found += [(flag, path) for path in list_images(folder)]
    return found


def note_patch(asked: int, patch: int, shapes: list[tuple[int, ...]], flag: str) -> None:
    """Tell the user when the memory/patch policy lowered the patch to the largest image."""
    if patch < asked:
        largest = max(max(shape[-2:]) for shape in shapes)
        echo(f"note: {flag} {asked} is larger than the largest image ({largest} px); "
             f"using {patch}", err=True)


def refuse_diverged(model: ModelFile, lr_flag: str) -> None:
    """Refuse to write a model whose weights became NaN/inf (training diverged)."""
    try:
        check_weights(model.config, model.state_dict, source="the trained model")
    except ModelFileError as err:
        raise InputError(f"training diverged: {err}. Nothing was written; lower {lr_flag} "
                         "and train again") from None
