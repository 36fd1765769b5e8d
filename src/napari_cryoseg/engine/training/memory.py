"""Up-front memory checks, so a too-large batch, patch or tile is refused with a message.

:func:`fit_training_patch` is the one patch/memory policy of every training path (CLI
``train`` and ``finetune``, the dock's Train new model and Fine-tune): cap the patch to
the largest image, then check that a step and the padded images fit
(:func:`fit_patch_to_memory` applies it to a recipe). Without it,
``cryoseg train --batch-size 100000`` (or a huge ``--patch``) asks the operating system
for more memory than exists and the process is killed (SIGKILL, no message), possibly
after the images were read. The training estimate is measured on the network's
architecture: the activations autograd keeps for the backward pass are counted on a small
input and scaled by the number of pixels, which is how they grow.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.tiling import round_up
from napari_cryoseg.model.config import UNetConfig
from napari_cryoseg.model.unet import UNet

__all__ = [
    "available_bytes",
    "check_fits",
    "fit_patch_to_memory",
    "fit_training_patch",
    "format_bytes",
    "inference_bytes",
    "saved_bytes_per_pixel",
    "training_bytes",
]

#: Refuse when the estimate exceeds this share of the available memory.
HEADROOM = 0.9
#: Bytes per parameter while training: weights, gradients and two AdamW moments.
_TRAIN_BYTES_PER_PARAM = 16
#: Gradient buffers alive during the backward pass, relative to the saved activations.
_BACKWARD_FACTOR = 1.5
#: Live activations of an inference pass (no graph kept), in float32 values per pixel
#: and base channel: the skip tensors (2 b) plus the widest decoder step (2 b + 2 b).
_INFERENCE_VALUES_PER_PIXEL_AND_BASE = 6


def format_bytes(n: float) -> str:
    """``"512 MiB"``, ``"3.2 GiB"``, ``"1.4 TiB"``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 2**10:.0f} KiB"


def _cgroup_free() -> int | None:
    """Memory left under a cgroup v2 limit (containers, SLURM jobs), if there is one."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        used = int((root / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if not limit.isdigit():
        return None  # "max": no limit
    return max(int(limit) - used, 0)


def _system_available() -> int | None:
    """``MemAvailable`` of /proc/meminfo, else physical pages (macOS, BSD), else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes(device: torch.device) -> int | None:
    """Memory a run can still get on ``device``; None when it cannot be told."""
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):
            return None
        return int(free)
    found = [n for n in (_system_available(), _cgroup_free()) if n is not None]
    return min(found) if found else None  # MPS shares the system memory


#: Width of the stand-in network measured by :func:`saved_bytes_per_pixel`.
_PROBE_BASE = 8


