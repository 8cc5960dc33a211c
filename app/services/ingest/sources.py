"""Turn the paths given to ``lvt ingest`` into series candidates.

Folders are searched recursively; zip files are unpacked into a temporary folder after
every entry name is checked (absolute names, ``..`` components and links are refused,
so an archive cannot write outside its folder); NIfTI/NRRD files need a manifest row or
``--patient-id``. Nothing here touches the database or the image store.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

import pydicom
import SimpleITK as sitk

from app.cli.common import UserError
from app.services.deid import implausible_study_date, parse_date
from app.services.ingest.dicom import (
    DicomFileError,
    DicomSeries,
    Slice,
    check_series,
    decode,
    group_series,
    not_a_volume,
    read_header,
)
from app.services.ingest.manifest import ManifestRow
from app.services.ingest.phase import PhaseRule, detect_phase
from lvt_core.imageio import ImageReadError, is_volume_file, read_image

IMAGE_MODALITIES = {"CT"}


@dataclass
class Candidate:
    """One series to ingest, with its source identifiers (not yet de-identified)."""

    source: str
    source_format: str
    patient_source_id: str
    study_uid_source: str | None
    series_uid_source: str | None
    study_date: dt.date | None
    accession: str | None
    study_description: str | None
    series_description: str | None
    modality: str
    phase: str
    phase_reason: str
    slice_thickness: float | None
    load: Callable[[], sitk.Image]
    warnings: list[str] = field(default_factory=list)


@dataclass
class Discovery:
    """What was found: candidates, skipped inputs (with reasons) and hard problems."""

    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    patient_ids: dict[str, str] = field(default_factory=dict)  # PatientID -> a file with it
    archives: dict[Path, Path] = field(default_factory=dict)  # extraction folder -> zip file
    series_seen: dict[str, str] = field(default_factory=dict)  # series key -> where it was


@dataclass(frozen=True)
class DicomInput:
    """The DICOM files of one input (a folder, a zip, the files given), named by ``label``."""

    label: str
    files: list[Path]


@dataclass(frozen=True)
class Damaged:
    """A file that looks like DICOM but cannot be read, and the series it belongs to (the
    SeriesInstanceUID of its readable header part; None when even that is lost)."""

    path: Path
    message: str
    series_key: str | None


@dataclass(frozen=True)
class Overrides:
    """Values from the command line or a manifest row that beat the DICOM tags."""

    patient_id: str | None = None
    phase: str | None = None
    study_date: dt.date | None = None
    series_description: str | None = None


def safe_extract(archive: Path, target: Path) -> None:
    """Unpack ``archive`` into ``target``, refusing entries that would land outside it."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = info.filename.replace("\\", "/")
                parts = PurePosixPath(name).parts
                if name.startswith("/") or ".." in parts or (parts and parts[0].endswith(":")):
                    raise UserError(
                        f"{archive}: entry {info.filename!r} points outside the archive "
                        "(path traversal); nothing was ingested"
                    )
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise UserError(f"{archive}: entry {info.filename!r} is a symbolic link")
            zf.extractall(target)
    except zipfile.BadZipFile as exc:
        raise UserError(f"{archive}: not a readable zip file ({exc})") from None


def _dicom_candidate(
    series: DicomSeries, overrides: Overrides, rules: list[PhaseRule] | None
) -> Candidate:
    header = series.first
    patient = overrides.patient_id or str(header.get("PatientID", "") or "").strip()
    phase, reason = (overrides.phase, "given") if overrides.phase else _phase(series, rules)
    study_date = overrides.study_date or _series_date(series)
    thickness = header.get("SliceThickness")
    return Candidate(
        source=series_source(series),
        source_format="dicom",
        patient_source_id=patient,
        study_uid_source=series.tag("StudyInstanceUID")
        or "lvt-study:{}:{}:{}:{}".format(
            patient, series.tag("StudyDate"), series.tag("StudyTime"), series.tag("StudyID")
        ),
        series_uid_source=series.source_key,
        study_date=study_date,
        accession=series.tag("AccessionNumber"),
        study_description=series.tag("StudyDescription"),
        series_description=overrides.series_description or series.tag("SeriesDescription"),
        modality=str(header.get("Modality", "")),
        phase=phase,
        phase_reason=reason,
        slice_thickness=float(thickness) if thickness not in (None, "") else None,
        load=lambda: decode(series),
        warnings=series.warnings,  # the same list: decoding adds what only the pixels tell
    )


