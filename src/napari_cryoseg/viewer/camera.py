"""Viewer maths: world <-> data coordinates, the visible region, camera moves (no Qt).

The widgets call these instead of computing with ``scale``/``translate`` and the camera
themselves. A layer's data pixel ``i`` covers world ``[translate + (i - 0.5) * scale,
translate + (i + 0.5) * scale]`` (napari puts pixel centres on integer data
coordinates).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def camera_of(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` on napari >= 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def canvas_size(viewer: Any) -> tuple[float, float]:
    """Canvas (height, width) in screen pixels (600 x 800 when unknown)."""
    canvas = getattr(viewer, "canvas", None)
    size = getattr(canvas, "size", None)
    return (float(size[0]), float(size[1])) if size else (600.0, 800.0)


def _geometry(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(layer.scale, dtype=float), np.asarray(layer.translate, dtype=float))


def world_to_data(layer: Any, world: Any) -> np.ndarray:
    """World coordinates (last ``len(world)`` axes) -> the layer's data coordinates."""
    scale, translate = _geometry(layer)
    world = np.asarray(world, dtype=float)
    n = len(world)
    return (world - translate[-n:]) / scale[-n:]


def data_to_world(layer: Any, data: Any) -> np.ndarray:
    """The layer's data coordinates (last ``len(data)`` axes) -> world coordinates."""
    scale, translate = _geometry(layer)
    data = np.asarray(data, dtype=float)
    n = len(data)
    return data * scale[-n:] + translate[-n:]


def current_plane(viewer: Any, layer: Any) -> tuple[int, ...]:
    """Indices of the non-displayed leading axes of ``layer`` at the viewer's slider
    position (``()`` for a 2D layer), clipped to the layer."""
    shape = np.shape(layer.data)
    lead = len(shape) - 2
    if lead <= 0:
        return ()
    point = list(viewer.dims.point)
    world = [point[-len(shape) + axis] if len(point) >= len(shape) else 0.0
             for axis in range(lead)]
    scale, translate = _geometry(layer)
    index = np.round((np.asarray(world) - translate[:lead]) / scale[:lead]).astype(int)
    return tuple(int(min(max(i, 0), shape[a] - 1)) for a, i in enumerate(index))


def view_region(viewer: Any, layer: Any) -> tuple[slice, ...]:
    """The part of ``layer`` (data coordinates) the 2D canvas shows now.

    Leading axes (Z/T) select the current plane only.
    """
    shape = np.shape(layer.data)
    canvas_h, canvas_w = canvas_size(viewer)
    camera = camera_of(viewer)
    zoom = float(camera.zoom) or 1.0
    center = np.asarray(camera.center, dtype=float)[-2:]
    half = np.array([canvas_h, canvas_w], dtype=float) / (2 * zoom)
    lo = np.floor(world_to_data(layer, center - half)).astype(int)
    hi = np.ceil(world_to_data(layer, center + half)).astype(int)
    lo = np.clip(lo, 0, shape[-2:])
    hi = np.clip(hi, 0, shape[-2:])
    planes = [slice(i, i + 1) for i in current_plane(viewer, layer)]
    return (*planes, slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])))


def show_box(viewer: Any, layer: Any, top_left: tuple[int, int], size: tuple[int, int],
             *, margin: float = 0.9) -> None:
    """Centre the camera on a box of ``layer``'s data pixels and zoom so it fills
    ``margin`` of the canvas."""
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"box size {size} must be at least 1 x 1 pixels")
    # pixel i spans [i - 0.5, i + 0.5]: the box's centre is top_left + size / 2 - 0.5
    centre = data_to_world(layer, np.array(top_left, float) + np.array([height, width]) / 2 - 0.5)
    scale = np.asarray(layer.scale, dtype=float)[-2:]
    camera = camera_of(viewer)
    current = list(camera.center)
    current[-2:] = [float(centre[0]), float(centre[1])]
    camera.center = tuple(current)
    canvas_h, canvas_w = canvas_size(viewer)
    camera.zoom = margin * min(canvas_h / (height * scale[0]), canvas_w / (width * scale[1]))
