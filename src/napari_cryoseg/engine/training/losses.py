"""Segmentation losses: soft Dice plus (binary) cross-entropy, with ignore and class weights.

Dice counters class imbalance (a thin membrane or a few cells on a large film) while
cross-entropy gives well-behaved gradients early in training; their sum is the usual
robust choice for U-Nets. Pixels whose target is
:data:`~napari_cryoseg.engine.training.sampling.IGNORE_INDEX` (-1, outside a reviewed region)
contribute to neither term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_cryoseg.engine.training.sampling import IGNORE_INDEX

_SMOOTH = 1.0  # Dice smoothing: a class absent from target and prediction scores ~1


def soft_dice_loss(
    probs: torch.Tensor, onehot: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """1 - mean soft Dice over channels, pooled over the batch.

    Parameters
    ----------
    probs, onehot : torch.Tensor
        (B, K, H, W) probabilities and one-hot targets of the scored classes.
    valid : torch.Tensor
        (B, 1, H, W) float 0/1: pixels that count.
    """
    probs = probs * valid
    onehot = onehot * valid
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + _SMOOTH) / (denominator + _SMOOTH)
    return 1.0 - dice.mean()


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    dice_weight: float = 1.0,
) -> torch.Tensor:
    """Soft Dice + BCE (1 output channel) or soft Dice + CE (K channels).

    Parameters
    ----------
    logits : torch.Tensor
        (B, 1, H, W) for binary models (sigmoid) or (B, K, H, W) (softmax).
    target : torch.Tensor
        (B, H, W) int64 class indices; ``-1`` = ignored.
    class_weights : torch.Tensor, optional
        (n_classes,) weights of the cross-entropy term (2 entries for binary models).
    dice_weight : float
        Weight of the Dice term (0 = cross-entropy only).

    Returns
    -------
    torch.Tensor
        Scalar loss (0 if no pixel is valid, still differentiable).
    """
    logits = logits.float()  # losses in fp32 even under autocast
    valid = target != IGNORE_INDEX
    n_valid = valid.sum()
    if n_valid == 0:
        return logits.sum() * 0.0
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    valid_f = valid.unsqueeze(1).float()
    if logits.shape[1] == 1:
        fg = (safe_target == 1).float().unsqueeze(1)
        bce = F.binary_cross_entropy_with_logits(logits, fg, reduction="none")
        if class_weights is not None:
            w = class_weights.to(logits.device, torch.float32)
            bce = bce * (w[0] + (w[1] - w[0]) * fg)
        ce = (bce * valid_f).sum() / n_valid
        if not dice_weight:
            return ce
        dice = soft_dice_loss(torch.sigmoid(logits), fg, valid_f)
    else:
        weight = None if class_weights is None else class_weights.to(logits.device, torch.float32)
        ce = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)
        if not dice_weight:
            return ce
        onehot = F.one_hot(safe_target, logits.shape[1]).permute(0, 3, 1, 2).float()
        probs = torch.softmax(logits, dim=1)
        dice = soft_dice_loss(probs[:, 1:], onehot[:, 1:], valid_f)  # foreground classes
    return ce + dice_weight * dice
