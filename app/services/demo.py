"""``lvt demo``: a small synthetic follow-up cohort, ingested as DICOM and fully analysed.

Steps (each idempotent, so re-running refreshes instead of duplicating):
1. migrate the database and create the three demo users (:data:`DEMO_USERS`);
2. write synthetic CT series as DICOM (liver, one vessel tree, tumors that grow, shrink
   or appear) and ``lvt ingest`` them, de-identified like real data;
3. write a radiologist measurements CSV and import it (the reader measures a new lesion
   one study later than it first appears, which the app shows as an earlier detection);
4. record results: label maps per series (the shipped model through the batch service
   when it is available, else the phantom ground truth, said plainly), lesions, tracks,
   multi-phase volumetry and RECIST responses (model and radiologist).

The generator here is deliberately tiny and fast (seconds per patient on 2 cores): its
job is to exercise every page, not to train models (that is ``lvt phantom``).
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.services import auth
from app.services.ingest.service import IngestOptions, ingest_paths
from app.services.measurements import import_measurements
from app.settings import get_settings
from db import storage
from db.engine import default_url, ensure_schema, session_scope
from db.models import (
    Lesion,
    LesionTrack,
    LesionTrackMember,
    Measurement,
    Model,
    Patient,
    Response,
    Segmentation,
    Series,
    Study,
    VolumetryResult,
    utcnow,
)
from lvt_core.agreement import RadiologistMeasurement
from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.response import recist_from_measurements, recist_from_tracks
from lvt_core.tracking import TimepointInput, track_lesions
from lvt_core.volumetry import liver_volumes_ml, volumetry

log = logging.getLogger(__name__)

DEMO_USERS: dict[str, tuple[str, str]] = {
    "admin": ("admin", "lvt-admin-demo"),
    "clinician": ("clinician", "lvt-clinician-demo"),
    "researcher": ("researcher", "lvt-researcher-demo"),
}
"""role → (user name, password) of the demo accounts (printed by ``lvt demo``)."""

GROUND_TRUTH_MODEL = ("phantom ground truth", "demo")
PHASE_HU = {"portal": {"liver": 110, "vessel": 190, "tumor": 55}, "arterial": {"liver": 75, "vessel": 260, "tumor": 95}}
SIZES = {"tiny": (48, 48, 20, 3.0, 4.0), "demo": (112, 112, 40, 2.0, 3.0)}
"""size name → (nx, ny, nz, in-plane spacing mm, slice spacing mm)."""

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoConfig:
    """How big the demo cohort is; the defaults build in well under five minutes on 2 cores."""

    patients: int = 6
    timepoints: int = 3
    phases: int = 2
    size: str = "demo"
    seed: int = 7


@dataclass
class DemoReport:
    """What ``lvt demo`` did, for the JSON output and the closing message."""

    patients: int = 0
    series_added: int = 0
    series_present: int = 0
    measurements_added: int = 0
    patients_analysed: int = 0
    model: str = ""
    model_note: str = ""
    users: dict[str, str] = field(default_factory=dict)


def _quiet(_step: str, _done: int, _total: int) -> None:
    """Default progress callback: say nothing."""


# ---------------------------------------------------------------- synthetic cohort


@dataclass(frozen=True)
class _Tumor:
    centre: tuple[float, float, float]  # mm, in the image frame
    radii_mm: tuple[float, ...]  # one per timepoint, 0 = absent
    label: str


def _patient_plan(index: int, cfg: DemoConfig, rng: np.random.Generator) -> list[_Tumor]:
    """Two baseline tumors with a patient-specific course, plus one that appears later."""
    nx, ny, nz, sp, sz = SIZES[cfg.size]
    fx, fy, fz = nx * sp, ny * sp, nz * sz
    t = cfg.timepoints
    course = index % 3  # 0 growing, 1 shrinking, 2 stable
    factor = {0: 1.25, 1: 0.7, 2: 1.0}[course]
    tumors = [
        _Tumor(
            (fx * 0.42, fy * 0.42, fz * 0.5),
            tuple(float(rng.uniform(16, 20) * factor**k) for k in range(t)),
            "L1",
        ),
        _Tumor(
            (fx * 0.62, fy * 0.58, fz * 0.45),
            tuple(float(rng.uniform(12, 15) * factor**k) for k in range(t)),
            "L2",
        ),
    ]
    if t >= 2:
        appears = t - 2 if t > 2 else 1
        tumors.append(
            _Tumor(
                (fx * 0.5, fy * 0.68, fz * 0.6),
                tuple(0.0 if k < appears else 10.0 + 3.0 * (k - appears) for k in range(t)),
                "L3",
            )
        )
    return tumors


def _volumes(cfg: DemoConfig, tumors: list[_Tumor], t: int, phase: str, rng: np.random.Generator,
             shrink_liver: float) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(CT in HU as int16, labels as uint8, spacing) of one series, arrays in z, y, x order."""
    nx, ny, nz, sp, sz = SIZES[cfg.size]
    spacing = (sp, sp, sz)
    z, y, x = np.meshgrid(
        (np.arange(nz) + 0.5) * spacing[2], (np.arange(ny) + 0.5) * sp, (np.arange(nx) + 0.5) * sp,
        indexing="ij",
    )
    fx, fy, fz = nx * sp, ny * sp, nz * sz
    body = ((x - fx / 2) / (fx * 0.47)) ** 2 + ((y - fy / 2) / (fy * 0.40)) ** 2 <= 1.0
    liver_r = np.array([fx * 0.30, fy * 0.26, fz * 0.40]) * shrink_liver
    liver = (
        ((x - fx * 0.52) / liver_r[0]) ** 2
        + ((y - fy * 0.50) / liver_r[1]) ** 2
        + ((z - fz * 0.5) / liver_r[2]) ** 2
    ) <= 1.0
    vessel = liver & (((x - fx * 0.55) ** 2 + (y - fy * 0.48) ** 2) <= (sp * 2.2) ** 2)
    branch = liver & (np.abs(z - fz * 0.5) <= 6.0) & (np.abs(y - fy * 0.48) <= sp * 1.6) & (x > fx * 0.4)
    vessel |= branch
    labels = np.zeros(x.shape, np.uint8)
    labels[liver] = LIVER
    labels[vessel] = VESSEL
    for tumor in tumors:
        r = tumor.radii_mm[t] / 2.0
        if r <= 0:
            continue
        cx, cy, cz = tumor.centre
        ball = ((x - cx) ** 2 + (y - cy) ** 2 + ((z - cz) / 1.2) ** 2) <= r**2
        labels[ball & liver] = TUMOR
    hu = PHASE_HU[phase]
    ct = np.full(x.shape, -1000.0)
    ct[body] = -90.0
    ct[labels == LIVER] = hu["liver"]
    ct[labels == VESSEL] = hu["vessel"]
    ct[labels == TUMOR] = hu["tumor"]
    ct += rng.normal(0, 12, ct.shape)
    return np.clip(ct, -1024, 3000).astype(np.int16), labels, spacing


