"""Calibrate a checkpoint's decisions on a validation cohort: the vessel and tumor thresholds
and the smallest tumor component kept.

An undertrained sigmoid head is often under-confident on a rare or thin class: its
probabilities inside true lesions and small vessels stay below 0.5. And a few voxels of
"tumor" in noise or at vessel branchings cost a scan without tumors its whole tumor Dice.
Choosing these on phantoms that neither training nor the held-out test uses keeps the test
honest. The network runs once per scan (:meth:`Predictor.predict_probabilities`); every
candidate is decoded from the same probabilities. The chosen values go into
``meta["inference"]`` (``thresholds``, ``min_tumor_volume_ml``), which
:class:`lvt_core.inference.Predictor` applies.

The tumor decision does not depend on the vessel threshold (tumor is decoded last), so the
tumor threshold and minimum volume are chosen together and the vessel threshold on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cc3d
import numpy as np
import SimpleITK as sitk

from lvt_core.labels import CHANNELS, TUMOR, VESSEL
from lvt_core.metrics import dice
from lvt_core.postprocess import remove_small_tumors, remove_unconfident_tumors
from training.evaluate_model import (
    DETECTED_COVERAGE,
    false_lesions,
    large_lesion_ids,
    lesion_precision,
)

if TYPE_CHECKING:
    from lvt_core.inference import ScanProbabilities

DEFAULT_CANDIDATES = (0.5, 0.4, 0.3, 0.2)
DEFAULT_VESSEL_CANDIDATES = (0.5, 0.4, 0.3)
DEFAULT_MIN_VOLUMES_ML = (0.0, 0.02, 0.05, 0.1)
DEFAULT_MIN_PEAKS = (0.0, 0.7, 0.9, 0.95, 0.98)  # 0: no hysteresis
DEFAULT_MAX_FALSE_PER_SCAN = 1.0


def tumor_score(summary: dict[str, Any]) -> float:
    """What the calibration maximises: mean of tumor DSC and sensitivity for lesions ≥ 10 mm."""
    sensitivity = summary["lesion_sensitivity_10mm"]
    return (summary["tumor_dsc"] + (sensitivity if sensitivity is not None else summary["tumor_dsc"])) / 2


def choose_operating_point(scores: list[dict[str, Any]], max_false_per_scan: float | None) -> dict[str, Any]:
    """The best-scoring candidate with at most ``max_false_per_scan`` false lesions per scan.

    Like reading a FROC curve at a fixed false-positive rate: Dice barely notices a few small
    false lesions beside a large true one, but each is a row in the lesion table and, at a
    follow-up, a "new lesion". When no candidate stays under the budget, the one with the
    fewest false lesions wins. Ties go to the earlier candidate. ``None`` disables the budget.
    """
    allowed = scores if max_false_per_scan is None else [
        row for row in scores if row["false_lesions_per_scan"] <= max_false_per_scan]
    if not allowed:
        fewest = min(row["false_lesions_per_scan"] for row in scores)
        allowed = [row for row in scores if row["false_lesions_per_scan"] == fewest]
    return max(allowed, key=lambda row: row["score"])


def _check_candidates(name: str, values: Sequence[float], volumes: bool = False) -> None:
    """Thresholds lie strictly between 0 and 1; volumes are 0 (keep all) or more."""
    ok = all(v >= 0.0 for v in values) if volumes else all(0.0 < v < 1.0 for v in values)
    if not values or not ok:
        bounds = "0 or more" if volumes else "strictly between 0 and 1"
        raise ValueError(f"{name} candidates must be {bounds}, got {list(values)}")


class _ReferenceLesions:
    """One scan's reference tumors, computed once and scored against every candidate."""

    def __init__(self, ref: np.ndarray, spacing: tuple[float, ...]) -> None:
        self.tumor = ref == TUMOR
        self.components = cc3d.connected_components(self.tumor, connectivity=26)
        self.large_ids = large_lesion_ids(self.components, spacing)
        self.sizes = np.bincount(self.components.ravel())

    def found(self, pred_tumor: np.ndarray) -> int:
        """How many large lesions ``pred_tumor`` covers by more than ``DETECTED_COVERAGE``."""
        hits = np.bincount(self.components[pred_tumor], minlength=len(self.sizes))
        return int((hits[self.large_ids] / self.sizes[self.large_ids] > DETECTED_COVERAGE).sum())