def _phase(series: DicomSeries, rules: list[PhaseRule] | None) -> tuple[str, str]:
    """The phase from the descriptions and contrast timing. Acquisitions split from one
    series share its descriptions, so for them the timing speaks first."""
    timing = {
        "contrast_agent": series.tag("ContrastBolusAgent"),
        "contrast_start_time": series.tag("ContrastBolusStartTime"),
        "acquisition_time": series.tag("AcquisitionTime") or series.tag("SeriesTime"),
        "rules": rules,
    }
    if series.acquisition is not None:
        phase, reason = detect_phase([], **timing)
        if phase != "unknown":
            return phase, reason
    return detect_phase([series.tag("SeriesDescription"), series.tag("StudyDescription")], **timing)


DATE_TAGS = ("StudyDate", "SeriesDate", "AcquisitionDate")


def _series_date(series: DicomSeries) -> dt.date | None:
    """The study date from the first readable of StudyDate, SeriesDate, AcquisitionDate.

    What was missing or unreadable is added to the series' warnings, which are stored:
    they name the tags, never the source text (a date is an identifier under
    de-identification).
    """
    unreadable: list[str] = []
    for tag in DATE_TAGS:
        try:
            value = parse_date(series.tag(tag))
        except ValueError:
            unreadable.append(tag)
            continue
        if value is None:
            continue
        if tag != DATE_TAGS[0]:
            state = "unreadable" if DATE_TAGS[0] in unreadable else "missing"
            series.warnings.append(f"StudyDate {state}; the study date is taken from {tag}")
        return value
    problem = f" (unreadable: {', '.join(unreadable)})" if unreadable else ""
    series.warnings.append(
        f"no readable StudyDate, SeriesDate or AcquisitionDate{problem}: stored without a "
        "study date, so measurements must name its accession and intervals are unknown"
    )
    return None


def _named(paths: list[Path], shown: int = 5) -> str:
    """The first ``shown`` paths, and how many more."""
    names = ", ".join(str(p) for p in paths[:shown])
    return names + (f" and {len(paths) - shown} more" if len(paths) > shown else "")


def series_source(series: DicomSeries) -> str:
    """Where a series is and which one it is: its folder(s), SeriesNumber, UID, slice count.

    One folder or zip often holds several series; the folder alone (and a slice count that
    series share) did not say which was added or in conflict.
    """
    folders = list(dict.fromkeys(str(s.path.parent) for s in series.slices))  # as sorted
    place = " + ".join(folders[:3]) + (f" + {len(folders) - 3} more" if len(folders) > 3 else "")
    uid = series.series_uid
    shown = "without SeriesInstanceUID" if uid.startswith("lvt-") else uid
    number = series.tag("SeriesNumber")
    which = f"series {number}, {shown}" if number not in (None, "") else f"series {shown}"
    if series.acquisition is not None:
        which += f", {series.acquisition}"
    return f"{place} ({which}, {len(series.slices)} slices)"


def _damaged_series_key(path: Path) -> str | None:
    """The SeriesInstanceUID in the readable part of a damaged file's header, or None."""
    try:
        header = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception:
        return None
    uid = str(header.get("SeriesInstanceUID", "") or "").strip()
    return uid or None


