"""Calibrate the tumor channel's decision threshold of a checkpoint on a validation cohort.

An undertrained sigmoid head is often under-confident on a rare class: its tumor
probabilities inside true lesions stay below 0.5. Choosing the threshold on phantoms that
neither training nor the held-out test uses keeps the test honest. The chosen value goes into
``meta["inference"]["thresholds"]``, which :class:`lvt_core.inference.Predictor` applies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.evaluate_model import evaluate_checkpoint

DEFAULT_CANDIDATES = (0.5, 0.4, 0.3, 0.2)


def tumor_score(summary: dict[str, Any]) -> float:
    """What the calibration maximises: mean of tumor DSC and sensitivity for lesions ≥ 10 mm."""
    sensitivity = summary["lesion_sensitivity_10mm"]
    return (summary["tumor_dsc"] + (sensitivity if sensitivity is not None else summary["tumor_dsc"])) / 2


def calibrate_tumor_threshold(
    checkpoint: str | Path, cohort: str | Path, out: str | Path | None = None,
    candidates: Sequence[float] = DEFAULT_CANDIDATES, device: str = "auto",
    on_candidate: Callable[[float, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Score every candidate on ``cohort``; write the best into a copy of the checkpoint at ``out``."""
    from lvt_core.checkpoint import load_checkpoint, save_checkpoint

    if not candidates or any(not 0.0 < c < 1.0 for c in candidates):
        raise ValueError(f"threshold candidates must lie strictly between 0 and 1, got {list(candidates)}")
    scores = []
    for value in candidates:
        summary = evaluate_checkpoint(checkpoint, cohort, device=device, thresholds={"tumor": value})
        scores.append({"tumor_threshold": value, "score": round(tumor_score(summary), 4),
                       **{k: summary[k] for k in ("liver_dsc", "vessel_dsc", "tumor_dsc",
                                                  "lesion_sensitivity", "lesion_sensitivity_10mm")}})
        if on_candidate:
            on_candidate(value, summary)
    best = max(scores, key=lambda row: row["score"])
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "cohort": str(cohort),
                              "best_tumor_threshold": best["tumor_threshold"], "candidates": scores}
    if out is not None:
        state, meta = load_checkpoint(checkpoint)
        inference = dict(meta.get("inference", {}))
        inference["thresholds"] = {**dict(inference.get("thresholds", {})), "tumor": best["tumor_threshold"]}
        meta = {**meta, "inference": inference,
                "calibration": {"cohort": str(cohort), "candidates": scores}}
        result["out"] = str(save_checkpoint(out, state, meta, fp16=_stored_half(checkpoint)))
    return result


def _stored_half(checkpoint: str | Path) -> bool:
    """Whether the file holds fp16 weights, so that the copy keeps the same precision."""
    import torch

    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return any(t.dtype == torch.float16 for t in raw["state_dict"].values())
