"""Evaluate a checkpoint on a held-out phantom cohort: the numbers of the model card.

Runs :class:`lvt_core.inference.Predictor` on each scan at its own geometry, scores it with
:func:`lvt_core.metrics.evaluate_pair`, and adds lesion sensitivity for lesions with a
longest axial diameter ≥ 10 mm (the model card's target). DSC is the mean over scans (a
scan without tumors that gets a false one scores 0); ``global_dsc`` pools all voxels.
Writes ``metrics.json``, ``per_case.csv`` and ``per_lesion.csv`` when ``out`` is given; the
per-lesion table (size, local contrast to the surrounding liver, coverage) explains misses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lvt_core.labels import MIN_LESION_VOXELS, TUMOR
from lvt_core.lesions import longest_axial_diameter_mm
from lvt_core.volumetry import FLAG_THRESHOLD_PCT, liver_volumes_ml, residuals_pct
from training.datasets import cases_by_day, load_cases

MIN_LESION_MM = 10.0
TARGETS = {"liver_dsc": 0.95, "vessel_dsc": 0.70, "tumor_dsc": 0.85, "lesion_sensitivity_10mm": 0.90}


def large_lesion_ids(components: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Labels of the components in a ``z, y, x`` lesion label map that are ≥ ``MIN_LESION_MM``
    across (longest axial diameter, edge to edge as ``lvt lesions`` and the phantom's
    ``lesions.csv`` measure; up to 0.29.0's card, between voxel centres, one voxel less), the
    lesions the sensitivity target counts."""
    ids = [index for index, box in enumerate(ndimage.find_objects(components), start=1)
           if box is not None and longest_axial_diameter_mm(components[box] == index, spacing) >= MIN_LESION_MM]
    return np.array(ids, dtype=int)


DETECTED_COVERAGE = 0.1
"""A reference lesion counts as found when more than this fraction of it is predicted tumor."""

AT_CAPSULE = 0.05
"""A reference lesion lies at the liver's surface when more than this share of the ring around
it (``capsule`` of :func:`lesion_findings`) is outside the organ."""


def lesion_findings(pred: np.ndarray, ref: np.ndarray, hu: np.ndarray,
                    spacing: tuple[float, ...]) -> list[dict[str, Any]]:
    """One row per reference lesion: longest axial diameter, mean HU contrast against a 2–6 mm
    shell of liver around it, its detectability (that contrast against the noise of a liver
    region of its volume, :mod:`lvt_core.detectability`), the fraction covered by predicted
    tumor, whether it is found, the longest axial diameter of the predicted lesions that
    touch it (what the app would measure for it; None when none does), and the share of a
    1–3 voxel ring around it outside the organ (``capsule``: 0 inside the liver, more at its
    surface, where rules that look around a lesion see less liver)."""
    from lvt_core.detectability import LiverNoise

    components = cc3d.connected_components(ref == 3, connectivity=26)
    predicted = cc3d.connected_components(np.asarray(pred) == 3, connectivity=26)
    predicted_boxes = ndimage.find_objects(predicted)
    liver = ref == 1
    noise = LiverNoise(hu, liver) if liver.any() else None
    rows = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(0, s.start - 4), s.stop + 4) for s in box)
        lesion = components[grown] == index
        near = ndimage.binary_dilation(lesion, iterations=3) & ~ndimage.binary_dilation(lesion, iterations=1)
        shell = near & liver[grown]
        inside = hu[grown][lesion]
        coverage = float((pred[grown][lesion] == 3).mean())
        contrast = float(inside.mean() - hu[grown][shell].mean()) if shell.any() else None
        visible = (noise.detectability(contrast, int(lesion.sum()))
                   if noise is not None and contrast is not None else None)
        touching = np.unique(predicted[grown][lesion])
        touching = touching[touching > 0]
        rows.append({
            "diameter_mm": round(longest_axial_diameter_mm(lesion, spacing), 1),
            "predicted_diameter_mm": _predicted_diameter(predicted, predicted_boxes, touching, spacing),
            "voxels": int(lesion.sum()),
            "contrast_hu": round(contrast, 1) if contrast is not None else None,
            "detectability": round(visible, 2) if visible is not None else None,
            "coverage": round(coverage, 3), "found": coverage > DETECTED_COVERAGE,
            "capsule": round(float((ref[grown][near] == 0).mean()), 3),
        })
    return rows


