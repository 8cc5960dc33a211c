"""Masked losses against hand-computed values, and zero gradient for masked classes/voxels."""

from __future__ import annotations

import math

import pytest
import torch

from lvt_core.losses import (
    DeepSupervisionLoss,
    bce_batch_dice_loss,
    bce_dice_loss,
    ce_dice_loss,
    deep_supervision_weights,
    masked_batch_dice_binary,
    masked_bce,
    masked_ce,
    masked_dice_binary,
    masked_dice_multiclass,
)


def bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_masked_bce_hand_computed() -> None:
    # B=2, K=3, 2 voxels
    logits = torch.tensor(
        [[[0.0, 2.0], [1.0, -1.0], [3.0, 0.5]], [[-2.0, 0.0], [0.0, 0.0], [1.0, 1.0]]]
    )
    target = torch.tensor(
        [[[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]]
    )
    w = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # sample 2 is fully masked
    liver = (bce(0.0, 0) + bce(2.0, 1)) / 2
    tumor = (bce(3.0, 0) + bce(0.5, 0)) / 2
    expected = (liver + tumor) / 2  # only sample 1 counts
    assert masked_bce(logits, target, w).item() == pytest.approx(expected, rel=1e-6)


def test_masked_bce_zero_gradient_for_masked_class() -> None:
    logits = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    target = (torch.rand(2, 3, 4, 4, 4) > 0.5).float()
    w = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    for loss_fn in (masked_bce, masked_dice_binary, bce_dice_loss, masked_batch_dice_binary,
                    bce_batch_dice_loss):
        logits.grad = None
        loss_fn(logits, target, w).backward()
        assert torch.all(logits.grad[0, 1] == 0) and torch.all(logits.grad[1, 0] == 0)
        assert torch.all(logits.grad[1, 2] == 0)
        assert logits.grad[0, 0].abs().sum() > 0 and logits.grad[1, 1].abs().sum() > 0


def test_masked_bce_weights_rescale_not_add() -> None:
    """With one class weighted, the loss equals that class's plain BCE."""
    logits, target = torch.randn(1, 3, 5), (torch.rand(1, 3, 5) > 0.5).float()
    w = torch.tensor([[0.0, 0.0, 1.0]])
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 2], target[:, 2])
    assert masked_bce(logits, target, w).item() == pytest.approx(plain.item(), rel=1e-6)


