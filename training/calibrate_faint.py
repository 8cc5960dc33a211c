"""Choose the faint-lesion search's decisions (:mod:`lvt_core.faint_lesions`) on validation
phantoms, after ``lvt calibrate`` has chosen the network's.

The search runs on the labels the checkpoint already decodes, so it is a second stage: each
validation scan runs through the network once, its candidates are drawn once at the lowest
``min_z``, and every pair of ``min_z`` and ``min_blobness`` keeps a subset of them. The pair
with the best tumor score (mean of tumor DSC and sensitivity for lesions ≥ 10 mm) within the
false-lesion budget wins, the search switched off being one of the candidates: when it does
not help on validation, the copy keeps it off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import SimpleITK as sitk

from lvt_core.faint_lesions import FaintLesionSearch, faint_candidates, paint_candidates
from lvt_core.labels import TUMOR
from training.calibrate import (
    DEFAULT_MAX_FALSE_PER_SCAN,
    _CandidateTable,
    _ReferenceLesions,
    _TumorTally,
    score_grid,
    write_stage_decisions,
)

DEFAULT_MIN_Z = (5.0, 6.0, 7.0, 8.0, 10.0)
DEFAULT_MIN_BLOBNESS = (0.3, 0.4, 0.5)
DEFAULT_MIN_Z_BRIGHT = (0.0,)  # brighter lesions: not searched unless asked for
DEFAULT_MIN_ROUNDNESS = (0.0,)  # every drawn shape kept unless asked for
GRID_FIELDS = ("min_z", "min_blobness", "min_z_bright", "lesion_side_vessels", "min_roundness")
"""The :class:`FaintLesionSearch` fields the calibration varies: one column each per candidate
row, and ``best_<field>`` in the result."""


def calibrate_faint_search(
    checkpoint: str | Path, cohort: Sequence[str | Path], out: str | Path | None = None,
    min_zs: Sequence[float] = DEFAULT_MIN_Z, min_blobness: Sequence[float] = DEFAULT_MIN_BLOBNESS,
    device: str = "auto", on_case: Callable[[str], None] | None = None, version: str | None = None,
    max_false_per_scan: float | None = DEFAULT_MAX_FALSE_PER_SCAN,
    min_z_bright: Sequence[float] = DEFAULT_MIN_Z_BRIGHT,
    lesion_side_vessels: Sequence[bool] = (False,),
    min_roundness: Sequence[float] = DEFAULT_MIN_ROUNDNESS,
) -> dict[str, Any]:
    """Score the search off and at every ``min_z`` × ``min_blobness`` (× each
    ``lesion_side_vessels``, how blobness treats voxels drawn as vessel, × each ``min_roundness``
    of the drawn region) on the pooled ``cohort``; write the best into a copy of the checkpoint
    at ``out`` (``inference.faint_lesions``)."""
    from lvt_core.inference import Predictor
    from training.datasets import load_cases

    if not min_zs or any(z <= 0 for z in min_zs):
        raise ValueError(f"minimum z candidates must be above 0, got {list(min_zs)}")
    if not min_blobness or any(not -1.0 <= b <= 1.0 for b in min_blobness):
        raise ValueError(f"minimum blobness candidates must lie in -1..1, got {list(min_blobness)}")
    if not min_z_bright or any(z < 0 for z in min_z_bright):
        raise ValueError(f"minimum z candidates for brighter lesions must be 0 (off) or above, "
                         f"got {list(min_z_bright)}")
    if not lesion_side_vessels:
        raise ValueError("lesion_side_vessels needs at least one choice")
    if not min_roundness or any(not 0.0 <= r <= 1.0 for r in min_roundness):
        raise ValueError(f"minimum roundness candidates must lie in 0..1, got {list(min_roundness)}")
    predictor = Predictor(checkpoint, device=device)
    off = FaintLesionSearch()
    grid = [off] + [FaintLesionSearch(min_z=float(z), min_blobness=float(b), min_z_bright=float(zb),
                                      lesion_side_vessels=bool(v), min_roundness=float(r))
                    for v in dict.fromkeys(lesion_side_vessels) for z in min_zs for b in min_blobness
                    for zb in min_z_bright for r in dict.fromkeys(min_roundness)]
    tallies = {search: _TumorTally() for search in grid}
    bright = [z for z in min_z_bright if z > 0]
    lowest = {v: FaintLesionSearch(min_z=min(min_zs), min_z_bright=min(bright) if bright else 0.0,
                                   lesion_side_vessels=bool(v)) for v in dict.fromkeys(lesion_side_vessels)}
    folders = [Path(c) for c in cohort]
    cases = 0
    for case in (case for folder in folders for case in load_cases("synthetic", folder)):
        image, ref_image = case.load()
        ref = sitk.GetArrayViewFromImage(ref_image)
        hu = sitk.GetArrayViewFromImage(image)
        probabilities = predictor.predict_probabilities(image)
        base = sitk.GetArrayFromImage(predictor.labels_from(probabilities, image, faint_search=off))
        reference = _ReferenceLesions(ref, ref_image.GetSpacing())
        candidates = {v: faint_candidates(hu, base, image.GetSpacing(), search) for v, search in lowest.items()}
        tables: dict[tuple[bool, tuple[int, ...]], _CandidateTable] = {}  # many decisions keep the same set
        for search, tally in tallies.items():
            found = candidates.get(search.lesion_side_vessels, [])
            kept = tuple(i for i, c in enumerate(found) if c.kept_by(search))
            key = (search.lesion_side_vessels, kept) if kept else (False, ())
            if key not in tables:
                labels = paint_candidates(base, [found[i] for i in kept])
                components = cc3d.connected_components(labels == TUMOR, connectivity=26)
                tables[key] = _CandidateTable(components, reference.components, reference.count)
            table = tables[key]
            tally.add(table, np.ones(len(table.sizes), bool), reference)
        cases += 1
        if on_case:
            on_case(case.case_id)
    if not cases:
        raise ValueError(f"{', '.join(map(str, folders))}: the validation cohort has no scans")

    scores, chosen = score_grid(tallies, GRID_FIELDS, max_false_per_scan)
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "cohort": ", ".join(map(str, folders)), "cases": cases,
        **{f"best_{name}": getattr(chosen, name) for name in GRID_FIELDS},
        "max_false_lesions_per_scan": max_false_per_scan, "candidates": scores,
    }
    if out is not None:
        result["out"] = write_stage_decisions(checkpoint, out, "faint_lesions", chosen, version, "faint_calibration",
                                              {"cohort": result["cohort"], "cases": cases, "candidates": scores})
    return result
