"""3D-IRCADb-01: ``PATIENT_DICOM/`` plus ``MASKS_DICOM/<structure>/``, one DICOM per slice.

Structures map by name: ``liver`` → liver; ``portalvein`` and ``venoussystem`` → vessel,
kept only inside the liver (the paper's intrahepatic vessels); ``livertumor*`` and
``livertumors`` → tumor. Other structures (``artery``, other organs) are ignored.
``path`` is either one patient folder or a folder of ``3Dircadb1.N`` patients.
"""

from __future__ import annotations

from pathlib import Path

from lvt_core.labels import LIVER, TUMOR, VESSEL
from training.datasets import Case, MaskPart, Source, register_source

VESSEL_STRUCTURES = ("portalvein", "venoussystem")


def structure_value(name: str) -> tuple[int, bool] | None:
    """LVT value of a mask folder name and whether it is clipped to the liver."""
    key = name.lower().replace(" ", "")
    if key == "liver":
        return LIVER, False
    if key in VESSEL_STRUCTURES:
        return VESSEL, True
    if key.startswith("livertumor") or key.startswith("livertumour"):
        return TUMOR, False
    return None


def import_ircadb(path: Path) -> list[Case]:
    """One case per patient folder that has both ``PATIENT_DICOM`` and ``MASKS_DICOM``."""
    patients = [path] if (path / "PATIENT_DICOM").is_dir() else sorted(
        p for p in path.iterdir() if (p / "PATIENT_DICOM").is_dir()
    )
    cases = []
    for patient in patients:
        mask_root = patient / "MASKS_DICOM"
        if not mask_root.is_dir():
            continue
        parts = []
        for folder in sorted(p for p in mask_root.iterdir() if p.is_dir()):
            found = structure_value(folder.name)
            if found is not None:
                parts.append(MaskPart(folder, found[0], inside_liver=found[1]))
        if parts:
            cases.append(
                Case(f"ircadb_{patient.name}", "ircadb", ("liver", "vessel", "tumor"),
                     patient / "PATIENT_DICOM", masks=tuple(parts))
            )
    return cases


register_source(
    Source(
        "ircadb",
        ("liver", "vessel", "tumor"),
        import_ircadb,
        "3D-IRCADb-01: liver, portal + venous vessels, tumors",
        "3Dircadb1.N/{PATIENT_DICOM,MASKS_DICOM/<structure>}/",
    )
)
