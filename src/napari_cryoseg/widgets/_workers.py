"""The one place where engine generators become napari workers.

Every job goes through :func:`start_job`: ``session.begin`` before, ``session.end``
after; ``yielded`` -> progress bar + the panel's status; ``returned`` -> the panel's
main-thread callback (the only place layers change); ``errored`` -> a napari
notification with one line; ``finished`` (also after Cancel) -> the panel resets its
buttons. Inputs are snapshotted by the caller (see :func:`napari_cryoseg.layers.snapshot`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.events import Progress
from napari_cryoseg.engine.predict import Segmenter, count_tiles, segment

#: How many workers were started in this process, per job kind (tests count these).
STARTS: dict[str, int] = {}


def error_message(err: BaseException) -> str:
    """One line for the user: CryoSeg errors as-is, anything else with a hint."""
    if isinstance(err, CryoSegError):
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    name = type(err).__name__
    if "out of memory" in text.lower():
        return f"{name}: {text} - try a smaller tile or batch size, or the cpu device"
    return (f"{name}: {text} (unexpected error; see the napari console/log for details and "
            "report it with the image size and model)")


class WorkerFailed(CryoSegError):
    """An engine error re-raised under a type superqt's worker reports.

    superqt's ``GeneratorWorker`` treats a ``RuntimeError`` from the generator as "the
    worker was deleted": it emits neither ``errored`` nor ``finished``, so a panel would
    stay busy forever. torch raises ``RuntimeError`` for most failures.
    """


def guarded(func: Callable[..., Generator[Any, Any, Any]], *args: Any, **kwargs: Any):
    """Run the engine generator ``func``; turn RuntimeError into :class:`WorkerFailed`."""
    try:
        return (yield from func(*args, **kwargs))
    except RuntimeError as err:
        text = str(err).strip()
        raise WorkerFailed(
            f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__
        ) from err


@dataclass(frozen=True)
class BatchItem:
    """Batch progress: item ``index`` changed ``status`` (result = Prediction or reason)."""

    index: int
    status: str
    result: Any = None


def batch_generator(
    images: Sequence[Any], model: Any, tiling: TilingConfig, device: str, threshold: float,
    want_probabilities: bool,
) -> Generator[Any, None, int]:
    """Segment several arrays in turn; one failing image does not stop the others."""
    segmenter = Segmenter(model, device)
    done = 0
    for i, image in enumerate(images):
        yield BatchItem(i, "running")
        try:
            prediction = yield from segment(
                image, segmenter, tiling, threshold=threshold,
                return_probabilities=want_probabilities,
            )
        except Exception as err:  # noqa: BLE001 - reported per image, batch goes on
            yield BatchItem(i, "failed", error_message(err))
            continue
        done += 1
        yield BatchItem(i, "done", prediction)
    return done


def total_tiles(shapes: Sequence[tuple[int, ...]], tiling: TilingConfig, stride: int) -> int:
    """Tiles of all images (progress total)."""
    return sum(count_tiles(tuple(s), tiling.tile, tiling.overlap, stride) for s in shapes)


class Job:
    """A running worker with its progress bar; ``cancel()`` stops at the next tile batch."""

    def __init__(self, worker: Any, bar: Any, kind: str) -> None:
        self.worker = worker
        self.bar = bar
        self.kind = kind
        self.cancelled = False
        self.returned = False

    def cancel(self) -> None:
        """Ask the worker to stop (takes effect at its next yield)."""
        self.cancelled = True
        self.worker.quit()


def start_job(
    session: Any,
    kind: str,
    generator_func: Callable[..., Generator[Any, Any, Any]],
    *args: Any,
    total: int,
    desc: str,
    on_event: Callable[[Any], None] | None = None,
    on_result: Callable[[Any], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    on_finish: Callable[[Job], None] | None = None,
    start: bool = True,
    **kwargs: Any,
) -> Job:
    """Run ``generator_func(*args, **kwargs)`` in a napari worker, wired as described above.

    Raises :class:`CryoSegError` (before any thread starts) if another job is running.
    """
    session.begin(kind)
    try:
        worker = create_worker(
            guarded, generator_func, *args, _start_thread=False, _ignore_errors=True, **kwargs
        )
    except Exception:
        session.end(kind)
        raise
    bar = progress(total=max(int(total), 1), desc=desc)
    job = Job(worker, bar, kind)
    last = [0]

    def yielded(event: Any) -> None:
        # napari's progress bar may process Qt events while it updates, so a later
        # ``returned`` can run inside ``bar.update``: tell the panel first, and drop
        # events that arrive after the result.
        if job.returned:
            return
        if on_event is not None:
            on_event(event)
        if isinstance(event, Progress):
            if event.done < last[0] or event.done == 0:
                last[0] = 0  # the next image of a batch started
            step, last[0] = max(event.done - last[0], 0), event.done
            bar.update(step)

    def returned(value: Any) -> None:
        job.returned = True
        if on_result is not None and not job.cancelled:
            on_result(value)

    def errored(err: BaseException) -> None:
        message = error_message(err)
        show_error(f"CryoSeg: {message}")
        if on_error is not None:
            on_error(message)

    def finished() -> None:
        session.end(kind)
        bar.close()
        if job.cancelled:
            show_info(f"CryoSeg: {desc} cancelled")
        if on_finish is not None:
            on_finish(job)

    worker.yielded.connect(yielded)
    worker.returned.connect(returned)
    worker.errored.connect(errored)
    worker.finished.connect(finished)
    STARTS[kind] = STARTS.get(kind, 0) + 1
    if start:
        worker.start()
    return job