def _read_headers(
    inputs: list[DicomInput], found: Discovery
) -> tuple[list[Slice], list[Damaged], list[Path]]:
    """Headers of every file of ``inputs``: (slices, damaged files, files that are not DICOM).

    A file given twice (nested or repeated paths) is read once; DICOMDIR, the index of a
    DICOM file set (PS3.10), holds no image and is passed over silently.
    """
    slices: list[Slice] = []
    damaged: list[Damaged] = []
    unreadable: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        not_dicom: list[Path] = []
        for path in item.files:
            if path.resolve() in seen or path.name.upper() == "DICOMDIR":
                continue
            seen.add(path.resolve())
            try:
                header = read_header(path)
            except DicomFileError as exc:
                damaged.append(Damaged(path, str(exc), _damaged_series_key(path)))
                continue
            if header is None:
                not_dicom.append(path)
                continue
            slices.append(Slice(path, header))
            found.patient_ids.setdefault(str(header.get("PatientID", "") or "").strip(), str(path))
        if not_dicom:
            found.skipped.append({"source": item.label, "reason": f"{len(not_dicom)} file(s) are "
                                  "not DICOM: " + _named(not_dicom)})
            unreadable.extend(not_dicom)
    return slices, damaged, unreadable


def _damaged_in(series: DicomSeries, damaged: list[Damaged]) -> list[Damaged]:
    """The damaged files of ``series``: by SeriesInstanceUID, else (UID unreadable) those
    beside its slices, which may be its lost first or last slice."""
    folders = {s.path.parent for s in series.slices}
    return [
        d for d in damaged
        if d.series_key == series.series_uid or (d.series_key is None and d.path.parent in folders)
    ]


def _split_over_scans(series: DicomSeries, where: str, found: Discovery) -> str | None:
    """Why ``series`` cannot be ingested whole: its UID came up in another scan (another
    manifest row's dicom_dir, or a row and the paths given), each with other overrides."""
    earlier = found.series_seen.get(series.source_key)
    found.series_seen.setdefault(series.source_key, where)
    if earlier is None:
        return None
    reason = (f"the series is split over {earlier} and {where}; give all its files in one "
              "folder or manifest row (or as paths of one ingest)")
    for candidate in [c for c in found.candidates if c.series_uid_source == series.source_key]:
        found.candidates.remove(candidate)  # a part is never stored as the whole series
        found.skipped.append({"source": candidate.source, "reason": reason})
    return reason


def scan_dicom(
    inputs: list[DicomInput],
    overrides: Overrides,
    rules: list[PhaseRule] | None,
    skip_invalid: bool,
    found: Discovery,
) -> None:
    """Read headers of every file of ``inputs`` and add their series to ``found``.

    Slices are grouped by series over all inputs together: a PACS export splits a series over
    folders or zips (part1.zip, part2.zip), and a part ingested alone is a short series. A
    damaged file refuses its series (with --skip-invalid: skips it, naming the file), since
    without the file the series would be stored short, silently when it was an end slice.
    """
    slices, damaged, not_dicom = _read_headers(inputs, found)
    if not skip_invalid:
        found.errors.extend(d.message for d in damaged)
    attributed: set[Path] = set()
    series_list, skipped = group_series(slices)
    found.skipped.extend({"source": s, "reason": r} for s, r in skipped)
    for series in series_list:
        modality = str(series.first.get("Modality", "") or "?")
        where = series_source(series)
        if modality not in IMAGE_MODALITIES:
            found.skipped.append(
                {"source": where, "reason": f"modality {modality} is not CT; only CT is ingested"}
            )
            continue
        if "Rows" not in series.first:
            found.skipped.append({"source": where, "reason": "no image pixel data"})
            continue
        if reason := not_a_volume(series):
            found.skipped.append({"source": where, "reason": reason})
            continue
        if split := _split_over_scans(series, where, found):
            series.errors.append(split)
        if not series.errors:  # a slice of another size or orientation is error enough
            check_series(series)
        unreadable_here = [p for p in not_dicom if p.parent in {s.path.parent for s in series.slices}]
        if series.errors and unreadable_here:  # a damaged slice reads as "not DICOM" and leaves a gap
            series.errors.append(f"{len(unreadable_here)} file(s) beside these slices are not "
                                 f"readable DICOM, perhaps damaged slices: {_named(unreadable_here)}")
        if skip_invalid and (lost := _damaged_in(series, damaged)):
            attributed.update(d.path for d in lost)
            series.errors.append(f"{len(lost)} file(s) of this series are unreadable, so it would "
                                 "be stored short: " + "; ".join(d.message for d in lost))
        if series.errors:
            where = series_source(series)
            if skip_invalid:
                found.skipped.append({"source": where, "reason": "; ".join(series.errors)})
            else:
                found.errors.append(f"{where}: " + "; ".join(series.errors))
            continue
        if overrides.phase and series.acquisition is not None:
            found.errors.append(
                f"{where}: phase {overrides.phase} was given for all of it, but it holds several "
                "acquisitions (one per contrast phase?); give no phase, so each is phased by its "
                "own timing, and correct one afterwards with `lvt studies set-phase SERIES PHASE`")
            continue
        candidate = _dicom_candidate(series, overrides, rules)
        if not candidate.patient_source_id:
            found.errors.append(f"{where}: no PatientID in the files; pass --patient-id")
            continue
        if implausible := implausible_study_date(candidate.study_date):  # as a manifest row
            reason = f"study date {implausible}"
            if skip_invalid:
                found.skipped.append({"source": where, "reason": reason})
            else:
                found.errors.append(f"{where}: {reason}")
            continue
        found.candidates.append(candidate)
    if skip_invalid:
        found.skipped.extend({"source": str(d.path), "reason": d.message}
                             for d in damaged if d.path not in attributed)


