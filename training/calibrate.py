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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cc3d
import numpy as np
import SimpleITK as sitk

from lvt_core.faint_lesions import FaintLesionSearch
from lvt_core.labels import CHANNELS, LIVER, MIN_LESION_VOXELS, TUMOR, VESSEL
from lvt_core.lesion_edges import LesionEdgeRule, kept_lesion_voxels
from lvt_core.metrics import dice
from lvt_core.postprocess import confident_tumors, min_tumor_voxels, round_enough_tumors
from training.evaluate_model import (
    DETECTED_COVERAGE,
    large_lesion_ids,
    pooled_lesion_precision,
)

if TYPE_CHECKING:
    from lvt_core.inference import Predictor, ScanProbabilities

DEFAULT_CANDIDATES = (0.5, 0.4, 0.3, 0.2)
DEFAULT_VESSEL_CANDIDATES = (0.5, 0.4, 0.3)
DEFAULT_MIN_VOLUMES_ML = (0.0, 0.02, 0.05, 0.1)
DEFAULT_MIN_PEAKS = (0.0, 0.7, 0.9, 0.95, 0.98)  # 0: no hysteresis
DEFAULT_MAX_FALSE_PER_SCAN = 1.0
DEFAULT_MIN_LESION_SCORES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # 0: the filter keeps all


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


def score_grid(tallies: dict[Any, _TumorTally], fields: Sequence[str],
               max_false_per_scan: float | None) -> tuple[list[dict[str, Any]], Any]:
    """One row per grid point of a later calibration stage (its ``fields``, score and tallies)
    and the point chosen within the false-lesion budget."""
    scores = []
    for decisions, tally in tallies.items():
        summary = tally.summary()
        scores.append({**{name: getattr(decisions, name) for name in fields},
                       "score": round(tumor_score(summary), 4), **summary})
    return scores, list(tallies)[scores.index(choose_operating_point(scores, max_false_per_scan))]


def write_stage_decisions(checkpoint: str | Path, out: str | Path, key: str, decisions: Any,
                          version: str | None, record_key: str, record: dict[str, Any]) -> str:
    """A copy of ``checkpoint`` at ``out`` with ``inference[key]`` set to ``decisions`` (its
    ``to_meta()``, or a plain value) and the calibration's ``record`` under ``record_key``;
    returns its path."""
    from lvt_core.checkpoint import copy_with_meta, load_checkpoint

    _, meta = load_checkpoint(checkpoint)
    value = decisions.to_meta() if hasattr(decisions, "to_meta") else decisions
    inference = {**meta.get("inference", {}), key: value}
    meta = {**meta, "inference": inference, "version": version or meta["version"], record_key: record}
    return str(copy_with_meta(checkpoint, out, meta))


def _check_candidates(name: str, values: Sequence[float], volumes: bool = False) -> None:
    """Thresholds lie strictly between 0 and 1; volumes are 0 (keep all) or more."""
    ok = all(v >= 0.0 for v in values) if volumes else all(0.0 < v < 1.0 for v in values)
    if not values or not ok:
        bounds = "0 or more" if volumes else "strictly between 0 and 1"
        raise ValueError(f"{name} candidates must be {bounds}, got {list(values)}")


class _ReferenceLesions:
    """One scan's reference tumors, computed once and scored against every candidate."""

    def __init__(self, ref: np.ndarray, spacing: tuple[float, ...]) -> None:
        self.components, self.count = cc3d.connected_components(ref == TUMOR, connectivity=26, return_N=True)
        self.large_ids = large_lesion_ids(self.components, spacing)
        self.sizes = np.bincount(self.components.ravel(), minlength=self.count + 1)


class _CandidateTable:
    """One scan's predicted tumor components at one threshold and their overlap with every
    reference lesion, so each peak, volume and lesion-score rule, which keeps or drops whole
    components, is scored without touching the voxels again."""

    def __init__(self, components: np.ndarray, ref_components: np.ndarray, ref_count: int,
                 count: int | None = None) -> None:
        n = int(components.max(initial=0)) if count is None else count
        both = (components > 0) & (ref_components > 0)
        pairs = components[both].astype(np.int64) * (ref_count + 1) + ref_components[both]
        counts = np.bincount(pairs, minlength=(n + 1) * (ref_count + 1))
        self.overlap = counts.reshape(n + 1, ref_count + 1)[1:, 1:]  # predicted × reference voxels
        self.sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
        self.count = n

    @classmethod
    def empty(cls, ref_count: int) -> _CandidateTable:
        return cls(np.zeros((1, 1, 1), np.int32), np.zeros((1, 1, 1), np.int32), ref_count)


