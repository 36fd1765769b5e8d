"""Object measurements and the tag-trained object classifier (numpy export of a forest)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_cryoseg.core.classify import ObjectClassifier, fit_forest
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.measure import (
    COLUMNS,
    FEATURE_COLUMNS,
    feature_matrix,
    instance_labels,
    measure_objects,
    read_csv,
    write_csv,
)


def two_kinds(seed: int = 0, n: int = 40, size: int = 400):
    """Small round discs (kind 'round') and large elongated ellipses ('long'), class 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint8)
    image = rng.normal(100, 5, (size, size)).astype(np.float32)
    kinds, centres = [], []
    occupied = np.zeros_like(labels, bool)
    while len(kinds) < n:
        cy, cx = rng.integers(20, size - 20, 2)
        kind = "round" if len(kinds) % 2 == 0 else "long"
        if kind == "round":
            r = rng.uniform(3.5, 6)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            a, b, th = rng.uniform(12, 16), rng.uniform(3.5, 5), rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
            v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
            mask = (u / a) ** 2 + (v / b) ** 2 <= 1
        grown = np.zeros_like(mask)
        grown[1:-1, 1:-1] = mask[1:-1, 1:-1] | mask[:-2, 1:-1] | mask[2:, 1:-1] | \
            mask[1:-1, :-2] | mask[1:-1, 2:]
        if (grown & occupied).any():
            continue
        occupied |= grown
        labels[mask] = 1
        image[mask] += 60 if kind == "round" else 30
        kinds.append(kind)
        centres.append((cy, cx))
    return labels, image, kinds, np.array(centres)


def kinds_by_row(table, kinds, centres):
    out = []
    for y, x in zip(table["centroid_y"], table["centroid_x"]):
        out.append(kinds[int(np.argmin(((centres - [y, x]) ** 2).sum(axis=1)))])
    return out


def test_instances_per_class():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:5, 2:5] = 1
    labels[10:15, 10:15] = 1
    labels[2:5, 10:12] = 2
    instances, classes = instance_labels(labels)
    assert instances.max() == 3 and classes.tolist() == [0, 1, 1, 2]
    stack, stack_classes = instance_labels(np.stack([labels, labels]))
    assert stack.max() == 6 and len(stack_classes) == 7


def test_measure_disc_and_ring_profile():
    yy, xx = np.mgrid[:64, :64]
    r = np.sqrt((yy - 32) ** 2 + (xx - 32) ** 2)
    labels = (r <= 15).astype(np.uint8)
    image = np.where(r > 11, 200.0, 50.0)  # bright rim, dark lumen (a liposome)
    table = measure_objects(labels, image, pixel_size_nm=2.0, class_names=["bg", "vesicle"])
    assert list(table) == list(COLUMNS)
    assert len(table["label"]) == 1
    area = int(labels.sum())
    assert table["area_px"][0] == area
    assert table["area_nm2"][0] == pytest.approx(area * 4.0)
    assert table["equivalent_diameter_px"][0] == pytest.approx(2 * math.sqrt(area / math.pi))
    assert table["circularity"][0] > 0.85
    assert table["eccentricity"][0] < 0.1
    assert table["class_name"][0] == "vesicle"
    assert table["ring_edge"][0] > table["ring_centre"][0]
    assert table["edge_contrast"][0] > 0.3
    assert table["centroid_y"][0] == pytest.approx(32, abs=0.01)


def test_size_filter_and_csv_round_trip(tmp_path):
    labels, image, _, _ = two_kinds(n=10, size=200)
    labels[0:2, 0:2] = 1  # a 4-pixel speck
    all_objects = measure_objects(labels, image)
    big = measure_objects(labels, image, min_size=10)
    assert len(all_objects["label"]) == len(big["label"]) + 1
    assert (big["area_px"] >= 10).all()
    path = write_csv(big, tmp_path / "t.csv")
    with pytest.raises(InputError):
        write_csv(big, path)  # never overwrites silently
    back = read_csv(path)
    np.testing.assert_allclose(back["area_px"], big["area_px"])
    assert list(back)[: len(COLUMNS)] == list(COLUMNS)


def test_classifier_from_tags_predicts_untagged(tmp_path):
    pytest.importorskip("sklearn")
    labels, image, kinds, centres = two_kinds(seed=1)
    table = measure_objects(labels, image, min_size=5)
    truth = kinds_by_row(table, kinds, centres)
    X = feature_matrix(table)
    tagged = [i for k in ("round", "long") for i in [j for j, t in enumerate(truth) if t == k][:4]]
    clf = fit_forest(X[tagged], [truth[i] for i in tagged], FEATURE_COLUMNS, n_estimators=50)
    predicted = clf.predict(X)
    untagged = [i for i in range(len(truth)) if i not in tagged]
    accuracy = np.mean([predicted[i] == truth[i] for i in untagged])
    assert accuracy >= 0.9, accuracy
    # The numpy predictor reproduces scikit-learn on the same forest.
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=50, random_state=0, n_jobs=1)
    forest.fit(X[tagged], [sorted({"round", "long"}).index(truth[i]) for i in tagged])
    np.testing.assert_allclose(clf.predict_proba(X), forest.predict_proba(X), atol=1e-9)
    path = clf.save(tmp_path / "objects.npz")
    loaded = ObjectClassifier.load(path)
    assert loaded.predict(X) == predicted
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert all(data[k].dtype != object for k in data.files)


def test_classifier_needs_two_classes():
    pytest.importorskip("sklearn")
    with pytest.raises(InputError, match="two different classes"):
        fit_forest(np.zeros((3, 2)), ["a", "a", "a"], ["f1", "f2"])


def test_cli_measure(tmp_path):
    import tifffile

    from napari_cryoseg.cli import main
    from napari_cryoseg.io import write_labels_tiff

    labels, image, _, _ = two_kinds(n=6, size=160)
    lpath = write_labels_tiff(tmp_path / "cells_labels.tif", labels, pixel_size_nm=3.0,
                              class_names=["background", "vesicle"])
    tifffile.imwrite(tmp_path / "cells.tif", image)
    out = tmp_path / "objects.csv"
    assert main(["measure", "--labels", str(lpath), "--image", str(tmp_path / "cells.tif"),
                 "--min-size", "5", "--out", str(out)]) == 0
    table = read_csv(out)
    assert len(table["label"]) == 6
    assert set(table["class_name"]) == {"vesicle"}
    np.testing.assert_allclose(table["area_nm2"], table["area_px"] * 9.0, rtol=1e-5)
    assert main(["measure", "--labels", str(lpath), "--out", str(out)]) == 2  # exists