def _predicted_diameter(predicted: np.ndarray, boxes: list, ids: np.ndarray,
                        spacing: tuple[float, ...]) -> float | None:
    """Longest axial diameter of the predicted components ``ids`` together."""
    if not len(ids):
        return None
    box = tuple(slice(min(boxes[i - 1][a].start for i in ids), max(boxes[i - 1][a].stop for i in ids))
                for a in range(3))
    return round(longest_axial_diameter_mm(np.isin(predicted[box], ids), spacing), 1)


def diameter_agreement(findings: list[dict[str, Any]]) -> dict[str, Any]:
    """How the model's longest axial diameter of each found lesion ≥ 10 mm compares with the
    truth's: median absolute and mean signed error (mm; positive: drawn too large)."""
    errors = [row["predicted_diameter_mm"] - row["diameter_mm"] for row in findings
              if row["diameter_mm"] >= MIN_LESION_MM and row["found"] and row["predicted_diameter_mm"] is not None]
    if not errors:
        return {"lesions": 0, "median_abs_error_mm": None, "mean_signed_error_mm": None}
    return {"lesions": len(errors), "median_abs_error_mm": round(float(np.median(np.abs(errors))), 2),
            "mean_signed_error_mm": round(float(np.mean(errors)), 2)}


def visible_large_lesions(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lesions ≥ 10 mm an observer searching the liver could see (Rose criterion)."""
    from lvt_core.detectability import ROSE_THRESHOLD

    return [row for row in findings if row["diameter_mm"] >= MIN_LESION_MM
            and row["detectability"] is not None and row["detectability"] >= ROSE_THRESHOLD]


def capsule_sensitivity(findings: list[dict[str, Any]]) -> dict[str, Any]:
    """Lesions ≥ 10 mm at the liver's surface (:data:`AT_CAPSULE`) and the share found: a
    cohort drawn with ``lvt phantom --subcapsular`` has many, the usual cohorts almost none."""
    at_capsule = [row for row in findings if row["diameter_mm"] >= MIN_LESION_MM and row["capsule"] > AT_CAPSULE]
    found = sum(row["found"] for row in at_capsule)
    return {"lesions_10mm_at_capsule": len(at_capsule), "lesions_10mm_at_capsule_found": found,
            "lesion_sensitivity_10mm_at_capsule": found / len(at_capsule) if at_capsule else None}


def false_lesions(pred_tumor: np.ndarray, ref_tumor: np.ndarray) -> tuple[int, int]:
    """``(predicted lesions, those touching no reference tumor)``: what a reader would dismiss.
    Lesions are components of ``MIN_LESION_VOXELS`` or more, the ones the app lists.

    Voxel Dice barely notices a few small false lesions on a scan with a large true one, but
    every one of them is a row in the lesion table and, at a follow-up, a "new lesion".
    """
    from lvt_core.postprocess import bounding_box

    box = bounding_box(pred_tumor)
    if box is None:
        return 0, 0
    region = tuple(slice(lo, hi) for lo, hi in box)
    shown = cc3d.dust(np.asarray(pred_tumor[region]), threshold=MIN_LESION_VOXELS, connectivity=26)
    components, n = cc3d.connected_components(shown, connectivity=26, return_N=True)
    touching = np.unique(components[ref_tumor[region] & (components > 0)])
    return n, n - len(touching)


def fluid_on_true_tumor(places: list[dict[str, Any]], reference: sitk.Image) -> int:
    """How many of the places a day's reading left out as fluid (``fluid_places``) are centred
    on a true lesion of ``reference``: the fluid rule's cost, counted where truth is known (a
    lesion turned cystic; the gallbladder is not tumor)."""
    labels = sitk.GetArrayViewFromImage(reference)
    hits = 0
    for place in places:
        index = reference.TransformPhysicalPointToIndex([float(v) for v in place["centre_mm"]])
        inside = all(0 <= i < n for i, n in zip(index, reference.GetSize(), strict=True))
        hits += inside and int(labels[tuple(reversed(index))]) == TUMOR
    return hits


def pooled_lesion_precision(predicted: int, false: int) -> float:
    """Share of all predicted lesions that touch a true one (1 when none is predicted), pooled
    over the scans by the caller: the complement of the false lesions the calibration counts.
    Not ``lesion_precision``, which is ``lvt evaluate``'s (more than 10 % overlap, per case)."""
    return (predicted - false) / predicted if predicted else 1.0


