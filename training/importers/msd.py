"""Medical Segmentation Decathlon: ``Task03_Liver`` and ``Task08_HepaticVessel``.

Layout: ``imagesTr/``, ``labelsTr/`` and ``dataset.json`` whose ``labels`` name the values
(Task03: 1 liver, 2 cancer; Task08: 1 vessel, 2 tumour). Values map to LVT by those names,
and the source annotates exactly the classes named there.
"""

from __future__ import annotations

import json
from pathlib import Path

from lvt_core.labels import CLASS_NAMES, LIVER, TUMOR, VESSEL
from training.datasets import Case, DatasetError, Source, register_source
from training.importers._util import stem, volumes

_NAME_TO_VALUE = {
    "liver": LIVER,
    "vessel": VESSEL,
    "vessels": VESSEL,
    "hepatic vessel": VESSEL,
    "cancer": TUMOR,
    "tumour": TUMOR,
    "tumor": TUMOR,
    "liver tumor": TUMOR,
    "liver tumour": TUMOR,
}


def import_msd(path: Path, source: str = "msd") -> list[Case]:
    """Cases of one MSD task folder, labels mapped by the names in ``dataset.json``."""
    meta_path = path / "dataset.json"
    if not meta_path.is_file():
        raise DatasetError(f"{path}: no dataset.json (expected an MSD task folder)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{meta_path}: not valid JSON ({exc})") from None
    mapping: dict[int, int] = {}
    for value, name in (meta.get("labels") or {}).items():
        lvt = _NAME_TO_VALUE.get(str(name).strip().lower())
        if lvt is not None:
            mapping[int(value)] = lvt
    if not mapping:
        raise DatasetError(f"{meta_path}: no liver, vessel or tumor label among {meta.get('labels')}")
    annotated = tuple(CLASS_NAMES[v] for v in sorted(set(mapping.values())))
    pairs = _pairs_from_json(path, meta) or _pairs_from_folders(path)
    return [
        Case(stem(image), source, annotated, image, labels, mapping) for image, labels in pairs
    ]


def _pairs_from_json(path: Path, meta: dict) -> list[tuple[Path, Path]]:
    pairs = []
    for entry in meta.get("training") or []:
        image, labels = path / entry["image"], path / entry["label"]
        if not image.is_file():  # nnU-Net style channel files: liver_0_0000.nii.gz
            alt = image.with_name(stem(image) + "_0000.nii.gz")
            image = alt if alt.is_file() else image
        if image.is_file() and labels.is_file():
            pairs.append((image, labels))
    return pairs


def _pairs_from_folders(path: Path) -> list[tuple[Path, Path]]:
    labels = {stem(p): p for p in volumes(path / "labelsTr")}
    pairs = []
    for image in volumes(path / "imagesTr"):
        key = stem(image).removesuffix("_0000")
        if key in labels:
            pairs.append((image, labels[key]))
    return pairs


def import_msd_liver(path: Path) -> list[Case]:
    """MSD Task03_Liver (the LiTS training set): liver and tumor."""
    return import_msd(path, "msd_liver")


def import_msd_hepaticvessel(path: Path) -> list[Case]:
    """MSD Task08_HepaticVessel: vessels and tumors, no liver."""
    return import_msd(path, "msd_hepaticvessel")


register_source(
    Source(
        "msd_liver",
        ("liver", "tumor"),
        import_msd_liver,
        "MSD Task03_Liver (LiTS images): liver + tumor",
        "Task03_Liver/{imagesTr,labelsTr,dataset.json}",
    )
)
register_source(
    Source(
        "msd_hepaticvessel",
        ("vessel", "tumor"),
        import_msd_hepaticvessel,
        "MSD Task08_HepaticVessel: vessel + tumor",
        "Task08_HepaticVessel/{imagesTr,labelsTr,dataset.json}",
    )
)