class _TumorTally:
    """Per-candidate tumor Dice per scan and large-lesion detections, summed over scans."""

    def __init__(self) -> None:
        self.dsc: list[float] = []
        self.found = 0
        self.total = 0
        self.predicted = 0
        self.false = 0
        self.components = 0  # every kept component, specks under a lesion's size too

    def add(self, table: _CandidateTable, keep: np.ndarray, reference: _ReferenceLesions) -> None:
        """Score the components of ``table`` that ``keep`` keeps (``metrics.dice``'s convention:
        1 when neither prediction nor reference has tumor)."""
        overlap = table.overlap[keep]
        predicted_voxels, ref_voxels = int(table.sizes[keep].sum()), int(reference.sizes[1:].sum())
        total = predicted_voxels + ref_voxels
        self.dsc.append(2.0 * int(overlap.sum()) / total if total else 1.0)
        large = reference.large_ids
        covered = overlap[:, large - 1].sum(axis=0) / reference.sizes[large] if len(large) else np.zeros(0)
        self.found += int((covered > DETECTED_COVERAGE).sum())
        self.total += len(large)
        self.components += int(keep.sum())
        shown = table.sizes[keep] >= MIN_LESION_VOXELS  # specks the app does not list are no false lesions
        self.predicted += int(shown.sum())
        self.false += int(((overlap.sum(axis=1) == 0) & shown).sum())

    def summary(self) -> dict[str, Any]:
        scans = len(self.dsc)
        return {"tumor_dsc": round(float(np.mean(self.dsc)), 4) if self.dsc else 0.0,
                "lesion_sensitivity_10mm": round(self.found / self.total, 4) if self.total else None,
                "detected_10mm": self.found, "lesions_10mm": self.total,
                "lesion_precision_pooled": round(pooled_lesion_precision(self.predicted, self.false), 4),
                "false_lesions_per_scan": round(self.false / scans, 3) if scans else 0.0,
                "components_per_scan": round(self.components / scans, 3) if scans else 0.0}


