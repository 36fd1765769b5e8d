"""Object classes from a few user tags: a random forest stored as plain arrays.

:func:`fit_forest` trains a scikit-learn ``RandomForestClassifier`` (an optional
dependency, imported only here and only when called) on the measurement features of the
tagged objects. The fitted trees are exported to plain arrays (``children_left/right``,
``feature``, ``threshold``, per-leaf class probabilities) in an :class:`ObjectClassifier`
which predicts with numpy alone and is saved as ``.npz`` (arrays) with a JSON header:
loading never unpickles anything (``np.load(allow_pickle=False)``).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError

FORMAT_NAME = "napari-cryoseg-object-classifier"
FORMAT_VERSION = 1


@dataclass
class ObjectClassifier:
    """A random forest as arrays; ``predict_proba`` is the mean of the trees' leaf values.

    Attributes
    ----------
    classes : list of str
        Class names (the user's tags), in probability-column order.
    feature_names : list of str
        Measurement columns, in feature order.
    trees : list of dict of numpy.ndarray
        Per tree: ``left``, ``right`` (int32 child index, -1 at leaves), ``feature``
        (int32), ``threshold`` (float64), ``value`` (float64, (n_nodes, n_classes),
        class probabilities of each node).
    """

    classes: list[str]
    feature_names: list[str]
    trees: list[dict[str, np.ndarray]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, n_features) -> (n, n_classes) class probabilities."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise InputError(
                f"features of shape {X.shape}; the classifier expects "
                f"{len(self.feature_names)} columns {self.feature_names}"
            )
        out = np.zeros((X.shape[0], len(self.classes)))
        rows = np.arange(X.shape[0])
        for tree in self.trees:
            node = np.zeros(X.shape[0], dtype=np.int64)
            left, right = tree["left"], tree["right"]
            feature, threshold = tree["feature"], tree["threshold"]
            while True:
                inner = left[node] >= 0
                if not inner.any():
                    break
                idx = rows[inner]
                n = node[idx]
                go_left = X[idx, feature[n]] <= threshold[n]
                node[idx] = np.where(go_left, left[n], right[n])
            out += tree["value"][node]
        return out / max(len(self.trees), 1)

    def predict(self, X: np.ndarray) -> list[str]:
        """Class name per row."""
        if len(X) == 0:
            return []
        return [self.classes[i] for i in self.predict_proba(X).argmax(axis=1)]

    # ----------------------------------------------------------------- file
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a ``.npz`` (no pickled objects) atomically."""
        from napari_cryoseg.core.atomic import atomic_write

        header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                  "classes": list(self.classes), "feature_names": list(self.feature_names),
                  "n_trees": len(self.trees), "info": self.info}
        arrays: dict[str, np.ndarray] = {
            "header": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
        for i, tree in enumerate(self.trees):
            for key, value in tree.items():
                arrays[f"tree{i}_{key}"] = value
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return atomic_write(Path(path), lambda f: f.write(buffer.getvalue()),
                            overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ObjectClassifier:
        """Read a file written by :meth:`save` (``allow_pickle=False``: never runs code)."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode("utf-8"))
                if header.get("format") != FORMAT_NAME:
                    raise InputError(f"{path} is not a napari-cryoseg object classifier")
                if int(header.get("format_version", 0)) > FORMAT_VERSION:
                    raise InputError(f"{path} was written by a newer napari-cryoseg")
                trees = [
                    {key: np.array(data[f"tree{i}_{key}"])
                     for key in ("left", "right", "feature", "threshold", "value")}
                    for i in range(int(header["n_trees"]))
                ]
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"could not read object classifier {path}: {err}") from None
        return cls(list(header["classes"]), list(header["feature_names"]), trees,
                   dict(header.get("info", {})))


def _require_sklearn() -> Any:
    from napari_cryoseg.core.optional import require

    feature = "training an object classifier (saved ones apply without it)"
    return require("sklearn.ensemble", feature).RandomForestClassifier


def fit_forest(
    X: np.ndarray,
    tags: Sequence[str],
    feature_names: Sequence[str],
    *,
    n_estimators: int = 100,
    max_depth: int | None = None,
    seed: int = 0,
) -> ObjectClassifier:
    """Fit a random forest on tagged rows and export it to arrays.

    Parameters
    ----------
    X : numpy.ndarray
        (n_tagged, n_features) features of the tagged objects.
    tags : sequence of str
        The class the user gave each row (at least two different classes).
    """
    forest_cls = _require_sklearn()
    X = np.asarray(X, dtype=np.float64)
    tags = [str(t) for t in tags]
    classes = sorted(set(tags))
    if len(classes) < 2:
        raise InputError("tag objects with at least two different classes before training")
    if len(tags) != len(X):
        raise InputError(f"{len(X)} feature rows but {len(tags)} tags")
    y = np.array([classes.index(t) for t in tags])
    forest = forest_cls(n_estimators=n_estimators, max_depth=max_depth, random_state=seed,
                        n_jobs=1)
    forest.fit(X, y)
    trees = []
    for estimator in forest.estimators_:
        t = estimator.tree_
        value = np.asarray(t.value[:, 0, :], dtype=np.float64)  # (nodes, n_seen_classes)
        sums = value.sum(axis=1, keepdims=True)
        value = value / np.where(sums > 0, sums, 1.0)
        full = np.zeros((value.shape[0], len(classes)))
        full[:, estimator.classes_.astype(int)] = value  # bootstrap may miss a class
        trees.append({
            "left": t.children_left.astype(np.int32),
            "right": t.children_right.astype(np.int32),
            "feature": np.maximum(t.feature, 0).astype(np.int32),
            "threshold": t.threshold.astype(np.float64),
            "value": full,
        })
    counts = {c: tags.count(c) for c in classes}
    return ObjectClassifier(classes, list(feature_names), trees,
                            {"n_estimators": n_estimators, "tag_counts": counts, "seed": seed})
