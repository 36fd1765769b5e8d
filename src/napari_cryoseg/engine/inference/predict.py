"""Tiled, blended, batched inference over 2D images, stacks and time series.

The image is streamed in strips of tile rows: each tile's class probabilities are
weighted by a smooth window (:mod:`napari_cryoseg.core.tiling`) and accumulated on
the compute device; a strip of image rows is finalised (probabilities -> labels) as
soon as no later tile touches it. Device memory is therefore set by the tile size,
batch size and image width, not the image height, and dask/zarr inputs are read one
strip at a time and never loaded whole.

This module stays whole (over 450 lines): the segmenter, the strip reader and the
streaming accumulation share private buffers and are read together; the settings live
in :mod:`napari_cryoseg.engine.inference.settings`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.normalization import check_numeric, percentile_range
from napari_cryoseg.core.setting import check_value
from napari_cryoseg.core.temporal import preprocess_series
from napari_cryoseg.core.tiling import TileGrid, TilingConfig, padded_shape_for, plan_tiles
from napari_cryoseg.engine.device import autocast_dtype, resolve_device
from napari_cryoseg.engine.events import Progress
from napari_cryoseg.engine.inference.settings import SegmentSettings, check_segmenter_options
from napari_cryoseg.model.checkpoint import ModelFile

#: The 8 symmetries of a square as name -> (k rot90 in the YX plane, flip X afterwards).
#: Inverse: flip, then rot90(-k). Shared by test-time augmentation and TTA uncertainty.
TRANSFORMS: dict[str, tuple[int, bool]] = {
    "identity": (0, False),
    "flip_x": (0, True),
    "rot90": (1, False),
    "rot180": (2, False),
    "rot270": (3, False),
    "rot90_flip": (1, True),
    "rot180_flip": (2, True),
    "rot270_flip": (3, True),
}
#: Test-time augmentation order: the first four (identity, flip x, rot180, flip y) keep a
#: tile's shape, so ``tta=2`` and ``4`` never transpose rectangular tiles.
TTA_TRANSFORMS: tuple[tuple[int, bool], ...] = tuple(TRANSFORMS[name] for name in (
    "identity", "flip_x", "rot180", "rot180_flip", "rot90", "rot90_flip", "rot270",
    "rot270_flip",
))

@dataclass
class Prediction:
    """Result of :func:`segment`.

    Attributes
    ----------
    labels : numpy.ndarray
        uint8 (uint16 above 255 classes), same shape as the input, 0 = background.
    probabilities : numpy.ndarray or None
        float32 (..., K, Y, X) when asked for: K = 1 foreground probability for
        binary models, else one channel per class.
    class_names, class_colors : list of str
        From the model file.
    value_range : tuple of float
        The intensity range mapped to [0, 1] (percentiles of this image).
    elapsed_s : float
        Wall time of the whole run.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    class_names: list[str]
    class_colors: list[str]
    value_range: tuple[float, float]
    elapsed_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class Segmenter:
    """A model placed on a device for inference (eval mode, optional mixed precision).

    Each Segmenter owns its network: never share one between threads that train and
    infer. Fine-tuning trains a copy and hands back a new :class:`ModelFile`.

    Parameters
    ----------
    model : ModelFile
        Weights, config and preprocessing.
    device : str or torch.device
        ``"auto"`` picks cuda, then mps, then cpu.
    mixed_precision : bool
        bf16/fp16 autocast with channels_last on CUDA, and bf16 on CPUs with native
        bf16 (AMX / AVX512-BF16); False forces fp32 everywhere.
    compile : bool
        ``torch.compile`` the network (pays off for large jobs on CUDA).
    tta : int
        Test-time augmentation: average the probabilities of 1 (off), 2, 4 or 8
        flipped/rotated copies of every tile (:data:`TTA_TRANSFORMS`). Costs that many
        forward passes; smooths out orientation-dependent mistakes (membranes, edges).
    """

    def __init__(
        self,
        model: ModelFile,
        device: str | torch.device = "auto",
        *,
        mixed_precision: bool = True,
        compile: bool = False,
        tta: int = 1,
    ) -> None:
        self.tta = check_value(SegmentSettings, "tta", tta)
        self.model = model
        self.device = resolve_device(device)
        if getattr(model, "foreign", False):  # a bioimage.io model runs its own pipeline
            self.net = self._forward = self.amp_dtype = self.max_batch = None
            self.channels_last = False
            return
        self.net = model.build(self.device)
        self.amp_dtype = autocast_dtype(self.device) if mixed_precision else None
        self.channels_last = self.amp_dtype is not None or self.device.type == "cpu"
        if self.channels_last:
            # cuDNN / oneDNN pick faster kernels for NHWC (measured 1.4-1.7x fp32 on CPU).
            self.net = self.net.to(memory_format=torch.channels_last)
        self._forward = torch.compile(self.net) if compile else self.net
        # On a CPU, one tile at a time stays in cache: measured 1.1-2x faster per tile
        # than batches of 4 on 2 cores. On CUDA this is only lowered after an OOM error.
        self.max_batch: int | None = 1 if self.device.type == "cpu" else None

    @property
    def config(self):
        """The network's :class:`UNetConfig`."""
        return self.model.config

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        if self.tta == 1:
            return self._run_once(batch)
        total = None
        for k, flip in TTA_TRANSFORMS[: self.tta]:
            view = torch.rot90(batch, k, dims=(-2, -1)) if k else batch
            probs = self._run_once(view.flip(-1) if flip else view)
            probs = probs.flip(-1) if flip else probs
            probs = torch.rot90(probs, -k, dims=(-2, -1)) if k else probs
            total = probs if total is None else total + probs
        return total / self.tta

    def _run_once(self, batch: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            device_type=self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            logits = self._forward(batch)
        logits = logits.float()
        if self.config.out_channels == 1:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) normalised float32 -> (B, K, H, W) probabilities.

        On a CUDA out-of-memory error the batch is split in halves and retried (and the
        smaller size remembered), so a too-large batch setting slows down, not fails.
        """
        limit = self.max_batch or batch.shape[0]
        if batch.shape[0] > limit:
            return torch.cat([self.probabilities(part) for part in batch.split(limit)])
        try:
            return self._run(batch)
        except torch.cuda.OutOfMemoryError:
            if batch.shape[0] == 1:
                raise
            torch.cuda.empty_cache()
            self.max_batch = max(batch.shape[0] // 2, 1)
            return self.probabilities(batch)


def labels_dtype(n_classes: int) -> np.dtype:
    """uint8 up to 255 classes, else uint16."""
    return np.dtype(np.uint8 if n_classes <= 255 else np.uint16)


def _validate_input(image: Any, temporal_context: int) -> None:
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        raise InputError(f"expected a numpy or dask array, got {type(image).__name__}")
    check_numeric(image)
    if image.ndim not in (2, 3):
        raise InputError(
            f"image has shape {tuple(image.shape)}; expected 2D (Y, X) or 3D (Z or T, Y, X). "
            "Split channels or extra axes into separate images first"
        )
    if min(image.shape[-2:]) < 2:
        raise InputError(f"image of shape {tuple(image.shape)} is too small to segment")
    if any(s == 0 for s in image.shape):
        raise InputError(f"image of shape {tuple(image.shape)} is empty")
    if temporal_context and image.ndim != 3:
        raise InputError(
            f"this model uses temporal context (frames t-{temporal_context}..t+"
            f"{temporal_context} as channels): give a (T, Y, X) time series, not an image "
            f"of shape {tuple(image.shape)}"
        )


def _plane_channels(image: Any, index: int, context: int) -> list[Any]:
    """Input channels for plane ``index``: the plane itself, or t-k..t+k (edges repeated)."""
    if image.ndim == 2:
        return [image]
    if not context:
        return [image[index]]
    last = image.shape[0] - 1
    return [image[min(max(t, 0), last)] for t in range(index - context, index + context + 1)]


class _PlaneReader:
    """Reads (C, rows, X) strips of one plane in their stored dtype, reflect-padded.

    The plane is padded bottom/right to a multiple of the network stride; padding is
    added per strip, so a dask or zarr plane is never loaded whole. Strips stay in the
    compact stored dtype (e.g. uint16) so the host->device copy moves 2 bytes a pixel
    and the float conversion happens on the device.
    """

    def __init__(self, channels: list[Any], stride: int) -> None:
        self.channels = channels
        self.shape = (int(channels[0].shape[0]), int(channels[0].shape[1]))
        self.padded_shape = padded_shape_for(self.shape, stride)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of the padded plane, all channels, stored dtype."""
        height, width = self.shape
        real_stop = min(stop, height)
        block = np.stack([np.asarray(c[start:real_stop]) for c in self.channels])
        pad_rows, pad_cols = stop - real_stop, self.padded_shape[1] - width
        if pad_rows or pad_cols:
            # 'reflect' needs at least 2 pixels along an axis; 'edge' covers 1-pixel axes.
            mode = "reflect" if min(block.shape[1:]) > 1 else "edge"
            block = np.pad(block, ((0, 0), (0, pad_rows), (0, pad_cols)), mode=mode)
        return block