@functools.lru_cache(maxsize=16)
def saved_bytes_per_pixel(config: UNetConfig) -> float:
    """Activation bytes autograd keeps per input pixel (one sample, float32).

    Measured with ``saved_tensors_hooks`` on a 64x64 input through the same architecture
    with at most 8 base channels, then scaled by ``base_channels / 8``: every activation
    is a multiple of the base width, and a narrow network is built in milliseconds (the
    31 M-parameter ``thesis`` preset takes a second). The narrow network keeps slightly
    more per channel (input and output layers), so the scaled value errs on the high side.
    """
    probe_config = config.with_(base_channels=min(config.base_channels, _PROBE_BASE))
    scale = config.base_channels / probe_config.base_channels
    net = UNet(probe_config)
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    size = max(64, 2 * config.stride)
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    x = torch.zeros(1, probe_config.in_channels, size, size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = net(x)
    total = sum(seen.values()) + 2 * out.numel() * out.element_size()  # output + its grad
    return scale * total / (size * size)


def training_bytes(config: UNetConfig, batch_size: int, patch: int) -> int:
    """Estimated device memory of one training step: weights, optimiser, activations."""
    weights = _TRAIN_BYTES_PER_PARAM * config.parameter_count()
    activations = _BACKWARD_FACTOR * saved_bytes_per_pixel(config) * batch_size * patch**2
    return int(weights + activations)


def inference_bytes(config: UNetConfig, batch_size: int, tile_pixels: int) -> int:
    """Estimated device memory of one batch of tiles at inference (no autograd graph)."""
    values = _INFERENCE_VALUES_PER_PIXEL_AND_BASE * config.base_channels + config.in_channels
    return int(4 * config.parameter_count() + 4 * values * batch_size * tile_pixels)


def check_fits(need: int, device: torch.device, what: str, advice: str) -> None:
    """Raise :class:`InputError` when ``need`` bytes will not fit on ``device``.

    Parameters
    ----------
    need : int
        Estimated bytes.
    device : torch.device
        Where they are needed.
    what : str
        What needs them, e.g. ``"--batch-size 64 with --patch 1024"``.
    advice : str
        What to lower, e.g. ``"lower --batch-size or --patch"``.
    """
    free = available_bytes(device)
    if free is None or need <= HEADROOM * free:
        return
    raise InputError(
        f"{what} needs about {format_bytes(need)} of memory on {device.type} (estimated), "
        f"but only {format_bytes(free)} is available; {advice}"
    )


#: Host bytes per padded image pixel while training: float32 image, int64 target.
_HOST_BYTES_PER_PIXEL = 12


def fit_training_patch(
    unet: UNetConfig,
    patch: int,
    batch_size: int,
    shapes: Sequence[Sequence[int]],
    device: Any,
    *,
    what: str,
    advice: str,
) -> int:
    """The patch to train ``unet`` with, checked to fit in memory (else :class:`InputError`).

    A patch larger than every image only adds padding (the sampler pads each image to the
    patch), so it is lowered to the largest image edge; both are rounded up to the
    network's stride. Then one training step (weights, optimiser, activations of
    ``batch_size`` patches) and the images padded to the patch are checked against the
    memory left on ``device`` (on a GPU the images stay on the host).

    Parameters
    ----------
    shapes : sequence of shapes
        ``(Y, X)`` or ``(T, Y, X)`` of every training image.
    what, advice : str
        The refusal's wording, e.g. ``"--batch-size {batch} with --patch {patch}"`` and
        ``"lower --batch-size or --patch"``; ``{batch}`` and ``{patch}`` are filled in.
    """
    from napari_cryoseg.engine.device import resolve_device

    largest = max((max(int(s) for s in shape[-2:]) for shape in shapes), default=patch)
    patch = round_up(min(int(patch), round_up(max(largest, 16), unet.stride)), unet.stride)
    device = resolve_device(device)
    frames = [int(shape[0]) if len(shape) == 3 else 1 for shape in shapes]
    host = sum(n * max(int(shape[-2]), patch) * max(int(shape[-1]), patch)
               for n, shape in zip(frames, shapes)) * _HOST_BYTES_PER_PIXEL
    step = training_bytes(unet, batch_size, patch)
    label = what.format(batch=batch_size, patch=patch)
    if device.type == "cuda":
        check_fits(step, device, label, advice)
        check_fits(host, torch.device("cpu"), "the training images", "use fewer images")
    else:
        check_fits(step + host, device, label, advice)
    return patch


def fit_patch_to_memory(config: Any, unet: UNetConfig, shapes: Sequence[Sequence[int]], *,
                        what: str, advice: str) -> Any:
    """``config`` (a ``TrainConfig`` or ``FinetuneConfig``) with the patch of
    :func:`fit_training_patch` for ``unet`` on images of ``shapes`` and ``config.device``.

    Refused (:class:`InputError`) when a step cannot fit; the caller compares the
    patches to tell the user when it was lowered.
    """
    patch = fit_training_patch(unet, config.patch, config.batch_size, shapes, config.device,
                               what=what, advice=advice)
    return dataclasses.replace(config, patch=patch)
