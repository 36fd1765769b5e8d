"""Evaluating a model on images with ground-truth masks: per image and per class scores.

:func:`evaluate` segments each image (tiled, as in normal use), compares with the mask
and returns an :class:`EvaluationReport` with recall, precision, Dice, IoU and pixel
error per image and class, plus means over images. :func:`plot_boxplots` draws the
per-image Dice distribution per class (matplotlib is imported only there).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.metrics import class_scores, pixel_error
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.classes import ClassMapping, check_pair
from napari_cryoseg.engine.events import Progress
from napari_cryoseg.engine.inference.predict import Segmenter, segment
from napari_cryoseg.model.checkpoint import ModelFile

SCORE_NAMES = ("recall", "precision", "dice", "iou")


def _nan_to_none(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _nanmean(values: Sequence[float | None]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


@dataclass
class ImageScores:
    """Scores of one image.

    Attributes
    ----------
    name : str
        Image name.
    pixel_error : float
        Fraction of pixels with a wrong label.
    classes : dict
        ``{class name: {"recall", "precision", "dice", "iou", "support"}}`` for every
        class including background (NaN where undefined, e.g. recall of an absent class).
    """

    name: str
    pixel_error: float
    classes: dict[str, dict[str, float]]

    @property
    def mean_foreground_dice(self) -> float:
        """Mean Dice over the foreground classes."""
        return _nanmean([s["dice"] for n, s in list(self.classes.items())[1:]])


@dataclass
class EvaluationReport:
    """Scores of a model on a set of images.

    Attributes
    ----------
    model : str
        Model name (file stem).
    class_names : list of str
        Including background first.
    images : list of ImageScores
        One entry per image, in input order.
    elapsed_s : float
        Wall time.
    info : dict
        Free-form extras (device, tiling, class mapping).
    """

    model: str
    class_names: list[str]
    images: list[ImageScores]
    elapsed_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def per_class(self, score: str = "dice") -> dict[str, list[float]]:
        """``{class name: [score of each image]}``."""
        return {c: [im.classes[c][score] for im in self.images] for c in self.class_names}

    @property
    def mean(self) -> dict[str, Any]:
        """Means over images: per class scores, mean foreground Dice, pixel error."""
        classes = {
            c: {s: _nanmean([im.classes[c][s] for im in self.images]) for s in SCORE_NAMES}
            for c in self.class_names
        }
        return {
            "classes": classes,
            "mean_foreground_dice": _nanmean([classes[c]["dice"] for c in self.class_names[1:]]),
            "mean_foreground_iou": _nanmean([classes[c]["iou"] for c in self.class_names[1:]]),
            "pixel_error": _nanmean([im.pixel_error for im in self.images]),
        }

    @property
    def mean_foreground_dice(self) -> float:
        """Mean over images of the per-class Dice, averaged over foreground classes."""
        return float(self.mean["mean_foreground_dice"])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (NaN -> None, so the JSON is standard)."""

        def clean(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            if isinstance(value, float):
                return _nan_to_none(value)
            return value

        return clean({
            "model": self.model,
            "class_names": list(self.class_names),
            "images": [asdict(im) for im in self.images],
            "mean": self.mean,
            "elapsed_s": self.elapsed_s,
            "info": self.info,
        })

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """JSON text of :meth:`to_dict`; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike[str]) -> EvaluationReport:
        """Inverse of :meth:`to_json` (a JSON string or a file path)."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text(encoding="utf-8")
        data = json.loads(text)

        def nan(value: Any) -> Any:
            return float("nan") if value is None else value

        images = [
            ImageScores(
                name=im["name"],
                pixel_error=nan(im["pixel_error"]),
                classes={c: {k: nan(v) for k, v in s.items()} for c, s in im["classes"].items()},
            )
            for im in data["images"]
        ]
        return cls(data["model"], list(data["class_names"]), images,
                   float(data.get("elapsed_s", 0.0)), dict(data.get("info", {})))


def score_image(
    prediction: np.ndarray, truth: np.ndarray, class_names: Sequence[str], name: str = "image"
) -> ImageScores:
    """Per-class scores and pixel error of one class-index prediction vs. truth."""
    scores = class_scores(prediction, truth, range(len(class_names)))
    classes = {
        class_names[c]: {
            "recall": float(s.recall), "precision": float(s.precision),
            "dice": float(s.dice), "iou": float(s.iou), "support": int(s.support),
        }
        for c, s in scores.items()
    }
    return ImageScores(name, pixel_error(prediction, truth), classes)


def evaluate(
    model: ModelFile,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    class_mapping: ClassMapping | None = None,
    tiling: TilingConfig | None = None,
    device: str = "auto",
    tta: int = 1,
) -> Generator[Progress, None, EvaluationReport]:
    """Segment each image with ``model`` and score it against its mask.

    Parameters
    ----------
    model : ModelFile
        The model to evaluate.
    images, masks : sequence of numpy.ndarray
        2D images and integer masks of the same shapes.
    names : sequence of str, optional
        Image names for the report.
    class_mapping : ClassMapping, optional
        Mask values -> model classes (e.g. from ``--classes``); default: mask values are
        the model's class indices.
    tiling : TilingConfig, optional
        Default: the model's hint.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    tta : int
        Test-time augmentation copies averaged per tile (1 = off, 2, 4, 8).

    Yields
    ------
    Progress
        ``stage="evaluate"`` once per image, and the tile progress of each image
        (``stage="segment"``).

    Returns
    -------
    EvaluationReport
    """
    if len(images) != len(masks):
        raise InputError(f"{len(images)} images but {len(masks)} masks")
    if not images:
        raise InputError("no images to evaluate")
    n_classes = model.config.n_classes
    if class_mapping is not None and class_mapping.n_classes != n_classes:
        raise InputError(
            f"--classes gives {class_mapping.n_classes - 1} foreground classes but the model "
            f"has {n_classes - 1} ({', '.join(model.class_names[1:])})"
        )
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    started = time.perf_counter()
    segmenter = Segmenter(model, device, tta=tta)
    results = []
    yield Progress("evaluate", 0, len(images), "starting", 0.0)
    for i, (image, mask, name) in enumerate(zip(images, masks, names)):
        check_pair(image, mask, name)
        if class_mapping is not None:
            truth = class_mapping.apply(mask)
        else:
            truth = np.asarray(mask)
            if truth.max(initial=0) >= n_classes or truth.min(initial=0) < 0:
                raise InputError(
                    f"mask of {name} has values up to {int(truth.max())} but the model has "
                    f"{n_classes} classes; map mask values to classes with --classes"
                )
        # Tile progress (stage "segment") is forwarded so a GUI can cancel mid-image.
        prediction = yield from segment(image, segmenter, tiling)
        results.append(score_image(prediction.labels, truth, model.class_names, name))
        elapsed = time.perf_counter() - started
        yield Progress("evaluate", i + 1, len(images), name, elapsed)
    return EvaluationReport(
        model=model.name,
        class_names=list(model.class_names),
        images=results,
        elapsed_s=time.perf_counter() - started,
        info={"device": str(segmenter.device), "tta": tta,
              "threshold": model.threshold if model.config.n_classes == 2 else None,
              "class_mapping": None if class_mapping is None else class_mapping.to_dict()},
    )


PLOT_SOFTWARE = "napari-cryoseg evaluate"


def plot_boxplots(report: EvaluationReport, path: str | os.PathLike[str]) -> Path:
    """Box plots of per-image Dice and IoU for each foreground class, saved as PNG.

    matplotlib (not a core dependency) is imported here only, with the Agg backend.
    """
    from napari_cryoseg.core.optional import require

    require("matplotlib", "plots (--plot)").use("Agg")
    plt = require("matplotlib.pyplot", "plots (--plot)")
    classes = report.class_names[1:]
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.6 * len(classes) + 3), 4), squeeze=False)
    for ax, score in zip(axes[0], ("dice", "iou")):
        data = [[v for v in report.per_class(score)[c] if not math.isnan(v)] for c in classes]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(classes) + 1), classes, rotation=20)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{score.upper() if score == 'iou' else 'Dice'} per image")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{report.model}: {len(report.images)} images, mean foreground Dice "
                 f"{report.mean_foreground_dice:.3f}")
    fig.tight_layout()
    path = Path(path)
    # The Software tag marks the file as ours: `evaluate --overwrite` replaces only these.
    fig.savefig(path, dpi=100, format="png", metadata={"Software": PLOT_SOFTWARE})
    plt.close(fig)
    return path
