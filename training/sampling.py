"""Mixed-source sampling and patch selection, deterministic per training step.

Every draw takes its own ``numpy.random.Generator`` seeded by ``(seed, step, item)``, so a
run resumed at step ``s`` sees exactly the patches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cc3d
import numpy as np
from scipy import ndimage

from lvt_core.labels import CLASS_VALUES, TUMOR

FOREGROUND_PROB = 0.333


def step_rng(seed: int, step: int, item: int = 0) -> np.random.Generator:
    """The generator for one batch item of one step."""
    return np.random.default_rng([int(seed), int(step), int(item)])


class MixedSourceSampler:
    """Pick a case: first a source by its configured weight, then a case of it uniformly."""

    def __init__(self, sources: Sequence[str], weights: Mapping[str, float] | None = None):
        self.groups: dict[str, list[int]] = {}
        for index, source in enumerate(sources):
            self.groups.setdefault(source, []).append(index)
        weights = dict(weights or {})
        raw = np.array([float(weights.get(name, 1.0)) for name in self.groups], dtype=float)
        if (raw < 0).any() or raw.sum() <= 0:
            raise ValueError(f"source weights must be >= 0 with a positive sum, got {weights}")
        self.names = list(self.groups)
        self.probs = raw / raw.sum()

    def choose(self, rng: np.random.Generator) -> int:
        """Index (into the ``sources`` list given at construction) of the next case."""
        group = self.groups[self.names[rng.choice(len(self.names), p=self.probs)]]
        return int(group[rng.integers(len(group))])


def tumor_lesions(labels: np.ndarray) -> list[np.ndarray]:
    """Voxel coordinates (``k × 3``, ``z, y, x``) of each 26-connected tumor of a label map.

    Computed once per case, so that :func:`choose_center` can pick a lesion before a voxel.
    """
    components = cc3d.connected_components(labels == TUMOR, connectivity=26)
    lesions = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is not None:
            offset = np.array([s.start for s in box])
            lesions.append(np.argwhere(components[box] == index) + offset)
    return lesions


def class_boxes(labels: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """The bounding box of each label value present (computed once per case, so that
    :func:`choose_center` need not scan the whole volume for every patch)."""
    boxes = ndimage.find_objects(np.asarray(labels))
    return {value: box for value, box in enumerate(boxes, start=1) if box is not None}


def random_voxel(labels: np.ndarray, value: int, box: tuple[slice, ...], rng: np.random.Generator,
                 rounds: int = 16, per_round: int = 16) -> tuple[int, ...]:
    """A voxel drawn uniformly among those of ``labels`` equal to ``value`` inside ``box``.

    Uniform draws in the box until one hits the class (the first hit of independent uniform
    draws is uniform over the class): a few reads instead of a pass over the whole volume. A
    class too sparse in its box for that falls back to listing its voxels there."""
    low = np.array([b.start for b in box])
    high = np.array([b.stop for b in box])
    for _ in range(rounds):
        drawn = rng.integers(low, high, size=(per_round, len(box)))
        hit = np.flatnonzero(labels[tuple(drawn.T)] == value)
        if hit.size:
            return tuple(int(c) for c in drawn[hit[0]])
    coords = np.argwhere(labels[box] == value)
    return tuple(int(c) for c in coords[rng.integers(len(coords))] + low)


def choose_center(
    labels: np.ndarray, annotated: Sequence[str], rng: np.random.Generator,
    foreground_prob: float = FOREGROUND_PROB,
    class_weights: Mapping[str, float] | None = None,
    lesions: Sequence[np.ndarray] | None = None,
    boxes: Mapping[int, tuple[slice, ...]] | None = None,
) -> tuple[int, ...]:
    """nnU-Net-style centre: with ``foreground_prob`` a voxel of a random annotated class
    present in the case, otherwise a uniformly random voxel. ``class_weights`` makes some
    classes likelier to be tried first (e.g. rare tumors); equal by default.

    With ``lesions`` (:func:`tumor_lesions` of ``labels``) a tumor centre is a random voxel of
    a uniformly chosen lesion: a 12 mm lesion beside a 45 mm one is then the centre half of
    the time rather than 2 % of it, as voxel sampling would make it. ``boxes``
    (:func:`class_boxes` of ``labels``, found here when not given) bound each class's search."""
    if rng.random() < foreground_prob:
        classes = list(annotated)
        weights = np.array([float((class_weights or {}).get(c, 1.0)) for c in classes])
        if weights.sum() > 0:
            order = rng.choice(len(classes), size=len(classes), replace=False, p=weights / weights.sum()) \
                if (weights > 0).sum() >= len(classes) else np.argsort(-weights)
            classes = [classes[i] for i in order]
        else:
            rng.shuffle(classes)
        for name in classes:
            if name == "tumor" and lesions:
                lesion = lesions[rng.integers(len(lesions))]
                return tuple(int(c) for c in lesion[rng.integers(len(lesion))])
            if boxes is None:
                boxes = class_boxes(labels)
            value = CLASS_VALUES[name]
            if value in boxes:
                return random_voxel(labels, value, boxes[value], rng)
    return tuple(int(rng.integers(s)) for s in labels.shape)


def crop_around(
    arrays: Sequence[np.ndarray], center: Sequence[int], size: Sequence[int], fill: Sequence[float]
) -> list[np.ndarray]:
    """Crop each ``z, y, x`` array to ``size`` around ``center``, padding with ``fill``."""
    shape = arrays[0].shape
    starts = [int(c) - s // 2 for c, s in zip(center, size, strict=True)]
    out = []
    for array, value in zip(arrays, fill, strict=True):
        patch = np.full(tuple(size), value, dtype=array.dtype)
        src, dst = [], []
        for start, extent, length in zip(starts, size, shape, strict=True):
            lo, hi = max(start, 0), min(start + extent, length)
            if hi <= lo:
                lo = hi = 0
            src.append(slice(lo, hi))
            dst.append(slice(lo - start, lo - start + (hi - lo)))
        patch[tuple(dst)] = array[tuple(src)]
        out.append(patch)
    return out
