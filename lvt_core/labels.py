"""Label conventions shared by every part of LVT (files, database, UI), and the target encodings.

A label map is exclusive: 0 background, 1 liver parenchyma, 2 intrahepatic vessel, 3 tumor.
The network's sigmoid channels are, in order, liver, vessel and tumor.

Source datasets are partially labelled (paper Table A.1): each gives an exclusive 0..3 map plus
the list of classes it annotates. A liver-only source labels the whole organ as 1 (no cutouts).
Three encodings serve the paper's three set-ups:

- ML (multi-hot, the shipped model): ``y_L ← y_L ∨ y_V ∨ y_T``, masked per class by ``w``;
- MLx (one-hot exclusive sigmoid channels), masked per class by ``w``;
- MC (K+1 class index map, softmax), masked per voxel by ``W`` (Eq. 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

BACKGROUND = 0
LIVER = 1
VESSEL = 2
TUMOR = 3

MIN_LESION_VOXELS = 10
"""The smallest tumor component that is a lesion: what ``lvt lesions``, tracking and the app
count, and what ``lvt evaluate`` and ``lvt evaluate-model`` score by default."""

CLASS_NAMES: dict[int, str] = {LIVER: "liver", VESSEL: "vessel", TUMOR: "tumor"}
CHANNELS: tuple[str, ...] = ("liver", "vessel", "tumor")
CLASS_VALUES: dict[str, int] = {name: value for value, name in CLASS_NAMES.items()}
LABEL_SPACES: tuple[str, ...] = ("multilabel", "multiclass")

DATASET_ANNOTATIONS: dict[str, tuple[str, ...]] = {
    "FS LVT": ("liver", "vessel", "tumor"),
    "PS L": ("liver",),
    "PS V": ("vessel",),
    "PS T": ("tumor",),
    "LiTS": ("liver", "tumor"),
    "HepaticVessel": ("vessel", "tumor"),
    "IRCAD": ("liver", "vessel", "tumor"),
    "HV Liver": ("liver",),
}
"""Which classes each training source of the paper annotates (Table A.1)."""


def _check_annotated(annotated: Sequence[str]) -> tuple[str, ...]:
    names = tuple(annotated)
    unknown = [name for name in names if name not in CLASS_VALUES]
    if unknown:
        raise ValueError(f"unknown class names {unknown}; expected a subset of {list(CHANNELS)}")
    if not names:
        raise ValueError("a training sample must annotate at least one class")
    return names


def _check_map(label_map: np.ndarray) -> np.ndarray:
    label_map = np.asarray(label_map)
    if label_map.size and (label_map.min() < 0 or label_map.max() > TUMOR):
        raise ValueError(f"label values must lie in 0..3, got {label_map.min()}..{label_map.max()}")
    return label_map


def class_weights(annotated: Sequence[str]) -> np.ndarray:
    """Per-class loss weights ``w`` (liver, vessel, tumor) of Eq. 1: 1 if annotated, else 0."""
    names = _check_annotated(annotated)
    return np.array([1.0 if name in names else 0.0 for name in CHANNELS], dtype=np.float32)


def multi_hot_targets(label_map: np.ndarray, annotated: Sequence[str]) -> np.ndarray:
    """ML targets ``[K, ...]`` (uint8) with the liver hierarchy ``y_L ← y_L ∨ y_V ∨ y_T``.

    Channels of classes the source does not annotate are zero; their weight in
    :func:`class_weights` is zero too, so they never reach the loss.
    """
    names = _check_annotated(annotated)
    label_map = _check_map(label_map)
    vessel = (label_map == VESSEL) if "vessel" in names else np.zeros(label_map.shape, bool)
    tumor = (label_map == TUMOR) if "tumor" in names else np.zeros(label_map.shape, bool)
    liver = (label_map == LIVER) | vessel | tumor
    return np.stack([liver, vessel, tumor]).astype(np.uint8)


def one_hot_exclusive_targets(label_map: np.ndarray, annotated: Sequence[str]) -> np.ndarray:
    """MLx targets ``[K, ...]`` (uint8): one channel per exclusive label value, no hierarchy.

    A liver-only source keeps its whole-organ liver here, which is the label conflict the
    paper's Section 4.2 measures.
    """
    names = _check_annotated(annotated)
    label_map = _check_map(label_map)
    channels = [
        (label_map == CLASS_VALUES[name]) if name in names else np.zeros(label_map.shape, bool)
        for name in CHANNELS
    ]
    return np.stack(channels).astype(np.uint8)


def class_index_map(label_map: np.ndarray, annotated: Sequence[str]) -> np.ndarray:
    """MC target: K+1 class indices (int64, 0 = background); unannotated values become 0.

    Pair it with :func:`mc_voxel_mask`, which removes the ambiguous voxels from the loss.
    """
    names = _check_annotated(annotated)
    label_map = _check_map(label_map)
    keep = np.isin(label_map, [CLASS_VALUES[name] for name in names])
    return np.where(keep, label_map, BACKGROUND).astype(np.int64)


def mc_voxel_mask(label_map: np.ndarray, annotated: Sequence[str]) -> np.ndarray:
    """Per-voxel mask ``W`` of Eq. 2 (uint8).

    A fully labelled sample counts everywhere. A partially labelled one counts only on the
    foreground voxels of its annotated classes: its background may hide unannotated classes.
    """
    names = _check_annotated(annotated)
    label_map = _check_map(label_map)
    if set(names) == set(CHANNELS):
        return np.ones(label_map.shape, dtype=np.uint8)
    return np.isin(label_map, [CLASS_VALUES[name] for name in names]).astype(np.uint8)


def channel_thresholds(
    overrides: Mapping[str, float] | None, base: Sequence[float] | None = None
) -> list[float]:
    """Decision thresholds in ``CHANNELS`` order: ``base`` (0.5 each) with named ``overrides``."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channel(s) {sorted(unknown)}; expected {list(CHANNELS)}")
    values = list(base) if base is not None else [0.5] * len(CHANNELS)
    return [float(overrides.get(name, value)) for name, value in zip(CHANNELS, values, strict=True)]


def decode_exclusive(probs: np.ndarray, threshold: float | Sequence[float] = 0.5) -> np.ndarray:
    """Exclusive label map (uint8) from sigmoid probabilities ``[K, ...]`` (liver, vessel, tumor).

    Each channel is thresholded (one value, or one per channel in ``CHANNELS`` order: a
    checkpoint may calibrate the rare tumor channel lower); overlapping positives resolve by
    the priority tumor > vessel > liver > background (paper A.2.2).
    """
    probs = np.asarray(probs)
    if probs.shape[0] != len(CHANNELS):
        raise ValueError(f"expected {len(CHANNELS)} channels first, got shape {probs.shape}")
    if isinstance(threshold, int | float):
        thresholds = [float(threshold)] * len(CHANNELS)
    else:
        thresholds = [float(t) for t in threshold]
    if len(thresholds) != len(CHANNELS):
        raise ValueError(f"expected {len(CHANNELS)} thresholds, got {len(thresholds)}")
    labels = np.zeros(probs.shape[1:], dtype=np.uint8)
    for value in (LIVER, VESSEL, TUMOR):  # later writes win: the priority order
        labels[probs[value - 1] > thresholds[value - 1]] = value
    return labels


def decode_multiclass(logits_or_probs: np.ndarray) -> np.ndarray:
    """Exclusive label map (uint8) from K+1 softmax scores: the argmax over channels."""
    return np.asarray(logits_or_probs).argmax(axis=0).astype(np.uint8)
