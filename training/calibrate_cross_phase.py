"""Choose when another phase of the day confirms a dropped candidate
(:mod:`lvt_core.cross_phase`), on validation phantoms, after ``lvt calibrate`` and ``lvt
calibrate-faint`` have chosen the checkpoint's other decisions.

It is a third stage on the labels the checkpoint already decodes: each validation day runs
through the network once per phase, each pair of its scans is registered once, and every
``min_peak`` × ``max_distance_mm`` × ``min_volume_ml`` keeps a subset of the dropped
candidates, and every ``carry_min_volume_ml`` × ``carry_min_contrast_hu`` ×
``carry_max_brighter_hu`` × ``carry_vessel_min_brighter_hu`` × ``carry_vessel_max_shell_fraction``
× ``carry_vessel_min_one_sidedness`` × ``carry_vessel_beside_tumor`` a subset of the lesions
carried whole from the other phase, onto liver or (the last four; 0 brighter: never) onto a
region an arterial scan drew as vessel, and every ``washout_min_brighter_hu`` × ``washout_min_darker_hu`` ×
``washout_min_volume_ml`` a subset of the places an arterial and a later scan show as a lesion
by their enhancement pattern alone, and every ``vein_min_darker_hu`` × ``vein_min_brighter_hu``
a subset of the tumor components that are veins filling with contrast, and every
``fluid_max_hu`` a subset of those that hold fluid (each part may also be off). The rule with the best
tumor score (mean of tumor DSC and sensitivity for lesions ≥ 10 mm) within the false-lesion
budget wins, the rule switched off being one of the candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import SimpleITK as sitk

from lvt_core.cross_phase import (
    NO_BRIGHTNESS_LIMIT_HU,
    CrossPhaseRule,
    PhaseScan,
    apply_rule,
    measured_across_phases,
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
from training.datasets import Case, cases_by_day
from training.decoded_scan_cache import entry_path, load_decoded, save_decoded

DEFAULT_MIN_PEAKS = (0.5, 0.7, 0.8, 0.9)
DEFAULT_MAX_DISTANCES_MM = (5.0, 10.0, 15.0)
DEFAULT_MIN_VOLUMES_ML = (0.1,)
DEFAULT_CARRY_MIN_VOLUMES_ML = (0.2, 0.3, 0.5, 1.0)
DEFAULT_CARRY_MIN_CONTRASTS_HU = (2.0, 3.0, 5.0, 8.0)
DEFAULT_CARRY_MAX_BRIGHTER_HU = (0.0, 15.0, NO_BRIGHTNESS_LIMIT_HU)
DEFAULT_CARRY_VESSEL_MIN_BRIGHTER_HU = (0.0,)
DEFAULT_CARRY_VESSEL_MAX_SHELL_FRACTIONS = (CrossPhaseRule.carry_vessel_max_shell_fraction,)
DEFAULT_CARRY_VESSEL_MIN_ONE_SIDEDNESS = (CrossPhaseRule.carry_vessel_min_one_sidedness,)
DEFAULT_CARRY_VESSEL_BESIDE_TUMOR = (CrossPhaseRule.carry_vessel_beside_tumor,)
DEFAULT_WASHOUT_MIN_BRIGHTER_HU = (0.0,)
DEFAULT_WASHOUT_MIN_DARKER_HU = (5.0,)
DEFAULT_WASHOUT_MIN_VOLUMES_ML = (0.3,)
DEFAULT_VEIN_MIN_DARKER_HU = (CrossPhaseRule.vein_min_darker_hu,)
DEFAULT_VEIN_MIN_BRIGHTER_HU = (0.0,)
DEFAULT_FLUID_MAX_HU = (0.0,)
GRID_FIELDS = tuple(field.name for field in fields(CrossPhaseRule))
"""Every decision of the rule, in its constructor's order: each row of the grid names them all."""


