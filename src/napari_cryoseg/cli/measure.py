"""``cryoseg measure``: per-object measurements of a label TIFF as a CSV table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.cli._args import float_range, int_range, path_text
from napari_cryoseg.cli._common import check_new_file, echo
from napari_cryoseg.core.classify import ObjectClassifier
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.measure import (
    COLUMNS,
    FEATURE_COLUMNS,
    feature_matrix,
    measure_objects,
    n_rows,
)
from napari_cryoseg.core.object_settings import ObjectSettings
from napari_cryoseg.core.setting import about
from napari_cryoseg.io import read_image, read_labels_class_names, read_labels_tiff


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg measure``."""
    parser = subparsers.add_parser(
        "measure",
        help="measure objects (size, shape, intensity) of a label image into a CSV",
        description="Split a label TIFF into objects (connected components of each class) "
        "and write one CSV row per object: area (px, nm²), equivalent diameter, perimeter, "
        "circularity, eccentricity, mean/std intensity, radial ring intensities, centroid.",
    )
    parser.add_argument("--labels", required=True, type=path_text, metavar="TIFF",
                        help="label TIFF (e.g. written by cryoseg segment)")
    parser.add_argument("--image", default=None, type=path_text, metavar="IMAGE",
                        help="the intensity image (same shape) for intensity features")
    size = int_range(0, None, what="a number of pixels")
    min_size = about(ObjectSettings, "min_size")  # the dock's Objects section shares it
    parser.add_argument(min_size.flag, type=int_range(int(min_size.min), None,
                                                      what=min_size.what),
                        default=ObjectSettings().min_size, metavar="N",
                        help=f"{min_size.help} (default %(default)d)")
    parser.add_argument("--max-size", type=size, default=None, metavar="N",
                        help="skip objects larger than N pixels")
    parser.add_argument("--pixel-size", default=None, metavar="NM",
                        type=float_range(0.0, 1e9, low_open=True, what="a pixel size in nm"),
                        help="pixel size in nm (default: from the labels or image file)")
    parser.add_argument("--classifier", default=None, type=path_text, metavar="NPZ",
                        help="object classifier (.npz saved from the napari Objects "
                        "section): adds a 'predicted class' column")
    parser.add_argument("--out", default=None, type=path_text, metavar="CSV",
                        help="CSV to write (default: <labels stem>_objects.csv beside it)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return parser


def _check_is_measurement_table(path: Path) -> None:
    """Refuse to replace ``path`` unless it starts with this command's CSV header."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = f.readline()
    except (OSError, UnicodeDecodeError):
        header = ""
    if not header.startswith(",".join(COLUMNS[:3])):
        raise InputError(
            f"{path} exists and is not a table written by cryoseg measure; --overwrite only "
            "replaces earlier tables. Move it away or pass --out"
        )


def run(args: argparse.Namespace) -> int:
    """Run ``cryoseg measure``."""
    from napari_cryoseg.core.measure import write_csv

    labels_path = Path(args.labels).expanduser()
    out = Path(args.out).expanduser() if args.out else labels_path.with_name(
        f"{labels_path.stem.removesuffix('_labels')}_objects.csv")
    inputs = [("--labels", labels_path)] + [
        (flag, Path(value).expanduser()) for flag, value in
        (("--image", args.image), ("--classifier", args.classifier)) if value]
    out = check_new_file(out, "--out", args.overwrite, inputs)
    if args.out is None and out.exists():  # a name we chose: replace only our own table
        _check_is_measurement_table(out)
    if args.max_size is not None and args.max_size < args.min_size:
        raise InputError(f"--max-size {args.max_size} is below --min-size {args.min_size}; "
                         "no object could be kept")
    # A classifier is checked before the (possibly long) measuring starts.
    clf = ObjectClassifier.load(Path(args.classifier).expanduser()) if args.classifier else None
    labels, px = read_labels_tiff(labels_path)
    labels = np.squeeze(labels)
    image = None
    if args.image:
        data = read_image(Path(args.image).expanduser())
        image = np.squeeze(np.asarray(data.data))
        px = px or data.pixel_size_nm
        if image.shape != labels.shape:
            raise InputError(
                f"--image has shape {image.shape} but --labels has shape {labels.shape}")
    if args.pixel_size is not None:
        px = args.pixel_size
    table = measure_objects(labels, image, pixel_size_nm=px,
                            class_names=read_labels_class_names(labels_path),
                            min_size=args.min_size, max_size=args.max_size)
    extra = None
    if clf is not None:
        extra = {"predicted class": clf.predict(feature_matrix(table, clf.feature_names))}
    elif image is None:
        echo("no --image: intensity columns are empty", err=True)
    write_csv(table, out, overwrite=args.overwrite, extra=extra)
    echo(f"wrote {out}: {n_rows(table)} objects"
         f"{f' ({len(FEATURE_COLUMNS)} features each)' if n_rows(table) else ''}")
    return 0
