"""Exports: cohort tables (CSV/Parquet), DICOM SEG of one series, 3D meshes of one study, a
follow-up report."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pydicom
import SimpleITK as sitk
from sqlalchemy import select

from app.cli.common import (
    UserError,
    check_only_files_of_this_export,
    check_output_file,
    check_output_folder,
)
from app.services.patient_lookup import require_patient
from db import storage
from db.engine import default_url, make_session_factory
from db.models import Model, Patient, Segmentation, Series, Study
from lvt_core.atomic_files import replaced_on_success, write_bytes_atomically, write_text_atomically
from lvt_core.dicom_series import Deidentification

FORMATS = ("csv", "parquet")


def export_cohort(
    out: Path, fmt: str = "csv", filters: dict[str, Any] | None = None, url: str | None = None
) -> dict[str, Any]:
    """Write one file per table of :func:`app.services.analytics.cohort_tables` into ``out``."""
    from app.services.analytics import cohort_tables

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    check_output_folder(out)
    tables = cohort_tables(filters, url=url)
    check_only_files_of_this_export(out, {f"{name}.{fmt}" for name in tables})
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    written = {}
    for name, frame in tables.items():
        path = out / f"{name}.{fmt}"
        with replaced_on_success(path) as tmp:
            if fmt == "csv":
                frame.to_csv(tmp, index=False)
            else:
                frame.to_parquet(tmp, index=False)
        written[name] = {"path": str(path), "rows": len(frame)}
    return {"out": str(out), "format": fmt, "tables": written}


def _segmentation(session: Any, series_id: int, model_id: int | None) -> tuple[Segmentation, Model]:
    stmt = (
        select(Segmentation, Model)
        .join(Model, Model.id == Segmentation.model_id)
        .where(Segmentation.series_id == series_id, Segmentation.status == "done")
        .order_by(Segmentation.finished_at.desc(), Segmentation.id.desc())
    )
    if model_id is not None:
        stmt = stmt.where(Segmentation.model_id == model_id)
    row = session.execute(stmt).first()
    if row is None:
        raise UserError(f"series {series_id} has no finished segmentation; run `lvt batch` first")
    return row[0], row[1]


def export_seg(
    series_id: int, out: Path, ct_dir: Path | None = None, model_id: int | None = None,
    url: str | None = None, data_root: Path | None = None, validate: bool = True,
) -> dict[str, Any]:
    """Write the DICOM SEG of a series' segmentation (and the CT series it references).

    Validation reads the file back with pydicom and highdicom, checks every frame against the
    label map in world space, and runs ``dciodvfy`` when installed.
    """
    from app.services import dicom_seg

    root = data_root or storage.data_dir()
    check_output_file(out)
    with make_session_factory(url or default_url())() as session:
        series = session.get(Series, series_id)
        if series is None:
            raise UserError(f"series {series_id} is not in the store (see `lvt studies list`)")
        study = session.get(Study, series.study_id)
        assert study is not None
        patient = session.get(Patient, study.patient_id)
        assert patient is not None
        seg, model = _segmentation(session, series_id, model_id)
        image = storage.read_stored(series.image_path, root)
        labels = storage.read_stored(seg.label_map_path or "", root)
        info = (patient.pseudo_id, study.study_instance_uid, series.series_instance_uid,
                study.study_date, series.description, series.source_format)
        deidentification = None if patient.identity_removed is None else Deidentification(
            patient.identity_removed, bool(patient.dates_shifted))
        drawn = (seg.label_map_hash or "", seg.lvt_version)
    if labels.GetSize() != image.GetSize() or labels.GetDirection() != image.GetDirection():
        labels = sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    ct_dir = ct_dir or out.with_name(out.name.removesuffix(".dcm") + "_ct")
    _clear_earlier_export(ct_dir, dicom_seg.exported_series_uid(info[2]))
    paths = dicom_seg.write_source_series(image, ct_dir, *info[:5], deidentification=deidentification)
    sources = [pydicom.dcmread(str(p)) for p in paths]
    try:
        segmentation = dicom_seg.build_segmentation(labels, sources, model.name, model.version, *drawn)
    except ValueError as exc:
        raise UserError(f"series {series_id}: {exc}") from None
    if deidentification is not None:
        deidentification.apply(segmentation)
    report: dict[str, Any] = {
        "series_id": series_id, "seg": str(out), "ct_dir": str(ct_dir), "ct_slices": len(paths),
        "model": {"name": model.name, "version": model.version}, "lvt_version": drawn[1],
        "source_format": info[5], "frames": int(segmentation.NumberOfFrames),
        "segments": [s.SegmentLabel for s in segmentation.SegmentSequence],
    }
    with replaced_on_success(out) as tmp:  # a SEG that fails validation is not left behind
        segmentation.save_as(tmp)
        if validate:
            report["validation"] = dicom_seg.validated(tmp, labels, out, ct_slice=paths[0])
    return report


def _clear_earlier_export(ct_dir: Path, series_uid: str) -> None:
    """Let the CT folder hold only this export: an earlier export of the same series is
    replaced; any other file is refused (another patient's slice stayed in the series)."""
    if ct_dir.exists() and not ct_dir.is_dir():
        raise UserError(f"{ct_dir}: is a file; the referenced CT series needs a folder")
    files = sorted(ct_dir.iterdir()) if ct_dir.is_dir() else []
    for path in files:
        ours = path.suffix == ".dcm" and path.is_file() and \
            pydicom.dcmread(str(path), stop_before_pixels=True, force=True).get("SeriesInstanceUID") == series_uid
        if not ours:
            raise UserError(f"{ct_dir}: holds {path.name}, which is not this series' earlier export; "
                            "give an empty --ct-dir or remove its files")
    for path in files:
        path.unlink()


def find_study(session: Any, patient: str, study: str) -> Study:
    """A patient's study by id, StudyInstanceUID or date (YYYY-MM-DD); names what is wrong."""
    row = require_patient(session, patient)
    stmt = select(Study).where(Study.patient_id == row.id)
    if study.isdigit():
        stmt = stmt.where(Study.id == int(study))
    else:
        try:
            stmt = stmt.where(Study.study_date == dt.date.fromisoformat(study))
        except ValueError:
            stmt = stmt.where(Study.study_instance_uid == study)
    found = session.scalars(stmt).all()
    if len(found) != 1:
        what = "no study" if not found else f"{len(found)} studies"
        stored = session.scalars(select(Study).where(Study.patient_id == row.id).order_by(Study.study_date))
        listed = ", ".join(f"{s.study_date} (id {s.id})" for s in stored) or "none"
        raise UserError(f"{what} of patient {row.pseudo_id} match {study!r}; its studies: {listed} "
                        "(stored dates are shifted when de-identified; give a study id)")
    return found[0]


def export_mesh(
    patient: str, study: str, out: Path, formats: tuple[str, ...] = ("stl", "obj", "vtp", "glb"),
    model_id: int | None = None, url: str | None = None, data_root: Path | None = None,
) -> dict[str, Any]:
    """Write the liver, vessel and per-tumor meshes of a study (cached) into ``out``."""
    from app.services.analytics import scene_for_study
    from lvt_core.scene import export_scene, scene_file_names

    check_output_folder(out)
    with make_session_factory(url or default_url())() as session:
        found = find_study(session, patient, study)
        study_id, pseudo_id, date = found.id, found.patient.pseudo_id, found.study_date
    meshes = scene_for_study(study_id, model_id=model_id, url=url, data_root=data_root)
    if not meshes.items():  # before the folder is made: a failed export leaves nothing behind
        raise UserError(f"study {study_id} ({date}) of patient {pseudo_id}: the segmentation of its tracked "
                        "phase holds no liver, vessels or tumors, so there is no 3D scene to export "
                        f"(`lvt studies list {pseudo_id}` lists its series)")
    check_only_files_of_this_export(out, scene_file_names([name for name, _ in meshes.items()], formats))
    try:
        paths = export_scene(meshes, out, formats)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return {"study_id": study_id, "out": str(out), "files": [str(p) for p in paths],
            "structures": [name for name, _ in meshes.items()]}


def _file_in_latest_study(pdf: bytes, patient: Patient, studies: list[Any], out: Path,
                          now: dt.datetime) -> dict[str, Any]:
    """Write ``pdf`` to ``out`` as a DICOM Encapsulated PDF in the patient's latest study (by
    date; an undated one only when none has a date), checked by ``dciodvfy``; what it says."""
    from app.services import dicom_seg, report_dicom

    latest = max(studies, key=lambda s: (s.study_date is not None, s.study_date or dt.date.min, s.id))
    deidentification = None if patient.identity_removed is None else Deidentification(
        patient.identity_removed, bool(patient.dates_shifted))
    document = report_dicom.encapsulated_pdf(pdf, report_dicom.ReportStudy(
        patient.pseudo_id, latest.study_instance_uid, latest.study_date, latest.accession, deidentification), now)
    with replaced_on_success(out) as tmp:  # a document the validator faults is not left behind
        document.save_as(tmp, enforce_file_format=True)
        validation = dicom_seg.dciodvfy(tmp)
        if errors := validation.get("errors"):
            raise UserError(f"{out}: dciodvfy found {len(errors)} error(s), no report written (first: {errors[0]})")
    return {"study_uid": latest.study_instance_uid,
            "study_date": latest.study_date.isoformat() if latest.study_date else None,
            "sop_instance_uid": str(document.SOPInstanceUID), "dciodvfy": validation}


REPORT_FORMATS = {".pdf": "pdf", ".dcm": "dicom"}
"""Report formats chosen by the output's suffix; any other name gets the HTML file."""


def export_report(patient: str, out: Path, min_diameter_mm: float | None = None, actor: str = "cli",
                  url: str | None = None) -> dict[str, Any]:
    """Write the follow-up report the page downloads (:mod:`app.web.report`) for ``patient``
    into ``out``: a PDF/A document when its name ends in ``.pdf``, that PDF as a DICOM
    Encapsulated PDF in the patient's latest study for ``.dcm`` (checked by ``dciodvfy`` when
    installed; one it faults is not written), an HTML file otherwise. A report leaves the
    store, so it is audited. Tracks whose largest diameter stays under ``min_diameter_mm``
    (default the page's, ``LVT_DISPLAY_MIN_LESION_MM``) are left out, as the page leaves them out."""
    from app.services import audit
    from app.settings import get_settings
    from app.web import analysis, key_images, queries, report, report_pdf, report_scene

    check_output_file(out)
    file_format = REPORT_FORMATS.get(out.suffix.lower(), "html")
    if file_format != "html" and (reason := report_pdf.unavailable_reason()) is not None:
        raise UserError(f"{out}: {reason}")  # before any work
    settings = get_settings()
    floor = settings.display_min_lesion_mm if min_diameter_mm is None else min_diameter_mm
    now = dt.datetime.now(dt.UTC)
    summary: dict[str, Any] = {}
    with make_session_factory(url or default_url())() as session:
        found = require_patient(session, patient)
        pseudo_id = found.pseudo_id
        info = queries.followup(session, pseudo_id)
        assert info is not None  # the patient was just found
        model_label = queries.model_label(session, info.model_id)
        shown = analysis.tracks_at_least(info.lesions, floor)
        badges = analysis.earlier_badges(pseudo_id, info.lesions, info.measurements, shown)
        pictures = key_images.key_images(info, shown, settings.resolved_data_dir)
        scene = report_scene.latest_scene(info, settings.resolved_data_dir)
        html = report.followup_report(info, shown, analysis.earlier_lines(badges, info.lesions), model_label,
                                      actor, floor, now=now, pictures=pictures, scene=scene)
        if file_format == "html":
            write_text_atomically(out, html)
        elif file_format == "pdf":
            write_bytes_atomically(out, report_pdf.report_pdf(html))
        else:
            summary = _file_in_latest_study(report_pdf.report_pdf(html), found, info.studies, out, now)
        audit.record(session, audit.DOWNLOAD_REPORT, actor=actor, target=pseudo_id,
                     detail={"file": str(out), "format": file_format})
        session.commit()
    return {"patient": pseudo_id, "out": str(out), "tracks": int(shown["track"].nunique()) if not shown.empty else 0,
            "responses": len(info.responses), "key_images": len(pictures.images),
            "not_pictured": pictures.unreadable, "scene_not_drawn": scene.not_drawn if scene else "nothing segmented",
            "format": file_format, "results": model_label, **summary}