def rule_grid(min_peaks: Sequence[float], max_distances_mm: Sequence[float], min_volumes_ml: Sequence[float],
              carry_min_volumes_ml: Sequence[float], carry_min_contrasts_hu: Sequence[float],
              carry_max_brighter_hu: Sequence[float],
              carry_vessel_min_brighter_hu: Sequence[float] = DEFAULT_CARRY_VESSEL_MIN_BRIGHTER_HU,
              washout_min_brighter_hu: Sequence[float] = DEFAULT_WASHOUT_MIN_BRIGHTER_HU,
              washout_min_darker_hu: Sequence[float] = DEFAULT_WASHOUT_MIN_DARKER_HU,
              washout_min_volumes_ml: Sequence[float] = DEFAULT_WASHOUT_MIN_VOLUMES_ML,
              carry_vessel_max_shell_fractions: Sequence[float] = DEFAULT_CARRY_VESSEL_MAX_SHELL_FRACTIONS,
              carry_vessel_min_one_sidedness: Sequence[float] = DEFAULT_CARRY_VESSEL_MIN_ONE_SIDEDNESS,
              carry_vessel_beside_tumor: Sequence[float] = DEFAULT_CARRY_VESSEL_BESIDE_TUMOR,
              vein_min_darker_hu: Sequence[float] = DEFAULT_VEIN_MIN_DARKER_HU,
              vein_min_brighter_hu: Sequence[float] = DEFAULT_VEIN_MIN_BRIGHTER_HU,
              fluid_max_hu: Sequence[float] = DEFAULT_FLUID_MAX_HU,
              ) -> list[CrossPhaseRule]:
    """Every rule to score, strictest first so that ties go to the one adding the least: every
    part off first, then confirmation alone, then each carrying rule (largest lesions,
    strongest contrast and fewest brighter places first, then onto vessel-drawn regions from
    the brightest, the least vessel around them and the most one-sided, not beside a drawn
    lesion before beside one) with each confirmation
    rule, all of these with each washout rule (brightest, most washed out, largest first), and
    all of those with each filling-vein rule (the vein rule off first, then the brightest and
    darkest first), and all of those with each fluid rule (off first, then the lowest limit)."""
    def largest_first(values: Sequence[float]) -> list[float]:
        return sorted(set(map(float, values)), reverse=True)

    off = CrossPhaseRule()
    confirming = [(off.min_peak, off.max_distance_mm, off.min_volume_ml)] + [
        (p, d, v) for p in largest_first(min_peaks) for d in largest_first(max_distances_mm)[::-1]
        for v in largest_first(min_volumes_ml)]
    vessel_off = (0.0, off.carry_vessel_max_shell_fraction, off.carry_vessel_min_one_sidedness,
                  off.carry_vessel_beside_tumor)
    vessel_limits = [vessel_off] + [
        (h, s, o, b) for h in largest_first(carry_vessel_min_brighter_hu) if h > 0
        for s in largest_first(carry_vessel_max_shell_fractions)[::-1]
        for o in largest_first(carry_vessel_min_one_sidedness)
        for b in largest_first(carry_vessel_beside_tumor)[::-1]]
    carrying = [(off.carry_min_volume_ml, off.carry_min_contrast_hu, off.carry_max_brighter_hu, *vessel_off)] + [
        (v, c, b, *vessel) for v in largest_first(carry_min_volumes_ml) for c in largest_first(carry_min_contrasts_hu)
        for b in largest_first(carry_max_brighter_hu)[::-1] for vessel in vessel_limits]
    washouts = [(off.washout_min_brighter_hu, off.washout_min_darker_hu, off.washout_min_volume_ml)] + [
        (b, d, v) for b in largest_first(washout_min_brighter_hu) if b > 0 for d in largest_first(washout_min_darker_hu)
        for v in largest_first(washout_min_volumes_ml)]
    veins = [(off.vein_min_darker_hu, off.vein_min_brighter_hu)] + [
        (d, b) for b in largest_first(vein_min_brighter_hu) if b > 0 for d in largest_first(vein_min_darker_hu)]
    fluids = [off.fluid_max_hu, *sorted({float(h) for h in fluid_max_hu if h > 0})]
    return [CrossPhaseRule(*confirm, *carry, *washout, *vein, fluid) for fluid in fluids for vein in veins
            for washout in washouts for carry in carrying for confirm in confirming]