def calibrate_decisions(
    checkpoint: str | Path, cohort: str | Path | Sequence[str | Path], out: str | Path | None = None,
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
    vessel_candidates: Sequence[float] = DEFAULT_VESSEL_CANDIDATES,
    min_volumes_ml: Sequence[float] = DEFAULT_MIN_VOLUMES_ML,
    device: str = "auto", on_case: Callable[[str], None] | None = None,
    min_peaks: Sequence[float] = DEFAULT_MIN_PEAKS,
    version: str | None = None,
    max_false_per_scan: float | None = DEFAULT_MAX_FALSE_PER_SCAN,
    min_lesion_scores: Sequence[float] | None = None,
    edge_fractions: Sequence[float] = (0.0,),
    edge_max_voxels_mm: Sequence[float] = (0.0,),
    extra_windows: Sequence[tuple[float, float]] | None = None,
    large_tumor_mls: Sequence[float] = (0.0,),
    min_roundnesses: Sequence[float] = (0.0,),
    max_outsides: Sequence[float] = (1.0,),
) -> dict[str, Any]:
    """Score every candidate on ``cohort``; write the best into a copy of the checkpoint at ``out``.

    ``cohort`` may be several folders (say thin- and thick-slice phantoms), pooled scan by scan,
    so the decisions hold for every kind of scan users send. ``candidates`` are tumor
    thresholds, each paired with every lowest peak probability a tumor component must reach
    (hysteresis) and every volume from which a component is kept whatever its peak
    (``large_tumor_mls``, 0: none; strictest first, so ties keep the fewest), every minimum
    tumor volume (ml), every lowest roundness (``min_roundnesses``: tubes drawn as tumor become
    liver; large components stay as they do under the peak rule), every largest share of the
    shell around a component outside the organ (``max_outsides``, 1: off; more becomes
    background) and, when the checkpoint has a lesion filter (``lvt fit-lesion-filter``), every lowest lesion score (default
    :data:`DEFAULT_MIN_LESION_SCORES`); the best one within ``max_false_per_scan`` false
    lesions per scan wins. Each is drawn with every ``edge_fractions`` (:mod:`lvt_core.lesion_edges`;
    0 keeps the network's extent), on scans whose voxels' longest side is at most each of
    ``edge_max_voxels_mm`` (0: every scan; thicker scans keep the network's extent). ``version`` renames the copy: new decisions change every result,
    and a store keeps one checksum per model name and version. ``extra_windows`` ((level,
    width) HU pairs; None keeps the checkpoint's) are averaged with the main window in the
    fine pass; the decisions are chosen on those probabilities, so the copy keeps both.
    """
    from lvt_core.checkpoint import copy_with_meta, load_checkpoint
    from lvt_core.inference import Predictor, windows_to_meta
    from training.datasets import load_cases

    predictor = Predictor(checkpoint, device=device,
                          extra_windows=list(extra_windows) if extra_windows is not None else None)
    if min_lesion_scores is None:
        min_lesion_scores = DEFAULT_MIN_LESION_SCORES if predictor.lesion_filter else (0.0,)
    _check_candidates("threshold", candidates)
    _check_candidates("vessel threshold", vessel_candidates)
    _check_candidates("minimum tumor volume", min_volumes_ml, volumes=True)
    _check_candidates("minimum tumor peak", min_peaks, volumes=True)
    _check_candidates("minimum lesion score", min_lesion_scores, volumes=True)
    _check_candidates("large tumor volume", large_tumor_mls, volumes=True)
    _check_candidates("minimum tumor roundness", min_roundnesses, volumes=True)
    if any(r >= 1 for r in min_roundnesses):
        raise ValueError(f"minimum tumor roundness candidates must be below 1, got {list(min_roundnesses)}")
    if not max_outsides or any(not 0 <= v <= 1 for v in max_outsides):
        raise ValueError(f"largest outside share candidates must be between 0 and 1, got {list(max_outsides)}")
    max_outsides = sorted(set(map(float, max_outsides)), reverse=True)  # loosest first: ties keep the most
    large_tumor_mls = sorted(set(map(float, large_tumor_mls)), key=lambda ml: (ml > 0, -ml))
    _check_candidates("edge fraction", edge_fractions, volumes=True)
    _check_candidates("edge largest voxel", edge_max_voxels_mm, volumes=True)
    if any(f >= 1 for f in edge_fractions):
        raise ValueError(f"edge fraction candidates must be below 1, got {list(edge_fractions)}")
    if predictor.lesion_filter is None and any(min_lesion_scores):
        raise ValueError(f"{checkpoint}: has no lesion filter to score lesions with; "
                         "fit one with `lvt fit-lesion-filter` or leave --min-lesion-scores out")
    base = list(predictor.thresholds)
    tumor_index, vessel_index = CHANNELS.index("tumor"), CHANNELS.index("vessel")
    rules = [(p, m, s, large, r, o) for p in min_peaks for m in min_volumes_ml for s in min_lesion_scores
             for large in large_tumor_mls for r in min_roundnesses for o in max_outsides]
    edges = [LesionEdgeRule(fraction=f, max_voxel_mm=g) for f in edge_fractions
             for g in (edge_max_voxels_mm if f > 0 else (0.0,))]
    tumor_tallies = {(t, edge, *rule): _TumorTally() for t in candidates for edge in edges for rule in rules}
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
            pred = sitk.GetArrayFromImage(predictor.labels_from(probabilities, image, thresholds, 0.0,
                                                                faint_search=FaintLesionSearch()))
            vessel_dsc[value].append(dice(pred == VESSEL, ref == VESSEL))
        for value in candidates:
            thresholds = list(base)
            thresholds[tumor_index] = value
            rows = _candidate_rows(predictor, probabilities, image, thresholds, reference, edge_fractions)
            for peak, min_volume, min_score, large, min_round, max_out in rules:
                large_voxels = min_tumor_voxels(large, image.GetSpacing())
                keep = (confident_tumors(rows.peaks, rows.table.sizes, peak, large_voxels)
                        & (rows.table.sizes >= min_tumor_voxels(min_volume, image.GetSpacing()))
                        & (rows.scores >= min_score)
                        & round_enough_tumors(rows.roundness, rows.table.sizes, min_round, large_voxels)
                        & (rows.outside <= max_out))
                for edge in edges:
                    drawn = rows.drawn[edge.fraction] if edge.applies_to(image.GetSpacing()) else rows.table
                    tumor_tallies[(value, edge, peak, min_volume, min_score, large, min_round, max_out)].add(
                        drawn, keep, reference)
        cases += 1
        if on_case:
            on_case(case.case_id)
    if not cases:
        raise ValueError(f"{cohort_names}: the validation cohort has no scans")

    scores = []
    for (value, edge, peak, min_volume, min_score, large, min_round, max_out), tally in tumor_tallies.items():
        summary = tally.summary()
        scores.append({"tumor_threshold": value, "min_tumor_peak": peak, "large_tumor_ml": large,
                       "min_tumor_volume_ml": min_volume, "min_tumor_roundness": min_round,
                       "max_tumor_outside": max_out,
                       "min_lesion_score": min_score, "edge_fraction": edge.fraction,
                       "edge_max_voxel_mm": edge.max_voxel_mm,
                       "score": round(tumor_score(summary), 4), **summary})
    best = choose_operating_point(scores, max_false_per_scan)
    vessel_rows = [{"vessel_threshold": v, "vessel_dsc": round(float(np.mean(d)), 4)} for v, d in vessel_dsc.items()]
    best_vessel = max(vessel_rows, key=lambda row: row["vessel_dsc"])
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "cohort": cohort_names, "cases": cases,
        "best_tumor_threshold": best["tumor_threshold"],
        "best_min_tumor_volume_ml": best["min_tumor_volume_ml"],
        "best_min_tumor_peak": best["min_tumor_peak"],
        "best_large_tumor_ml": best["large_tumor_ml"],
        "best_min_tumor_roundness": best["min_tumor_roundness"],
        "best_max_tumor_outside": best["max_tumor_outside"],
        "best_min_lesion_score": best["min_lesion_score"],
        "best_edge_fraction": best["edge_fraction"],
        "best_edge_max_voxel_mm": best["edge_max_voxel_mm"],
        "best_vessel_threshold": best_vessel["vessel_threshold"],
        "max_false_lesions_per_scan": max_false_per_scan,
        "candidates": scores, "vessel_candidates": vessel_rows,
    }
    if out is not None:
        _, meta = load_checkpoint(checkpoint)
        inference = dict(meta.get("inference", {}))
        inference["thresholds"] = {**dict(inference.get("thresholds", {})),
                                   "tumor": best["tumor_threshold"], "vessel": best_vessel["vessel_threshold"]}
        inference["min_tumor_volume_ml"] = best["min_tumor_volume_ml"]
        inference["min_tumor_peak"] = best["min_tumor_peak"]
        inference["large_tumor_ml"] = best["large_tumor_ml"]
        inference["min_tumor_roundness"] = best["min_tumor_roundness"]
        inference["max_tumor_outside"] = best["max_tumor_outside"]
        inference["min_lesion_score"] = best["min_lesion_score"]
        inference["lesion_edges"] = LesionEdgeRule(fraction=best["edge_fraction"],
                                                   max_voxel_mm=best["edge_max_voxel_mm"]).to_meta()
        inference["extra_windows"] = windows_to_meta(predictor.extra_windows)
        meta = {**meta, "inference": inference, "version": version or meta["version"],
                "calibration": {"cohort": cohort_names, "cases": cases, "candidates": scores,
                                "vessel_candidates": vessel_rows}}
        result["out"] = str(copy_with_meta(checkpoint, out, meta))
    return result


