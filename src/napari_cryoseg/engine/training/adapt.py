"""Domain adaptation helpers for fine-tuning: BatchNorm statistics and parent blends.

A network's BatchNorm layers normalise every feature map with the mean and variance they
saw on the training set. On images of another microscope, stain or detector those
statistics are off before a single weight is wrong, so the first thing fine-tuning can do
(for the price of a few forward passes) is to re-estimate them on the user's own images,
labelled or not (AdaBN, Li et al. 2016). Whether that helps is decided on the held-out
corrections, like every other choice of the recipe.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.engine.device import autocast_dtype
from napari_cryoseg.engine.training.sampling import normalize_image

#: Patches drawn from the user's images to re-estimate BatchNorm statistics. 24 crops of
#: 256² (1.6 MP) put the running means of the VNC-mitochondria model on a CDeep3M section
#: within 1 % (variances 4 %) of a 48-crop estimate, about what two 48-crop estimates of
#: other seeds differ by, for half the forward passes: they come out of a 30-60 s budget.
BN_PATCHES = 24
BN_BATCH = 8


def batchnorm_layers(net: torch.nn.Module) -> list[torch.nn.BatchNorm2d]:
    """The BatchNorm layers of ``net`` (empty for a network without them)."""
    return [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def _random_patches(
    images: Sequence[np.ndarray], normalization: NormalizationConfig, patch: int, count: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``count`` normalised random crops (N, 1, P, P), planes picked by area.

    A 3D stack (Z, Y, X) counts as its planes (each normalised on its own, as a stack is
    segmented plane by plane); only the planes a crop is taken from are normalised.
    """
    sources = []  # (image, plane index or None, area)
    for image in images:
        shape = np.shape(image)
        if len(shape) == 3:
            sources += [(image, z, shape[1] * shape[2]) for z in range(shape[0])]
        elif len(shape) == 2:
            sources.append((image, None, shape[0] * shape[1]))
    if not sources:
        return np.zeros((0, 1, patch, patch), dtype=np.float32)
    areas = np.array([area for _, _, area in sources], dtype=np.float64)
    picks = rng.choice(len(sources), size=count, p=areas / areas.sum())
    cache: dict[int, np.ndarray] = {}
    out = np.zeros((count, 1, patch, patch), dtype=np.float32)
    for n, index in enumerate(picks):
        if int(index) not in cache:
            image, z, _ = sources[int(index)]
            data = np.asarray(image if z is None else image[z])
            cache[int(index)] = normalize_image(data, normalization)
        plane = cache[int(index)]
        h, w = plane.shape
        ph, pw = min(patch, h), min(patch, w)
        y = int(rng.integers(0, h - ph + 1))
        x = int(rng.integers(0, w - pw + 1))
        out[n, 0, :ph, :pw] = plane[y:y + ph, x:x + pw]
        if ph < patch or pw < patch:  # small images: mirror into the rest of the patch
            out[n, 0] = np.pad(out[n, 0, :ph, :pw], ((0, patch - ph), (0, patch - pw)),
                               mode="symmetric")
    return out


@torch.no_grad()
def adapt_batchnorm(
    net: torch.nn.Module,
    images: Sequence[np.ndarray],
    normalization: NormalizationConfig,
    device: torch.device,
    *,
    patch: int = 256,
    n_patches: int = BN_PATCHES,
    batch: int = BN_BATCH,
    seed: int = 0,
    mixed_precision: bool = True,
    time_limit_s: float | None = None,
) -> int:
    """Re-estimate the running statistics of every BatchNorm layer on ``images``.

    The statistics are reset and then averaged over ``n_patches`` random crops (an equal
    weight for every batch: ``momentum=None``). Weights are not touched; the network is
    left in eval mode. Returns the number of BatchNorm layers updated (0: nothing done).
    With ``time_limit_s`` no batch starts after that many seconds (the first always
    runs): the statistics are then the average of the batches seen.

    Parameters
    ----------
    net : torch.nn.Module
        The network, on ``device``.
    images : sequence of numpy.ndarray
        2D images of the target domain (any numeric dtype; normalised as inference does).
    normalization : NormalizationConfig
        The model file's intensity normalisation.
    """
    layers = batchnorm_layers(net)
    if not layers or not images:
        return 0
    rng = np.random.default_rng(seed)
    patches = _random_patches(images, normalization, patch, n_patches, rng)
    if not len(patches):
        return 0
    momenta = [layer.momentum for layer in layers]
    net.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches below
        layer.train()
    amp_dtype = autocast_dtype(device) if mixed_precision else None
    began = time.perf_counter()
    try:
        for start in range(0, len(patches), batch):
            if start and time_limit_s is not None and \
                    time.perf_counter() - began >= time_limit_s:
                break
            x = torch.from_numpy(patches[start:start + batch]).to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                net(x)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        net.eval()
    return len(layers)


def blend_states(
    parent: dict[str, torch.Tensor], child: dict[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """``parent + weight * (child - parent)`` for float tensors; others from ``child``."""
    blended = {}
    for key, value in child.items():
        base = parent[key]
        if value.is_floating_point() and weight != 1.0:
            blended[key] = (base.float() + weight * (value.float() - base.float())).to(value.dtype)
        else:
            blended[key] = value.clone()
    return blended


def choose_blend(scores: dict[float, float], tolerance: float) -> float:
    """The smallest blend weight whose held-out Dice is within ``tolerance`` of the best.

    Held-out pixels of the corrected images themselves favour the weights that fit those
    images hardest; preferring the weights nearest the parent unless moving further is
    clearly better keeps what the parent knew about the user's *other* images when the
    evidence for moving is weak (a small domain shift), and moves all the way when it is
    strong (a large one).
    """
    best = max(scores.values())
    return min(w for w, dice in scores.items() if dice >= best - tolerance)
