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
import zipfile
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
        """Read a file written by :meth:`save` (``allow_pickle=False``: never runs code).

        The file is untrusted: its size, header and every tree are checked (indices in
        range, no cycles, bounded depth, finite values) before it is used, so a damaged or
        crafted file is refused with one line instead of hanging or crashing
        :meth:`predict_proba`.

        Raises
        ------
        InputError
            Missing, unreadable, foreign, newer or inconsistent file.
        """
        path = Path(path)
        _check_archive(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                header = _read_header(data, path)
                trees = [
                    {key: np.array(data[f"tree{i}_{key}"]) for key in TREE_KEYS}
                    for i in range(header["n_trees"])
                ]
        except InputError:
            raise
        except KeyError as err:
            raise InputError(f"object classifier {path} is incomplete: no array {err}; save "
                             "the classifier again") from None
        except Exception as err:  # noqa: BLE001 - damaged zip/npy data fail in many ways
            reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
            raise InputError(f"{path} is not a readable object classifier ({reason}); give a "
                             ".npz saved from the napari Objects section") from None
        classifier = cls(header["classes"], header["feature_names"], trees, header["info"])
        for i, tree in enumerate(trees):
            _check_tree(tree, i, len(classifier.classes), len(classifier.feature_names), path)
        return classifier


#: Arrays stored per tree.
TREE_KEYS = ("left", "right", "feature", "threshold", "value")
#: Limits for a classifier file: far above what a user-tagged forest reaches.
MAX_FILE_BYTES = 512 * 2**20  # uncompressed
MAX_TREES = 10_000
MAX_TREE_DEPTH = 1_000


def _check_archive(path: Path) -> None:
    """Refuse missing/folder/empty files and archives that unpack to absurd sizes."""
    if not path.exists():
        raise InputError(f"object classifier {path} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the classifier's .npz file")
    if path.stat().st_size == 0:
        raise InputError(f"object classifier {path} is empty (0 bytes); save it again")
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except Exception:  # noqa: BLE001 - np.load reports the damage in one line
        return
    if unpacked > MAX_FILE_BYTES:
        raise InputError(f"object classifier {path} unpacks to {unpacked / 2**20:.0f} MiB, "
                         f"more than the {MAX_FILE_BYTES // 2**20} MiB a classifier can need; "
                         "it is damaged or not a classifier")


def _read_header(data: Any, path: Path) -> dict[str, Any]:
    """The checked JSON header: format, version, classes, features, tree count, info."""
    if "header" not in getattr(data, "files", ()):
        raise InputError(f"{path} is not a napari-cryoseg object classifier (no header); give "
                         "a .npz saved from the napari Objects section")
    try:
        header = json.loads(bytes(np.asarray(data["header"], dtype=np.uint8)).decode("utf-8"))
    except (ValueError, TypeError) as err:  # JSON and Unicode errors are ValueErrors
        raise InputError(f"object classifier {path} has an unreadable header ({err}); save "
                         "the classifier again") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise InputError(f"{path} is not a napari-cryoseg object classifier")
    version = header.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"object classifier {path} has no valid format_version; it is damaged")
    if version > FORMAT_VERSION:
        raise InputError(f"{path} was written by a newer napari-cryoseg; upgrade it")
    classes, features = header.get("classes"), header.get("feature_names")
    for name, values in (("classes", classes), ("feature_names", features)):
        if not isinstance(values, list) or not values or not all(
                isinstance(v, str) for v in values):
            raise InputError(f"object classifier {path}: {name} must be a non-empty list of "
                             "text; the file is damaged")
    n_trees = header.get("n_trees")
    if isinstance(n_trees, bool) or not isinstance(n_trees, int) or not (
            1 <= n_trees <= MAX_TREES):
        raise InputError(f"object classifier {path}: n_trees is {n_trees!r}, expected 1 to "
                         f"{MAX_TREES}; the file is damaged")
    info = header.get("info", {})
    return {"classes": list(classes), "feature_names": list(features), "n_trees": n_trees,
            "info": dict(info) if isinstance(info, dict) else {}}


def _check_tree(tree: dict[str, np.ndarray], index: int, n_classes: int, n_features: int,
                path: Path) -> None:
    """Refuse a tree that :meth:`ObjectClassifier.predict_proba` could not walk safely.

    Nodes are walked from the root: every child index must be in range, every node
    reached once (no cycle, no shared child: a cycle would make prediction loop
    forever), depth at most :data:`MAX_TREE_DEPTH`, features in range and values finite.
    """
    def bad(problem: str) -> InputError:
        return InputError(f"object classifier {path}: tree {index} {problem}; the file is "
                          "damaged or was edited. Train and save the classifier again")

    left, right = tree["left"], tree["right"]
    feature, threshold, value = tree["feature"], tree["threshold"], tree["value"]
    n = left.shape[0] if left.ndim == 1 else -1
    if n < 1 or any(a.ndim != 1 or a.shape[0] != n for a in (right, feature, threshold)):
        raise bad("has node arrays of different or wrong shapes")
    if value.shape != (n, n_classes):
        raise bad(f"has values of shape {value.shape}, expected ({n}, {n_classes})")
    for name, array in (("left", left), ("right", right), ("feature", feature)):
        if array.dtype.kind not in "iu":
            raise bad(f"has {name} indices of dtype {array.dtype}")
    if threshold.dtype.kind != "f" or value.dtype.kind != "f":
        raise bad("has non-float thresholds or values")
    if not np.isfinite(value).all():
        raise bad("has NaN or infinite class probabilities")
    leaf = left < 0
    if not np.array_equal(leaf, right < 0) or (left[leaf] != -1).any() or (
            right[leaf] != -1).any():
        raise bad("has nodes with only one child")
    inner = ~leaf
    if (left[inner] >= n).any() or (right[inner] >= n).any():
        raise bad(f"points to nodes beyond its {n} nodes")
    if ((feature[inner] < 0) | (feature[inner] >= n_features)).any():
        raise bad(f"uses features beyond the {n_features} stored")
    if not np.isfinite(threshold[inner]).all():
        raise bad("has NaN or infinite thresholds")
    seen = np.zeros(n, dtype=bool)
    seen[0] = True
    level = np.array([0])
    for _depth in range(MAX_TREE_DEPTH + 1):
        level = level[inner[level]]
        if level.size == 0:
            return
        children = np.concatenate([left[level], right[level]]).astype(np.int64)
        if seen[children].any() or np.unique(children).size != children.size:
            raise bad("has a cycle or a node with two parents")
        seen[children] = True
        level = children
    raise bad(f"is deeper than {MAX_TREE_DEPTH} levels")


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
