"""Pairing image files with mask files by name (training and evaluation folders)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from napari_cryoseg.core.errors import InputError

# Suffixes stripped before pairing by stem, longest first ("a.ome.tif" pairs with "a.tif").
_STEM_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".mrcs", ".mrc", ".map", ".st")


def _pair_stem(path: Path) -> str:
    name = path.name
    lower = name.lower()
    for suffix in _STEM_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def pair_by_stem(
    image_paths: Sequence[str | os.PathLike[str]], mask_paths: Sequence[str | os.PathLike[str]]
) -> list[tuple[Path, Path]]:
    """Pair images with masks of the same file stem (``a.tif`` with ``a.tif``/``a.tiff``).

    Returns
    -------
    list of (image_path, mask_path)
        In the order of ``image_paths``.

    Raises
    ------
    InputError
        An image has no mask, a mask has no image, or a stem occurs twice.
    """
    images = [Path(p) for p in image_paths]
    masks: dict[str, Path] = {}
    for path in (Path(p) for p in mask_paths):
        stem = _pair_stem(path)
        if stem in masks:
            raise InputError(f"two masks share the name {stem!r}: {masks[stem].name}, {path.name}")
        masks[stem] = path
    pairs, missing, seen = [], [], set()
    for image in images:
        stem = _pair_stem(image)
        if stem in seen:
            raise InputError(f"two images share the name {stem!r}; rename one of them")
        seen.add(stem)
        if stem in masks:
            pairs.append((image, masks[stem]))
        else:
            missing.append(image.name)
    if missing:
        where = f" in {masks[next(iter(masks))].parent}" if masks else ""
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputError(
            f"no mask{where} with the same name as image(s) {', '.join(missing[:3])}{more}; "
            "masks are paired with images by file name"
        )
    orphans = sorted(p.name for s, p in masks.items() if s not in seen)
    if orphans:
        more = f" and {len(orphans) - 3} more" if len(orphans) > 3 else ""
        raise InputError(
            f"mask(s) {', '.join(orphans[:3])}{more} have no image with the same name; "
            "masks are paired with images by file name"
        )
    return pairs
