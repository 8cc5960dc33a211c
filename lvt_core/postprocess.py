"""Anatomical clean-up of exclusive label maps and cheap bounding boxes for cropping."""

from __future__ import annotations

import cc3d
import numpy as np

from lvt_core.labels import BACKGROUND


def keep_liver_component(labels: np.ndarray) -> np.ndarray:
    """Keep the liver's largest 26-connected component, with the vessels and tumors in it.

    The organ is the union of labels 1, 2 and 3 (the hierarchy), so vessels and tumors inside
    or touching the largest liver component stay and everything disconnected from it goes.
    """
    organ = labels > BACKGROUND
    if not organ.any():
        return labels
    largest = cc3d.largest_k(organ.astype(np.uint8), k=1, connectivity=26) > 0
    out = labels.copy()
    out[~largest] = BACKGROUND
    return out


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """``((start, stop), ...)`` per axis of the True voxels, or None when there are none."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
