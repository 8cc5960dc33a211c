"""A user's own data: a folder of images and labels plus a mapping YAML.

Example ``mapping.yaml`` (paths relative to the YAML file)::

    name: my_hospital        # optional, shown in logs
    images: imagesTr         # folder of CT volumes (or DICOM series folders)
    labels: labelsTr         # folder of label volumes with the same names
    mapping: {1: liver, 2: tumor, 5: vessel}   # label value → LVT class
    annotated: [liver, tumor, vessel]          # optional; default: the mapped classes

Images match labels by name, ignoring an nnU-Net channel suffix ``_0000``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lvt_core.labels import CHANNELS, CLASS_VALUES
from training.datasets import Case, DatasetError, Source, register_source
from training.importers._util import stem, volumes

KEYS = ("name", "images", "labels", "mapping", "annotated")


def import_folder(path: Path, mapping: str | Path | None = None) -> list[Case]:
    """Cases described by a mapping YAML (``path`` is the YAML or a folder holding one)."""
    yaml_path = Path(mapping) if mapping else path
    if yaml_path.is_dir():
        candidates = sorted(yaml_path.glob("*.y*ml"))
        if not candidates:
            raise DatasetError(f"{yaml_path}: no mapping YAML found (see training.importers.folder)")
        yaml_path = candidates[0]
    try:
        spec = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DatasetError(f"{yaml_path}: not valid YAML ({exc})") from None
    root = yaml_path.parent
    if not isinstance(spec, dict):
        raise DatasetError(f"{yaml_path}: expected a mapping of keys ({', '.join(KEYS)})")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:  # a typo (``anotated``) fell back to a default without a word
        raise DatasetError(f"{yaml_path}: unknown key(s) {unknown}; known: {list(KEYS)}")
    for key in ("images", "labels", "mapping"):
        if key not in spec:
            raise DatasetError(f"{yaml_path}: missing key {key!r}")
    if not isinstance(spec["mapping"], dict):
        raise DatasetError(f"{yaml_path}: mapping must map label values to classes, e.g. {{1: liver, 2: tumor}}")
    values: dict[int, int] = {}
    for raw, name in dict(spec["mapping"]).items():
        if str(name) not in CLASS_VALUES:
            raise DatasetError(f"{yaml_path}: mapping {raw}: {name!r} is not one of {list(CHANNELS)}")
        values[int(raw)] = CLASS_VALUES[str(name)]
    mapped = tuple(c for c in CHANNELS if CLASS_VALUES[c] in values.values())
    annotated = tuple(spec.get("annotated") or mapped)
    bad = [a for a in annotated if a not in CHANNELS]
    if bad:
        raise DatasetError(f"{yaml_path}: annotated {bad} not among {list(CHANNELS)}")
    for key in ("images", "labels"):
        if not (root / str(spec[key])).is_dir():
            raise DatasetError(f"{yaml_path}: {key} folder {root / str(spec[key])} does not exist")
    name = str(spec.get("name") or yaml_path.stem)
    image_dir, label_dir = root / spec["images"], root / spec["labels"]
    labels = {stem(p): p for p in volumes(label_dir)}
    images = volumes(image_dir) + sorted(p for p in image_dir.iterdir() if p.is_dir()) \
        if image_dir.is_dir() else []
    cases = []
    for image in images:
        key = stem(image).removesuffix("_0000")
        if key in labels:
            cases.append(Case(f"{name}_{key}", "folder", annotated, image, labels[key], values))
    return cases


register_source(
    Source(
        "folder",
        ("liver", "vessel", "tumor"),
        import_folder,
        "your own images + labels described by a mapping YAML (annotated classes per YAML)",
        "mapping.yaml + images/ + labels/",
    )
)
