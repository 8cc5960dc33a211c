"""Choose when another phase of the day confirms a dropped candidate
(:mod:`lvt_core.cross_phase`), on validation phantoms, after ``lvt calibrate`` and ``lvt
calibrate-faint`` have chosen the checkpoint's other decisions.

It is a third stage on the labels the checkpoint already decodes: each validation day runs
through the network once per phase, each pair of its scans is registered once, and every
``min_peak`` × ``max_distance_mm`` × ``min_volume_ml`` keeps a subset of the dropped
candidates. The rule with the best tumor score (mean of tumor DSC and sensitivity for lesions
≥ 10 mm) within the false-lesion budget wins, the rule switched off being one of the
candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import SimpleITK as sitk

from lvt_core.cross_phase import (
    CrossPhaseRule,
    carried_centres,
    dropped_candidates,
    paint_confirmed,
)
from lvt_core.labels import TUMOR
from training.calibrate import (
    DEFAULT_MAX_FALSE_PER_SCAN,
    _CandidateTable,
    _check_candidates,
    _ReferenceLesions,
    _TumorTally,
    score_grid,
    write_stage_decisions,
)
from training.datasets import cases_by_day

DEFAULT_MIN_PEAKS = (0.5, 0.7, 0.8, 0.9)
DEFAULT_MAX_DISTANCES_MM = (5.0, 10.0, 15.0)
DEFAULT_MIN_VOLUMES_ML = (0.1,)
GRID_FIELDS = ("min_peak", "max_distance_mm", "min_volume_ml")


def calibrate_cross_phase(
    checkpoint: str | Path, cohort: Sequence[str | Path], out: str | Path | None = None,
    min_peaks: Sequence[float] = DEFAULT_MIN_PEAKS,
    max_distances_mm: Sequence[float] = DEFAULT_MAX_DISTANCES_MM,
    min_volumes_ml: Sequence[float] = DEFAULT_MIN_VOLUMES_ML,
    device: str = "auto", on_case: Callable[[str], None] | None = None, version: str | None = None,
    max_false_per_scan: float | None = DEFAULT_MAX_FALSE_PER_SCAN,
) -> dict[str, Any]:
    """Score the rule off and at every grid point on the pooled ``cohort``; write the best into
    a copy of the checkpoint at ``out`` (``inference.cross_phase``)."""
    from lvt_core.inference import Predictor
    from training.datasets import load_cases

    _check_candidates("minimum peak", min_peaks)
    _check_candidates("maximum distance (mm)", max_distances_mm, volumes=True)
    _check_candidates("minimum volume (ml)", min_volumes_ml, volumes=True)
    predictor = Predictor(checkpoint, device=device)
    # strictest first: ties go to the earlier candidate, so of rules that score alike the one
    # adding the fewest candidates wins
    grid = [CrossPhaseRule()] + [CrossPhaseRule(p, d, v) for p in sorted(set(map(float, min_peaks)), reverse=True)
                                 for d in sorted(set(map(float, max_distances_mm)))
                                 for v in sorted(set(map(float, min_volumes_ml)), reverse=True)]
    tallies = {rule: _TumorTally() for rule in grid}
    folders = [Path(c) for c in cohort]
    cases = days_read = 0
    # days are grouped within each cohort: two cohorts may reuse a patient and study index
    for day in (day for folder in folders for day in cases_by_day(load_cases("synthetic", folder))):
        scans, references = [], []
        for case in day:
            image, ref_image = case.load()
            probabilities = predictor.predict_probabilities(image)
            scans.append(predictor.phase_scan(probabilities, image, predictor.labels_from(probabilities, image)))
            references.append(_ReferenceLesions(sitk.GetArrayViewFromImage(ref_image), ref_image.GetSpacing()))
            if on_case:
                on_case(case.case_id)
        carried = carried_centres(scans) if len(scans) > 1 else [[] for _ in scans]
        for scan, points, reference in zip(scans, carried, references, strict=True):
            candidates = dropped_candidates(scan, points)
            tables: dict[tuple[int, ...], _CandidateTable] = {}  # many rules keep the same set
            for rule, tally in tallies.items():
                kept = tuple(i for i, c in enumerate(candidates) if c.kept_by(rule))
                if kept not in tables:
                    labels = paint_confirmed(scan.labels, [candidates[i] for i in kept])
                    components = cc3d.connected_components(labels == TUMOR, connectivity=26)
                    tables[kept] = _CandidateTable(components, reference.components, reference.count)
                table = tables[kept]
                tally.add(table, np.ones(len(table.sizes), bool), reference)
        cases += len(day)
        days_read += 1
    if not cases:
        raise ValueError(f"{', '.join(map(str, folders))}: the validation cohort has no scans")

    scores, chosen = score_grid(tallies, GRID_FIELDS, max_false_per_scan)
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "cohort": ", ".join(map(str, folders)), "cases": cases,
        "days": days_read, **{f"best_{name}": getattr(chosen, name) for name in GRID_FIELDS},
        "max_false_lesions_per_scan": max_false_per_scan, "candidates": scores,
    }
    if out is not None:
        result["out"] = write_stage_decisions(checkpoint, out, "cross_phase", chosen, version,
                                              "cross_phase_calibration",
                                              {"cohort": result["cohort"], "cases": cases, "candidates": scores})
    return result
