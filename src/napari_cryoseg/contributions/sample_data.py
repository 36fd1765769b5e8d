"""Sample data: a synthetic cryo-SEM grid square with its ground-truth labels (no network)."""

from __future__ import annotations

from typing import Any

from napari_cryoseg.core.synthetic import CLASS_COLORS, CLASS_NAMES, SampleConfig, make_sample

SAMPLE_NAME = "grid square"


def sample_layers(seed: int = 0, size: int = 512) -> list[tuple[Any, dict[str, Any], str]]:
    """``[(image, kwargs, "image"), (labels, kwargs, "labels")]`` with scale = pixel size (nm)."""
    config = SampleConfig(shape=(size, size))
    image, labels = make_sample(seed, config)
    px = config.pixel_size_nm
    scale = (px, px)
    colors: dict[Any, Any] = {None: "transparent", 0: "transparent"}
    colors.update({i: c for i, c in enumerate(CLASS_COLORS) if i})
    from napari.utils.colormaps import DirectLabelColormap

    return [
        (image, {"name": SAMPLE_NAME, "scale": scale, "units": ("nm", "nm"),
                 "metadata": {"pixel_size_nm": px, "axes": "YX", "seed": seed}}, "image"),
        (labels, {"name": f"{SAMPLE_NAME} ground truth", "scale": scale, "units": ("nm", "nm"),
                  "colormap": DirectLabelColormap(color_dict=colors), "opacity": 0.5,
                  "visible": False,
                  "features": {"index": list(range(len(CLASS_NAMES))),
                               "class": list(CLASS_NAMES)},
                  "metadata": {"ground_truth": True, "class_names": list(CLASS_NAMES)}},
         "labels"),
    ]


def grid_square() -> list[tuple[Any, dict[str, Any], str]]:
    """npe2 sample-data command: "Grid square (cryo-SEM, synthetic)"."""
    return sample_layers(seed=0, size=512)
