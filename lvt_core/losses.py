"""Masked losses for partially labelled training (paper Eq. 1, Eq. 2 and A.2.1).

Binary (sigmoid) losses are masked per class with weights ``w[B, K]``; the categorical
(softmax) loss is masked per voxel with ``W[B, ...]``. Masked classes and voxels get exactly
zero gradient: they are multiplied out before the reduction, never added as constants.
Samples whose weights (or masks) are all zero drop out of the batch mean; a batch with no
usable sample returns a zero that still carries the graph, so training loops need no guard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
SMOOTH = 1e-5


def _batch_mean(per_sample: Tensor, valid: Tensor, anchor: Tensor) -> Tensor:
    """Mean over the valid samples; a graph-connected zero when none is valid."""
    if bool(valid.any()):
        return per_sample[valid].mean()
    return anchor.sum() * 0.0


def _flat(x: Tensor, dims: int) -> Tensor:
    """``[B, C, *spatial] -> [B, C, N]`` (dims=2) or ``[B, *spatial] -> [B, N]`` (dims=1)."""
    return x.reshape(*x.shape[:dims], -1)


def masked_bce(logits: Tensor, target: Tensor, class_weights: Tensor) -> Tensor:
    """Eq. 1 with BCE-with-logits: ``Σ_k w_k mean_i ℓ_ik / Σ_k w_k`` per sample, then batch mean.

    ``logits`` and ``target`` are ``[B, K, ...]``; ``class_weights`` is ``[B, K]``.
    """
    w = class_weights.to(logits.dtype)
    per_voxel = F.binary_cross_entropy_with_logits(
        logits, target.to(logits.dtype), reduction="none"
    )
    per_class = _flat(per_voxel, 2).mean(-1) * w  # [B, K]; w = 0 removes the graph edge's value
    w_sum = w.sum(-1)
    valid = w_sum > 0
    per_sample = per_class.sum(-1) / w_sum.clamp_min(1e-12)
    return _batch_mean(per_sample, valid, logits)


def masked_ce(logits: Tensor, target_index: Tensor, voxel_mask: Tensor) -> Tensor:
    """Eq. 2 with cross-entropy: ``Σ_i W_i ℓ_i / Σ_i W_i`` per sample, then batch mean.

    ``logits`` is ``[B, K+1, ...]``, ``target_index`` and ``voxel_mask`` are ``[B, ...]``.
    """
    mask = voxel_mask.to(logits.dtype)
    per_voxel = F.cross_entropy(logits, target_index.long(), reduction="none") * mask
    w_sum = _flat(mask, 1).sum(-1)
    valid = w_sum > 0
    per_sample = _flat(per_voxel, 1).sum(-1) / w_sum.clamp_min(1e-12)
    return _batch_mean(per_sample, valid, logits)


def _soft_dice(prob: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Per-sample, per-channel soft Dice loss ``1 - (2Σyp + s) / (Σy² + Σp² + s)`` (A.2.1)."""
    if mask is not None:
        prob = prob * mask
        target = target * mask
    p, y = _flat(prob, 2), _flat(target, 2)
    return _dice_loss_from_sums((p * y).sum(-1), (y * y).sum(-1) + (p * p).sum(-1))


def _dice_loss_from_sums(intersection: Tensor, denominator: Tensor) -> Tensor:
    """``1 - (2Σyp + s) / (Σy² + Σp² + s)`` from sums taken per patch or over a batch."""
    return 1.0 - (2.0 * intersection + SMOOTH) / (denominator + SMOOTH)


def masked_dice_binary(logits: Tensor, target: Tensor, class_weights: Tensor) -> Tensor:
    """Soft Dice on sigmoid channels, weighted per class by ``w`` like :func:`masked_bce`."""
    w = class_weights.to(logits.dtype)
    per_class = _soft_dice(torch.sigmoid(logits), target.to(logits.dtype), None) * w
    w_sum = w.sum(-1)
    per_sample = per_class.sum(-1) / w_sum.clamp_min(1e-12)
    return _batch_mean(per_sample, w_sum > 0, logits)


