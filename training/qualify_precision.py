"""Qualify a checkpoint for bfloat16 inference on CPU.

bfloat16 runs the network 2-3x faster on CPUs with AMX or AVX-512 BF16, but a model's
decisions (thresholds, smallest tumor, faint-lesion and cross-phase rules) were calibrated in
one arithmetic, and near a threshold the other can flip a voxel or a whole small lesion. So
``auto`` inference uses bfloat16 only for a checkpoint that carries
``inference.cpu_precision: bf16``, which this module writes after scoring the model in both
precisions on validation phantoms and finding the figures the model card reports unchanged
within stated tolerances. A model that does not pass gets no copy and keeps running in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DSC_KEYS = ("liver_dsc", "vessel_dsc", "tumor_dsc")


@dataclass(frozen=True)
class Tolerances:
    """How far bfloat16 may stray from float32 on the validation scans and still be adopted.

    Large lesions found may not fall (sensitivity is the target the model misses), and false
    lesions may rise by at most ``false_lesions_per_scan`` (0.1: one more in ten scans).
    """

    dsc: float = 0.005
    false_lesions_per_scan: float = 0.1


def precision_differences(fp32: dict[str, Any], bf16: dict[str, Any], tolerances: Tolerances) -> list[str]:
    """What bfloat16 changes beyond ``tolerances``, as sentences (empty: it qualifies).

    ``fp32`` and ``bf16`` are :func:`training.evaluate_model.evaluate_checkpoint` summaries of
    one cohort.
    """
    problems = []
    for key in DSC_KEYS:
        change = bf16[key] - fp32[key]
        if abs(change) > tolerances.dsc:
            problems.append(f"{key} {fp32[key]:.4f} in float32, {bf16[key]:.4f} in bfloat16 "
                            f"(change {change:+.4f}, tolerance ±{tolerances.dsc:g})")
    if bf16["lesions_10mm_found"] < fp32["lesions_10mm_found"]:
        problems.append(f"{fp32['lesions_10mm_found']} of {fp32['lesions_10mm']} lesions ≥ 10 mm found in "
                        f"float32, {bf16['lesions_10mm_found']} in bfloat16")
    extra = bf16["false_lesions_per_scan"] - fp32["false_lesions_per_scan"]
    if extra > tolerances.false_lesions_per_scan:
        problems.append(f"false lesions per scan {fp32['false_lesions_per_scan']:.2f} in float32, "
                        f"{bf16['false_lesions_per_scan']:.2f} in bfloat16 "
                        f"(tolerance +{tolerances.false_lesions_per_scan:g})")
    return problems


def qualify_bf16(
    checkpoint: str | Path, cohorts: Sequence[str | Path], out: str | Path | None,
    version: str | None = None, tolerances: Tolerances = Tolerances(),
    on_case: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score ``checkpoint`` in float32 and bfloat16 on each validation cohort (CPU); when every
    cohort's figures agree within ``tolerances``, write a copy at ``out`` that ``auto`` runs in
    bfloat16 on CPUs with native support. Returns both precisions' figures per cohort,
    ``differences`` and ``qualified``; ``out`` is written only when qualified.

    Raises ValueError when this CPU has no native bfloat16 (nothing can be measured).
    """
    from training.calibrate import write_stage_decisions
    from training.evaluate_model import evaluate_checkpoint

    if not cohorts:
        raise ValueError("name at least one validation cohort (--cohort)")
    per_cohort, differences = [], []
    for cohort in cohorts:
        scores = {precision: evaluate_checkpoint(checkpoint, cohort, device="cpu", on_case=on_case,
                                                 precision=precision)
                  for precision in ("fp32", "bf16")}
        problems = precision_differences(scores["fp32"], scores["bf16"], tolerances)
        differences.extend(f"{cohort}: {problem}" for problem in problems)
        per_cohort.append({"cohort": str(cohort), "cases": scores["fp32"]["cases"],
                           **{precision: {key: summary[key] for key in (*DSC_KEYS, "lesions_10mm",
                                                                         "lesions_10mm_found",
                                                                         "false_lesions_per_scan")}
                              for precision, summary in scores.items()}})
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "cohorts": per_cohort,
                              "tolerances": asdict(tolerances), "differences": differences,
                              "qualified": not differences, "out": None}
    if not differences and out is not None:
        result["out"] = write_stage_decisions(checkpoint, out, "cpu_precision", "bf16", version,
                                              "bf16_qualification",
                                              {"cohorts": per_cohort, "tolerances": asdict(tolerances)})
    return result
