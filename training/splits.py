"""Cross-validation splits by patient group, reproducible from a seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.datasets import Case


def kfold_groups(groups: Sequence[str], n_folds: int = 5, seed: int = 0) -> list[list[str]]:
    """Shuffle the distinct groups with ``seed`` and deal them into ``n_folds`` folds."""
    unique = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for rank, index in enumerate(order):
        folds[rank % n_folds].append(unique[index])
    return folds


def split_cases(
    cases: Sequence[Case], fold: int, n_folds: int = 5, seed: int = 0
) -> tuple[list[Case], list[Case]]:
    """``(train, validation)`` for ``fold`` of a group-wise ``n_folds`` split.

    ``fold = -1`` trains on everything and validates on nothing (the final model).
    """
    if fold < 0:
        return list(cases), []
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} is outside 0..{n_folds - 1}")
    groups = {c.split_group for c in cases}
    if len(groups) < n_folds:  # a fold would hold nothing, or take every case from training
        raise ValueError(f"fold {fold} of {n_folds} needs at least {n_folds} patients, the data has "
                         f"{len(groups)}; use fewer folds (n_folds) or fold: -1 to train on all")
    held = set(kfold_groups([c.split_group for c in cases], n_folds, seed)[fold])
    train = [c for c in cases if c.split_group not in held]
    val = [c for c in cases if c.split_group in held]
    return train, val