def _volume_candidate(path: Path, row: ManifestRow | None, overrides: Overrides) -> Candidate:
    patient = overrides.patient_id or (row.patient_id if row else "")
    phase = overrides.phase or (row.phase if row and row.phase else None)
    date = row.study_date if row else None
    study_uid = row.study_uid if row and row.study_uid else None
    if study_uid is None:
        index = row.study_index if row and row.study_index else ""
        study_uid = f"lvt-study:{patient}:{date.isoformat() if date else ''}:{index}"
    fmt = "nrrd" if path.name.lower().endswith((".nrrd", ".nhdr")) else "nifti"
    return Candidate(
        source=str(path),
        source_format=fmt,
        patient_source_id=patient,
        study_uid_source=study_uid,
        series_uid_source=row.series_uid if row else None,
        study_date=date,
        accession=row.accession if row else None,
        study_description=None,
        series_description=overrides.series_description
        or (row.series_description if row else None),
        modality=row.modality if row else "CT",
        phase=phase or "unknown",
        phase_reason="given" if phase else "no phase given",
        slice_thickness=None,
        load=lambda: read_image(path),
    )


def discover(
    paths: list[Path],
    manifest_rows: list[ManifestRow],
    overrides: Overrides,
    rules: list[PhaseRule] | None,
    skip_invalid: bool,
    stack: ExitStack,
) -> Discovery:
    """Find every series in ``paths`` and the manifest rows (zip folders live on ``stack``).

    The DICOM files of all ``paths`` (folders, zips, zips inside folders, loose files) are
    scanned as one, so a series split over them is ingested whole; a manifest row's
    dicom_dir is scanned on its own, as it carries its own patient, phase and date.
    """
    found = Discovery()
    by_image = {row.image.resolve(): row for row in manifest_rows if row.image}
    for row in manifest_rows:
        if row.image is not None:
            found.candidates.append(_volume_candidate(row.image, row, overrides))
        elif row.dicom_dir is not None:
            row_overrides = Overrides(
                patient_id=overrides.patient_id or row.patient_id,
                phase=overrides.phase or row.phase,
                study_date=row.study_date,
                series_description=row.series_description,
            )
            inputs = [DicomInput(str(row.dicom_dir), files_under(row.dicom_dir))]
            scan_dicom(inputs, row_overrides, rules, skip_invalid, found)
    dicom: list[DicomInput] = []
    loose: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_dir():
            files = files_under(path)
            for volume in (p for p in files if is_volume_file(p)):
                found.skipped.append(
                    {
                        "source": str(volume),
                        "reason": "volume file inside a DICOM folder; "
                        "give it with --manifest or as a path with --patient-id",
                    }
                )
            dicom.append(DicomInput(str(path), [
                p for p in files if not is_volume_file(p) and p.suffix.lower() != ".zip"
            ]))
            dicom.extend(_unzipped(a, found, stack) for a in files if a.suffix.lower() == ".zip")
        elif path.suffix.lower() == ".zip":
            dicom.append(_unzipped(path, found, stack))
        elif is_volume_file(path):
            if by_image.get(path.resolve()) is not None:
                continue  # already a candidate through the manifest
            if not overrides.patient_id:
                raise UserError(
                    f"{path}: a NIfTI/NRRD file needs a manifest row (--manifest) or --patient-id"
                )
            found.candidates.append(_volume_candidate(path, None, overrides))
        else:
            loose.append(path)
    if loose:
        dicom.append(DicomInput("files given", loose))
    if dicom:
        scan_dicom(dicom, overrides, rules, skip_invalid, found)
    _name_archive_members(found)
    if overrides.patient_id:
        _refuse_merged_patients(overrides.patient_id, found)
    return found


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder``, sorted, through symbolic links to folders too (a PACS
    export or a study linked into a drop folder); a link back up the tree is walked once."""
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        where = os.stat(root)
        if (where.st_dev, where.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((where.st_dev, where.st_ino))
        found.extend(p for p in (Path(root) / name for name in files) if p.is_file())
    return sorted(found)


def _refuse_merged_patients(patient_id: str, found: Discovery) -> None:
    """--patient-id names inputs that lack an id; over several PatientIDs it would merge
    different people into one patient, so that is refused."""
    ids = {pid: path for pid, path in found.patient_ids.items() if pid}
    if len(ids) < 2:
        return
    shown = "; ".join(f"{pid!r} in {path}" for pid, path in list(ids.items())[:5])
    raise UserError(
        f"--patient-id {patient_id} would merge {len(ids)} different PatientIDs in the DICOM "
        f"files into one patient ({shown}{' ...' if len(ids) > 5 else ''}); the option is for "
        "inputs that lack a PatientID: ingest each patient without it"
    )


def _unzipped(archive: Path, found: Discovery, stack: ExitStack) -> DicomInput:
    """The files of ``archive``, unpacked into a temporary folder that lives on ``stack``."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lvt-zip-")))
    safe_extract(archive, folder)
    found.archives[folder] = archive
    return DicomInput(str(archive), sorted(p for p in folder.rglob("*") if p.is_file()))


