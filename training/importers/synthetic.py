"""The synthetic phantom cohort of :mod:`lvt_core.phantom`: ``manifest.csv`` with image and
label paths relative to the cohort folder; every class is annotated."""

from __future__ import annotations

import csv
from pathlib import Path

from training.datasets import Case, DatasetError, Source, register_source

IDENTITY = {1: 1, 2: 2, 3: 3}


def import_synthetic(path: Path) -> list[Case]:
    """One case per manifest row (a patient, timepoint and phase)."""
    manifest = path / "manifest.csv" if path.is_dir() else path
    root = manifest.parent
    if not manifest.is_file():
        raise DatasetError(f"{path}: no manifest.csv (expected a phantom cohort folder)")
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    cases = []
    for line, row in enumerate(rows, start=2):
        if not row.get("image") or not row.get("labels"):
            raise DatasetError(f"{manifest}:{line}: row lacks the image or labels column")
        case_id = "_".join(
            str(row.get(key, "")) for key in ("patient_id", "study_index", "phase") if row.get(key)
        ) or f"row{line}"
        study = f"{row['patient_id']}_{row['study_index']}" if row.get("patient_id") and row.get("study_index") else ""
        cases.append(
            Case(case_id, "synthetic", ("liver", "vessel", "tumor"), root / row["image"],
                 root / row["labels"], IDENTITY, group=str(row.get("patient_id") or case_id),
                 study=study,
                 phase=str(row.get("phase") or ""))
        )
    return cases


register_source(
    Source(
        "synthetic",
        ("liver", "vessel", "tumor"),
        import_synthetic,
        "LVT phantom cohort (lvt phantom): liver, vessel, tumor",
        "manifest.csv + image/label files",
    )
)
