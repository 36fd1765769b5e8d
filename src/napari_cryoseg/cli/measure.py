"""``cryoseg measure``: per-object measurements of a label TIFF as a CSV table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.cli._common import echo
from napari_cryoseg.core.classify import ObjectClassifier
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.measure import FEATURE_COLUMNS, feature_matrix, measure_objects, n_rows
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
    parser.add_argument("--labels", required=True, metavar="TIFF",
                        help="label TIFF (e.g. written by cryoseg segment)")
    parser.add_argument("--image", default=None, metavar="IMAGE",
                        help="the intensity image (same shape) for intensity features")
    parser.add_argument("--min-size", type=int, default=0, metavar="N",
                        help="skip objects smaller than N pixels (default 0)")
    parser.add_argument("--max-size", type=int, default=None, metavar="N",
                        help="skip objects larger than N pixels")
    parser.add_argument("--pixel-size", type=float, default=None, metavar="NM",
                        help="pixel size in nm (default: from the labels or image file)")
    parser.add_argument("--classifier", default=None, metavar="NPZ",
                        help="object classifier (.npz saved from the napari Objects "
                        "section): adds a 'predicted class' column")
    parser.add_argument("--out", default=None, metavar="CSV",
                        help="CSV to write (default: <labels stem>_objects.csv beside it)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``cryoseg measure``."""
    from napari_cryoseg.core.measure import write_csv

    labels_path = Path(args.labels).expanduser()
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
    if args.min_size < 0:
        raise InputError("--min-size must be >= 0")
    out = Path(args.out).expanduser() if args.out else labels_path.with_name(
        f"{labels_path.stem.removesuffix('_labels')}_objects.csv")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it")
    table = measure_objects(labels, image, pixel_size_nm=px,
                            class_names=read_labels_class_names(labels_path),
                            min_size=args.min_size, max_size=args.max_size)
    extra = None
    if args.classifier:
        clf = ObjectClassifier.load(Path(args.classifier).expanduser())
        extra = {"predicted class": clf.predict(feature_matrix(table, clf.feature_names))}
    elif image is None:
        echo("no --image: intensity columns are empty", err=True)
    write_csv(table, out, overwrite=args.overwrite, extra=extra)
    echo(f"wrote {out}: {n_rows(table)} objects"
         f"{f' ({len(FEATURE_COLUMNS)} features each)' if n_rows(table) else ''}")
    return 0
