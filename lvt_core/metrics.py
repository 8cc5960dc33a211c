"""Segmentation metrics of the paper (A.2.3): DSC, precision, recall, NSD, lesion detection.

Conventions for empty masks (so every case gives a number and means stay defined):

- DSC and NSD: both masks empty → 1.0 (perfect agreement); exactly one empty → 0.0.
- Precision with no predicted voxels, recall with no reference voxels: 1.0 when the other
  mask is empty too, else 0.0 (a disagreement on an empty case scores zero).
- Lesion sensitivity with no reference lesions → 1.0 (nothing to miss); lesion precision
  with no predicted lesions → 1.0 (no false alarm).

Evaluated classes: liver = labels {1, 2, 3} (the hierarchy), vessel = 2, tumor = 3.
Spacings are in mm in SimpleITK order (x, y, z); arrays are in numpy order (z, y, x).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import cc3d
import numpy as np
import SimpleITK as sitk
import torch

from lvt_core.labels import LIVER, MIN_LESION_VOXELS, TUMOR, VESSEL

NSD_TOLERANCE_MM: dict[str, float] = {"liver": 7.0, "vessel": 3.0, "tumor": 3.0}
LESION_OVERLAP = 0.10
CLASS_MASKS: dict[str, tuple[int, ...]] = {
    "liver": (LIVER, VESSEL, TUMOR),
    "vessel": (VESSEL,),
    "tumor": (TUMOR,),
}


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient ``2|X∩Y| / (|X|+|Y|)`` of two boolean masks."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def precision_recall(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Voxel precision ``TP/(TP+FP)`` and recall ``TP/(TP+FN)``."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    tp = int(np.logical_and(pred, ref).sum())
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    precision = tp / n_pred if n_pred else (1.0 if n_ref == 0 else 0.0)
    recall = tp / n_ref if n_ref else (1.0 if n_pred == 0 else 0.0)
    return precision, recall


def normalized_surface_dice(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    spacing: Sequence[float],
    tolerance_mm: float,
) -> float:
    """Normalised surface Dice at ``tolerance_mm`` with area-weighted surface elements.

    ``spacing`` is (x, y, z) mm for a (z, y, x) array. MONAI's ``compute_surface_dice`` with
    ``use_subvoxels=True`` (Nikolov et al.'s surface elements) does the work.
    """
    from monai.metrics import compute_surface_dice

    pred, ref = np.asarray(pred_mask, bool), np.asarray(ref_mask, bool)
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 1.0
    if has_pred != has_ref:
        return 0.0
    y_pred = torch.from_numpy(np.stack([~pred, pred])[None].astype(np.float32))
    y = torch.from_numpy(np.stack([~ref, ref])[None].astype(np.float32))
    with warnings.catch_warnings():  # MONAI 1.5+ deprecation chatter inside its own helper
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_surface_dice(
            y_pred,
            y,
            class_thresholds=[float(tolerance_mm)],
            include_background=False,
            spacing=[float(s) for s in reversed(list(spacing))],
            use_subvoxels=True,
        )
    return float(value.reshape(-1)[0])



def lesion_detection(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    min_overlap: float = LESION_OVERLAP,
    min_voxels: int = 1,
) -> dict[str, Any]:
    """Lesion-wise detection on 26-connected components of label 3.

    Components of fewer than ``min_voxels`` voxels are not lesions, in either map (``lvt
    lesions`` and the app leave out those under 10). A reference lesion is detected when one
    predicted component covers more than ``min_overlap`` of its voxels; a predicted component
    is a true positive when it detects some reference lesion. Returns sensitivity, precision
    and the counts.
    """
    ref_cc = _lesion_components(ref_labels, min_voxels)
    pred_cc = _lesion_components(pred_labels, min_voxels)
    n_ref, n_pred = int(ref_cc.max()), int(pred_cc.max())
    detected_ref: set[int] = set()
    matched_pred: set[int] = set()
    if n_ref and n_pred:
        both = (ref_cc > 0) & (pred_cc > 0)
        pairs, counts = np.unique(
            np.stack([ref_cc[both], pred_cc[both]]).astype(np.int64), axis=1, return_counts=True
        )
        ref_sizes = np.bincount(ref_cc.ravel(), minlength=n_ref + 1)
        for (r, p), c in zip(pairs.T, counts, strict=True):
            if c > min_overlap * ref_sizes[r]:
                detected_ref.add(int(r))
                matched_pred.add(int(p))
    return {
        "sensitivity": len(detected_ref) / n_ref if n_ref else 1.0,
        "precision": len(matched_pred) / n_pred if n_pred else 1.0,
        "n_reference": n_ref,
        "n_predicted": n_pred,
        "n_detected": len(detected_ref),
        "n_true_positive_predictions": len(matched_pred),
        "min_voxels": int(min_voxels),
    }


def _lesion_components(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    tumor = np.asarray(labels) == TUMOR
    if min_voxels > 1:
        tumor = cc3d.dust(tumor, threshold=min_voxels, connectivity=26)
    return cc3d.connected_components(tumor, connectivity=26)


def check_same_grid(image: sitk.Image, reference: sitk.Image, what: str = "prediction",
                    against: str = "reference") -> None:
    """Raise ``ValueError`` unless ``image`` lies on ``reference``'s voxel grid (up to the
    rounding of two tools writing one grid): voxels of two grids are not the same places."""
    if image.GetSize() != reference.GetSize():
        raise ValueError(f"{what} size {image.GetSize()} differs from {against} {reference.GetSize()}")
    if not np.allclose(image.GetSpacing(), reference.GetSpacing(), rtol=1e-3, atol=1e-4):
        raise ValueError(
            f"{what} spacing {image.GetSpacing()} differs from {against} {reference.GetSpacing()}"
        )
    # A tenth of a voxel: files of one grid written by two tools differ by rounding, not more.
    shift_mm = float(np.linalg.norm(np.subtract(image.GetOrigin(), reference.GetOrigin())))
    if shift_mm > 0.1 * min(reference.GetSpacing()):
        raise ValueError(
            f"{what} origin {_mm(image.GetOrigin())} differs from {against} {_mm(reference.GetOrigin())} "
            f"by {shift_mm:.2f} mm: the two files do not lie on one grid"
        )
    if not np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-3):
        raise ValueError(
            f"{what} axes {_mm(image.GetDirection())} differ from {against} {_mm(reference.GetDirection())}: "
            "one of the files is flipped or rotated"
        )


def _mm(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def evaluate_pair(pred: sitk.Image, ref: sitk.Image, min_lesion_voxels: int = MIN_LESION_VOXELS) -> dict[str, Any]:
    """All metrics for one prediction/reference pair of exclusive 0..3 label maps; lesions
    are tumor components of ``min_lesion_voxels`` or more (voxel metrics count every voxel).

    Shape: ``{"liver": {"dsc","nsd","precision","recall"}, "vessel": {...}, "tumor": {...},
    "lesion_sensitivity", "lesion_precision", "lesions": {counts}}``.
    """
    check_same_grid(pred, ref)
    p = sitk.GetArrayViewFromImage(pred)
    r = sitk.GetArrayViewFromImage(ref)
    spacing = pred.GetSpacing()
    result: dict[str, Any] = {}
    for name, values in CLASS_MASKS.items():
        pm, rm = np.isin(p, values), np.isin(r, values)
        precision, recall = precision_recall(pm, rm)
        result[name] = {
            "dsc": dice(pm, rm),
            "nsd": normalized_surface_dice(pm, rm, spacing, NSD_TOLERANCE_MM[name]),
            "precision": precision,
            "recall": recall,
        }
    lesions = lesion_detection(p, r, min_voxels=min_lesion_voxels)
    result["lesion_sensitivity"] = lesions.pop("sensitivity")
    result["lesion_precision"] = lesions.pop("precision")
    result["lesions"] = lesions
    return result


def mean_metrics(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean of :func:`evaluate_pair` results over cases (same shape, numbers averaged)."""
    if not cases:
        return {}
    out: dict[str, Any] = {}
    for name in CLASS_MASKS:
        out[name] = {
            key: float(np.mean([case[name][key] for case in cases])) for key in cases[0][name]
        }
    for key in ("lesion_sensitivity", "lesion_precision"):
        out[key] = float(np.mean([case[key] for case in cases]))
    return out
