"""Export a cohort in nnU-Net v2's raw dataset format with region-based labels.

Writes ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz`` (exclusive 0..3) and
``dataset.json`` whose ``labels`` are the nested regions liver ⊇ vessel, tumor — the same
hierarchy as LVT's multi-hot targets — with ``regions_class_order`` so nnU-Net decodes back
to the exclusive map. nnU-Net has no partial-label loss: classes a source does not annotate
are background there, so the export records each case's annotated classes and warns.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from lvt_core.atomic_files import check_only_files_of_this_export, check_output_folder
from lvt_core.imageio import write_image
from lvt_core.labels import CHANNELS
from training.datasets import Case, load_cases

log = logging.getLogger(__name__)

REGION_LABELS: dict[str, Any] = {"background": 0, "liver": [1, 2, 3], "vessel": [2], "tumor": [3]}


def dataset_json(n_cases: int, partial: dict[str, list[str]], name: str) -> dict[str, Any]:
    """The nnU-Net v2 ``dataset.json`` for region-based liver/vessel/tumor training."""
    doc: dict[str, Any] = {
        "name": name,
        "channel_names": {"0": "CT"},
        "labels": REGION_LABELS,
        "regions_class_order": [1, 2, 3],
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "description": "Exported by LVT (lvt export nnunet); label map 1 liver, 2 vessel, 3 tumor.",
    }
    if partial:
        doc["lvt_partially_annotated"] = partial
    return doc


DATASET_FOLDER = re.compile(r"Dataset(\d{3})_(.+)")


def check_dataset_folder(out: Path) -> None:
    """Refuse a folder name nnU-Net v2 would not find its dataset by: ``DatasetNNN_Name`` with a
    three-digit id, and no other ``DatasetNNN_*`` beside it (nnU-Net stops at an id it finds twice)."""
    match = DATASET_FOLDER.fullmatch(out.name)
    if not match:
        raise ValueError(f"{out}: nnU-Net v2 needs the dataset folder named DatasetNNN_Name with a "
                         f"three-digit id (e.g. Dataset501_LVT), not {out.name!r}")
    prefix = f"Dataset{match.group(1)}_"
    taken = sorted(p.name for p in out.parent.iterdir() if p.is_dir() and p.name.startswith(prefix)
                   and p.name != out.name) if out.parent.is_dir() else []
    if taken:
        raise ValueError(f"{out}: {out.parent} already holds {taken[0]} with dataset id "
                         f"{match.group(1)}; nnU-Net finds a dataset by its id, so choose another")


def safe_case_id(case_id: str) -> str:
    """nnU-Net case identifiers: letters, digits, ``-`` and ``_`` only."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in case_id)


def export_cases(
    cases: Sequence[Case], out: str | Path, name: str = "LVT",
    on_case: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write ``cases`` into ``out`` (the ``DatasetXXX_Name`` folder); returns a summary."""
    out = Path(out)
    check_output_folder(out)
    check_dataset_folder(out)
    check_only_files_of_this_export(out, {"dataset.json", "imagesTr", "labelsTr"})  # nnU-Net reads the folder whole
    ids = [safe_case_id(case.case_id) for case in cases]
    expected = {f"imagesTr/{i}_0000.nii.gz" for i in ids} | {f"labelsTr/{i}.nii.gz" for i in ids}
    stale = sorted(str(p.relative_to(out)) for sub in ("imagesTr", "labelsTr") if (out / sub).is_dir()
                   for p in (out / sub).iterdir() if str(p.relative_to(out)) not in expected)
    if stale:  # nnU-Net trains on every file there, whatever dataset.json counts
        raise ValueError(f"{out}: holds {len(stale)} case file(s) this export would not write "
                         f"({', '.join(stale[:3])}{' …' if len(stale) > 3 else ''}); export into an "
                         "empty folder or remove them")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:  # every case is written beside ``out`` first: a refused case leaves ``out`` as it was
        partial = _write_cases(cases, ids, staging, on_case)
        for sub in ("imagesTr", "labelsTr"):
            (out / sub).mkdir(parents=True, exist_ok=True)
            for path in (staging / sub).iterdir():
                os.replace(path, out / sub / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seen = set(ids)
    if partial:
        log.warning("%d case(s) are partially annotated; nnU-Net will treat their missing "
                    "classes as background", len(partial))
    (out / "dataset.json").write_text(json.dumps(dataset_json(len(seen), partial, name), indent=2))
    return {"out": str(out), "cases": len(seen), "partially_annotated": len(partial),
            "dataset_json": str(out / "dataset.json")}


def _write_cases(
    cases: Sequence[Case], ids: Sequence[str], out: Path, on_case: Callable[[str], None] | None
) -> dict[str, list[str]]:
    """Write each case's image and labels under ``out``; returns the partially annotated ones."""
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir(parents=True)
    partial: dict[str, list[str]] = {}
    seen: set[str] = set()
    for case, case_id in zip(cases, ids, strict=True):
        if case_id in seen:
            raise ValueError(f"duplicate case id {case_id!r} (from {case.image})")
        seen.add(case_id)
        image, labels = case.load()
        write_image(sitk.Cast(image, sitk.sitkInt16), out / "imagesTr" / f"{case_id}_0000.nii.gz")
        write_image(sitk.Cast(labels, sitk.sitkUInt8), out / "labelsTr" / f"{case_id}.nii.gz")
        if set(case.annotated) != set(CHANNELS):
            partial[case_id] = list(case.annotated)
        if on_case:
            on_case(case_id)
    return partial


def export_nnunet(
    source_path: str | Path, out: str | Path, source: str | None = None, name: str | None = None,
    on_case: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Export a phantom cohort folder (``manifest.csv``) or a registered ``source`` folder."""
    source_path = Path(source_path)
    source = source or "synthetic"
    cases = load_cases(source, source_path)
    return export_cases(cases, out, name or Path(out).name, on_case)