def test_masked_ce_hand_computed_and_zero_gradient() -> None:
    logits = torch.tensor(
        [[[2.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0]], [[0.0, 3.0, 0.0]]]
    )
    logits = logits.permute(1, 0, 2).clone().requires_grad_(True)  # [B=1, K+1=4, N=3]
    target = torch.tensor([[0, 3, 2]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # third voxel ignored

    def ce(scores: list[float], k: int) -> float:
        return -scores[k] + math.log(sum(math.exp(s) for s in scores))

    expected = (ce([2.0, 0.0, 0.0, 0.0], 0) + ce([0.0, 0.0, 0.0, 3.0], 3)) / 2
    loss = masked_ce(logits, target, mask)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[0, :, 2] == 0)


def test_masked_ce_skips_samples_without_mask() -> None:
    logits = torch.randn(2, 4, 6)
    target = torch.randint(0, 4, (2, 6))
    mask = torch.stack([torch.ones(6), torch.zeros(6)])
    alone = masked_ce(logits[:1], target[:1], mask[:1])
    assert masked_ce(logits, target, mask).item() == pytest.approx(alone.item(), rel=1e-6)


@pytest.mark.parametrize("loss_fn", [masked_bce, masked_batch_dice_binary])
def test_fully_masked_batch_gives_connected_zero(loss_fn) -> None:
    logits = torch.randn(1, 3, 4, requires_grad=True)
    loss = loss_fn(logits, torch.zeros(1, 3, 4), torch.zeros(1, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_soft_dice_perfect_and_worst() -> None:
    target = torch.zeros(1, 3, 8)
    target[:, :, :4] = 1
    perfect = (target * 2 - 1) * 50
    w = torch.ones(1, 3)
    assert masked_dice_binary(perfect, target, w).item() == pytest.approx(0.0, abs=1e-4)
    assert masked_dice_binary(-perfect, target, w).item() == pytest.approx(1.0, abs=1e-4)


def test_multiclass_dice_ignores_masked_voxels() -> None:
    target = torch.tensor([[0, 1, 1, 2, 3, 3]])
    good = torch.nn.functional.one_hot(target, 4).permute(0, 2, 1).float() * 50
    bad = good.clone()
    bad[0, :, 0] = torch.tensor([0.0, 0.0, 50.0, 0.0])  # wrong only where the mask is 0
    mask = torch.tensor([[0, 1, 1, 1, 1, 1]])
    assert masked_dice_multiclass(bad, target, mask).item() == pytest.approx(0.0, abs=1e-4)
    assert ce_dice_loss(bad, target, mask).item() == pytest.approx(0.0, abs=1e-3)
    assert masked_dice_multiclass(bad, target, torch.ones_like(mask)).item() > 0.1


def test_deep_supervision_weights_and_loss() -> None:
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    main = torch.randn(1, 3, 8, 8, 8)
    aux = [torch.randn(1, 3, 4, 4, 4), torch.randn(1, 3, 2, 2, 2)]
    target = (torch.rand(1, 3, 8, 8, 8) > 0.5).float()
    w = torch.ones(1, 3)
    ds = DeepSupervisionLoss(bce_dice_loss, spatial_weight=False)
    down = [target, target[..., ::2, ::2, ::2], target[..., ::4, ::4, ::4]]
    expected = sum(
        f * bce_dice_loss(o, t, w).item()
        for f, o, t in zip(deep_supervision_weights(3), [main, *aux], down, strict=True)
    )
    assert ds([main, *aux], target, w).item() == pytest.approx(expected, rel=1e-5)
    stacked = torch.stack([main, main, main], dim=1)  # DynUNet training output layout
    assert ds(stacked, target, w).item() == pytest.approx(
        bce_dice_loss(main, target, w).item(), rel=1e-5
    )


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_batch_dice_hand_computed() -> None:
    """Overlap and volumes are summed over the samples that annotate a class, then divided."""
    logits = torch.tensor(
        [[[0.0, 2.0], [1.0, -1.0], [3.0, 0.5]], [[-2.0, 0.0], [0.0, 0.0], [1.0, 1.0]]]
    )
    target = torch.tensor(
        [[[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]]
    )
    w = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # liver: sample 1; tumor: both
    p = [[[sigmoid(z) for z in c] for c in s] for s in logits.tolist()]
    y = target.tolist()

    def dice_loss(samples: list[int], k: int) -> float:
        inter = sum(p[b][k][i] * y[b][k][i] for b in samples for i in range(2))
        denom = sum(p[b][k][i] ** 2 + y[b][k][i] ** 2 for b in samples for i in range(2))
        return 1 - (2 * inter + 1e-5) / (denom + 1e-5)

    expected = (dice_loss([0], 0) + dice_loss([0, 1], 2)) / 2  # vessel: no sample annotates it
    assert masked_batch_dice_binary(logits, target, w).item() == pytest.approx(expected, rel=1e-6)
    assert bce_batch_dice_loss(logits, target, w).item() == pytest.approx(
        masked_bce(logits, target, w).item() + expected, rel=1e-6
    )


def test_batch_dice_is_lenient_to_a_faint_guess_in_a_tumor_free_patch() -> None:
    """Per-patch Dice calls any tumor probability in a tumor-free patch a total miss (loss
    near 1); batch Dice counts it against the lesion next door, so it costs a little."""
    target = torch.zeros(2, 1, 1000)
    target[0, 0, :100] = 1.0  # patch 1 holds a lesion, patch 2 none
    logits = torch.full((2, 1, 1000), -8.0)
    logits[0, 0, :100] = 8.0  # the lesion is found exactly
    logits[1, 0, :5] = 0.0  # five voxels at p = 0.5 in the tumor-free patch
    w = torch.ones(2, 1)
    per_patch = masked_dice_binary(logits, target, w).item()
    batch = masked_batch_dice_binary(logits, target, w).item()
    assert per_patch > 0.45  # the empty patch alone scores ~1, halved by the batch mean
    assert batch < 0.01