def masked_batch_dice_binary(logits: Tensor, target: Tensor, class_weights: Tensor) -> Tensor:
    """Soft Dice per class over the whole batch (nnU-Net's ``batch_dice``), class-masked.

    Per-sample Dice scores a patch without tumor as a total loss for any tumor probability
    above zero, which pushes the network towards missing small lesions. Summing the overlap
    and the volumes over the samples that annotate a class first (``w_bk > 0``) treats the batch
    as one volume: a tumor-free patch then only adds its false voxels to the denominator.
    Classes no sample annotates drop out, so Eq. 1's masking still holds.
    """
    w = class_weights.to(logits.dtype)  # [B, K]
    p, y = _flat(torch.sigmoid(logits), 2), _flat(target.to(logits.dtype), 2)
    intersection = ((p * y).sum(-1) * w).sum(0)  # [K]
    denominator = (((y * y).sum(-1) + (p * p).sum(-1)) * w).sum(0)
    per_class = _dice_loss_from_sums(intersection, denominator)
    annotated = (w > 0).any(0)
    if not bool(annotated.any()):
        return logits.sum() * 0.0
    return per_class[annotated].mean()


def masked_dice_multiclass(logits: Tensor, target_index: Tensor, voxel_mask: Tensor) -> Tensor:
    """Soft Dice on softmax foreground classes, computed over the voxels where ``W = 1``."""
    n_classes = logits.shape[1]
    prob = torch.softmax(logits, dim=1)[:, 1:]
    one_hot = F.one_hot(target_index.long(), n_classes).movedim(-1, 1)[:, 1:].to(logits.dtype)
    mask = voxel_mask.to(logits.dtype).unsqueeze(1)
    per_sample = _soft_dice(prob, one_hot, mask).mean(-1)
    valid = _flat(voxel_mask, 1).sum(-1) > 0
    return _batch_mean(per_sample, valid, logits)


def bce_dice_loss(logits: Tensor, target: Tensor, class_weights: Tensor) -> Tensor:
    """The ML / MLx training loss: masked BCE + masked soft Dice."""
    return masked_bce(logits, target, class_weights) + masked_dice_binary(
        logits, target, class_weights
    )


def bce_batch_dice_loss(logits: Tensor, target: Tensor, class_weights: Tensor) -> Tensor:
    """The ML / MLx loss with batch Dice: masked BCE + :func:`masked_batch_dice_binary`."""
    return masked_bce(logits, target, class_weights) + masked_batch_dice_binary(
        logits, target, class_weights
    )


def ce_dice_loss(logits: Tensor, target_index: Tensor, voxel_mask: Tensor) -> Tensor:
    """The MC training loss: masked CE + masked soft Dice."""
    return masked_ce(logits, target_index, voxel_mask) + masked_dice_multiclass(
        logits, target_index, voxel_mask
    )


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """nnU-Net weights: halve per level (1, 1/2, 1/4, ...), normalised to sum to one."""
    raw = [0.5**i for i in range(n_outputs)]
    total = sum(raw)
    return [r / total for r in raw]


def _resize_nearest(x: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of a target or mask, with or without a channel axis."""
    if tuple(x.shape[-len(size) :]) == tuple(size):
        return x
    had_channel = x.dim() == len(size) + 2
    y = x if had_channel else x.unsqueeze(1)
    y = F.interpolate(y.float(), size=tuple(size), mode="nearest")
    y = y if had_channel else y.squeeze(1)
    return y.to(x.dtype)


class DeepSupervisionLoss(torch.nn.Module):
    """Apply a masked loss to the main output and each auxiliary head, nnU-Net style.

    ``outputs`` is a tensor ``[B, 1 + n_aux, C, ...]`` (MONAI DynUNet in training mode) or a
    sequence of tensors, highest resolution first. Spatial targets and voxel masks are
    resized to each head by nearest neighbour; per-class weights pass through unchanged.
    """

    def __init__(self, loss: Callable[[Tensor, Tensor, Tensor], Tensor], spatial_weight: bool):
        super().__init__()
        self.loss = loss
        self.spatial_weight = spatial_weight  # True for MC voxel masks, False for class weights

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor, weight: Tensor) -> Tensor:
        heads = list(outputs.unbind(1)) if isinstance(outputs, Tensor) else list(outputs)
        weights = deep_supervision_weights(len(heads))
        total = heads[0].new_zeros(())
        for head, factor in zip(heads, weights, strict=True):
            size = head.shape[2:]
            t = _resize_nearest(target, size)
            w = _resize_nearest(weight, size) if self.spatial_weight else weight
            total = total + factor * self.loss(head, t, w)
        return total
