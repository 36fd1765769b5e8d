"""Regenerate docs/images/objects.png: the Objects section of the CryoSeg dock.

    python bench/make_objects_screenshot.py

Opens a real napari window (under a virtual X display when there is no DISPLAY), adds a
synthetic image of round vesicles (bright rim) and elongated objects with its labels,
measures them in the Objects section, tags four objects of each kind, trains the object
classifier and saves ``viewer.screenshot(canvas_only=False, flash=False)``.
"""

from __future__ import annotations

import sys

import numpy as np
from _screens import save, settle, virtual_display


def scene(seed: int = 3, size: int = 420, n: int = 34):
    """Vesicles (bright rim, dark lumen) and elongated objects on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint8)
    image = rng.normal(90, 6, (size, size)).astype(np.float32)
    occupied = np.zeros((size, size), bool)
    kinds, centres = [], []
    while len(kinds) < n:
        cy, cx = rng.integers(24, size - 24, 2)
        kind = "vesicle" if len(kinds) % 2 == 0 else "fibre"
        if kind == "vesicle":
            r = rng.uniform(7, 12)
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            mask = d <= r
            paint = np.where(d > 0.7 * r, 80.0, 15.0)
        else:
            a, b, th = rng.uniform(16, 24), rng.uniform(3.5, 5), rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
            v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
            mask = (u / a) ** 2 + (v / b) ** 2 <= 1
            paint = np.full((size, size), 45.0)
        grown = np.zeros_like(mask)
        grown[2:-2, 2:-2] = mask[:-4, 2:-2] | mask[4:, 2:-2] | mask[2:-2, :-4] | mask[2:-2, 4:]
        if (grown & occupied).any():
            continue
        occupied |= grown | mask
        labels[mask] = 1
        image[mask] += paint[mask]
        kinds.append(kind)
        centres.append((cy, cx))
    return image, labels, kinds, np.array(centres)


def main() -> int:
    with virtual_display((1500, 950)):
        import napari

        from napari_cryoseg.widgets.main import CryoSegWidget

        image, labels, kinds, centres = scene()
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1500, 950)
        img = viewer.add_image(image, name="vesicles", scale=(2.0, 2.0), units="nm")
        lab = viewer.add_labels(labels, name="vesicles labels", scale=(2.0, 2.0), units="nm",
                                metadata={"cryoseg": {"class_names": ["background", "object"],
                                                      "source": "vesicles"}})
        widget = CryoSegWidget(viewer)
        widget.setMinimumWidth(560)  # room for the whole table in the picture
        viewer.window.add_dock_widget(widget, name="CryoSeg", area="right")
        widget.show_section("Objects", only=True)
        panel = widget.measure_panel
        panel.select_layers(lab, img)
        panel.tags.setText("vesicle, fibre")
        panel._refresh_tag_combos()
        result = panel.measure()
        table = result.table
        truth = []
        for y, x in zip(table["centroid_y"], table["centroid_x"]):
            truth.append(kinds[int(np.argmin(((centres - [y, x]) ** 2).sum(axis=1)))])
        for kind in ("vesicle", "fibre"):
            for row in [i for i, t in enumerate(truth) if t == kind][:4]:
                panel.set_tag(row, kind)
        panel.train_classifier()
        panel.select_row(0)
        lab.visible = False
        viewer.reset_view()
        settle(40)
        save(viewer, "objects.png")
        correct = np.mean([p == t for p, t in zip(result.extra["predicted class"], truth)])
        sys.stdout.write(f"classifier accuracy {correct:.2f}\n")
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