def _host_tensor(block: np.ndarray) -> tuple[torch.Tensor, bool]:
    """A torch view of ``block`` (no float conversion); True if it holds uint16 bits."""
    kind = block.dtype
    if kind == np.uint16:
        return torch.from_numpy(np.ascontiguousarray(block).view(np.int16)), True
    if kind == np.bool_:
        return torch.from_numpy(np.ascontiguousarray(block).view(np.uint8)), False
    if kind in (np.uint32, np.uint64, np.int64):
        return torch.from_numpy(block.astype(np.float64)), False
    return torch.from_numpy(np.ascontiguousarray(block)), False


def _upload_normalised(
    block: np.ndarray, device: torch.device, value_range: tuple[float, float], clip: float
) -> torch.Tensor:
    """Copy a stored-dtype strip to ``device`` and normalise it there (float32)."""
    tensor, is_uint16 = _host_tensor(block)
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    else:
        tensor = tensor.to(device)
    if is_uint16:
        tensor = tensor.to(torch.int32) & 0xFFFF  # undo the int16 view
    low, high = value_range
    out = (tensor.to(torch.float32) - low) * (1.0 / (high - low))
    # NaN -> 0 and clipping keep ice/charging outliers from dominating.
    out = torch.nan_to_num_(out, nan=0.0, posinf=1 + clip, neginf=-clip)
    return out.clamp_(-clip, 1 + clip)


