"""Holding out part of the user's corrections to check a fine-tuned model.

With four or more corrected images, whole images are held out (contiguous, as
neighbouring sections are correlated). With fewer, square blocks scattered over each
image are held out (or its bottom rows): the fine-tuned weights are only kept when they
beat the parent on these held-out pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Ways to hold out part of one to three corrected images (see ``holdout_layout``).
HOLDOUT_LAYOUTS = ("blocks", "rows")
#: Edge of the scattered held-out blocks, in pixels.
HOLDOUT_BLOCK = 64
#: Pixels around each held-out block that do not train either: a membrane or an edge that
#: crosses the block's border would otherwise be learnt one pixel away from where it is
#: scored, flattering the fine-tuned model against its parent.
HOLDOUT_GUARD = 4


def _row_cut(valid: np.ndarray | None, height: int, fraction: float) -> int:
    """First held-out row: the bottom rows holding ``fraction`` of the reviewed pixels."""
    if valid is None:
        cut = int(round(height * (1 - fraction)))
    else:
        per_row = valid.sum(axis=1).astype(np.float64)
        total = per_row.sum()
        if total == 0:
            return height
        # First row whose running total exceeds the training share: rows above it train.
        cut = int(np.searchsorted(np.cumsum(per_row), total * (1 - fraction), side="right"))
    return min(max(cut, 1), height - 1)


def _block_holdout(
    valid: np.ndarray | None,
    shape: tuple[int, int],
    fraction: float,
    rng: np.random.Generator,
    block: int = HOLDOUT_BLOCK,
    guard: int = HOLDOUT_GUARD,
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Scattered square blocks holding about ``fraction`` of the reviewed pixels.

    Blocks with reviewed pixels are taken in a random order until they hold ``fraction``
    of them (at least one block, never all). Returns ``(scored, train_valid, n_blocks)``:
    the held-out reviewed pixels, the reviewed pixels left for training (held-out blocks
    and a ``guard``-pixel ring around them removed), and the number of blocks; or None
    when fewer than two blocks hold reviewed pixels (a split needs one for each side).
    """
    height, width = shape
    reviewed = np.ones(shape, bool) if valid is None else valid
    n_y, n_x = -(-height // block), -(-width // block)
    padded = np.zeros((n_y * block, n_x * block), np.int64)
    padded[:height, :width] = reviewed
    counts = padded.reshape(n_y, block, n_x, block).sum(axis=(1, 3)).ravel()
    candidates = np.flatnonzero(counts)
    if len(candidates) < 2:
        return None
    order = rng.permutation(candidates)
    goal = fraction * counts.sum()
    held, total = [], 0
    for index in order[:-1]:  # the last candidate always trains
        held.append(int(index))
        total += counts[index]
        if total >= goal:
            break
    scored = np.zeros(shape, bool)
    train_valid = reviewed.copy()
    for index in held:
        y0, x0 = (index // n_x) * block, (index % n_x) * block
        scored[y0:y0 + block, x0:x0 + block] = True
        train_valid[max(y0 - guard, 0):y0 + block + guard,
                    max(x0 - guard, 0):x0 + block + guard] = False
    scored &= reviewed
    if not train_valid.any():  # tiny reviewed areas: the guard ate the rest
        return None
    return scored, train_valid, len(held)


def split_holdout(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    valid_masks: Sequence[np.ndarray] | None,
    fraction: float,
    layout: str = "blocks",
    seed: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None, list[tuple], str]:
    """Split corrections into training data and held-out items.

    With >= 4 images the last ``ceil(n * fraction)`` images are held out whole
    (contiguous, as neighbouring sections are correlated). With fewer, each image keeps
    ``fraction`` of its reviewed pixels apart: in square blocks scattered over the image
    (``layout="blocks"``; seeded by ``seed``) or in its bottom rows (``"rows"``, and the
    fallback when the reviewed pixels fill fewer than two blocks).

    Returns
    -------
    train_images, train_targets, train_valid (or None), holdout items
    ``(image, target, valid or None)`` and a description.
    """
    split = _split_holdout(images, targets, valid_masks, fraction, layout, seed)
    train_valid = split[2]
    if valid_masks is not None and split[3] and train_valid is not None and \
            not any(np.asarray(v).any() for v in train_valid):
        # Every annotated pixel fell in the held-out part: training would see nothing.
        # Train on all of them instead, and say that nothing is held out.
        return (list(images), list(targets), list(valid_masks), [],
                "none (every annotated pixel fell in the held-out part, so all of them "
                "train and nothing is held out; annotate more images or regions to get a "
                "validation score)")
    return split


def _split_holdout(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    valid_masks: Sequence[np.ndarray] | None,
    fraction: float,
    layout: str,
    seed: int,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None, list[tuple], str]:
    n = len(images)
    valid_list = list(valid_masks) if valid_masks is not None else None
    if fraction <= 0:
        return list(images), list(targets), valid_list, [], "none"
    if n >= 4:
        n_hold = min(max(1, math.ceil(n * fraction)), n - 1)
        keep = range(n - n_hold)
        hold = range(n - n_hold, n)
        holdout = [(images[i], targets[i], None if valid_list is None else valid_list[i])
                   for i in hold]
        return ([images[i] for i in keep], [targets[i] for i in keep],
                None if valid_list is None else [valid_list[i] for i in keep], holdout,
                f"last {n_hold} of {n} images")
    rng = np.random.default_rng(seed)
    train_images, train_targets, train_valid, holdout, parts = [], [], [], [], []
    for i, (image, target) in enumerate(zip(images, targets)):
        valid = None if valid_list is None else valid_list[i]
        # Held-out pixels are scored inside the WHOLE image: the network sees the same
        # context and whole-image normalisation as when the user segments it (a crop on
        # its own gets other percentiles and border effects). The network may see their
        # image values as context while training, never their labels.
        blocks = (_block_holdout(valid, image.shape[:2], fraction, rng)
                  if layout == "blocks" else None)
        if blocks is not None:
            scored, kept, n_blocks = blocks
            train_images.append(image)
            train_targets.append(target)
            train_valid.append(kept)
            parts.append(f"{n_blocks} blocks")
        else:
            height = image.shape[0]
            cut = _row_cut(valid, height, fraction)
            train_images.append(image[:cut])
            train_targets.append(target[:cut])
            train_valid.append(np.ones((cut, image.shape[1]), bool) if valid is None
                               else valid[:cut])
            scored = np.zeros(image.shape[:2], dtype=bool)
            scored[cut:] = True if valid is None else valid[cut:]
            parts.append(f"rows from {cut}")
        holdout.append((image, target, scored))
    if all(part.startswith("rows") for part in parts) and valid_list is None:
        train_valid = None  # whole images cut at a row: every training pixel counts
    any_blocks = any(part.endswith("blocks") for part in parts)
    kind = f"scattered {HOLDOUT_BLOCK}-px blocks" if any_blocks else "bottom rows"
    return (train_images, train_targets, train_valid, holdout,
            f"{kind} ({', '.join(parts)}) of {n} image(s)")
