"""Multi-image segmentation jobs of the interactive loop, as engine generators (no napari, no Qt).

The dock runs this in its job runner (``widgets/job_runner.py``) exactly as it runs
:func:`~napari_cryoseg.engine.inference.predict.segment` or
:func:`~napari_cryoseg.engine.training.finetune.finetune`:

* :func:`segment_many` segments several images in turn with one segmenter (Batch,
  re-segmentation after fine-tuning, Revert); one failing image does not stop the rest,
  and its :class:`~napari_cryoseg.engine.events.Progress` counts tiles over all images.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from napari_cryoseg.engine.events import Progress, relay
from napari_cryoseg.engine.inference.predict import Segmenter, count_tiles, segment
from napari_cryoseg.engine.inference.settings import SegmentSettings
from napari_cryoseg.model.checkpoint import ModelFile


@dataclass(frozen=True)
class BatchItem:
    """Image ``index`` of a :func:`segment_many` job changed ``status``.

    ``status`` is ``"running"``, ``"done"`` (``result`` = the Prediction) or
    ``"failed"`` (``result`` = a one-line reason).
    """

    index: int
    status: str
    result: Any = None


def one_line(err: BaseException) -> str:
    """The first line of an error, prefixed by its type unless it is a CryoSeg error."""
    from napari_cryoseg.core.errors import CryoSegError

    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, CryoSegError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def total_tiles(shapes: Sequence[tuple[int, ...]], settings: SegmentSettings, stride: int) -> int:
    """Tiles of all images (the progress total of a segmentation job)."""
    tiling = settings.tiling
    return sum(count_tiles(tuple(s), tiling.tile, tiling.overlap, stride) for s in shapes)


def segment_many(
    images: Sequence[Any],
    model: ModelFile,
    settings: SegmentSettings,
    device: str = "auto",
    *,
    probabilities: bool = False,
) -> Generator[Progress | BatchItem, None, int]:
    """Segment ``images`` in turn with the same settings; returns how many succeeded.

    Yields a :class:`BatchItem` when an image starts, ends or fails, and
    :class:`Progress` over the tiles of all images.
    """
    segmenter = Segmenter(model, device, tta=settings.tta)
    stride = model.config.stride
    sizes = [total_tiles([tuple(image.shape)], settings, stride) for image in images]
    total = sum(sizes)
    offset, done = 0, 0
    started = time.perf_counter()
    for index, image in enumerate(images):
        yield BatchItem(index, "running")
        try:
            prediction = yield from relay(
                segment(image, segmenter, settings=settings, return_probabilities=probabilities),
                lambda event, index=index, offset=offset: Progress(
                    "segment", offset + event.done, total,
                    f"image {index + 1}/{len(images)}: {event.done}/{event.total} tiles",
                    time.perf_counter() - started,
                ),
            )
        except Exception as err:  # noqa: BLE001 - reported per image, the job goes on
            yield BatchItem(index, "failed", one_line(err))
            continue
        finally:
            offset += sizes[index]
        done += 1
        yield BatchItem(index, "done", prediction)
    return done
