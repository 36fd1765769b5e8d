"""What a fine-tuned model changes beyond the corrections, and whether they support it.

Held-out corrections only see the corrected regions. A model fine-tuned on part of one
image can get better there and worse on everything the user did not touch (a parent
that over-predicts, the user erases false positives in one corner, and the child learns
"predict more" from BatchNorm statistics or "predict nothing" from the erasures). So
before a fine-tuned model replaces its parent, both segment the pixels nobody corrected
(the user's other open images and the unreviewed parts of corrected ones) and
:func:`compare_labels` reports how many pixels change and how each class's area moves.

The corrections say which way each class should move and roughly how far: within the
neighbourhood of the edits (:data:`CONTEXT_PX`), the user's net added pixels of a class
over the parent's area of it there. A change elsewhere that goes the other way, moves
much further than that, or makes a class vanish or explode without such evidence, is
flagged: ``"ask"`` (the dock keeps the model aside until the user applies it) or
``"refuse"`` (a class collapses or explodes).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_cryoseg.engine.training.sure_pixels import near_edits

__all__ = ["CONFIDENT", "CONTEXT_PX", "ChangeReport", "CheckSet", "build_check",
           "check_model", "check_result", "compare_labels", "correction_trend",
           "labels_and_confidence"]

#: Pixels around each correction taken as the region the user looked at when judging
#: which way a class should move (the net change is relative to the parent's area there).
CONTEXT_PX = 64
#: Relative area change of a class on the other pixels that needs no support (noise of
#: a retrained network on unchanged images is a few per cent).
FREE_CHANGE = 0.10
#: Relative area change of a class against a clear trend of the corrections (they
#: moved it by at least :data:`FREE_CHANGE` the other way) that needs no support: half
#: the free change, since a move against the only evidence is the more suspicious one.
AGAINST_CHANGE = 0.05
#: A class area change may go this many times further than the corrections moved it.
FOLLOW_FACTOR = 2.0
#: A class keeps less than this share of its area: collapsed (unless erased by the user).
COLLAPSE = 0.2
#: A class grows more than this many times: exploded (unless the user painted as much).
EXPLODE = 3.0
#: Classes under this share of the other pixels are too small to judge by area.
MIN_AREA_SHARE = 0.002
#: Held-out Dice and precision of a class from which the held-out corrections support
#: the child moving it elsewhere further than the corrections moved it (the same way):
#: a model that reproduces what the user painted and erased there, without painting
#: the confirmed background around it, is not flooding the image.
SUPPORT_DICE = 0.8
#: ... and by how much the child must beat the parent's held-out Dice of that class.
SUPPORT_GAIN = 0.2


def held_out_support(after: dict[str, float], before: dict[str, float],
                     class_names: Sequence[str]) -> list[str]:
    """Classes whose held-out corrections the child reproduces (Dice and precision at
    least :data:`SUPPORT_DICE`, Dice :data:`SUPPORT_GAIN` above the parent's)."""
    out = []
    for name in class_names[1:]:
        dice = after.get(f"dice/{name}")
        precision = after.get(f"precision/{name}")
        if dice is None or precision is None:
            continue
        if (dice >= SUPPORT_DICE and precision >= SUPPORT_DICE
                and dice >= before.get(f"dice/{name}", 0.0) + SUPPORT_GAIN):
            out.append(name)
    return out


@dataclass
class ChangeReport:
    """A child model compared with its parent on pixels the user did not correct.

    Attributes
    ----------
    n_images : int
        Images compared (other open images and the corrected ones).
    pixels : int
        Pixels compared.
    changed_share : float
        Share of those pixels whose label differs between parent and child.
    area_change : dict
        ``class name -> relative area change`` of the child against the parent.
    trend : dict
        ``class name -> relative area change`` the corrections asked for near the edits.
    verdict : str
        ``"ok"``, ``"ask"`` or ``"refuse"``.
    reasons : list of str
        Why the verdict is not ``"ok"``.
    supported : list of str
        Classes that moved further than the corrections near the edits did (the same
        way), accepted because the child reproduces the held-out corrections of them.
    """

    n_images: int = 0
    pixels: int = 0
    changed_share: float = 0.0
    area_change: dict[str, float] = field(default_factory=dict)
    trend: dict[str, float] = field(default_factory=dict)
    verdict: str = "ok"
    reasons: list[str] = field(default_factory=list)
    supported: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        """True when the change is not supported by the corrections."""
        return self.verdict != "ok"

    def describe(self) -> str:
        """One line, e.g. ``'changes 3.1 % of pixels on 4 images; mitochondrion -2 %'``."""
        if not self.pixels:
            return "no other pixels to compare"
        noun = "image" if self.n_images == 1 else "images"
        parts = [f"{name} {change:+.0%}" for name, change in self.area_change.items()]
        text = (f"changes {self.changed_share:.1%} of pixels on {self.n_images} {noun} "
                "outside the corrections")
        if parts:
            text += "; " + ", ".join(parts)
        if self.supported:
            text += (f" ({', '.join(self.supported)}: further than near your edits, as "
                     "the held-out corrections say)")
        if self.reasons:
            text += " - " + "; ".join(self.reasons)
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (stored in the model's provenance)."""
        return asdict(self)


def correction_trend(
    predicted: Sequence[np.ndarray],
    corrected: Sequence[np.ndarray],
    valid: Sequence[np.ndarray] | None,
    n_classes: int,
    context_px: int = CONTEXT_PX,
) -> np.ndarray:
    """Per class, the relative area change the corrections made near the edits.

    ``(corrected area - predicted area) / predicted area`` inside the changed pixels
    grown by ``context_px`` (and the reviewed pixels, when ``valid`` covers them).
    A class the parent never predicted there and the user painted gets ``inf``.
    """
    before = np.zeros(n_classes, np.float64)
    after = np.zeros(n_classes, np.float64)
    for i, (pred, corr) in enumerate(zip(predicted, corrected)):
        pred, corr = np.asarray(pred), np.asarray(corr)
        near = near_edits(pred, corr, None if valid is None else valid[i], context_px)
        before += np.bincount(pred[near].ravel().astype(np.int64),
                              minlength=n_classes)[:n_classes]
        after += np.bincount(corr[near].ravel().astype(np.int64),
                             minlength=n_classes)[:n_classes]
    with np.errstate(divide="ignore", invalid="ignore"):
        trend = np.where(before > 0, (after - before) / np.maximum(before, 1),
                         np.where(after > 0, np.inf, 0.0))
    return trend


def compare_labels(
    parent: Sequence[np.ndarray],
    child: Sequence[np.ndarray],
    class_names: Sequence[str],
    trend: np.ndarray,
    masks: Sequence[np.ndarray | None] | None = None,
    supported: Sequence[str] = (),
) -> ChangeReport:
    """Compare parent and child labels on the pixels in ``masks`` (all when None).

    Parameters
    ----------
    parent, child : sequence of numpy.ndarray
        Class-index labels of the same images by the parent and the child.
    class_names : sequence of str
        Names of the classes (index 0 = background).
    trend : numpy.ndarray
        :func:`correction_trend` of the corrections (per class).
    masks : sequence of numpy.ndarray or None, optional
        Per image, the pixels to compare (the unreviewed ones).
    supported : sequence of str
        Classes the held-out corrections support moving further than the corrections
        did, the same way (:func:`held_out_support`); a move against them, or a class
        vanishing, is still flagged.
    """
    n_classes = len(class_names)
    before = np.zeros(n_classes, np.float64)
    after = np.zeros(n_classes, np.float64)
    changed = total = 0
    for i, (p, c) in enumerate(zip(parent, child)):
        p, c = np.asarray(p), np.asarray(c)
        mask = None if masks is None else masks[i]
        if mask is not None:
            p, c = p[mask], c[mask]
        p, c = p.ravel().astype(np.int64), c.ravel().astype(np.int64)
        before += np.bincount(p, minlength=n_classes)[:n_classes]
        after += np.bincount(c, minlength=n_classes)[:n_classes]
        changed += int(np.count_nonzero(p != c))
        total += p.size
    report = ChangeReport(n_images=len(parent), pixels=total,
                          changed_share=changed / total if total else 0.0)
    if not total:
        return report
    severity = 0
    for k in range(1, n_classes):
        name = class_names[k]
        wanted = float(trend[k]) if k < len(trend) else 0.0
        if before[k] < MIN_AREA_SHARE * total and after[k] < MIN_AREA_SHARE * total:
            continue  # too little of the class either way to judge by its area
        change = (after[k] - before[k]) / max(before[k], 1.0)
        report.area_change[name] = round(float(change), 4)
        report.trend[name] = round(wanted, 4) if np.isfinite(wanted) else float("inf")
        if after[k] < COLLAPSE * before[k] and wanted > -(1 - COLLAPSE):
            severity = max(severity, 2)
            report.reasons.append(f"{name} nearly vanishes ({change:+.0%}) though the "
                                  f"corrections changed it by {wanted:+.0%}")
        elif (name in supported and abs(wanted) >= FREE_CHANGE
              and np.sign(change) == np.sign(wanted)):
            # it reproduces the held-out corrections of the class: the move is theirs
            if abs(change) > max(FOLLOW_FACTOR * abs(wanted), FREE_CHANGE):
                report.supported.append(name)
        elif after[k] > EXPLODE * max(before[k], MIN_AREA_SHARE * total) and wanted < EXPLODE - 1:
            severity = max(severity, 2)
            report.reasons.append(f"{name} grows {change:+.0%} though the corrections "
                                  f"changed it by {wanted:+.0%}")
        elif (abs(change) > AGAINST_CHANGE and abs(wanted) >= FREE_CHANGE
              and np.sign(change) != np.sign(wanted)):
            severity = max(severity, 1)
            report.reasons.append(f"{name} {change:+.0%} elsewhere, against the "
                                  f"corrections' {wanted:+.0%}")
        elif abs(change) > FREE_CHANGE:
            opposite = np.sign(change) != np.sign(wanted) or abs(wanted) < FREE_CHANGE / 2
            # corrections that tripled the class (or erased most of it) near the edits
            # support any move the same way: the parent barely had it (or had it wrong)
            strong = wanted >= EXPLODE - 1 or wanted <= -(1 - COLLAPSE)
            further = (abs(change) > max(FOLLOW_FACTOR * abs(wanted), FREE_CHANGE)
                       and not strong)
            if opposite:
                severity = max(severity, 1)
                report.reasons.append(f"{name} {change:+.0%} elsewhere, the corrections "
                                      f"{wanted:+.0%}")
            elif further:
                severity = max(severity, 1)
                report.reasons.append(f"{name} {change:+.0%} elsewhere, more than the "
                                      f"corrections' {wanted:+.0%}")
    report.verdict = ("ok", "ask", "refuse")[severity]
    return report


#: The user's other open images are compared on a central crop of at most this edge
#: (both models see the same crop), and at most :data:`MAX_CHECK_IMAGES` of them: the
#: check runs inside the fine-tune's time budget.
CHECK_EDGE = 768
MAX_CHECK_IMAGES = 4


@dataclass
class CheckSet:
    """The pixels a child is compared with its parent on, with the parent's labels."""

    images: list[np.ndarray]
    masks: list[np.ndarray | None]
    parent_labels: list[np.ndarray]
    trend: np.ndarray
    class_names: list[str]
    n_other: int = 0
    #: Per class, the share of the parent's sure pixels near the edits the user changed.
    sure_trend: np.ndarray | None = None
    #: Per image, where the parent is sure of its label (max class probability at least
    #: :data:`CONFIDENT`); empty when not asked for (``build_check(confidence=True)``).
    confident: list[np.ndarray] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.images)


def _central(image: np.ndarray, edge: int) -> np.ndarray:
    h, w = image.shape[-2:]
    y, x = max((h - edge) // 2, 0), max((w - edge) // 2, 0)
    return image[..., y:y + edge, x:x + edge]


#: A parent label counts as sure where its class probability is at least this.
CONFIDENT = 0.9


def model_labels(model: Any, images: Sequence[np.ndarray], device: Any) -> list[np.ndarray]:
    """Labels of ``model`` (a ModelFile) on each image."""
    from napari_cryoseg.engine.events import drain
    from napari_cryoseg.engine.inference.predict import segment

    return [drain(segment(image, model, device=str(device))).labels for image in images]


def labels_and_confidence(
    model: Any, images: Sequence[np.ndarray], device: Any,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Labels of ``model`` on each image and where its top class probability is at
    least :data:`CONFIDENT`."""
    from napari_cryoseg.engine.events import drain
    from napari_cryoseg.engine.inference.predict import segment

    labels, confident = [], []
    for image in images:
        result = drain(segment(image, model, device=str(device), return_probabilities=True))
        prob = np.asarray(result.probabilities, np.float32)
        top = np.maximum(prob[0], 1 - prob[0]) if prob.shape[0] == 1 else prob.max(axis=0)
        labels.append(result.labels)
        confident.append(top >= CONFIDENT)
    return labels, confident


def build_check(
    model: Any,
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    valid: Sequence[np.ndarray] | None,
    unlabelled: Sequence[np.ndarray],
    device: Any,
    parent_labels: Sequence[np.ndarray] | None = None,
    confidence: bool = False,
) -> CheckSet:
    """The check's pixels: other open images (central crops) and unreviewed pixels.

    ``parent_labels``: the parent's labels of ``images`` when already known (not used
    with ``confidence``, which needs the probabilities too).
    """
    corrected_sure: list[np.ndarray] = []
    if confidence:
        corrected_labels, corrected_sure = labels_and_confidence(model, images, device)
    else:
        corrected_labels = (list(parent_labels) if parent_labels is not None
                            else model_labels(model, images, device))
    trend = correction_trend(corrected_labels, targets, valid, model.config.n_classes)
    sure_trend = None
    if confidence:
        from napari_cryoseg.engine.training.sure_pixels import sure_changed_by_corrections

        sure_trend = sure_changed_by_corrections(corrected_labels, targets, corrected_sure,
                                                 valid, model.config.n_classes, CONTEXT_PX)
    others = [_central(np.asarray(image), CHECK_EDGE) for image in
              list(unlabelled)[:MAX_CHECK_IMAGES] if np.ndim(image) == 2]
    check_images: list[np.ndarray] = list(others)
    masks: list[np.ndarray | None] = [None] * len(others)
    if confidence:
        labels, sure = labels_and_confidence(model, others, device)
    else:
        labels, sure = model_labels(model, others, device), []
    if valid is not None:  # unreviewed parts of the corrected images, away from the edits
        for i, (image, label, v) in enumerate(zip(images, corrected_labels, valid)):
            away = ~ndi.maximum_filter(np.asarray(v, bool), size=2 * CONTEXT_PX + 1)
            if away.mean() > 0.05:
                check_images.append(image)
                masks.append(away)
                labels.append(label)
                if confidence:
                    sure.append(corrected_sure[i])
    return CheckSet(check_images, masks, labels, trend, list(model.class_names),
                    n_other=len(others), confident=sure, sure_trend=sure_trend)


def check_model(child: Any, check: CheckSet, device: Any,
                supported: Sequence[str] = ()) -> ChangeReport:
    """:func:`compare_labels` of ``child`` against the parent on ``check``'s pixels."""
    child_labels = model_labels(child, check.images, device)
    report = compare_labels(check.parent_labels, child_labels, check.class_names,
                            check.trend, check.masks, supported)
    if check.confident and check.sure_trend is not None:
        _flag_lost_sure_pixels(report, check, child_labels)
    return report


def _flag_lost_sure_pixels(report: ChangeReport, check: CheckSet,
                           child_labels: Sequence[np.ndarray]) -> None:
    """Ask when a class loses more of the parent's sure pixels than the corrections
    changed of them (:mod:`napari_cryoseg.engine.training.sure_pixels`)."""
    from napari_cryoseg.engine.training.sure_pixels import SURE_FREE, lost_sure_share

    n_classes = len(check.class_names)
    total, lost = lost_sure_share(check.parent_labels, child_labels, check.confident,
                                  check.masks, n_classes)
    for k in range(1, n_classes):
        if total[k] < MIN_AREA_SHARE * max(report.pixels, 1):
            continue
        allowed = max(SURE_FREE, FOLLOW_FACTOR * float(check.sure_trend[k]))
        if lost[k] > allowed:
            name = check.class_names[k]
            report.reasons.append(
                f"{name}: {lost[k]:.0%} of the pixels the old model was sure of are "
                f"labelled otherwise, the corrections changed {check.sure_trend[k]:.0%} "
                "of them")
            if report.verdict == "ok":
                report.verdict = "ask"


def check_result(
    model: Any, check: CheckSet, device: Any,
    chosen: dict[str, Any], after: dict[str, float], blend: float,
    start_state: dict[str, Any], state: Any, before: dict[str, float],
    blend_scores: dict[float, float],
    score: Callable[[dict[str, Any]], dict[str, float]] | None,
) -> Generator[Any, None, tuple]:
    """Compare the chosen weights with the parent beyond the corrections.

    When the change is flagged, the blends nearer the start that still beat the parent on
    the held-out corrections are tried (nearest last); the first one the check passes
    is returned. Otherwise the chosen weights come back with the flagged report (the
    caller keeps them aside for the user to decide).
    """
    from napari_cryoseg.engine.events import Message
    from napari_cryoseg.engine.training.adapt import blend_states
    from napari_cryoseg.engine.training.fitting import model_from_state

    yield Message("comparing the new model with the parent on your other images")
    report = check_model(model_from_state(model, chosen, {}), check, device,
                         held_out_support(after, before, check.class_names))
    if not report.flagged or state.best_state is None or score is None:
        return chosen, after, blend, report
    for weight in sorted((w for w in blend_scores if w < blend), reverse=True):
        if blend_scores[weight] <= before.get("dice", 0.0):
            continue
        candidate = blend_states(start_state, state.best_state, weight)
        second = check_model(model_from_state(model, candidate, {}), check, device)
        if not second.flagged:
            yield Message(f"blend {blend:g} {report.describe()}; blend {weight:g} does not")
            return candidate, score(candidate), weight, second
        break  # one fallback: each check segments every compared image again
    return chosen, after, blend, report