def _name_archive_members(found: Discovery) -> None:
    """Name files of the unpacked zips ``archive.zip:inner/path`` in every message, source
    and load error of ``found``."""
    for folder, archive in found.archives.items():
        rename = partial(_in_archive, folder=folder, archive=archive)
        found.errors[:] = [rename(e) for e in found.errors]
        found.skipped[:] = [{k: rename(v) for k, v in item.items()} for item in found.skipped]
        found.patient_ids = {pid: rename(where) for pid, where in found.patient_ids.items()}
        for candidate in found.candidates:
            if str(folder) in candidate.source:
                candidate.source = rename(candidate.source)
                candidate.load = partial(_load_renamed, candidate.load, rename)


def _in_archive(text: str, folder: Path, archive: Path) -> str:
    """``text`` with paths in the extraction folder shown as ``archive.zip:inner/path``: the
    folder is deleted when the ingest ends, so its name would point nowhere."""
    return text.replace(f"{folder}/", f"{archive}:").replace(str(folder), str(archive))


def _load_renamed(load: Callable[[], sitk.Image], rename: Callable[[str], str]) -> sitk.Image:
    try:
        return load()
    except DicomFileError as exc:
        raise DicomFileError(rename(str(exc))) from None


def load_candidate(candidate: Candidate) -> sitk.Image:
    """Decode the candidate's image, turning reader failures into user errors."""
    try:
        return candidate.load()
    except (DicomFileError, ImageReadError) as exc:
        raise UserError(str(exc)) from None
