"""The RECIST table of the follow-up page and report: each response with what it was read from.

A category alone cannot be checked. The table gives, per reader (the model, the radiologist),
the baseline and every follow-up: the targets and their diameters, their sum, the change from
the baseline and from the nadir it was compared with, and whether a new lesion appeared.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from app.services.analytics import TRACK_LABEL
from lvt_core.response import NEW_AWAITING, describe_new_lesions

COLUMNS = ["day", "read by", "targets (mm)", "sum (mm)", "vs baseline", "vs nadir", "new lesion", "response"]
READERS = ("model", "radiologist")  # the model's row first on a day both read

NOT_RECORDED = "not recorded (stored by an older LVT)"
REFRESH_HINT = ("Some responses were stored by an older LVT, which did not record their targets or "
                "nadir; an admin's `lvt batch --all --refresh` recomputes them.")


def change(value: float, reference: float | None) -> str:
    """A signed percentage change, as a reader writes it ("−31 %"); "—" without a reference,
    "from 0" for a target back after a complete response."""
    if reference is None or pd.isna(reference):
        return "—"
    if reference <= 0:
        return "from 0" if value > 0 else "—"
    pct = (value - reference) / reference * 100.0
    return f"{pct:+.0f} %".replace("-", "−")


def model_target_tracks(responses: pd.DataFrame) -> set[int]:
    """The tracks the model's latest response measured as its RECIST targets."""
    own = responses[responses["source"] == "model"]
    targets = own["targets"].iloc[-1] if not own.empty else None
    prefix = TRACK_LABEL.format("")
    return {int(t["target"].removeprefix(prefix)) for t in targets or []
            if t["target"].removeprefix(prefix).isdigit()}


def _targets_text(targets: list[dict[str, Any]], key: str) -> str:
    if not targets:
        return "none ≥ 10 mm at baseline"
    return " · ".join(
        f"{t['target']}: {t[key]:.1f}" if t[key] is not None else f"{t['target']}: not drawn (missed)"
        for t in targets
    )


def _new_text(entries: list[dict[str, str]] | None, flag: bool | None) -> str:
    """Which lesions were new and whether they count; a yes/no where only the flag was stored."""
    if entries is not None:
        return describe_new_lesions(entries)
    return {True: "yes", False: "no"}.get(flag, "—") if flag is not None and not pd.isna(flag) else "—"


def _day(value: object) -> str:
    return value.isoformat() if isinstance(value, dt.date) else "undated"


def response_table(responses: pd.DataFrame) -> pd.DataFrame:
    """One row per reader and day, baseline first (from ``queries.followup``'s responses)."""
    rows: list[dict[str, object]] = []
    for reader in READERS:
        own = responses[responses["source"] == reader]
        if own.empty:
            continue
        first_targets = own["targets"].iloc[0]
        baseline_sum: float | None = None
        if first_targets is not None:  # every follow-up carries the targets' baseline diameters
            baseline_sum = float(sum(t["baseline_mm"] for t in first_targets))
            rows.append({"day": _day(own["baseline_date"].iloc[0]), "read by": reader,
                         "targets (mm)": _targets_text(first_targets, "baseline_mm"),
                         "sum (mm)": round(baseline_sum, 1), "vs baseline": "", "vs nadir": "",
                         "new lesion": "", "response": "baseline"})
        for r in own.itertuples():
            rows.append({
                "day": _day(r.study_date), "read by": reader,
                "targets (mm)": _targets_text(r.targets, "mm") if r.targets is not None else NOT_RECORDED,
                "sum (mm)": round(float(r.sum_mm), 1),
                "vs baseline": change(float(r.sum_mm), baseline_sum),
                "vs nadir": change(float(r.sum_mm), r.nadir_mm),
                "new lesion": _new_text(r.new_lesions, r.new_lesion),
                "response": r.category,
            })
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = table["read by"].map(READERS.index)
    return table.assign(_order=order).sort_values(["day", "_order"], kind="stable").drop(columns="_order")


def any_unrecorded(responses: pd.DataFrame) -> bool:
    """Whether some response predates the stored targets (so the page says how to refresh)."""
    return bool(responses["targets"].isna().any()) if not responses.empty else False


def awaiting_confirmation(responses: pd.DataFrame) -> list[str]:
    """The new lesions of ``responses`` that a later study has yet to confirm (labels)."""
    return [entry["lesion"] for entries in responses.get("new_lesions", pd.Series(dtype=object))
            if isinstance(entries, list) for entry in entries if entry["status"] == NEW_AWAITING]
