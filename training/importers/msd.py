"""Medical Segmentation Decathlon: ``Task03_Liver`` and ``Task08_HepaticVessel``.

Layout: ``imagesTr/``, ``labelsTr/`` and ``dataset.json`` whose ``labels`` name the values
(Task03: 1 liver, 2 cancer; Task08: 1 vessel, 2 tumour). Values map to LVT by those names,
and the source annotates exactly the classes named there. nnU-Net v2's name → value
``labels`` are read too, region-based ones included (``"liver": [1, 2, 3], "vessel": [2]``, as
``lvt export nnunet`` writes them): a value takes the class of the last region holding it, in
the order nnU-Net paints the regions back into one label map (``labels``' order).
"""

from __future__ import annotations

import json
from pathlib import Path

from lvt_core.labels import CLASS_NAMES, LIVER, TUMOR, VESSEL
from training.datasets import Case, DatasetError, Source, register_source
from training.importers._util import case_number, stem, volumes

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


def import_msd(path: Path, source: str = "msd", group_prefix: str = "") -> list[Case]:
    """Cases of one MSD task folder, labels mapped by the names in ``dataset.json``.

    ``group_prefix`` names the image's case number as another source names the same image
    (Task03 holds the LiTS volumes, Task08 the HV Liver images), so cross-validation keeps
    both copies of one image on one side of a split.
    """
    meta_path = path / "dataset.json"
    if not meta_path.is_file():
        raise DatasetError(f"{path}: no dataset.json (expected an MSD task folder)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{meta_path}: not valid JSON ({exc})") from None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, dict):
        raise DatasetError(f"{meta_path}: \"labels\" must map label values to names, got {labels!r}")
    if labels and all(not str(k).strip().isdigit() for k in labels):  # nnU-Net v2: name → value
        labels = _v2_value_names(labels, meta, meta_path)
    mapping: dict[int, int] = {}
    for value, name in labels.items():
        lvt = _NAME_TO_VALUE.get(str(name).strip().lower())
        if lvt is not None and str(value).strip().isdigit():
            mapping[int(value)] = lvt
    if not mapping:
        raise DatasetError(f"{meta_path}: no liver, vessel or tumor label among {labels} "
                           f"(names understood: {', '.join(sorted(_NAME_TO_VALUE))})")
    annotated = tuple(CLASS_NAMES[v] for v in sorted(set(mapping.values())))
    known = frozenset({0} | {int(v) for v in labels if str(v).strip().isdigit()})
    pairs = _pairs_from_json(path, meta, meta_path) or _pairs_from_folders(path)
    return [
        Case(stem(image), source, annotated, image, labels_file, mapping,
             group=_group(image, group_prefix), known_values=known)
        for image, labels_file in pairs
    ]


def _v2_value_names(labels: dict, meta: dict, meta_path: Path) -> dict[int, str]:
    """Value → name of nnU-Net v2 ``labels``; a region (a list of values) holds several, and
    each value is named by the last region holding it: nnU-Net paints the regions in
    ``labels``' order, each with its ``regions_class_order`` value, so the last one wins."""
    if not any(isinstance(v, list) for v in labels.values()):
        return {value: name for name, value in labels.items()}
    order = meta.get("regions_class_order")
    regions = [(name, value) for name, value in labels.items()
               if not (isinstance(value, int) and value == 0)]  # background is no region
    if not (isinstance(order, list) and len(order) == len(regions)):
        raise DatasetError(f"{meta_path}: region-based \"labels\" (lists of values) need a "
                           f"\"regions_class_order\" with one entry per region ({len(regions)}), "
                           f"got {order!r}")
    named: dict[int, str] = {}
    for name, values in regions:
        members = values if isinstance(values, list) else [values]
        if not all(isinstance(v, int) for v in members):
            raise DatasetError(f"{meta_path}: region {name!r} must list label values, got {values!r}")
        for value in members:
            named[value] = name
    return named


def _group(image: Path, prefix: str) -> str:
    number = case_number(stem(image).removesuffix("_0000"))
    return f"{prefix}{number:03d}" if prefix and number is not None else ""


def _pairs_from_json(path: Path, meta: dict, meta_path: Path) -> list[tuple[Path, Path]]:
    entries = meta.get("training") or []
    if not isinstance(entries, list):
        raise DatasetError(f"{meta_path}: \"training\" must be a list of {{image, label}} entries")
    pairs, missing = [], []
    for number, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("image"), str)
                and isinstance(entry.get("label"), str)):
            raise DatasetError(f"{meta_path}: training entry {number} must hold \"image\" and \"label\" "
                               f"paths, got {entry!r}")
        image, labels = path / entry["image"], path / entry["label"]
        if not image.is_file():  # nnU-Net style channel files: liver_0_0000.nii.gz
            alt = image.with_name(stem(image) + "_0000.nii.gz")
            image = alt if alt.is_file() else image
        if image.is_file() and labels.is_file():
            pairs.append((image, labels))
        else:
            missing.append(str(image if not image.is_file() else labels))
    if missing:
        raise DatasetError(f"{meta_path}: {len(missing)} file(s) it lists are missing: "
                           + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
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
    return import_msd(path, "msd_liver", group_prefix="lits_")


def import_msd_hepaticvessel(path: Path) -> list[Case]:
    """MSD Task08_HepaticVessel: vessels and tumors, no liver."""
    return import_msd(path, "msd_hepaticvessel", group_prefix="hepaticvessel_")


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
