"""3D-IRCADb-01: ``PATIENT_DICOM/`` plus ``MASKS_DICOM/<structure>/``, one DICOM per slice.

Structures map by name: ``liver`` → liver; ``portalvein`` and ``venoussystem`` → vessel,
kept only inside the liver (the paper's intrahepatic vessels); ``livertumor*`` and
``livertumors`` → tumor. Other structures (``artery``, other organs) are ignored.
``path`` is either one patient folder or a folder of ``3Dircadb1.N`` patients.

The download ships each patient's folders zipped (``PATIENT_DICOM.zip``, ``MASKS_DICOM.zip``).
A zip is extracted once (the CT and the structures above only) into a cache folder named by a
hash of the zip's path, size and time, as the preprocessing cache names its cases: a changed
zip is extracted again, an unchanged one never. Option ``unzip_dir`` (default
``.cache/lvt-unzipped``) says where. A patient folder is refused when neither form is there.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

from lvt_core.atomic_files import published_folder
from lvt_core.labels import LIVER, TUMOR, VESSEL
from training.datasets import Case, DatasetError, MaskPart, Source, register_source

log = logging.getLogger(__name__)

VESSEL_STRUCTURES = ("portalvein", "venoussystem")
UNZIP_VERSION = 1  # part of the extraction key: a change to what is extracted re-extracts
DEFAULT_UNZIP_DIR = Path(".cache") / "lvt-unzipped"


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


def _has(folder: Path, name: str) -> bool:
    """True when ``folder`` holds ``name/`` or ``name.zip``."""
    return (folder / name).is_dir() or (folder / f"{name}.zip").is_file()


def import_ircadb(path: Path, unzip_dir: str | Path | None = None) -> list[Case]:
    """One case per patient folder that has ``PATIENT_DICOM`` and ``MASKS_DICOM`` (folders or
    zips); a patient without its masks or without a liver/vessel/tumor structure is named."""
    cache = (Path(unzip_dir) if unzip_dir else DEFAULT_UNZIP_DIR).resolve()
    patients = [path] if _has(path, "PATIENT_DICOM") else sorted(
        p for p in path.iterdir() if p.is_dir() and _has(p, "PATIENT_DICOM")
    )
    cases = []
    skipped = [f"{p.name} (no PATIENT_DICOM folder or PATIENT_DICOM.zip)" for p in sorted(path.iterdir())
               if p not in patients and p.is_dir() and p.name.lower().startswith("3dircadb")]
    for patient in patients:
        if not _has(patient, "MASKS_DICOM"):
            skipped.append(f"{patient.name} (no MASKS_DICOM folder or MASKS_DICOM.zip)")
            continue
        image = _folder(patient, "PATIENT_DICOM", cache, keep=lambda parts: True)
        mask_root = _folder(patient, "MASKS_DICOM", cache,
                            keep=lambda parts: len(parts) >= 2 and structure_value(parts[-2]) is not None)
        parts = []
        for folder in sorted(p for p in mask_root.iterdir() if p.is_dir()):
            found = structure_value(folder.name)
            if found is not None:
                parts.append(MaskPart(folder, found[0], inside_liver=found[1]))
        if not parts:
            skipped.append(f"{patient.name} (no liver, vessel or tumor mask in MASKS_DICOM)")
            continue
        cases.append(Case(f"ircadb_{patient.name}", "ircadb", ("liver", "vessel", "tumor"), image,
                          masks=tuple(parts)))
    if skipped:
        log.warning("3D-IRCADb: %d patient(s) left out: %s", len(skipped), "; ".join(skipped))
    return cases


Keep = Callable[[tuple[str, ...]], bool]


def _folder(patient: Path, name: str, cache: Path, keep: Keep) -> Path:
    """``patient/name/``, or where ``patient/name.zip`` was extracted (members ``keep`` accepts,
    given the member's path parts); the extracted ``name/`` folder when the zip holds one."""
    if (patient / name).is_dir():
        return patient / name
    archive = patient / f"{name}.zip"
    stat = archive.stat()
    identity = f"v{UNZIP_VERSION}|{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    target = cache / f"{patient.name}-{name}-{hashlib.sha1(identity.encode()).hexdigest()[:16]}"
    if not target.is_dir():
        _extract(archive, target, keep)
    return target / name if (target / name).is_dir() else target


def _extract(archive: Path, target: Path, keep: Keep) -> None:
    """Extract the wanted members of ``archive`` into ``target``, whole or not at all."""
    log.info("3D-IRCADb: extracting %s into %s", archive, target)
    try:
        with zipfile.ZipFile(archive) as zf, published_folder(target) as tmp:
            for member in zf.infolist():
                parts = Path(member.filename).parts
                if member.is_dir() or "__MACOSX" in parts or parts[-1].startswith("._") or not keep(parts):
                    continue
                zf.extract(member, tmp)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{archive}: cannot extract this zip ({exc}); unzip it in place "
                           f"(the patient folder then holds {archive.stem}/)") from None


register_source(
    Source(
        "ircadb",
        ("liver", "vessel", "tumor"),
        import_ircadb,
        "3D-IRCADb-01: liver, portal + venous vessels, tumors",
        "3Dircadb1.N/{PATIENT_DICOM,MASKS_DICOM/<structure>}/ (folders or the download's .zip files)",
    )
)