def _segment_plane(
    reader: _PlaneReader,
    segmenter: Segmenter,
    tile: tuple[int, int],
    overlap_px: int,
    tiling: TilingConfig,
    value_range: tuple[float, float],
    clip: float,
    threshold: float,
    labels_out: Any,
    probs_out: np.ndarray | None,
    counter: list[int],
    total: int,
    started: float,
) -> Generator[Progress, None, None]:
    """Stream one plane through the network, writing labels (and probabilities) out."""
    device = segmenter.device
    n_out = segmenter.config.out_channels
    height, width = reader.shape
    grid = TileGrid(reader.padded_shape, tile, overlap_px, segmenter.config.stride)
    tile_h, tile_w = tile
    # Strip k covers image rows grid.strip_bounds(k); its accumulators live on the device
    # until tile row k is finished, then it is finalised and freed.
    strips: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    windows: dict[tuple[bool, ...], torch.Tensor] = {}

    def strip_buffers(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if k not in strips:
            start, stop = grid.strip_bounds(k)
            strips[k] = (
                torch.zeros((n_out, stop - start, grid.shape[1]), device=device),
                torch.zeros((stop - start, grid.shape[1]), device=device),
            )
        return strips[k]

    def finalise(k: int) -> None:
        acc, weight = strips.pop(k)
        start, stop = grid.strip_bounds(k)
        stop_valid = min(stop, height)
        if start >= stop_valid:
            return
        rows = stop_valid - start
        probs = acc[:, :rows, :width] / weight[:rows, :width]
        if n_out == 1:
            labels = (probs[0] > threshold).to(torch.uint8)
        else:
            labels = _class_argmax(probs)
        labels_out[start:stop_valid] = labels.cpu().numpy().astype(labels_out.dtype, copy=False)
        if probs_out is not None:
            probs_out[:, start:stop_valid] = probs.cpu().numpy()

    # Tile rows are read on a helper thread one row ahead (disk/dask reads and padding
    # overlap with device compute), uploaded once, normalised on the device, and
    # tiles are cut from the device copy.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cryoseg-read")
    pending: dict[int, Future[np.ndarray]] = {}
    device_rows: dict[int, torch.Tensor] = {}

    def request(row: int) -> None:
        if row < grid.n_rows and row not in pending and row not in device_rows:
            y = grid.row_starts[row]
            pending[row] = executor.submit(reader.rows, y, y + tile_h)

    def device_row(row: int) -> torch.Tensor:
        if row not in device_rows:
            request(row)
            device_rows[row] = _upload_normalised(
                pending.pop(row).result(), device, value_range, clip
            )
            request(row + 1)
        return device_rows[row]

    tiles = grid.tiles
    try:
        yield from _run_tiles(
            tiles, tiling.batch_size, device_row, device_rows, segmenter, grid, tile_h,
            tile_w, windows, strip_buffers, finalise, counter, total, started,
        )
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    for k in sorted(strips):
        finalise(k)


def _class_argmax(probs: torch.Tensor) -> torch.Tensor:
    """``probs.argmax(dim=0)`` as int32 for (K, Y, X), ties to the lowest class.

    One elementwise pass per class: torch's CPU argmax over the leading axis of a
    (4, 464, 2048) strip took 150 ms, half of a 2048² segmentation with the default
    model; this takes a few ms and gives the same labels.
    """
    best = probs[0].clone()
    labels = torch.zeros(probs.shape[1:], dtype=torch.int32, device=probs.device)
    for k in range(1, probs.shape[0]):
        better = probs[k] > best
        labels.masked_fill_(better, k)
        best = torch.where(better, probs[k], best)
    return labels


def _run_tiles(
    tiles, batch_size, device_row, device_rows, segmenter, grid, tile_h, tile_w, windows,
    strip_buffers, finalise, counter, total, started,
) -> Generator[Progress, None, None]:
    """The batch loop of :func:`_segment_plane` (split out to keep cleanup in one place)."""
    device = segmenter.device
    finished_rows = 0
    for first in range(0, len(tiles), batch_size):
        batch_tiles = tiles[first : first + batch_size]
        for row in [r for r in device_rows if r < batch_tiles[0].row]:
            del device_rows[row]  # rows above the batch are no longer needed
        batch = torch.stack(
            [device_row(t.row)[:, :, t.x : t.x + tile_w] for t in batch_tiles]
        )  # (B, C, tile_h, tile_w) normalised float32
        probs = segmenter.probabilities(batch)  # (B, K, tile_h, tile_w)
        for t, p in zip(batch_tiles, probs):
            key = (t.at_top, t.at_bottom, t.at_left, t.at_right)
            if key not in windows:
                windows[key] = torch.from_numpy(np.array(grid.window(t))).to(device)
            window = windows[key]
            weighted = p * window
            k = t.row
            while k < grid.n_rows:
                s_start, s_stop = grid.strip_bounds(k)
                lo, hi = max(s_start, t.y), min(s_stop, t.y + tile_h)
                if lo >= hi:
                    break
                acc, weight = strip_buffers(k)
                acc[:, lo - s_start : hi - s_start, t.x : t.x + tile_w] += weighted[
                    :, lo - t.y : hi - t.y
                ]
                weight[lo - s_start : hi - s_start, t.x : t.x + tile_w] += window[
                    lo - t.y : hi - t.y
                ]
                k += 1
        # A tile row is complete when the last tile of the batch is beyond it.
        last = batch_tiles[-1]
        done_row = last.row if last.at_right else last.row - 1
        while finished_rows <= done_row:
            finalise(finished_rows)
            finished_rows += 1
        counter[0] += len(batch_tiles)
        yield Progress(
            "segment", counter[0], total, f"{counter[0]}/{total} tiles",
            time.perf_counter() - started,
        )


def count_tiles(shape: tuple[int, ...], tile: int, overlap: float, stride: int) -> int:
    """Tiles needed for an image (all planes), for progress totals."""
    plane = (int(shape[-2]), int(shape[-1]))
    tiles, overlap_px = plan_tiles(plane, tile, overlap, stride)
    grid = TileGrid(padded_shape_for(plane, stride), tiles, overlap_px, stride)
    planes = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return len(grid) * planes


def segment(
    image: Any,
    model: ModelFile | Segmenter,
    tiling: TilingConfig | None = None,
    *,
    device: str = "auto",
    threshold: float | None = None,
    return_probabilities: bool = False,
    labels_out: Any = None,
    mixed_precision: bool = True,
    value_range: tuple[float, float] | None = None,
    tta: int = 1,
    settings: SegmentSettings | None = None,
) -> Generator[Progress, None, Prediction]:
    """Segment a 2D image, a (Z, Y, X) stack or a (T, Y, X) series, tile by tile.

    Parameters
    ----------
    image : numpy.ndarray or dask.array.Array
        uint8/uint16/int16/float32/... grayscale; YX are the last two axes. Dask arrays
        are read a strip of rows at a time.
    model : ModelFile or Segmenter
        A model file (placed on ``device``) or an existing segmenter. A segmenter keeps
        its own device, precision and test-time augmentation: asking for a different
        ``device``, ``mixed_precision=False`` on a mixed-precision segmenter or another
        ``tta`` raises :class:`InputError` rather than being ignored.
    tiling : TilingConfig, optional
        Tile, overlap, batch size; defaults to the model file's hint.
    device : str
        Where a ModelFile is placed; with a Segmenter it must be ``"auto"`` or the
        segmenter's device.
    threshold : float, optional
        Foreground probability threshold for binary models; default: the model file's
        (tuned on the validation block when it was trained; 0.5 for older files).
    return_probabilities : bool
        Also return per-class probabilities (float32, memory-heavy for big images).
    labels_out : array-like, optional
        Where to write labels (e.g. a zarr array or memmap of the input's shape);
        default is a new numpy array.
    mixed_precision : bool
        Used when ``model`` is a ModelFile: bf16/fp16 where the device runs it fast.
    value_range : tuple of float, optional
        Intensities mapped to [0, 1]; default: the model's percentiles of this image.
        Pass the whole image's range when segmenting blocks of it separately.
    tta : int
        Test-time augmentation copies (``SegmentSettings.tta``'s choices); with a Segmenter,
        1 or its own.
    settings : SegmentSettings, optional
        Tiling, threshold and test-time augmentation in one object (the dock passes
        this); give it instead of ``tiling``/``threshold``/``tta``, not with them.

    Yields
    ------
    Progress
        After each batch of tiles.

    Returns
    -------
    Prediction
    """
    started = time.perf_counter()
    if settings is not None:
        if tiling is not None or threshold is not None or tta != 1:
            raise InputError(
                "segment() got both settings and tiling/threshold/tta; pass one or the other"
            )
        tiling, tta = settings.tiling, settings.tta
        threshold = settings.threshold
    foreign = model.model if isinstance(model, Segmenter) else model
    if getattr(foreign, "foreign", False):  # engine.inference.bioimageio_model.BioimageioModel
        where = str(model.device) if isinstance(model, Segmenter) else device
        return (yield from foreign.segment(
            image, tiling, device=where, threshold=threshold,
            return_probabilities=return_probabilities, labels_out=labels_out))
    if isinstance(model, Segmenter):
        check_segmenter_options(model, device, mixed_precision, tta,
                                tta_given=settings is not None)
        segmenter = model
    else:
        segmenter = Segmenter(model, device, mixed_precision=mixed_precision, tta=tta)
    model_file = segmenter.model
    tiling = tiling or model_file.tiling
    context = model_file.temporal_context
    _validate_input(image, context)
    background = getattr(model_file, "background_subtraction", "none")
    if background != "none":
        # Temporal-median background subtraction, exactly as in training (whole series).
        image = preprocess_series(image, background)
    expected_channels = 2 * context + 1
    if segmenter.config.in_channels != expected_channels:
        raise InputError(
            f"model expects {segmenter.config.in_channels} input channels but this image "
            f"provides {expected_channels}; use a model trained for single grayscale images"
        )
    if threshold is None:
        threshold = float(model_file.threshold)
    check_value(SegmentSettings, "threshold", threshold)
    shape = tuple(int(s) for s in image.shape)
    plane_shape = shape[-2:]
    stride = segmenter.config.stride
    tile, overlap_px = plan_tiles(plane_shape, tiling.tile, tiling.overlap, stride)
    norm = model_file.normalization
    if value_range is None:
        value_range = percentile_range(image, norm)
    elif not value_range[1] > value_range[0]:
        raise InputError(f"value range {value_range} must have high > low")
    n_classes = model_file.config.n_classes
    if labels_out is None:
        labels_out = np.zeros(shape, dtype=labels_dtype(n_classes))
    elif tuple(labels_out.shape) != shape:
        raise InputError(f"labels_out has shape {labels_out.shape}, expected {shape}")
    n_out = segmenter.config.out_channels
    probabilities = None
    if return_probabilities:
        probabilities = np.zeros((*shape[:-2], n_out, *plane_shape), dtype=np.float32)
    total = count_tiles(shape, tiling.tile, tiling.overlap, stride)
    counter = [0]
    yield Progress("segment", 0, total, "starting", 0.0)
    n_planes = shape[0] if len(shape) == 3 else 1
    for index in range(n_planes):
        reader = _PlaneReader(_plane_channels(image, index, context), stride)
        plane_labels = labels_out if len(shape) == 2 else _PlaneView(labels_out, index)
        plane_probs = None
        if probabilities is not None:
            plane_probs = probabilities if len(shape) == 2 else probabilities[index]
        yield from _segment_plane(
            reader, segmenter, tile, overlap_px, tiling, value_range, norm.clip, threshold,
            plane_labels, plane_probs, counter, total, started,
        )
    return Prediction(
        labels=labels_out,
        probabilities=probabilities,
        class_names=list(model_file.class_names),
        class_colors=list(model_file.class_colors),
        value_range=value_range,
        elapsed_s=time.perf_counter() - started,
        info={"tile": tile, "overlap": tiling.overlap, "overlap_px": overlap_px,
              "batch_size": tiling.batch_size, "device": str(segmenter.device), "tiles": total,
              "tta": segmenter.tta},
    )


class _PlaneView:
    """Row-slice writes into plane ``index`` of a 3D output (numpy, zarr, memmap)."""

    def __init__(self, array: Any, index: int) -> None:
        self.array = array
        self.index = index
        self.dtype = array.dtype

    def __setitem__(self, rows: slice, value: np.ndarray) -> None:
        self.array[self.index, rows] = value