def phase_volumetry(rows: list[dict[str, Any]], threshold_pct: float = FLAG_THRESHOLD_PCT) -> dict[str, Any]:
    """How far the model's total liver volume strays between the same-day phases of a study,
    next to the ground truth's own spread: the app flags a study beyond ``threshold_pct``, so a
    model whose phases disagree by that much raises false flags.

    ``rows`` are per-scan rows with ``study``, ``phase``, ``liver_total_ml`` and
    ``reference_total_ml``; studies with fewer than two phases are left out.
    """
    studies: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("study"):
            studies.setdefault(str(row["study"]), []).append(row)
    predicted, reference, by_phase = [], [], {}
    flagged = compared = 0
    for members in studies.values():
        if len(members) < 2 or any(m["liver_total_ml"] <= 0 for m in members):
            continue
        compared += 1
        deviations = residuals_pct([m["liver_total_ml"] for m in members])
        predicted.extend(abs(d) for d in deviations)
        reference.extend(abs(d) for d in residuals_pct([m["reference_total_ml"] for m in members]))
        flagged += any(abs(d) > threshold_pct for d in deviations)
        for member, deviation in zip(members, deviations, strict=True):
            by_phase.setdefault(str(member.get("phase") or "unknown"), []).append(deviation)
    return {
        "studies": compared, "threshold_pct": threshold_pct, "flagged_studies": flagged,
        "median_abs_deviation_pct": float(np.median(predicted)) if predicted else None,
        "max_abs_deviation_pct": float(max(predicted)) if predicted else None,
        "reference_max_abs_deviation_pct": float(max(reference)) if reference else None,
        # signed: a phase the model segments larger than the others on average is positive
        "mean_deviation_pct_by_phase": {phase: float(np.mean(v)) for phase, v in sorted(by_phase.items())},
    }


def _predicted_days(predictor: Any, cohort: str | Path) -> Iterator[tuple[Any, sitk.Image, sitk.Image, sitk.Image, dict]]:
    """``(case, image, reference, prediction, info)`` per scan of ``cohort``, the phases of one
    day segmented together (:meth:`lvt_core.inference.Predictor.predict_day`), as the batch
    segments them."""
    for day in cases_by_day(load_cases("synthetic", cohort)):
        loaded = [case.load() for case in day]
        predicted = predictor.predict_day([image for image, _ in loaded], [case.phase or "unknown" for case in day])
        for case, (image, ref), (pred, info) in zip(day, loaded, predicted, strict=True):
            yield case, image, ref, pred, info


