"""``lvt ingest``: all-or-nothing import of series into the store.

Order of work, chosen so a failure anywhere leaves database and store as they were:
1. discover and validate every input (nothing written);
2. decode each series and write it, compressed, to a staging file inside the store;
3. in ONE transaction that first takes the ``ingest`` writer lock: look up patients,
   studies and series, move staged files to their content addresses, insert rows, commit.
If anything fails, the transaction rolls back and every file this run moved into place or
staged is removed; a store the run created (a first ingest makes the database and the key
before reading its inputs) is removed again (:func:`new_store_removed_on_failure`). The lock serialises concurrent ingests (two processes, SQLite or
PostgreSQL), so a file another run is about to reference is never deleted, and the loser
of a race simply finds the series already present.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import SimpleITK as sitk
from sqlalchemy import create_engine, make_url, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from app.cli.common import UserError
from app.services import audit
from app.services.deid import Deidentifier, key_exists, key_file_path
from app.services.ingest.manifest import read_manifest
from app.services.ingest.phase import PhaseRule
from app.services.ingest.sources import Candidate, Overrides, discover, load_candidate
from db import storage
from db.engine import acquire_lock, default_url, get_engine, make_session_factory, store_exists
from db.models import AuditEvent, Base, Patient, Series, Study

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class IngestOptions:
    """Choices of one ingest run (mirrors the CLI flags)."""

    manifest: Path | None = None
    patient_id: str | None = None
    phase: str | None = None
    deidentify: bool = True
    dry_run: bool = False
    skip_invalid: bool = False
    phase_rules: list[PhaseRule] | None = None


@dataclass
class IngestReport:
    """What an ingest did (or would do, with ``dry_run``)."""

    dry_run: bool = False
    patients: set[str] = field(default_factory=set)
    studies: set[str] = field(default_factory=set)
    patients_added: int = 0
    studies_added: int = 0
    added: list[dict[str, Any]] = field(default_factory=list)
    already_present: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "dry_run": self.dry_run,
            "patients": len(self.patients),
            "studies": len(self.studies),
            "patients_added": self.patients_added,
            "studies_added": self.studies_added,
            "series_added": len(self.added),
            "series_already_present": len(self.already_present),
            "series_skipped": len(self.skipped),
            "added": self.added,
            "already_present": self.already_present,
            "skipped": self.skipped,
            "warnings": self.warnings,
            "notes": self.notes,
        }


@dataclass
class _Prepared:
    candidate: Candidate
    sha256: str
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    staged: Path | None


class IngestError(UserError):
    """An ingest that was refused as a whole; nothing was written."""


def _no_track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    del description, total
    yield from items


def _derived_uid(deid: Deidentifier, text: str) -> str:
    if deid.enabled:
        return deid.uid(text)
    return "2.25." + str(int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big"))


def _uids(deid: Deidentifier, prepared: _Prepared) -> tuple[str, str]:
    c = prepared.candidate
    study = c.study_uid_source or f"lvt-study:{c.patient_source_id}"
    study_uid = deid.uid(study) if not study.startswith("lvt-") else _derived_uid(deid, study)
    if c.series_uid_source and c.series_uid_source.startswith("lvt-"):
        series_uid = _derived_uid(deid, f"{c.patient_source_id}:{c.series_uid_source}")
    elif c.series_uid_source:
        series_uid = deid.uid(c.series_uid_source)
    else:
        series_uid = _derived_uid(deid, f"lvt-series:{prepared.sha256}")
    return study_uid, series_uid


def ingest_paths(
    paths: list[Path],
    options: IngestOptions | None = None,
    url: str | None = None,
    data_root: Path | None = None,
    track: Callable[..., Iterator[Any]] = _no_track,
) -> IngestReport:
    """Ingest DICOM folders, zip files and volume files; raise :class:`IngestError` on refusal."""
    options = options or IngestOptions()
    url = url or default_url()
    root = data_root or storage.data_dir()
    report = IngestReport(dry_run=options.dry_run)
    deid = _deidentifier(options, report)
    rows = read_manifest(options.manifest) if options.manifest else []
    if not paths and not rows:
        raise IngestError("nothing to ingest: give folders, zip or volume files, or --manifest")
    overrides = Overrides(patient_id=options.patient_id, phase=options.phase)
    prepared: list[_Prepared] = []
    with ExitStack() as stack:
        found = discover(paths, rows, overrides, options.phase_rules, options.skip_invalid, stack)
        report.skipped.extend(found.skipped)
        if found.errors:
            raise IngestError(_problems("nothing was ingested", found.errors))
        if not found.candidates:  # an empty or mistyped folder is not a successful ingest
            reasons = [f"{item['source']}: {item['reason']}" for item in found.skipped]
            where = ", ".join(str(p) for p in paths) or "the manifest"
            raise IngestError(_problems(f"no CT series found in {where}", reasons)
                              if reasons else f"no CT series found in {where}")
        try:
            for candidate in track(found.candidates, "Reading series", len(found.candidates)):
                prepared.append(_prepare(candidate, root, options.dry_run))
            _commit(prepared, deid, options, _session_factory(url, options, report), root, report)
        finally:
            for item in prepared:
                if item.staged is not None:
                    item.staged.unlink(missing_ok=True)
    return report


SQLITE_FILES = ("", "-wal", "-shm", "-journal", ".migrate.lock")
"""Suffixes of the files a SQLite store is made of (``.migrate.lock``: the migrations' lock)."""


@contextmanager
def new_store_removed_on_failure(url: str) -> Iterator[None]:
    """Remove, when the ingest fails, what it created of a SQLite store that did not exist:
    a refused first ingest left an empty database and a key behind, so ``lvt db current`` no
    longer said there was no store. An existing store (or a server's database) is left alone."""
    if store_exists(url):
        yield
        return
    database = Path(str(make_url(url).database))
    files = [database.with_name(database.name + suffix) for suffix in SQLITE_FILES]
    from app.settings import get_settings

    settings = get_settings()
    if not settings.secret_key:
        files.append(key_file_path())
    folders = [storage.data_dir(), settings.var_dir, database.parent]
    created_files = [path for path in files if not path.exists()]
    created_folders = [path for path in folders if not path.exists()]
    try:
        yield
    except BaseException:
        get_engine(url).dispose()  # no pooled connection keeps the file
        for path in created_files:
            path.unlink(missing_ok=True)
        for folder in sorted(set(created_folders), key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
                shutil.rmtree(folder)
        raise


def _session_factory(url: str, options: IngestOptions, report: IngestReport) -> sessionmaker[Session]:
    """The store's sessions; for a dry run without a store, an in-memory schema instead.

    A dry run writes nothing, so it must not create the SQLite file to look things up in.
    """
    if not options.dry_run or store_exists(url):
        return make_session_factory(url)
    report.notes.append("no store exists yet: checked against an empty in-memory database")
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    return sessionmaker(bind=engine, expire_on_commit=False)


def _deidentifier(options: IngestOptions, report: IngestReport) -> Deidentifier:
    """The installation's de-identification; for a dry run before any key exists, an
    ephemeral key, since loading the real one would create the key file."""
    if options.dry_run and options.deidentify and not key_exists():
        report.notes.append(
            "no de-identification key exists yet: pseudonyms and shifted dates are provisional "
            "(the real ingest creates the key and gives others)"
        )
        from app.settings import get_settings

        return Deidentifier(secrets.token_hex(32).encode(), True, get_settings().deid_shift_dates)
    return Deidentifier.from_settings(options.deidentify)


def _problems(headline: str, problems: list[str]) -> str:
    return f"{len(problems)} problem(s), {headline}:\n  " + "\n  ".join(problems)


def _compact(image: sitk.Image) -> sitk.Image:
    """Store integer CT as int16 when its range allows (GDCM returns int32 after rescale)."""
    wide = (sitk.sitkInt32, sitk.sitkUInt16, sitk.sitkUInt32, sitk.sitkInt64, sitk.sitkUInt64)
    if image.GetPixelID() not in wide:
        return image
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    if stats.GetMinimum() >= -32768 and stats.GetMaximum() <= 32767:
        return sitk.Cast(image, sitk.sitkInt16)
    return image


def _prepare(candidate: Candidate, root: Path, dry_run: bool) -> _Prepared:
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    image = _compact(load_candidate(candidate))
    size = tuple(int(v) for v in image.GetSize())
    spacing = tuple(float(v) for v in image.GetSpacing())
    sha = storage.image_hash(image)
    staged = None
    if not dry_run and not storage.resolve(storage.relative_path_for(sha), root).exists():
        staged, _ = storage.write_staged(image, root, sha)
    log.debug("prepared %s -> %s", candidate.source, sha)
    return _Prepared(candidate, sha, size, spacing, staged)  # type: ignore[arg-type]


def _commit(
    prepared: list[_Prepared],
    deid: Deidentifier,
    options: IngestOptions,
    factory: sessionmaker[Session],
    root: Path,
    report: IngestReport,
) -> None:
    session = factory()
    published: list[Path] = []
    try:
        if not options.dry_run:
            acquire_lock(session, "ingest")
        conflicts = _apply(session, prepared, deid, options, root, report, published)
        if conflicts and not options.skip_invalid:
            raise IngestError(_problems("nothing was ingested", conflicts))
        if options.dry_run:
            session.rollback()
            return
        session.add(
            AuditEvent(
                action="ingest",
                actor=audit.command_line_actor("lvt ingest"),
                target=f"{len(report.added)} series",
                detail={
                    "series_added": [a["series_instance_uid"] for a in report.added],
                    "already_present": len(report.already_present),
                    "skipped": len(report.skipped),
                    "deidentified": deid.enabled,
                },
            )
        )
        session.commit()
    except BaseException:
        session.rollback()
        for path in published:
            path.unlink(missing_ok=True)
        raise
    finally:
        session.close()


def _equivalent(existing: Series, item: _Prepared, root: Path) -> bool:
    """Whether a differently hashed copy is the stored image within DICOM's precision."""
    new_path = item.staged or storage.resolve(storage.relative_path_for(item.sha256), root)
    stored_path = storage.resolve(existing.image_path, root)
    if not (new_path.exists() and stored_path.exists()):
        return False
    try:
        return storage.same_content(sitk.ReadImage(str(stored_path)), sitk.ReadImage(str(new_path)))
    except RuntimeError:
        return False


def _filed_elsewhere(existing: Series, pseudo_id: str, study_date: dt.date | None) -> str | None:
    """How the stored series' patient or date differs from the new row's, or None."""
    stored = existing.study
    if stored.patient.pseudo_id != pseudo_id:
        return f"of patient {stored.patient.pseudo_id}, not {pseudo_id}"
    if study_date is not None and stored.study_date is not None and stored.study_date != study_date:
        return f"of the study dated {stored.study_date}, not {study_date}"
    return None


def _other_phase(existing: Series, candidate: Candidate) -> str | None:
    """How a phase given (--phase, manifest) differs from the stored series' phase, or None.

    A given phase is a statement about the image; ignoring it would hide a mistyped row.
    """
    if candidate.phase_reason != "given" or candidate.phase == existing.phase:
        return None
    return f"with phase {existing.phase}, not {candidate.phase} as given now"


def _other_policy(patient: Patient, deid: Deidentifier) -> str | None:
    """How the patient's recorded de-identification differs from this ingest's, or None.

    Dates shifted for one study and kept for another would put a false interval between
    them (LVT_DEID_SHIFT_DATES changed between ingests); so that patient is refused.
    """
    if patient.dates_shifted is None:  # a patient from before revision 0008, or new
        return None
    shifted = deid.enabled and deid.shift_dates
    if patient.dates_shifted != shifted:
        return (f"dates {'shifted' if patient.dates_shifted else 'kept'}, but this ingest "
                f"{'shifts' if shifted else 'keeps'} them (LVT_DEID_SHIFT_DATES): the intervals "
                "between its studies would be wrong; ingest it under the policy it was stored with")
    return None


def _apply(
    session: Session,
    prepared: list[_Prepared],
    deid: Deidentifier,
    options: IngestOptions,
    root: Path,
    report: IngestReport,
    published: list[Path],
) -> list[str]:
    conflicts: list[str] = []
    patients: dict[str, Patient] = {}
    for item in prepared:
        c = item.candidate
        pseudo = deid.patient_id(c.patient_source_id)
        study_uid, series_uid = _uids(deid, item)
        existing = session.scalar(select(Series).where(Series.series_instance_uid == series_uid))
        if existing is None:  # new UIDs (or kept identifiers) may still carry a stored image
            existing = session.scalars(
                select(Series).where(Series.content_hash == item.sha256).order_by(Series.id)
            ).first()
        if existing is not None:
            same_content = existing.content_hash == item.sha256 or _equivalent(existing, item, root)
            moved = _filed_elsewhere(existing, pseudo, deid.date(c.patient_source_id, c.study_date))
            moved = moved or _other_phase(existing, c)
            if same_content and moved:  # a stored series is never refiled silently
                message = f"{c.source}: this image is already stored as series {existing.id} {moved}"
                (
                    report.skipped.append({"source": c.source, "reason": message})
                    if options.skip_invalid
                    else conflicts.append(message)
                )
            elif same_content:
                report.already_present.append(
                    {
                        "source": c.source,
                        "series_instance_uid": series_uid,
                        "series_id": existing.id,
                    }
                )
                report.patients.add(pseudo)
                report.studies.add(study_uid)
            else:
                message = (
                    f"{c.source}: series {series_uid} is already stored with different image "
                    f"content (stored {existing.content_hash[:12]}… of {existing.size_z} slices, "
                    f"new {item.sha256[:12]}… of {item.size[2]}); if its files are split over "
                    "several folders or zips, ingest them all at once (`lvt ingest PART1 PART2`); if the "
                    f"stored one is incomplete, remove it first (`lvt studies remove-series {existing.id}`)"
                )
                (
                    report.skipped.append({"source": c.source, "reason": message})
                    if options.skip_invalid
                    else conflicts.append(message)
                )
            continue
        patient = patients.get(pseudo) or session.scalar(
            select(Patient).where(Patient.pseudo_id == pseudo)
        )
        if patient is None:
            patient = Patient(pseudo_id=pseudo, identity_removed=deid.enabled,
                              dates_shifted=deid.enabled and deid.shift_dates)
            session.add(patient)
            report.patients_added += 1
        if pseudo not in patients and patient.dates_shifted is None and patient.id is not None:
            report.notes.append(  # stored before revision 0008: nothing to check the dates against
                f"patient {pseudo} was stored before LVT recorded its de-identification policy: its new "
                f"dates are {'shifted' if deid.enabled and deid.shift_dates else 'kept'} (today's "
                "LVT_DEID_SHIFT_DATES); if it was first ingested otherwise, the intervals are wrong")
        patients[pseudo] = patient
        if policy_clash := _other_policy(patient, deid):
            message = f"{c.source}: patient {pseudo} was ingested with {policy_clash}"
            (
                report.skipped.append({"source": c.source, "reason": message})
                if options.skip_invalid
                else conflicts.append(message)
            )
            continue
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        if study is not None and study.patient is not patient:
            message = (
                f"{c.source}: study {study_uid} already belongs to patient "
                f"{study.patient.pseudo_id}, not {pseudo}"
            )
            (
                report.skipped.append({"source": c.source, "reason": message})
                if options.skip_invalid
                else conflicts.append(message)
            )
            continue
        if study is None:
            study = Study(
                patient=patient,
                study_instance_uid=study_uid,
                study_date=deid.date(c.patient_source_id, c.study_date),
                accession=deid.accession(c.accession),
                description=None if deid.enabled else c.study_description,
            )
            session.add(study)
            report.studies_added += 1
        if options.dry_run:
            rel = storage.relative_path_for(item.sha256)
        elif item.staged is not None:
            rel, created = storage.publish(item.staged, item.sha256, root)
            item.staged = None
            if created:
                published.append(root / rel)
        else:  # the store already held this content when the series was read
            rel = storage.relative_path_for(item.sha256)
            if not storage.resolve(rel, root).exists():
                raise IngestError(f"{c.source}: store file {rel} disappeared during ingest; retry")
        series = Series(
            study=study,
            series_instance_uid=series_uid,
            phase=c.phase,
            modality=c.modality or "CT",
            # free text (PS3.15: removed): a technologist's "PV Doe Jane" reached SEG exports
            description=None if deid.enabled else c.series_description,
            spacing_x=item.spacing[0],
            spacing_y=item.spacing[1],
            spacing_z=item.spacing[2],
            size_x=item.size[0],
            size_y=item.size[1],
            size_z=item.size[2],
            slice_thickness=c.slice_thickness,
            image_path=rel,
            content_hash=item.sha256,
            source_format=c.source_format,
            warnings=c.warnings or None,
        )
        session.add(series)
        session.flush()
        report.patients.add(pseudo)
        report.studies.add(study_uid)
        report.added.append(
            {
                "source": c.source,
                "series_id": series.id,
                "patient": pseudo,
                "study_date": study.study_date.isoformat() if study.study_date else None,
                "series_instance_uid": series_uid,
                "phase": c.phase,
                "phase_reason": c.phase_reason,
                "size": list(item.size),
                "spacing_mm": list(item.spacing),
                "image_path": rel,
                "sha256": item.sha256,
            }
        )
        report.warnings.extend({"source": c.source, "warning": w} for w in c.warnings)
    return conflicts
