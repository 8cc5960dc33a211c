"""Real CT with TotalSegmentator's liver output (label 5) as a liver-only partial source.

Each multilabel ``*seg*.nii.gz`` is paired with the CT (volume file or DICOM folder) in the
same folder that has its voxel grid; ``*_fast*`` outputs are skipped when a full one exists.
Only the liver (label 5) is used: TotalSegmentator's vessels are not intrahepatic ones.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from lvt_core.imageio import is_volume_file, read_image
from lvt_core.labels import LIVER
from training.datasets import Case, Source, register_source
from training.importers._util import stem

TOTALSEG_LIVER = 5


def _grid(path: Path) -> tuple | None:
    try:
        if path.is_dir():
            image = read_image(path)
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            image = reader
        spacing = tuple(round(s, 3) for s in image.GetSpacing())
        return tuple(image.GetSize()), spacing
    except Exception:
        return None


def import_totalsegmentator(path: Path) -> list[Case]:
    """Liver-only cases from CT + TotalSegmentator multilabel output pairs."""
    segs = sorted(p for p in path.glob("*seg*") if is_volume_file(p))
    full = [p for p in segs if "fast" not in p.name]
    segs = full or segs
    images = sorted(
        p for p in path.iterdir()
        if "seg" not in p.name and (is_volume_file(p) or (p.is_dir() and any(p.iterdir())))
    )
    grids = {image: _grid(image) for image in images}
    cases = []
    for seg in segs:
        grid = _grid(seg)
        match = next((img for img, g in grids.items() if g is not None and g == grid), None)
        if match is not None:
            cases.append(
                Case(f"totalseg_{stem(seg)}", "totalsegmentator_liver", ("liver",), match, seg,
                     {TOTALSEG_LIVER: LIVER})
            )
    return cases


register_source(
    Source(
        "totalsegmentator_liver",
        ("liver",),
        import_totalsegmentator,
        "real CT with TotalSegmentator liver output (label 5): liver only",
        "CT files/DICOM folders + *seg*.nii.gz multilabel outputs",
    )
)
