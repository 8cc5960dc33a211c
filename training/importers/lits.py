"""LiTS: ``volume-N.nii`` with ``segmentation-N.nii`` (1 liver, 2 tumor), in any subfolder."""

from __future__ import annotations

import re
from pathlib import Path

from lvt_core.labels import LIVER, TUMOR
from training.datasets import Case, DatasetError, Source, register_source

_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")


def import_lits(path: Path) -> list[Case]:
    """Cases of a LiTS folder (the training batches may sit in subfolders)."""
    segmentations = {}
    for seg in path.rglob("segmentation-*.nii*"):
        number = re.findall(r"\d+", seg.name)
        if number:
            segmentations[int(number[0])] = seg
    cases, unpaired = [], []
    for volume in sorted(path.rglob("volume-*.nii*")):
        match = _VOLUME.match(volume.name)
        if match and int(match.group(1)) not in segmentations:
            unpaired.append(volume)
        elif match:
            n = int(match.group(1))
            cases.append(
                Case(f"lits_{n:03d}", "lits", ("liver", "tumor"), volume, segmentations[n],
                     {1: LIVER, 2: TUMOR}, group=f"lits_{n:03d}",  # MSD Task03 holds it too
                     known_values=frozenset({0, 1, 2}))
            )
    if unpaired:  # a training volume without its labels is a broken download, not a test case
        raise DatasetError(f"{path}: {len(unpaired)} volume(s) without their segmentation-N file: "
                           + ", ".join(str(v) for v in unpaired[:5]) + (" …" if len(unpaired) > 5 else ""))
    return sorted(cases, key=lambda c: c.case_id)


register_source(
    Source(
        "lits",
        ("liver", "tumor"),
        import_lits,
        "LiTS challenge: liver + tumor",
        "volume-N.nii + segmentation-N.nii",
    )
)