class _TumorTally:
    """Per-candidate tumor Dice per scan and large-lesion detections, summed over scans."""

    def __init__(self) -> None:
        self.dsc: list[float] = []
        self.found = 0
        self.total = 0
        self.predicted = 0
        self.false = 0

    def add(self, pred_tumor: np.ndarray, reference: _ReferenceLesions) -> None:
        self.dsc.append(dice(pred_tumor, reference.tumor))
        self.found += reference.found(pred_tumor)
        self.total += len(reference.large_ids)
        predicted, false = false_lesions(pred_tumor, reference.tumor)
        self.predicted, self.false = self.predicted + predicted, self.false + false

    def summary(self) -> dict[str, Any]:
        scans = len(self.dsc)
        return {"tumor_dsc": round(float(np.mean(self.dsc)), 4) if self.dsc else 0.0,
                "lesion_sensitivity_10mm": round(self.found / self.total, 4) if self.total else None,
                "detected_10mm": self.found, "lesions_10mm": self.total,
                "lesion_precision": round(lesion_precision(self.predicted, self.false), 4),
                "false_lesions_per_scan": round(self.false / scans, 3) if scans else 0.0}


def calibrate_decisions(
    checkpoint: str | Path, cohort: str | Path | Sequence[str | Path], out: str | Path | None = None,
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
    vessel_candidates: Sequence[float] = DEFAULT_VESSEL_CANDIDATES,
    min_volumes_ml: Sequence[float] = DEFAULT_MIN_VOLUMES_ML,
    device: str = "auto", on_case: Callable[[str], None] | None = None,
    min_peaks: Sequence[float] = DEFAULT_MIN_PEAKS,
    version: str | None = None,
    max_false_per_scan: float | None = DEFAULT_MAX_FALSE_PER_SCAN,
) -> dict[str, Any]:
    """Score every candidate on ``cohort``; write the best into a copy of the checkpoint at ``out``.

    ``cohort`` may be several folders (say thin- and thick-slice phantoms), pooled scan by scan,
    so the decisions hold for every kind of scan users send. ``candidates`` are tumor
    thresholds, each paired with every lowest peak probability a tumor component must reach
    (hysteresis) and every minimum tumor volume (ml); the best one within
    ``max_false_per_scan`` false lesions per scan wins. ``version`` renames the copy: new
    decisions change every result, and a store keeps one checksum per model name and version.
    """
    from lvt_core.checkpoint import load_checkpoint, save_checkpoint
    from lvt_core.inference import Predictor
    from training.datasets import load_cases

    _check_candidates("threshold", candidates)
    _check_candidates("vessel threshold", vessel_candidates)
    _check_candidates("minimum tumor volume", min_volumes_ml, volumes=True)
    _check_candidates("minimum tumor peak", min_peaks, volumes=True)
    predictor = Predictor(checkpoint, device=device)
    base = list(predictor.thresholds)
    tumor_index, vessel_index = CHANNELS.index("tumor"), CHANNELS.index("vessel")
    tumor_tallies = {(t, p, m): _TumorTally() for t in candidates for p in min_peaks for m in min_volumes_ml}
    vessel_dsc: dict[float, list[float]] = {v: [] for v in vessel_candidates}
    cohorts = [Path(cohort)] if isinstance(cohort, (str, Path)) else [Path(c) for c in cohort]
    cohort_names = ", ".join(str(c) for c in cohorts)
    cases = 0
    for case in (case for folder in cohorts for case in load_cases("synthetic", folder)):
        image, ref_image = case.load()
        ref = sitk.GetArrayViewFromImage(ref_image)
        probabilities = predictor.predict_probabilities(image)
        reference = _ReferenceLesions(ref, ref_image.GetSpacing())
        for value in vessel_candidates:
            thresholds = list(base)
            thresholds[vessel_index] = value
            pred = sitk.GetArrayFromImage(predictor.labels_from(probabilities, image, thresholds, 0.0))
            vessel_dsc[value].append(dice(pred == VESSEL, ref == VESSEL))
        for value in candidates:
            thresholds = list(base)
            thresholds[tumor_index] = value
            labels = sitk.GetArrayFromImage(predictor.labels_from(probabilities, image, thresholds, 0.0, 0.0))
            for peak in min_peaks:
                confident = _confident_tumors(labels, probabilities, predictor.tumor_channel, peak)
                for min_volume in min_volumes_ml:
                    cleaned = remove_small_tumors(confident, image.GetSpacing(), min_volume)
                    tumor_tallies[(value, peak, min_volume)].add(cleaned == TUMOR, reference)
        cases += 1
        if on_case:
            on_case(case.case_id)
    if not cases:
        raise ValueError(f"{cohort_names}: the validation cohort has no scans")

    scores = []
    for (value, peak, min_volume), tally in tumor_tallies.items():
        summary = tally.summary()
        scores.append({"tumor_threshold": value, "min_tumor_peak": peak, "min_tumor_volume_ml": min_volume,
                       "score": round(tumor_score(summary), 4), **summary})
    best = choose_operating_point(scores, max_false_per_scan)
    vessel_rows = [{"vessel_threshold": v, "vessel_dsc": round(float(np.mean(d)), 4)} for v, d in vessel_dsc.items()]
    best_vessel = max(vessel_rows, key=lambda row: row["vessel_dsc"])
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "cohort": cohort_names, "cases": cases,
        "best_tumor_threshold": best["tumor_threshold"],
        "best_min_tumor_volume_ml": best["min_tumor_volume_ml"],
        "best_min_tumor_peak": best["min_tumor_peak"],
        "best_vessel_threshold": best_vessel["vessel_threshold"],
        "max_false_lesions_per_scan": max_false_per_scan,
        "candidates": scores, "vessel_candidates": vessel_rows,
    }
    if out is not None:
        state, meta = load_checkpoint(checkpoint)
        inference = dict(meta.get("inference", {}))
        inference["thresholds"] = {**dict(inference.get("thresholds", {})),
                                   "tumor": best["tumor_threshold"], "vessel": best_vessel["vessel_threshold"]}
        inference["min_tumor_volume_ml"] = best["min_tumor_volume_ml"]
        inference["min_tumor_peak"] = best["min_tumor_peak"]
        meta = {**meta, "inference": inference, "version": version or meta["version"],
                "calibration": {"cohort": cohort_names, "cases": cases, "candidates": scores,
                                "vessel_candidates": vessel_rows}}
        result["out"] = str(save_checkpoint(out, state, meta, fp16=_stored_half(checkpoint)))
    return result


def _confident_tumors(
    labels: np.ndarray, probabilities: ScanProbabilities, channel: int, peak: float
) -> np.ndarray:
    """``labels`` without the tumor components whose peak probability is below ``peak``."""
    region = probabilities.region
    if peak <= 0 or region is None:
        return labels
    out = labels.copy()
    out[region] = remove_unconfident_tumors(labels[region], probabilities.values[channel], peak)
    return out


def _stored_half(checkpoint: str | Path) -> bool:
    """Whether the file holds fp16 weights, so that the copy keeps the same precision."""
    import torch

    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return any(t.dtype == torch.float16 for t in raw["state_dict"].values())
