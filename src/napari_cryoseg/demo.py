"""``cryoseg-demo``: the synthetic grid square segmented by the bundled default model.

* ``cryoseg-demo`` opens napari with the sample image, the CryoSeg dock docked, and runs
  the segmentation through the dock (same worker path as the Run button).
* ``cryoseg-demo --headless [OUTDIR]`` needs no display: it writes the sample image and
  ``<name>_labels.tif`` to OUTDIR (default ``./cryoseg-demo-output``) and prints the Dice
  against the ground truth. Only engine, io and core are used in that branch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SAMPLE_SEED = 0
SAMPLE_SIZE = 1024
SAMPLE_NAME = "grid-square"
DEFAULT_OUTDIR = "cryoseg-demo-output"


def _say(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _missing_model_message() -> str | None:
    from napari_cryoseg.model.bundled import default_model_path

    path = default_model_path()
    if path.is_file():
        return None
    return (
        f"cryoseg-demo: the bundled default model is missing ({path}).\n"
        "Reinstall napari-cryoseg, or train one with `cryoseg train` and copy it there."
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cryoseg-demo",
        description="Segment a synthetic cryo-SEM grid square with the bundled default model.",
    )
    parser.add_argument(
        "--headless", nargs="?", const=DEFAULT_OUTDIR, default=None, metavar="OUTDIR",
        help=f"no GUI: write TIFFs to OUTDIR (default ./{DEFAULT_OUTDIR}) and print the Dice",
    )
    parser.add_argument(
        "--screenshot", metavar="PNG", default=None,
        help="GUI: save a screenshot of the window once the sample is segmented, then quit",
    )
    parser.add_argument("--size", type=int, default=SAMPLE_SIZE,
                        help=f"sample edge in pixels (default {SAMPLE_SIZE})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--model", default=None, metavar="FILE",
                        help="use this model file instead of the bundled default")
    return parser.parse_args(argv)


def run_headless(
    outdir: str | Path, size: int = SAMPLE_SIZE, device: str = "auto",
    model_path: str | None = None,
) -> float:
    """Segment the sample without napari; write TIFFs; return the mean foreground Dice."""
    from napari_cryoseg.core.atomic import unique_path
    from napari_cryoseg.core.metrics import class_scores, mean_foreground_dice
    from napari_cryoseg.core.synthetic import CLASS_NAMES, SampleConfig, make_sample
    from napari_cryoseg.engine.events import drain
    from napari_cryoseg.engine.inference.predict import segment
    from napari_cryoseg.io.labels import write_labels_tiff
    from napari_cryoseg.model.bundled import load_default_model
    from napari_cryoseg.model.checkpoint import load_model

    config = SampleConfig(shape=(size, size))
    image, truth = make_sample(SAMPLE_SEED, config)
    model = load_model(model_path) if model_path else load_default_model()
    prediction = drain(segment(image, model, device=device))
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    import tifffile

    px = config.pixel_size_nm
    image_path = unique_path(out / f"{SAMPLE_NAME}.tif")
    tifffile.imwrite(image_path, image, imagej=True, resolution=(1 / px, 1 / px),
                     metadata={"unit": "nm", "axes": "YX"})
    labels_path = write_labels_tiff(
        unique_path(out / f"{SAMPLE_NAME}_labels.tif"), prediction.labels,
        pixel_size_nm=px, class_names=list(prediction.class_names),
    )
    n = len(CLASS_NAMES)
    dice = mean_foreground_dice(prediction.labels, truth, n)
    _say(f"model: {model.name} on {prediction.info.get('device')}, "
         f"{size}x{size} px in {prediction.elapsed_s:.1f} s")
    for value, score in class_scores(prediction.labels, truth, range(1, n)).items():
        _say(f"  Dice {CLASS_NAMES[value]:<9} {score.dice:.3f}")
    _say(f"mean foreground Dice vs ground truth: {dice:.3f}")
    _say(f"wrote {image_path}")
    _say(f"wrote {labels_path}")
    return dice


def _screenshot_when_done(viewer, path: str) -> None:
    """Save the whole window once the segmentation is shown, then close napari."""
    from qtpy.QtCore import QTimer

    from napari_cryoseg.viewer.session import Session

    session = Session.for_viewer(viewer)
    timer = QTimer()
    started = time.monotonic()

    def check() -> None:
        done = "grid square labels" in viewer.layers and session.busy is None
        if not done and time.monotonic() - started < 300:
            return
        timer.stop()
        viewer.reset_view()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(path, canvas_only=False, flash=False)
        _say(f"wrote {path}" if done else f"timed out; wrote {path} anyway")
        viewer.close()

    timer.timeout.connect(check)
    timer.start(250)
    viewer._cryoseg_demo_timer = timer  # keep a reference for the event loop's lifetime


def run_gui(
    size: int = SAMPLE_SIZE, device: str = "auto", *, model_path: str | None = None,
    block: bool = True, screenshot: str | None = None,
):
    """Open napari with the sample and the dock, start segmenting; returns (viewer, dock)."""
    import napari

    from napari_cryoseg.contributions.sample_data import sample_layers

    viewer = napari.Viewer(title="CryoSeg demo")
    for data, kwargs, kind in sample_layers(seed=SAMPLE_SEED, size=size):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    # the dock as Plugins > CryoSeg opens it (napari hands it a proxy of the viewer)
    _dock_widget, dock = viewer.window.add_plugin_dock_widget("napari-cryoseg", "CryoSeg")
    dock.model_panel.device.setCurrentText(device)
    if model_path:
        dock.model_panel.open_path(model_path)
    message = None if model_path else _missing_model_message()
    if message is None:
        dock.segment_panel.image.select(viewer.layers["grid square"])
        dock.segment_panel.run()
    else:
        from napari.utils.notifications import show_error

        _say(message, err=True)
        show_error(message.replace("\n", " "))
    if screenshot:
        viewer.window.resize(1500, 950)
        _screenshot_when_done(viewer, screenshot)
    if block:
        napari.run()
    return viewer, dock


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cryoseg-demo``."""
    args = _parse(argv)
    if args.headless is not None:
        message = None if args.model else _missing_model_message()
        if message is not None:
            _say(message, err=True)
            return 2
        from napari_cryoseg.core.errors import CryoSegError

        try:
            run_headless(args.headless, args.size, args.device, args.model)
        except CryoSegError as err:
            _say(f"cryoseg-demo: {err}", err=True)
            return 1
        return 0
    run_gui(args.size, args.device, model_path=args.model, screenshot=args.screenshot)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
