"""Tests of the synthetic cryo-SEM grid-square generator."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from napari_cryoseg.core.synthetic import (
    CLASS_COLORS,
    CLASS_NAMES,
    SampleConfig,
    make_sample,
    make_sample_stack,
)

BG, CELL, ICE, BAR = 0, 1, 2, 3
SMALL = SampleConfig(shape=(192, 256))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _as_unit(image: np.ndarray) -> np.ndarray:
    if image.dtype.kind == "u":
        return image.astype(np.float64) / np.iinfo(image.dtype).max
    return image.astype(np.float64)


@pytest.fixture(scope="module")
def default_samples() -> list[tuple[np.ndarray, np.ndarray]]:
    return [make_sample(seed) for seed in range(3)]


def test_class_metadata() -> None:
    assert CLASS_NAMES == ("background", "cell", "ice", "grid bar")
    assert len(CLASS_COLORS) == len(CLASS_NAMES)
    assert all(re.fullmatch(r"#[0-9a-fA-F]{6}", c) for c in CLASS_COLORS)
    assert len(set(CLASS_COLORS)) == len(CLASS_COLORS)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("uint8", np.uint8), ("uint16", np.uint16), ("float32", np.float32)],
)
def test_shape_and_dtype(dtype: str, expected: type) -> None:
    image, labels = make_sample(5, replace(SMALL, dtype=dtype))
    assert image.shape == (192, 256)
    assert labels.shape == (192, 256)
    assert image.dtype == expected
    assert labels.dtype == np.uint8
    unit = _as_unit(image)
    assert unit.min() >= 0.0
    assert unit.max() <= 1.0
    assert unit.std() > 0.05  # not a flat or nearly empty image


def test_default_config_matches_spec() -> None:
    cfg = SampleConfig()
    assert cfg.shape == (512, 512)
    assert cfg.dtype == "uint16"
    image, labels = make_sample()
    assert image.shape == (512, 512)
    assert image.dtype == np.uint16
    assert labels.dtype == np.uint8


def test_dtypes_share_the_same_scene() -> None:
    img8, lab8 = make_sample(11, replace(SMALL, dtype="uint8"))
    img16, lab16 = make_sample(11, replace(SMALL, dtype="uint16"))
    imgf, labf = make_sample(11, replace(SMALL, dtype="float32"))
    np.testing.assert_array_equal(lab8, lab16)
    np.testing.assert_array_equal(lab8, labf)
    np.testing.assert_allclose(_as_unit(img16), imgf, atol=1e-4)
    np.testing.assert_allclose(_as_unit(img8), imgf, atol=0.5 / 255 + 1e-4)


def test_label_values_and_fractions(default_samples) -> None:
    for _image, labels in default_samples:
        assert set(np.unique(labels)) <= {BG, CELL, ICE, BAR}
        fractions = np.bincount(labels.ravel(), minlength=4) / labels.size
        assert 0.05 <= fractions[CELL] <= 0.60
        assert fractions[BG] >= 0.25
        assert fractions[ICE] > 0
        assert fractions[BAR] > 0.02
        assert fractions[ICE] < fractions[CELL]


def test_optional_classes_can_be_disabled() -> None:
    _, labels = make_sample(2, replace(SMALL, grid_bars=False))
    assert not np.any(labels == BAR)
    assert np.any(labels == CELL)
    _, labels = make_sample(2, replace(SMALL, n_ice=0))
    assert not np.any(labels == ICE)
    assert np.any(labels == BAR)
    _, labels = make_sample(2, replace(SMALL, n_cells=0, n_clusters=0, n_ice=0, grid_bars=False))
    assert not np.any(labels)


def test_ice_wins_over_cells() -> None:
    # some crystals are placed on cells: ice pixels enclosed by / touching cell pixels
    touching = 0
    for seed in range(3):
        _, labels = make_sample(seed)
        grown = ndi.binary_dilation(labels == ICE, iterations=2)
        touching += np.count_nonzero(grown & (labels == CELL))
    assert touching > 0


def test_clusters_of_touching_cells() -> None:
    cfg = SampleConfig(n_cells=0, n_clusters=1, n_ice=0, grid_bars=False, cell_radius_px=(20, 20))
    _, labels = make_sample(0, cfg)
    components, n = ndi.label(labels == CELL)
    assert n >= 1
    largest = np.bincount(components.ravel())[1:].max()
    assert largest > 2.0 * np.pi * 20**2  # several merged cells, not one


def test_determinism(default_samples) -> None:
    image, labels = make_sample(0)
    assert image.tobytes() == default_samples[0][0].tobytes()
    assert labels.tobytes() == default_samples[0][1].tobytes()
    assert not np.array_equal(default_samples[0][0], default_samples[1][0])
    assert not np.array_equal(default_samples[0][1], default_samples[1][1])


def test_intensity_statistics(default_samples) -> None:
    for image, labels in default_samples:
        unit = _as_unit(image)
        cell_mean = unit[labels == CELL].mean()
        bg_mean = unit[labels == BG].mean()
        assert cell_mean - bg_mean > 0.04
        assert abs(unit[labels == ICE].mean() - bg_mean) > 0.1
        assert unit[labels == BAR].mean() - bg_mean > 0.15


def test_cells_not_separable_by_global_threshold(default_samples) -> None:
    for image, labels in default_samples:
        unit = _as_unit(image)
        # whole image
        assert _dice(unit > threshold_otsu(unit), labels == CELL) < 0.95
        # only cell and background pixels: still not a thresholding problem
        keep = labels <= CELL
        values = unit[keep]
        pred = values > threshold_otsu(values)
        assert _dice(pred, labels[keep] == CELL) < 0.95
        assert _dice(~pred, labels[keep] == CELL) < 0.95


def test_counts_scale_with_area() -> None:
    _, small = make_sample(1, SampleConfig(shape=(256, 256), grid_bars=False))
    _, large = make_sample(1, SampleConfig(shape=(1024, 1024), grid_bars=False))
    small_frac = np.mean(small == CELL)
    large_frac = np.mean(large == CELL)
    assert 0.5 < large_frac / small_frac < 2.0


def test_stack() -> None:
    images, labels = make_sample_stack(3, seed=4, config=SMALL)
    assert images.shape == (3, 192, 256)
    assert labels.shape == (3, 192, 256)
    assert images.dtype == np.uint16
    assert labels.dtype == np.uint8
    image, lab = make_sample(6, SMALL)
    np.testing.assert_array_equal(images[2], image)
    np.testing.assert_array_equal(labels[2], lab)
    empty, _ = make_sample_stack(0, config=SMALL)
    assert empty.shape == (0, 192, 256)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dtype": "int32"},
        {"shape": (8, 512)},
        {"cell_radius_px": (30, 10)},
        {"n_cells": -1},
        {"noise": -0.1},
        {"pixel_size_nm": 0.0},
    ],
)
def test_invalid_config(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SampleConfig(**kwargs)
