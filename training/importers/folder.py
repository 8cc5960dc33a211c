"""A user's own data: a folder of images and labels plus a mapping YAML.

Example ``mapping.yaml`` (paths relative to the YAML file)::

    name: my_hospital        # optional, shown in logs
    images: imagesTr         # folder of CT volumes (or DICOM series folders)
    labels: labelsTr         # folder of label volumes with the same names
    mapping: {1: liver, 2: tumor, 5: vessel, 9: background}   # label value → LVT class
    annotated: [liver, tumor, vessel]          # optional (a list, or one name); default: the mapped classes

Images match labels by name, ignoring an nnU-Net channel suffix ``_0000``; an image without
its label file is refused by name. A label value the mapping does not list is refused when
the case loads: map it to ``background`` to make it background on purpose.
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
    values = _mapping_values(spec["mapping"], yaml_path)
    mapped = tuple(c for c in CHANNELS if CLASS_VALUES[c] in values.values())
    annotated = _annotated(spec.get("annotated"), yaml_path) or mapped
    for key in ("images", "labels"):
        if not (root / str(spec[key])).is_dir():
            raise DatasetError(f"{yaml_path}: {key} folder {root / str(spec[key])} does not exist")
    name = str(spec.get("name") or yaml_path.stem)
    image_dir, label_dir = root / spec["images"], root / spec["labels"]
    labels = {stem(p): p for p in volumes(label_dir)}
    images = volumes(image_dir) + sorted(p for p in image_dir.iterdir() if p.is_dir()) \
        if image_dir.is_dir() else []
    cases, unlabelled = [], []
    for image in images:
        key = stem(image).removesuffix("_0000")
        if key in labels:
            cases.append(Case(f"{name}_{key}", "folder", annotated, image, labels[key], values,
                              known_values=frozenset(values) | {0}))
        else:
            unlabelled.append(image.name)
    if unlabelled:  # a misnamed label file dropped the case without a word
        raise DatasetError(f"{label_dir}: no label file named like image(s) {unlabelled[:5]}"
                           + (" …" if len(unlabelled) > 5 else "")
                           + f" (labels found: {sorted(labels)[:5]}); labels carry the image's name "
                           "without the _0000 suffix")
    return cases


def _mapping_values(mapping: dict, yaml_path: Path) -> dict[int, int]:
    """Source value → LVT value; ``background`` maps a value to 0 on purpose (any value not
    listed is refused at load time, so a forgotten vessel value cannot become background)."""
    values: dict[int, int] = {}
    for raw, name in mapping.items():
        if str(name) == "background":
            value = 0
        elif str(name) in CLASS_VALUES:
            value = CLASS_VALUES[str(name)]
        else:
            raise DatasetError(f"{yaml_path}: mapping {raw}: {name!r} is not one of "
                               f"{[*list(CHANNELS), 'background']}")
        try:
            values[int(raw)] = value
        except (TypeError, ValueError):
            raise DatasetError(f"{yaml_path}: mapping {raw}: {name}: the key must be a label value "
                               "(a whole number), e.g. {1: liver, 2: tumor}") from None
    return values


def _annotated(raw: object, yaml_path: Path) -> tuple[str, ...]:
    """The ``annotated`` classes: a list, or one name (``annotated: liver``) as a one-item list."""
    if raw is None:
        return ()
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list):
        raise DatasetError(f"{yaml_path}: annotated must be a list of classes, e.g. [liver, tumor]")
    bad = [a for a in names if a not in CHANNELS]
    if bad:
        raise DatasetError(f"{yaml_path}: annotated {bad} not among {list(CHANNELS)}")
    return tuple(str(a) for a in names)


register_source(
    Source(
        "folder",
        ("liver", "vessel", "tumor"),
        import_folder,
        "your own images + labels described by a mapping YAML (annotated classes per YAML)",
        "mapping.yaml + images/ + labels/",
    )
)