def evaluate_checkpoint(
    checkpoint: str | Path, cohort: str | Path, out: str | Path | None = None,
    device: str = "auto", on_case: Callable[[str], None] | None = None,
    thresholds: dict[str, float] | None = None, tta: bool | None = None, precision: str | None = None,
    save_predictions: bool = False,
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on every scan of the phantom ``cohort`` (manifest.csv).

    ``save_predictions`` writes each label map to ``out/predictions/<case>.nii.gz``, so any
    number here can be checked case by case (``lvt evaluate``, a viewer).

    ``tta`` turns mirroring test-time augmentation on or off (default: the Predictor's);
    ``precision`` is the arithmetic (``fp32``, ``bf16``; default: the Predictor's ``auto``).

    ``thresholds`` (channel name → value) overrides the checkpoint's decision thresholds.
    """
    from lvt_core.inference import Predictor, windows_to_meta
    from lvt_core.labels import CHANNELS, channel_thresholds
    from lvt_core.metrics import CLASS_MASKS, evaluate_pair, mean_metrics

    predictor = Predictor(checkpoint, device=device, tta=tta, precision=precision)
    predictor.thresholds = channel_thresholds(thresholds, predictor.thresholds)
    rows, lesion_rows, results, detected, total = [], [], [], 0, 0
    all_findings: list[dict[str, Any]] = []
    visible_found, visible_total = 0, 0
    predicted_lesions, false_total = 0, 0
    overlap = dict.fromkeys(CLASS_MASKS, 0)  # pooled over all scans: the "global Dice" of LiTS
    sizes = dict.fromkeys(CLASS_MASKS, 0)
    confirmed_total = fluid_total = fluid_on_tumor = 0
    if save_predictions and out is None:
        raise ValueError("saving the predictions needs an output folder (--out)")
    for case, image, ref, pred, info in _predicted_days(predictor, cohort):
        if save_predictions:
            assert out is not None
            (Path(out) / "predictions").mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(pred, str(Path(out) / "predictions" / f"{case.case_id}.nii.gz"), useCompression=True)
        confirmed_total += len(info["cross_phase_points_mm"])
        fluid = info.get("fluid_places", [])
        fluid_total, fluid_on_tumor = fluid_total + len(fluid), fluid_on_tumor + fluid_on_true_tumor(fluid, ref)
        result = evaluate_pair(pred, ref)
        findings = lesion_findings(sitk.GetArrayViewFromImage(pred), sitk.GetArrayViewFromImage(ref),
                                   sitk.GetArrayViewFromImage(image), ref.GetSpacing())
        lesion_rows.extend({"case": case.case_id, **row} for row in findings)
        all_findings.extend(findings)
        for name, values in CLASS_MASKS.items():
            p, r = np.isin(sitk.GetArrayViewFromImage(pred), values), np.isin(sitk.GetArrayViewFromImage(ref), values)
            overlap[name] += int(np.count_nonzero(p & r))
            sizes[name] += int(np.count_nonzero(p)) + int(np.count_nonzero(r))
        large = [row for row in findings if row["diameter_mm"] >= MIN_LESION_MM]
        d, t = sum(row["found"] for row in large), len(large)
        detected, total = detected + d, total + t
        visible = visible_large_lesions(findings)
        visible_found, visible_total = visible_found + sum(r["found"] for r in visible), visible_total + len(visible)
        predicted, false = false_lesions(sitk.GetArrayViewFromImage(pred) == 3, sitk.GetArrayViewFromImage(ref) == 3)
        predicted_lesions, false_total = predicted_lesions + predicted, false_total + false
        results.append(result)
        rows.append({"case": case.case_id, **{f"{c}_dsc": result[c]["dsc"] for c in ("liver", "vessel", "tumor")},
                     "lesion_sensitivity": result["lesion_sensitivity"], "lesions_10mm": t, "detected_10mm": d,
                     "predicted_lesions": predicted, "false_lesions": false, "fluid_places_removed": len(fluid),
                     "study": case.study, "phase": case.phase,
                     "liver_total_ml": liver_volumes_ml(pred)[0], "reference_total_ml": liver_volumes_ml(ref)[0]})
        if on_case:
            on_case(case.case_id)
    mean = mean_metrics(results)
    summary = {
        "checkpoint": str(checkpoint), "cohort": str(cohort), "cases": len(rows),
        "thresholds": dict(zip(CHANNELS, predictor.thresholds, strict=True)), "tta": predictor.tta,
        "precision": predictor.precision,
        "extra_windows": windows_to_meta(predictor.extra_windows),
        "min_tumor_volume_ml": predictor.min_tumor_volume_ml, "min_tumor_peak": predictor.min_tumor_peak,
        "large_tumor_ml": predictor.large_tumor_ml, "min_tumor_roundness": predictor.min_tumor_roundness,
        "max_tumor_outside": predictor.max_tumor_outside,
        "cross_phase": predictor.cross_phase.to_meta(), "cross_phase_lesions_added": confirmed_total,
        # places the reading made background as fluid, and those centred on a true lesion
        "fluid_places_removed": fluid_total, "fluid_places_on_true_lesions": fluid_on_tumor,
        "liver_dsc": mean["liver"]["dsc"], "vessel_dsc": mean["vessel"]["dsc"], "tumor_dsc": mean["tumor"]["dsc"],
        "lesion_sensitivity": mean["lesion_sensitivity"],
        "lesion_sensitivity_10mm": detected / total if total else None, "lesions_10mm": total,
        "lesions_10mm_found": detected,
        # the same for the lesions >= 10 mm that stand out of the noise (detectability >= 5)
        "lesion_sensitivity_10mm_visible": visible_found / visible_total if visible_total else None,
        "lesions_10mm_visible": visible_total,
        **capsule_sensitivity(all_findings),
        "false_lesions_per_scan": false_total / len(rows) if rows else 0.0,
        "lesion_precision": mean["lesion_precision"],  # as `lvt evaluate` scores the same pairs
        "lesion_precision_pooled": pooled_lesion_precision(predicted_lesions, false_total),
        "per_class": {c: mean[c] for c in ("liver", "vessel", "tumor")},
        "global_dsc": {c: 2 * overlap[c] / sizes[c] if sizes[c] else 1.0 for c in CLASS_MASKS},
        "phase_volumetry": phase_volumetry(rows),
        "diameter_agreement": diameter_agreement(all_findings),
    }
    summary["targets_met"] = {k: (summary[k] is not None and summary[k] >= v) for k, v in TARGETS.items()}
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        from training.experiment import write_rows

        write_rows(out / "per_case.csv", rows)
        write_rows(out / "per_lesion.csv", lesion_rows)
    return summary