def _write_dicom(folder: Path, ct: np.ndarray, spacing: tuple[float, float, float], *, patient: str,
                 study_uid: str, date: dt.date, accession: str, phase: str, description: str) -> None:
    """One axial CT series, one file per slice (what a PACS export looks like)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, frame_uid = generate_uid(), generate_uid()
    for k in range(ct.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = f"Demo^{patient}", patient
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate = ds.SeriesDate = date.strftime("%Y%m%d")
        ds.AccessionNumber = accession
        ds.StudyDescription = "CT abdomen follow-up"
        ds.SeriesDescription = description
        ds.Modality = "CT"
        ds.SeriesNumber = 1 if phase == "portal" else 2
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k * spacing[2])]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = ct.shape[1], ct.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (ct[k].astype(np.int32) + 1024).astype(np.int16).tobytes()
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)


def _study_date(t: int) -> dt.date:
    return dt.date(2023, 1, 16) + dt.timedelta(days=91 * t)


def generate(out_dir: Path, cfg: DemoConfig, progress: Progress = _quiet) -> tuple[Path, Path]:
    """Write the DICOM cohort, ground-truth label maps and a measurements CSV under ``out_dir``.

    Returns (DICOM root, CSV path). Existing output with the same config is reused.
    """
    stamp = out_dir / f"cohort-{cfg.patients}x{cfg.timepoints}x{cfg.phases}-{cfg.size}-{cfg.seed}.done"
    dicom_root, truth_root, csv_path = out_dir / "dicom", out_dir / "truth", out_dir / "measurements.csv"
    if stamp.exists():
        return dicom_root, csv_path
    phases = ["portal", "arterial"][: max(1, min(cfg.phases, 2))]
    rows: list[dict[str, object]] = []
    total = cfg.patients * cfg.timepoints
    for p in range(cfg.patients):
        rng = np.random.default_rng(cfg.seed * 1000 + p)
        patient = f"DEMO{p + 1:03d}"
        tumors = _patient_plan(p, cfg, rng)
        for t in range(cfg.timepoints):
            progress("Writing synthetic DICOM", p * cfg.timepoints + t, total)
            study_uid, date = generate_uid(), _study_date(t)
            for phase in phases:
                # one patient's arterial liver is drawn 4 % smaller: the volumetry check flags it
                shrink = 0.985 if (phase == "arterial" and p == 1) else 1.0 + float(rng.uniform(-0.003, 0.003))
                ct, labels, spacing = _volumes(cfg, tumors, t, phase, rng, shrink)
                desc = f"{patient} t{t} {phase}"
                _write_dicom(dicom_root / patient / f"t{t}" / phase, ct, spacing, patient=patient,
                             study_uid=study_uid, date=date, accession=f"{patient}-{t}", phase=phase,
                             description=desc)
                truth = sitk.GetImageFromArray(labels)
                truth.SetSpacing(spacing)
                (truth_root).mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(truth, str(truth_root / f"{desc.replace(' ', '_')}.nii.gz"), True)
            for tumor in tumors:
                d = tumor.radii_mm[t]
                # the reader first reports the late-appearing lesion one study after it appears
                first = next(k for k, r in enumerate(tumor.radii_mm) if r > 0)
                if d <= 0 or (tumor.label == "L3" and t == first):
                    continue
                rows.append({
                    "patient_id": patient, "study_date": date.isoformat(), "lesion_label": tumor.label,
                    "longest_diameter_mm": round(d * float(rng.uniform(0.93, 1.07)), 1),
                    "location_x_mm": round(tumor.centre[0], 1), "location_y_mm": round(tumor.centre[1], 1),
                    "location_z_mm": round(tumor.centre[2], 1), "reader": "demo radiologist",
                })
    progress("Writing synthetic DICOM", total, total)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    stamp.write_text("ok\n")
    return dicom_root, csv_path


# ---------------------------------------------------------------- results


def _ground_truth_model(session: Session) -> Model:
    name, version = GROUND_TRUTH_MODEL
    model = session.scalar(select(Model).where(Model.name == name, Model.version == version))
    if model is None:
        model = Model(name=name, version=version, checksum="-", path=None)
        session.add(model)
        session.flush()
    return model


def record_patient_results(session: Session, patient: Patient, model: Model,
                           label_for: Callable[[Series], sitk.Image | None]) -> bool:
    """Store label maps, lesions, tracks, volumetry and responses of one patient.

    ``label_for`` gives a series' label map (input geometry). Returns False when the
    patient already has results of ``model`` (nothing is redone).
    """
    done = session.scalar(
        select(Segmentation.id)
        .join(Series, Series.id == Segmentation.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(Study.patient_id == patient.id, Segmentation.model_id == model.id)
        .limit(1)
    )
    if done is not None:
        return False
    studies = session.scalars(
        select(Study).where(Study.patient_id == patient.id).order_by(Study.study_date, Study.id)
    ).all()
    timepoints: list[TimepointInput] = []
    tracked: list[tuple[Study, Segmentation]] = []
    for study in studies:
        per_phase: list[tuple[Series, sitk.Image, Segmentation]] = []
        for series in study.series:
            labels = label_for(series)
            if labels is None:
                continue
            rel, sha = storage.store_image(labels)
            seg = session.scalar(
                select(Segmentation).where(Segmentation.series_id == series.id, Segmentation.model_id == model.id)
            ) or Segmentation(series_id=series.id, model_id=model.id)
            seg.status, seg.label_map_path, seg.label_map_hash = "done", rel, sha
            seg.finished_at = utcnow()
            session.add(seg)
            session.flush()
            per_phase.append((series, labels, seg))
        if not per_phase:
            continue
        main = next((x for x in per_phase if x[0].phase == "portal"), per_phase[0])
        image = sitk.ReadImage(str(storage.resolve(main[0].image_path)))
        timepoints.append(TimepointInput.from_labels(main[1], image, study.study_date))
        tracked.append((study, main[2]))
        if len(per_phase) >= 2:
            vol = volumetry([x[1] for x in per_phase], names=[x[0].phase for x in per_phase])
            for (series, labels, _seg), dev, flag in zip(per_phase, vol.deviation_pct, vol.flags, strict=True):
                total, functional = liver_volumes_ml(labels)
                session.add(VolumetryResult(study_id=study.id, series_id=series.id, model_id=model.id,
                                            total_ml=total, functional_ml=functional,
                                            deviation_pct=dev, flagged=bool(flag)))
    if not timepoints:
        return False
    result = track_lesions(timepoints)
    lesion_rows: dict[tuple[int, int], Lesion] = {}
    for t, (tp, (_study, seg)) in enumerate(zip(timepoints, tracked, strict=True)):
        for les in tp.lesions:
            row = Lesion(segmentation_id=seg.id, lesion_index=les.id, voxels=les.voxels,
                         volume_ml=les.volume_ml, longest_axial_diameter_mm=les.longest_axial_diameter_mm,
                         short_axis_mm=les.short_axis_mm, centroid_x=les.centroid_mm[0],
                         centroid_y=les.centroid_mm[1], centroid_z=les.centroid_mm[2],
                         bbox=list(les.bbox_index), mean_hu=les.mean_hu)
            session.add(row)
            lesion_rows[(t, les.id)] = row
    session.flush()
    for track in result.tracks:
        row = LesionTrack(patient_id=patient.id, model_id=model.id, track_number=track.track_id,
                          status=track.status)
        session.add(row)
        session.flush()
        for t, lid in track.members:
            session.add(LesionTrackMember(track_id=row.id, lesion_id=lesion_rows[(t, lid)].id,
                                          study_id=tracked[t][0].id))
    _record_responses(session, patient, tracked, recist_from_tracks(result)["recist"], "model")
    measured = [
        RadiologistMeasurement(patient.pseudo_id, str(m.study_id), date, m.longest_diameter_mm,
                               lesion=m.lesion_label)
        for m, date in _measurements(session, patient)
    ]
    if measured:
        rad = recist_from_measurements(measured)
        by_id = {str(s.id): s for s in studies}
        for study_key, assessment in zip(rad["studies"], rad["recist"], strict=True):
            _add_response(session, patient, by_id[study_key], assessment, "radiologist", by_id[rad["studies"][0]])
    return True


def _measurements(session: Session, patient: Patient) -> list[tuple[Measurement, dt.date | None]]:
    rows = session.execute(
        select(Measurement, Study.study_date).join(Study, Study.id == Measurement.study_id)
        .where(Measurement.patient_id == patient.id)
    ).all()
    return [(m, date) for m, date in rows]


def _record_responses(session: Session, patient: Patient, tracked: list[tuple[Study, Segmentation]],
                      assessments: list[dict[str, object]], source: str) -> None:
    for (study, _seg), a in zip(tracked, assessments, strict=True):
        _add_response(session, patient, study, a, source, tracked[0][0])


def _add_response(session: Session, patient: Patient, study: Study, a: dict[str, object], source: str,
                  baseline: Study) -> None:
    category = str(a["response"])
    if category not in ("CR", "PR", "SD", "PD", "NE"):
        return  # the baseline ("BL") is the reference, not an assessment
    session.add(Response(patient_id=patient.id, study_id=study.id, source=source, recist_category=category,
                         sum_diameters_mm=float(a["value"]), baseline_study_id=baseline.id))  # type: ignore[arg-type]


# ---------------------------------------------------------------- the whole demo


def _analyse(url: str, patient_id: int, model_id: int,
             label_for: Callable[[Series], sitk.Image | None]) -> bool:
    """Store a patient's label maps through the batch service and let analytics refresh it.

    Falls back to :func:`record_patient_results` where those services are not installed.
    Returns False when the patient already has results of the model.
    """
    try:
        from app.services.analytics import refresh_patient
        from app.services.batch import import_label_map
    except ImportError:
        with session_scope(url) as session:
            patient, model = session.get(Patient, patient_id), session.get(Model, model_id)
            return record_patient_results(session, patient, model, label_for)  # type: ignore[arg-type]
    with session_scope(url) as session:
        series = session.scalars(
            select(Series).join(Study, Study.id == Series.study_id).where(Study.patient_id == patient_id)
        ).all()
        done = set(session.scalars(
            select(Segmentation.series_id).where(Segmentation.model_id == model_id,
                                                 Segmentation.series_id.in_([s.id for s in series]))
        ))
        todo = [(s.id, label_for(s)) for s in series if s.id not in done]
    todo = [(sid, labels) for sid, labels in todo if labels is not None]
    if not todo:
        return False
    for series_id, labels in todo:
        import_label_map(series_id, model_id, labels, url=url, refresh=False)
    with session_scope(url) as session:
        refresh_patient(session, patient_id, model_id)
    return True


def demo_dir() -> Path:
    """Where the demo writes its synthetic input files (``<var_dir>/demo``)."""
    return get_settings().var_dir / "demo"


def ensure_demo_users(session: Session) -> dict[str, str]:
    """Create or reset the demo accounts; return role → user name."""
    for role, (name, password) in DEMO_USERS.items():
        auth.ensure_user(session, name, role, password)
    return {role: name for role, (name, _pw) in DEMO_USERS.items()}


def build_demo(cfg: DemoConfig | None = None, progress: Progress = _quiet) -> DemoReport:
    """Build or refresh the demo cohort in the configured database (see the module docstring)."""
    cfg = cfg or DemoConfig()
    if cfg.size not in SIZES:
        from app.cli.common import UserError

        raise UserError(f"unknown demo size {cfg.size!r}: choose one of {', '.join(SIZES)}")
    url = default_url()
    progress("Preparing database", 0, 1)
    ensure_schema(url)
    report = DemoReport()
    with session_scope(url) as session:
        report.users = ensure_demo_users(session)
    progress("Preparing database", 1, 1)
    dicom_root, csv_path = generate(demo_dir(), cfg, progress)

    def ingest_track(items, description, total=None):  # type: ignore[no-untyped-def]
        for i, item in enumerate(items):
            progress(description, i, total or 0)
            yield item
        progress(description, total or 0, total or 0)

    ingested = ingest_paths([dicom_root], IngestOptions(), url=url, track=ingest_track)
    report.series_added, report.series_present = len(ingested.added), len(ingested.already_present)
    progress("Importing radiologist measurements", 0, 1)
    imported = import_measurements(csv_path, url=url)
    report.measurements_added = int(getattr(imported, "added", 0) or 0)
    progress("Importing radiologist measurements", 1, 1)
    shipped = get_settings().model_path
    report.model = " ".join(GROUND_TRUTH_MODEL)
    report.model_note = (
        f"shipped model not found at {shipped}: the demo shows the phantom's ground-truth label "
        "maps as results. Train it (`lvt train`) or set LVT_MODEL_PATH, then run `lvt batch`."
        if not shipped.exists()
        else "results show the phantom's ground truth; run `lvt batch` to add the shipped model's."
    )
    truth_root = demo_dir() / "truth"
    with session_scope(url) as session:
        model = _ground_truth_model(session)
        patients = session.scalars(select(Patient).order_by(Patient.id)).all()
        report.patients = len(patients)

        def label_for(series: Series) -> sitk.Image | None:
            path = truth_root / f"{(series.description or '').replace(' ', '_')}.nii.gz"
            if not path.exists():
                return None
            truth = sitk.ReadImage(str(path))
            image = sitk.ReadImage(str(storage.resolve(series.image_path)))
            truth.CopyInformation(image)  # same grid: adopt the ingested geometry exactly
            return truth

        model_id, patient_ids = model.id, [p.id for p in patients]
    step = "Analysing patients (lesions, tracks, volumetry, RECIST)"
    for i, patient_id in enumerate(patient_ids):
        progress(step, i, len(patient_ids))
        report.patients_analysed += int(_analyse(url, patient_id, model_id, label_for))
    progress(step, len(patient_ids), len(patient_ids))
    return report
