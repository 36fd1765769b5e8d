"""Segment very large images on a dask.distributed cluster, block by block.

:func:`segment_distributed` cuts a 2D (or ZYX/TYX) dask array into large blocks (default
4096² pixels) with a halo of context pixels around each, segments every block on a
worker with the same streaming tile engine as
:func:`~napari_cryoseg.engine.inference.predict.segment`,
trims the halo and returns a *lazy* dask array of labels (store it with
``labels.to_zarr(...)`` or ``dask.array.store``: nothing runs before).

* The :class:`~napari_cryoseg.model.checkpoint.ModelFile` is scattered to the workers once
  (``client.scatter(..., broadcast=True)``); each worker process builds its
  :class:`~napari_cryoseg.engine.inference.predict.Segmenter` once and caches it, keyed by a hash of
  the weights and settings.
* Intensity normalization uses percentiles of the **whole** image (computed once from a
  strided subsample), not of each block, so blocks are normalised identically.
* The halo (``margin``) is at least twice the tile overlap, rounded up to the network
  stride, so every kept pixel has the same context it has in a single-process run and
  block origins stay stride-aligned. Results equal the single-process ones except for a
  few pixels near tile seams: blocks have their own tile grid, so the blending weights of
  overlapping tiles differ there (labels change only where the probability sits at the
  threshold; measured >= 99.9 % agreement in the tests).

Cluster: ``make_client("local:2")`` starts a LocalCluster (2 workers, 1 thread each);
``make_client("tcp://host:8786")`` connects to a running scheduler. On SLURM/PBS/SGE start
a ``dask_jobqueue`` cluster (e.g. ``SLURMCluster(...).scale(jobs=8)``) and pass its
``scheduler_address`` -- nothing here is specific to one batch system.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.normalization import percentile_range
from napari_cryoseg.core.optional import require
from napari_cryoseg.core.setting import check_value
from napari_cryoseg.core.tiling import TilingConfig, round_up
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import (
    Segmenter,
    _validate_input,
    labels_dtype,
    segment,
)
from napari_cryoseg.engine.inference.settings import SegmentSettings
from napari_cryoseg.model.checkpoint import ModelFile

if TYPE_CHECKING:  # pragma: no cover
    import dask.array
    import distributed

__all__ = ["block_margin", "make_client", "model_key", "segment_block", "segment_distributed"]

#: Per-process cache of segmenters built on a worker: key -> Segmenter.
_SEGMENTERS: dict[str, Segmenter] = {}
_LOCK = threading.Lock()


def model_key(model: ModelFile) -> str:
    """A short hash of a model's weights, config and preprocessing (cache key)."""
    digest = hashlib.sha1()
    digest.update(repr(sorted(model.config.to_dict().items())).encode())
    digest.update(repr(model.normalization).encode())
    for name in sorted(model.state_dict):
        tensor = model.state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _segmenter(
    model: ModelFile, key: str, device: str, mixed_precision: bool, torch_threads: int | None,
    tta: int = 1,
) -> Segmenter:
    """The cached Segmenter of this worker process (built on first use)."""
    cache_key = f"{key}:{device}:{int(mixed_precision)}:{tta}"
    with _LOCK:
        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        if cache_key not in _SEGMENTERS:
            _SEGMENTERS[cache_key] = Segmenter(model, device, mixed_precision=mixed_precision,
                                               tta=tta)
        return _SEGMENTERS[cache_key]


def segment_block(
    block: np.ndarray,
    model: ModelFile,
    tiling: TilingConfig,
    value_range: tuple[float, float],
    *,
    key: str | None = None,
    threshold: float | None = None,
    device: str = "auto",
    mixed_precision: bool = True,
    torch_threads: int | None = None,
    tta: int = 1,
) -> np.ndarray:
    """Labels of one block (halo included) with a fixed, image-wide ``value_range``."""
    block = np.asarray(block)
    segmenter = _segmenter(model, key or model_key(model), device, mixed_precision,
                           torch_threads, tta)
    result = drain(segment(block, segmenter, tiling, threshold=threshold,
                           value_range=value_range))
    return result.labels


def block_margin(model: ModelFile, tiling: TilingConfig) -> int:
    """Halo pixels around a block: >= 2x the tile overlap, a multiple of the stride."""
    stride = model.config.stride
    overlap_px = int(round(round_up(tiling.tile, stride) * tiling.overlap))
    return round_up(max(2 * overlap_px, stride), stride)