def decoded_scan(predictor: Any, case: Case, image: sitk.Image, cache: Path | None = None,
                 checkpoint_sha256: str = "") -> tuple[PhaseScan, bool]:
    """``case``'s scan decoded by ``predictor``, from ``cache`` when it holds it (and kept there
    when not), and whether it came from the cache."""
    phase = case.phase or "unknown"
    path = entry_path(cache, checkpoint_sha256, case.fingerprint()) if cache is not None else None
    kept = load_decoded(path) if path is not None else None
    if kept is not None and kept[0].shape == kept[1].shape == tuple(reversed(image.GetSize())):
        return PhaseScan(image, *kept, phase), True
    probabilities = predictor.predict_probabilities(image)
    scan = predictor.phase_scan(probabilities, image, predictor.labels_from(probabilities, image), phase)
    if path is not None:
        save_decoded(path, scan.labels, scan.tumor_probability, scan.tumor_threshold)
    return scan, False


def calibrate_cross_phase(
    checkpoint: str | Path, cohort: Sequence[str | Path], out: str | Path | None = None,
    min_peaks: Sequence[float] = DEFAULT_MIN_PEAKS,
    max_distances_mm: Sequence[float] = DEFAULT_MAX_DISTANCES_MM,
    min_volumes_ml: Sequence[float] = DEFAULT_MIN_VOLUMES_ML,
    carry_min_volumes_ml: Sequence[float] = DEFAULT_CARRY_MIN_VOLUMES_ML,
    carry_min_contrasts_hu: Sequence[float] = DEFAULT_CARRY_MIN_CONTRASTS_HU,
    carry_max_brighter_hu: Sequence[float] = DEFAULT_CARRY_MAX_BRIGHTER_HU,
    carry_vessel_min_brighter_hu: Sequence[float] = DEFAULT_CARRY_VESSEL_MIN_BRIGHTER_HU,
    washout_min_brighter_hu: Sequence[float] = DEFAULT_WASHOUT_MIN_BRIGHTER_HU,
    washout_min_darker_hu: Sequence[float] = DEFAULT_WASHOUT_MIN_DARKER_HU,
    washout_min_volumes_ml: Sequence[float] = DEFAULT_WASHOUT_MIN_VOLUMES_ML,
    carry_vessel_max_shell_fractions: Sequence[float] = DEFAULT_CARRY_VESSEL_MAX_SHELL_FRACTIONS,
    carry_vessel_min_one_sidedness: Sequence[float] = DEFAULT_CARRY_VESSEL_MIN_ONE_SIDEDNESS,
    carry_vessel_beside_tumor: Sequence[float] = DEFAULT_CARRY_VESSEL_BESIDE_TUMOR,
    vein_min_darker_hu: Sequence[float] = DEFAULT_VEIN_MIN_DARKER_HU,
    vein_min_brighter_hu: Sequence[float] = DEFAULT_VEIN_MIN_BRIGHTER_HU,
    fluid_max_hu: Sequence[float] = DEFAULT_FLUID_MAX_HU,
    device: str = "auto", on_case: Callable[[str], None] | None = None, version: str | None = None,
    max_false_per_scan: float | None = DEFAULT_MAX_FALSE_PER_SCAN, cache: str | Path | None = None,
) -> dict[str, Any]:
    """Score the rule off and at every grid point on the pooled ``cohort``; write the best into
    a copy of the checkpoint at ``out`` (``inference.cross_phase``). With a ``cache`` folder
    each scan is decoded once per checkpoint (:mod:`training.decoded_scan_cache`)."""
    from lvt_core.inference import Predictor
    from training.datasets import load_cases

    _check_candidates("minimum peak", min_peaks)
    _check_candidates("maximum distance (mm)", max_distances_mm, volumes=True)
    _check_candidates("minimum volume (ml)", min_volumes_ml, volumes=True)
    _check_candidates("carried lesion contrast (HU)", carry_min_contrasts_hu, volumes=True)
    _check_candidates("brightest carried lesion (HU above the liver)", carry_max_brighter_hu, volumes=True)
    _check_candidates("carried onto vessel: least brighter than the liver (HU)", carry_vessel_min_brighter_hu,
                      volumes=True)
    _check_candidates("carried onto vessel: most of the shell around it drawn as vessel",
                      carry_vessel_max_shell_fractions)
    if not carry_vessel_min_one_sidedness or not all(0.0 <= v < 1.0 for v in carry_vessel_min_one_sidedness):
        raise ValueError(f"carried onto vessel: least one-sidedness of the vessel around it candidates must be "
                         f"0 or more and below 1, got {list(carry_vessel_min_one_sidedness)}")
    if not carry_vessel_beside_tumor or not set(carry_vessel_beside_tumor) <= {0.0, 1.0}:
        raise ValueError(f"carried onto vessel beside a drawn lesion candidates must be 0 (no) or 1 (yes), "
                         f"got {list(carry_vessel_beside_tumor)}")
    _check_candidates("washout: least brighter than the liver in the arterial phase (HU)", washout_min_brighter_hu,
                      volumes=True)
    _check_candidates("washout: least darker than the liver in the later phase (HU)", washout_min_darker_hu,
                      volumes=True)
    _check_candidates("washout: smallest region (ml)", washout_min_volumes_ml, volumes=True)
    _check_candidates("filling vein: least darker than the liver in the arterial phase (HU)", vein_min_darker_hu,
                      volumes=True)
    _check_candidates("filling vein: least brighter than the liver in the later phase (HU)", vein_min_brighter_hu,
                      volumes=True)
    _check_candidates("fluid: densest median HU in every phase of the day", fluid_max_hu, volumes=True)
    if not carry_min_volumes_ml or not all(v > 0 for v in carry_min_volumes_ml):
        raise ValueError(f"smallest carried lesion (ml) candidates must be above 0 (the rule that carries "
                         f"nothing is always scored), got {list(carry_min_volumes_ml)}")
    from lvt_core.checkpoint import checkpoint_checksum

    predictor = Predictor(checkpoint, device=device)
    cache_folder = Path(cache) if cache is not None else None
    checkpoint_sha256 = checkpoint_checksum(checkpoint) if cache_folder is not None else ""
    grid = rule_grid(min_peaks, max_distances_mm, min_volumes_ml, carry_min_volumes_ml, carry_min_contrasts_hu,
                     carry_max_brighter_hu, carry_vessel_min_brighter_hu, washout_min_brighter_hu,
                     washout_min_darker_hu, washout_min_volumes_ml, carry_vessel_max_shell_fractions,
                     carry_vessel_min_one_sidedness, carry_vessel_beside_tumor, vein_min_darker_hu,
                     vein_min_brighter_hu, fluid_max_hu)
    tallies = {rule: _TumorTally() for rule in grid}
    folders = [Path(c) for c in cohort]
    cases = days_read = from_cache = 0
    # days are grouped within each cohort: two cohorts may reuse a patient and study index
    for day in (day for folder in folders for day in cases_by_day(load_cases("synthetic", folder))):
        scans, references = [], []
        for case in day:
            image, ref_image = case.load()
            scan, cached = decoded_scan(predictor, case, image, cache_folder, checkpoint_sha256)
            scans.append(scan)
            from_cache += cached
            references.append(_ReferenceLesions(sitk.GetArrayViewFromImage(ref_image), ref_image.GetSpacing()))
            if on_case:
                on_case(case.case_id)
        measured = measured_across_phases(scans) if len(scans) > 1 else [([], [], [], []) for _ in scans]
        for scan, (candidates, carried, veins, fluid), reference in zip(scans, measured, references, strict=True):
            tables: dict[tuple[int, ...], _CandidateTable] = {}  # many rules keep the same set
            for rule, tally in tallies.items():
                # the labels depend only on which additions the rule keeps: paint each set once
                key = tuple(id(change) for change in (*candidates, *carried, *veins, *fluid) if change.kept_by(rule))
                if key not in tables:
                    labels = apply_rule(scan, candidates, carried, rule, veins, fluid).labels
                    components = cc3d.connected_components(labels == TUMOR, connectivity=26)
                    tables[key] = _CandidateTable(components, reference.components, reference.count)
                table = tables[key]
                tally.add(table, np.ones(len(table.sizes), bool), reference)
        cases += len(day)
        days_read += 1
    if not cases:
        raise ValueError(f"{', '.join(map(str, folders))}: the validation cohort has no scans")

    scores, chosen = score_grid(tallies, GRID_FIELDS, max_false_per_scan)
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "cohort": ", ".join(map(str, folders)), "cases": cases,
        "days": days_read, "decoded_from_cache": from_cache, **{f"best_{name}": getattr(chosen, name) for name in GRID_FIELDS},
        "max_false_lesions_per_scan": max_false_per_scan, "candidates": scores,
    }
    if out is not None:
        result["out"] = write_stage_decisions(checkpoint, out, "cross_phase", chosen, version,
                                              "cross_phase_calibration",
                                              {"cohort": result["cohort"], "cases": cases, "candidates": scores})
    return result
