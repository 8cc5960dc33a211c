"""Evaluate a checkpoint on a held-out phantom cohort: the numbers of the model card.

Runs :class:`lvt_core.inference.Predictor` on each scan at its own geometry, scores it with
:func:`lvt_core.metrics.evaluate_pair`, and adds lesion sensitivity for lesions with a
longest axial diameter ≥ 10 mm (the model card's target). Writes ``metrics.json`` and
``per_case.csv`` when ``out`` is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import SimpleITK as sitk

from training.datasets import load_cases

MIN_LESION_MM = 10.0
TARGETS = {"liver_dsc": 0.95, "vessel_dsc": 0.70, "tumor_dsc": 0.85, "lesion_sensitivity_10mm": 0.90}


def _longest_axial_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Largest in-plane extent of a ``z, y, x`` lesion mask over its slices (bounding diagonal
    of each slice's points, computed exactly on the convex set of voxel centres)."""
    best = 0.0
    for z in np.unique(np.nonzero(mask)[0]):
        pts = np.argwhere(mask[z]) * np.array([spacing[1], spacing[0]])
        if len(pts) > 400:
            pts = pts[np.random.default_rng(0).choice(len(pts), 400, replace=False)]
        d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).max() if len(pts) > 1 else 0.0
        best = max(best, float(d))
    return best


def large_lesion_sensitivity(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> tuple[int, int]:
    """``(detected, total)`` reference lesions ≥ 10 mm; detected = over 10 % covered by tumor."""
    components = cc3d.connected_components(ref == 3, connectivity=26)
    detected = total = 0
    for index in range(1, int(components.max()) + 1):
        lesion = components == index
        if _longest_axial_mm(lesion, spacing) < MIN_LESION_MM:
            continue
        total += 1
        detected += int((pred[lesion] == 3).mean() > 0.1)
    return detected, total


def evaluate_checkpoint(
    checkpoint: str | Path, cohort: str | Path, out: str | Path | None = None,
    device: str = "auto", on_case: Callable[[str], None] | None = None,
    thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on every scan of the phantom ``cohort`` (manifest.csv).

    ``thresholds`` (channel name → value) overrides the checkpoint's decision thresholds.
    """
    from lvt_core.inference import Predictor
    from lvt_core.labels import CHANNELS, channel_thresholds
    from lvt_core.metrics import evaluate_pair, mean_metrics

    predictor = Predictor(checkpoint, device=device)
    predictor.thresholds = channel_thresholds(thresholds, predictor.thresholds)
    rows, results, detected, total = [], [], 0, 0
    for case in load_cases("synthetic", cohort):
        image, ref = case.load()
        pred = predictor.predict(image)
        result = evaluate_pair(pred, ref)
        d, t = large_lesion_sensitivity(sitk.GetArrayViewFromImage(pred), sitk.GetArrayViewFromImage(ref),
                                        ref.GetSpacing())
        detected, total = detected + d, total + t
        results.append(result)
        rows.append({"case": case.case_id, **{f"{c}_dsc": result[c]["dsc"] for c in ("liver", "vessel", "tumor")},
                     "lesion_sensitivity": result["lesion_sensitivity"], "lesions_10mm": t, "detected_10mm": d})
        if on_case:
            on_case(case.case_id)
    mean = mean_metrics(results)
    summary = {
        "checkpoint": str(checkpoint), "cohort": str(cohort), "cases": len(rows),
        "thresholds": dict(zip(CHANNELS, predictor.thresholds, strict=True)),
        "liver_dsc": mean["liver"]["dsc"], "vessel_dsc": mean["vessel"]["dsc"], "tumor_dsc": mean["tumor"]["dsc"],
        "lesion_sensitivity": mean["lesion_sensitivity"],
        "lesion_sensitivity_10mm": detected / total if total else None, "lesions_10mm": total,
        "per_class": {c: mean[c] for c in ("liver", "vessel", "tumor")},
    }
    summary["targets_met"] = {k: (summary[k] is not None and summary[k] >= v) for k, v in TARGETS.items()}
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        from training.experiment import write_rows

        write_rows(out / "per_case.csv", rows)
    return summary