def segment_distributed(
    image: dask.array.Array | np.ndarray,
    model_file: ModelFile,
    tiling: TilingConfig | None = None,
    client: distributed.Client | None = None,
    block: int = 4096,
    *,
    threshold: float | None = None,
    device: str = "auto",
    mixed_precision: bool = True,
    torch_threads: int | None = None,
    margin: int | None = None,
    tta: int = 1,
) -> dask.array.Array:
    """A lazy dask array of labels for ``image``, computed block by block on ``client``.

    Parameters
    ----------
    image : dask.array.Array or numpy.ndarray
        2D (Y, X) or 3D (Z or T, Y, X) grayscale; rechunked to ``block``² pixels per plane.
    model_file : ModelFile
        Scattered to all workers once (when ``client`` is given).
    tiling : TilingConfig, optional
        Default: the model file's hint.
    client : distributed.Client, optional
        The cluster; None runs on the current dask scheduler (threads), sending the
        model inside the task graph.
    block : int
        Block edge in pixels (rounded up to the network stride and to at least one
        tile). Larger blocks mean fewer halo pixels computed twice (4096: ~6 % extra for
        a 128-pixel halo) but more memory per worker.
    threshold : float, optional
        Binary models' foreground threshold (default: the model file's).
    device : str
        Device on each worker (``auto`` = its GPU if it has one).
    mixed_precision : bool
        As in :class:`Segmenter`.
    torch_threads : int, optional
        ``torch.set_num_threads`` on each worker (1 for one-thread-per-core workers).
    margin : int, optional
        Halo in pixels; default :func:`block_margin`.
    tta : int
        Test-time augmentation copies per tile (1 = off, 2, 4, 8).

    Returns
    -------
    dask.array.Array
        uint8 (uint16 above 255 classes) labels, chunks ``block``² per plane.
    """
    import dask.array as da

    if getattr(model_file, "foreign", False):
        raise InputError(f"bioimage.io model '{model_file.name}' cannot run on a dask cluster "
                         "(--scheduler); segment without --scheduler")
    tiling = tiling or model_file.tiling
    check_value(SegmentSettings, "tta", tta)
    _validate_input(image, model_file.temporal_context)
    if threshold is None:
        threshold = model_file.threshold
    check_value(SegmentSettings, "threshold", threshold)
    if not isinstance(image, da.Array):
        image = da.from_array(np.asarray(image), chunks=-1)
    stride = model_file.config.stride
    block = round_up(max(int(block), tiling.tile, stride), stride)
    margin = block_margin(model_file, tiling) if margin is None else round_up(margin, stride)
    if image.ndim == 2:
        chunks: tuple[int, ...] = (block, block)
        depth: dict[int, int] = {0: margin, 1: margin}
    else:
        context = model_file.temporal_context
        chunks = (max(1, 2 * context + 1) if context else 1, block, block)
        depth = {0: context, 1: margin, 2: margin}
    image = image.rechunk(chunks)
    # An axis that fits in one block needs no halo (and dask refuses one larger than it).
    depth = {axis: (d if image.numblocks[axis] > 1 else 0) for axis, d in depth.items()}
    # Percentiles of the whole image (strided subsample), once, on the client side.
    value_range = percentile_range(image, model_file.normalization)
    key = model_key(model_file)
    model_arg: Any = model_file
    if client is not None:
        model_arg = client.scatter(model_file, broadcast=True, hash=False)
    dtype = labels_dtype(model_file.config.n_classes)
    return image.map_overlap(
        segment_block,
        depth=depth,
        boundary="none",
        trim=True,
        dtype=dtype,
        meta=np.empty((0,) * image.ndim, dtype=dtype),
        model=model_arg,
        tiling=tiling,
        value_range=value_range,
        key=key,
        threshold=threshold,
        device=device,
        mixed_precision=mixed_precision,
        torch_threads=torch_threads,
        tta=tta,
    )


def make_client(scheduler: str, dashboard: str | None = None,
                ) -> tuple[distributed.Client, Any]:
    """``(client, cluster or None)`` for ``--scheduler``.

    ``dashboard`` (e.g. ``":8787"`` or ``"127.0.0.1:8787"``) starts the dask dashboard of
    a local cluster at that address (needs bokeh, in the ``distributed`` extra); the
    client's ``dashboard_link`` then says where to open it. Default: no dashboard.

    ``local`` / ``local:N`` start a LocalCluster of N worker processes (default: one
    per CPU core) with one thread each; anything else is a scheduler address
    (``tcp://host:8786``), e.g. of a dask-jobqueue SLURM/PBS cluster. Close both when
    done (``client.close(); cluster.close()``).
    """
    import os

    distributed = require("distributed", "--scheduler (dask.distributed clusters)")
    Client, LocalCluster = distributed.Client, distributed.LocalCluster

    text = scheduler.strip()
    if text == "local" or text.startswith("local:"):
        n = text.partition(":")[2]
        try:
            workers = int(n) if n else (os.cpu_count() or 1)
        except ValueError:
            raise InputError(
                f"--scheduler {scheduler!r}: expected local or local:N (N workers)"
            ) from None
        if workers < 1:
            raise InputError(f"--scheduler {scheduler!r}: need at least 1 worker")
        if dashboard:
            require("bokeh", "the dask dashboard (--dashboard)")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=dashboard or None)
        return Client(cluster), cluster
    try:
        return Client(text, timeout="20s"), None
    except OSError as err:
        raise InputError(
            f"cannot connect to the dask scheduler at {scheduler!r} ({err}); check the "
            "address (tcp://host:port) and that the scheduler is running"
        ) from err
