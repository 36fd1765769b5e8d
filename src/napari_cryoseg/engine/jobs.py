"""Multi-step jobs of the interactive loop, as engine generators (no napari, no Qt).

The dock runs these in its job runner (``widgets/job_runner.py``) exactly as it runs
:func:`~napari_cryoseg.engine.predict.segment` or
:func:`~napari_cryoseg.engine.finetune.finetune`:

* :func:`segment_many` segments several images in turn with one segmenter (Batch,
  re-segmentation after fine-tuning, Revert); one failing image does not stop the rest,
  and its :class:`~napari_cryoseg.engine.events.Progress` counts tiles over all images.
* :func:`finetune_job` warms torch up (once per process) on the worker thread, then
  fine-tunes: the first optimiser step's lazy set-up never runs on napari's main thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_cryoseg.engine.events import Message, Progress, relay
from napari_cryoseg.engine.predict import Segmenter, count_tiles, segment
from napari_cryoseg.engine.settings import SegmentSettings
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


_warm = threading.Event()


def warm_up_torch(model: ModelFile) -> bool:
    """One tiny forward/backward/optimiser step, once per process; True if it ran now.

    torch's lazy first-call set-up (kernels, allocator, autograd engine threads) takes
    from a fraction of a second to seconds; paying it here, inside a worker, keeps it off
    napari's main thread and out of the first timed training step.
    """
    if _warm.is_set():
        return False
    import torch

    from napari_cryoseg.model.unet import UNet

    config = model.config
    net = UNet(config)
    net.train()
    size = 2 * config.stride
    x = torch.zeros((2, config.in_channels, size, size))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net(x).float().mean().backward()
    optimizer.step()
    with torch.inference_mode():
        net.eval()(x)
    _warm.set()
    return True


def finetune_job(
    model: ModelFile, data: Any, config: Any, preview: Any = None,
    unlabelled: Sequence[np.ndarray] = (),
) -> Generator[Any, None, Any]:
    """Warm torch up, then fine-tune ``model`` on ``data`` (images, masks, valid masks).

    ``data`` has ``images``, ``masks``, ``valid_masks`` and ``names`` (the dock's
    :class:`~napari_cryoseg.viewer.review.TrainingData`); ``config`` is a
    :class:`~napari_cryoseg.engine.finetune.FinetuneConfig`; ``preview`` an optional
    :class:`~napari_cryoseg.engine.preview.PreviewRequest`; ``unlabelled`` other images
    of the user's (BatchNorm re-estimation only). Returns the
    :class:`~napari_cryoseg.engine.finetune.FinetuneResult`.
    """
    from napari_cryoseg.engine.finetune import finetune

    yield Message("preparing torch…")
    warm_up_torch(model)
    return (yield from finetune(model, data.images, data.masks, data.valid_masks, config,
                                names=data.names, preview=preview,
                                unlabelled=unlabelled))
