"""HV Liver: liver masks drawn for the MSD HepaticVessel images, matched by case number.

Layout: a folder of liver label files (any name carrying the case number, such as
``hepaticvessel_001.nii.gz``) plus the ``Task08_HepaticVessel`` folder holding the images
(option ``images``; by default a ``Task08_HepaticVessel`` folder beside or inside ``path``).
Any non-zero value is liver: the whole organ, without vessel or tumor cutouts. A mask
without its Task08 image is left out with a warning naming it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lvt_core.labels import LIVER
from training.datasets import Case, DatasetError, Source, register_source
from training.importers._util import case_number, stem, volumes

log = logging.getLogger(__name__)


def import_hv_liver(path: Path, images: str | Path | None = None) -> list[Case]:
    """Liver-only cases pairing each HV Liver mask with its HepaticVessel image."""
    image_root = Path(images) if images else _find_task08(path)
    image_dir = image_root / "imagesTr" if (image_root / "imagesTr").is_dir() else image_root
    by_number = {case_number(stem(p).removesuffix("_0000")): p for p in volumes(image_dir)}
    label_dir = path / "labelsTr" if (path / "labelsTr").is_dir() else path
    cases, unmatched = [], []
    for label in volumes(label_dir):
        number = case_number(stem(label))
        image = by_number.get(number) if number is not None else None
        if image is None or image.resolve() == label.resolve():
            unmatched.append(label.name)
        else:
            cases.append(
                Case(f"hvliver_{stem(label)}", "hv_liver", ("liver",), image, label,
                     {v: LIVER for v in range(1, 256)},
                     group=f"hepaticvessel_{case_number(stem(label)):03d}")  # as MSD Task08 names it
            )
    if unmatched:  # an incomplete Task08 copy or a renamed mask lost cases without a word
        log.warning("HV Liver: %d mask(s) in %s have no Task08 image in %s and are left out: %s%s",
                    len(unmatched), label_dir, image_dir, ", ".join(unmatched[:10]),
                    " …" if len(unmatched) > 10 else "")
    return cases


def _find_task08(path: Path) -> Path:
    for candidate in (path / "Task08_HepaticVessel", path.parent / "Task08_HepaticVessel"):
        if candidate.is_dir():
            return candidate
    raise DatasetError(
        f"{path}: HV Liver needs the Task08_HepaticVessel images; pass images=FOLDER"
    )


register_source(
    Source(
        "hv_liver",
        ("liver",),
        import_hv_liver,
        "HV Liver: liver masks for the MSD HepaticVessel images",
        "liver masks named by case number + Task08_HepaticVessel/imagesTr",
    )
)
