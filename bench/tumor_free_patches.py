"""Benchmark: how often a training patch holds no tumor, and what that does to the tumor Dice.

Per-patch soft Dice scores a tumor-free patch as a loss of about 1 as soon as the network gives
any tumor probability there; batch Dice (``batch_dice: true``) sums over the batch first. This
prints, for the real batches of a training config (augmentation and synthetic lesions
included, exactly as ``lvt train`` builds them):

- the share of patches with no tumor voxel, and of batches in which no patch has one (there
  batch Dice is as strict as per-patch Dice);
- on those batches, the tumor Dice term of both losses for a network that answers a faint
  p = 0.5 in 20 voxels of each tumor-free patch and finds every real tumor exactly, the
  per-patch loss being the baseline.

    python bench/tumor_free_patches.py [--config training/configs/default_model_stage15.yaml] [--batches 60]

It uses the config's cohorts and preprocessing cache, and makes what is missing as ``lvt
train`` does, with every core (stage 15's 160 phantom scans: about 20 min on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lvt_core.labels import CHANNELS  # noqa: E402
from lvt_core.losses import masked_batch_dice_binary, masked_dice_binary  # noqa: E402
from training.config import load_config  # noqa: E402
from training.loader import preparation_workers, prepare_all  # noqa: E402
from training.train import BatchMaker, gather_cases  # noqa: E402

TUMOR = CHANNELS.index("tumor")
FAINT_VOXELS = 20


def faint_guess_logits(tumor: torch.Tensor) -> torch.Tensor:
    """Logits that find every tumor voxel and add ``FAINT_VOXELS`` at p = 0.5 where none is."""
    logits = torch.where(tumor > 0, 12.0, -12.0)
    for b in range(tumor.shape[0]):
        if not bool(tumor[b].any()):
            logits[b].view(-1)[:FAINT_VOXELS] = 0.0
    return logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "training/configs/default_model_stage15.yaml")
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()

    config = load_config(args.config, fold=-1)
    workers = preparation_workers(0)
    prepared = prepare_all(gather_cases(config, workers), tuple(config.spacing_mm), config.cache_dir,
                           config.antialiased, workers)
    maker = BatchMaker(config, prepared)
    free_patches = patches = mixed_batches = free_batches = 0
    per_patch_losses, batch_losses = [], []
    for step in range(args.batches):
        batch = maker.batch(step)
        tumor = batch["target"][:, TUMOR : TUMOR + 1]
        annotated = batch["weights"][:, TUMOR : TUMOR + 1] > 0
        has_tumor = tumor.flatten(1).any(1)
        counted = annotated[:, 0]
        patches += int(counted.sum())
        free_patches += int((counted & ~has_tumor).sum())
        if not bool(counted.any()):
            continue
        if bool(has_tumor[counted].any()):
            if not bool(has_tumor[counted].all()):
                mixed_batches += 1
                logits = faint_guess_logits(tumor)
                w = annotated.float()
                per_patch_losses.append(masked_dice_binary(logits, tumor, w).item())
                batch_losses.append(masked_batch_dice_binary(logits, tumor, w).item())
        else:
            free_batches += 1
    print(f"config {args.config.name}: {args.batches} batches of {config.batch_size} x "
          f"{'x'.join(map(str, config.patch_size))}, tumor-annotated patches {patches}")
    print(f"patches without a tumor voxel:          {free_patches / patches:.2f}")
    print(f"batches without a tumor voxel:          {free_batches / args.batches:.2f}")
    print(f"batches with and without a tumor patch: {mixed_batches / args.batches:.2f}")
    if per_patch_losses:
        print(f"tumor Dice loss of a perfect finder with {FAINT_VOXELS} faint voxels per tumor-free patch, "
              f"on those mixed batches: per patch {np.mean(per_patch_losses):.3f} (baseline), "
              f"batch {np.mean(batch_losses):.3f}")


if __name__ == "__main__":
    main()