@dataclass
class _CandidateRows:
    """Per predicted tumor component: its overlaps, peak probability, roundness and lesion
    score, and its overlaps once drawn with each edge fraction (same component numbers)."""

    table: _CandidateTable
    peaks: np.ndarray
    roundness: np.ndarray
    outside: np.ndarray  # share of the shell around it outside the organ (``edge_contact``)
    scores: np.ndarray
    drawn: dict[float, _CandidateTable]


def _candidate_rows(
    predictor: Predictor, probabilities: ScanProbabilities, image: sitk.Image,
    thresholds: list[float], reference: _ReferenceLesions, edge_fractions: Sequence[float] = (0.0,),
) -> _CandidateRows:
    """The tumor components ``thresholds`` draw before any component rule, measured once,
    and again as each of ``edge_fractions`` draws their edges."""
    from training.lesion_filter import decoded_candidates

    decoded = decoded_candidates(predictor, probabilities, image, thresholds)
    if decoded is None:
        empty = _CandidateTable.empty(reference.count)
        return _CandidateRows(empty, np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0),
                              dict.fromkeys(edge_fractions, empty))
    candidates, region, labels = decoded
    ref_components = reference.components[region]
    table = _CandidateTable(candidates.components, ref_components, reference.count)
    drawn = {}
    for fraction in edge_fractions:
        if fraction <= 0:
            drawn[fraction] = table
            continue
        kept = kept_lesion_voxels(candidates.components, labels == LIVER,
                                  probabilities.values[predictor.tumor_channel],
                                  sitk.GetArrayViewFromImage(image)[region], image.GetSpacing(),
                                  LesionEdgeRule(fraction=fraction))
        drawn[fraction] = _CandidateTable(np.where(kept, candidates.components, 0), ref_components,
                                          reference.count, table.count)
    scores = predictor.lesion_filter.scores(candidates.features) if predictor.lesion_filter else np.ones(candidates.count)
    return _CandidateRows(table, candidates.column("peak_probability"), candidates.column("roundness"),
                          candidates.column("edge_contact"), scores, drawn)
