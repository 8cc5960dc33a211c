"""Anatomical clean-up of exclusive label maps and cheap bounding boxes for cropping."""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage

from lvt_core.labels import BACKGROUND, LIVER, TUMOR
from lvt_core.lesion_filter import roundness


def keep_liver_component(labels: np.ndarray) -> np.ndarray:
    """Keep the 26-connected organ component with the most parenchyma, with the vessels and
    tumors in or touching it.

    The organ is the union of labels 1, 2 and 3 (the hierarchy), so vessels and tumors inside
    or touching the liver stay and everything disconnected from it goes. A component with no
    parenchyma at all is never the liver, however large: vessel and tumor lie inside the liver,
    and on a scan outside the model's domain (a three-slice slab) the only "organ" can be a
    strip of the CT table labelled vessel. With no parenchyma anywhere nothing is kept.
    """
    organ = labels > BACKGROUND
    if not organ.any():
        return labels
    components = cc3d.connected_components(organ.astype(np.uint8), connectivity=26)
    parenchyma = np.bincount(components[labels == LIVER].ravel(), minlength=2)
    parenchyma[0] = 0  # the background component
    out = labels.copy()
    if parenchyma.max() == 0:
        out[organ] = BACKGROUND
        return out
    out[components != int(parenchyma.argmax())] = BACKGROUND
    return out


def min_tumor_voxels(min_volume_ml: float, spacing_xyz: tuple[float, ...]) -> int:
    """The fewest voxels of this spacing a tumor component needs to reach ``min_volume_ml``."""
    if min_volume_ml <= 0:
        return 0
    return int(np.ceil(min_volume_ml / (float(np.prod(spacing_xyz)) / 1000.0)))


def remove_small_tumors(
    labels: np.ndarray, spacing_xyz: tuple[float, ...], min_volume_ml: float
) -> np.ndarray:
    """Relabel tumor components smaller than ``min_volume_ml`` as liver.

    A few isolated voxels of "tumor" at vessel branchings or in noise are the commonest false
    positives; below the model's resolution they are not reportable lesions. They lie inside
    the liver, so they become liver rather than background.
    """
    if min_volume_ml <= 0:
        return labels
    tumor = labels == TUMOR
    if not tumor.any():
        return labels
    kept = cc3d.dust(tumor, threshold=min_tumor_voxels(min_volume_ml, spacing_xyz), connectivity=26,
                     in_place=False)
    out = labels.copy()
    out[tumor & ~kept] = LIVER
    return out


def confident_tumors(peaks: np.ndarray, sizes: np.ndarray, min_peak: float, large_voxels: int = 0) -> np.ndarray:
    """Per tumor component (its peak probability and voxel count), whether the peak rule keeps
    it: its peak reaches ``min_peak``, or it holds ``large_voxels`` or more (0: no exception)."""
    return (peaks >= min_peak) | ((large_voxels > 0) & (sizes >= large_voxels))


def remove_unconfident_tumors(
    labels: np.ndarray, tumor_probability: np.ndarray, min_peak: float, large_voxels: int = 0
) -> np.ndarray:
    """Relabel tumor components whose highest tumor probability is below ``min_peak`` as liver,
    except those of ``large_voxels`` or more (0: no exception).

    Hysteresis thresholding: the decision threshold draws a lesion's extent and ``min_peak``
    decides whether it is a lesion at all, so a lower threshold can grow true lesions to
    their edges without keeping every faint speck in noise as a false lesion. The specks it is
    for are small (noise blobs of 0.1–10 ml on the validation phantoms); a network that is
    unsure at every voxel of a 50 mm mass has still drawn a 50 mm mass, which no reader would
    leave out, so components past ``large_voxels`` stay whatever their peak.
    """
    if min_peak <= 0:
        return labels
    tumor = labels == TUMOR
    if not tumor.any():
        return labels
    components, count = cc3d.connected_components(tumor, connectivity=26, return_N=True)
    peaks = ndimage.maximum(np.asarray(tumor_probability, np.float32), components, np.arange(1, count + 1))
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    unconfident = np.concatenate([[False], ~confident_tumors(np.asarray(peaks), sizes, min_peak, large_voxels)])
    out = labels.copy()
    out[unconfident[components]] = LIVER
    return out


def round_enough_tumors(roundnesses: np.ndarray, sizes: np.ndarray, min_roundness: float,
                        large_voxels: int = 0) -> np.ndarray:
    """Per tumor component (its roundness and voxel count), whether the shape rule keeps it:
    it is at least ``min_roundness`` round, or it holds ``large_voxels`` or more (0: none)."""
    return (roundnesses >= min_roundness) | ((large_voxels > 0) & (sizes >= large_voxels))


def remove_tubular_tumors(
    labels: np.ndarray, spacing_xyz: tuple[float, ...], min_roundness: float, large_voxels: int = 0
) -> np.ndarray:
    """Relabel tumor components less round than ``min_roundness`` as liver, except those of
    ``large_voxels`` or more (0: no exception).

    The network draws a stretch of vessel as tumor now and then (a hepatic vein not yet
    filled with contrast, a vessel's wall): a tube, where the lesions LVT follows are round
    masses. Roundness is :func:`lvt_core.lesion_filter.roundness` of the component as drawn
    (1 for a ball, near 0 for a tube). A large mass stays whatever its shape, as it does
    whatever its peak.
    """
    if min_roundness <= 0:
        return labels
    tumor = labels == TUMOR
    if not tumor.any():
        return labels
    spacing_zyx = np.asarray(spacing_xyz, np.float64)[::-1]
    components, count = cc3d.connected_components(tumor, connectivity=26, return_N=True)
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    boxes = ndimage.find_objects(components)
    shapes = np.array([roundness(components[box] == index, spacing_zyx)
                       for index, box in enumerate(boxes, start=1)])
    tubular = np.concatenate([[False], ~round_enough_tumors(shapes, sizes, min_roundness, large_voxels)])
    out = labels.copy()
    out[tubular[components]] = LIVER
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
