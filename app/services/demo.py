"""``lvt demo``: a synthetic follow-up cohort run through the real pipeline, end to end.

Steps, each idempotent (a second run adds nothing and takes seconds):

1. migrate the database and create the three demo users (:data:`DEMO_USERS`);
2. render the cohort with :func:`lvt_core.phantom.generate_cohort` as DICOM (skipped when
   that cohort's ``manifest.csv`` exists; the generator writes it last);
3. ingest the DICOM folders with :func:`app.services.ingest.ingest_paths` (de-identified
   like real data) and import the synthetic reader's ``measurements.csv`` with
   :func:`app.services.measurements.import_measurements`;
4. segment every series with the configured model through
   :func:`app.services.batch.run_batch`, which also refreshes tracks, volumetry and RECIST
   responses per patient.

Only when the model file does not exist does step 4 fall back, loudly, to importing the
phantom's ground-truth label maps through :func:`app.services.batch.import_label_map` as
the results of a model named ``phantom ground truth`` (so every page says what it shows).

The default size (2 patients × 3 studies × 2 phases = 12 "demo" phantom series: one
progressing, one responding) is sized for ≤ 5 minutes on two idle cores with the default
model: ~10 s of inference per series at the model's 2 mm, plus ~3 s to render each scan;
``--patients`` adds ~1.5 minutes per patient. ``size="tiny"`` is for tests.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select

from app.cli.common import UserError
from app.services import auth
from app.settings import get_settings
from db import storage
from db.engine import default_url, ensure_schema, session_scope
from db.models import Model, Segmentation, Series, Study

log = logging.getLogger(__name__)
T = TypeVar("T")

DEMO_USERS: dict[str, tuple[str, str]] = {
    "admin": ("admin", "lvt-admin-demo"),
    "clinician": ("clinician", "lvt-clinician-demo"),
    "researcher": ("researcher", "lvt-researcher-demo"),
}
"""role → (user name, password) of the demo accounts (printed by ``lvt demo``)."""

GROUND_TRUTH_MODEL = ("phantom ground truth", "demo")
"""(name, version) of the Model row that holds ground-truth label maps in the fallback."""
SIZES = ("tiny", "demo")

Progress = Callable[[str, int, int], None]
"""``progress(step, done, total)``; ``total`` 0 means unknown."""


@dataclass(frozen=True)
class DemoConfig:
    """How big the demo cohort is; the defaults are ready in ≤ 5 minutes on 2 cores."""

    patients: int = 2
    timepoints: int = 3
    phases: int = 2
    size: str = "demo"
    seed: int = 11  # a cohort with lesions the synthetic radiologist reports one study late
    model: Path | None = None
    """Checkpoint for the batch; None means the configured ``LVT_MODEL_PATH``."""


@dataclass
class DemoReport:
    """What ``lvt demo`` did, for the JSON output and the closing message."""

    patients: int = 0
    series_added: int = 0
    series_present: int = 0
    measurements_added: int = 0
    measurements_present: int = 0
    series_segmented: int = 0
    series_failed: int = 0
    patients_analysed: int = 0
    model: str = ""
    ground_truth: bool = False
    model_note: str = ""
    cohort_dir: str = ""
    users: dict[str, str] = field(default_factory=dict)
    users_kept: list[str] = field(default_factory=list)  # accounts that existed: not reset


def _quiet(_step: str, _done: int, _total: int) -> None:
    """Default progress callback: say nothing."""


def demo_dir() -> Path:
    """Where the demo writes its synthetic input files (``<var_dir>/demo``)."""
    return get_settings().var_dir / "demo"


def ensure_demo_users(session: Any) -> tuple[dict[str, str], list[str]]:
    """Create the demo accounts that are missing; return role → user name, and the names of
    existing accounts that no longer sign in with the demo's password and role (left alone)."""
    kept = []
    for role, (name, password) in DEMO_USERS.items():
        if auth.add_user_if_missing(session, name, role, password):
            continue
        user = auth.get_user(session, name)
        if user is None or not (user.active and user.role == role
                                and auth.verify_password(user.password_hash, password)):
            kept.append(name)  # changed since the demo made it (or never the demo's)
    return {role: name for role, (name, _pw) in DEMO_USERS.items()}, kept


def generate(cfg: DemoConfig, progress: Progress = _quiet) -> Path:
    """Render the phantom cohort of ``cfg`` as DICOM (once) and return its folder."""
    from lvt_core.phantom import CohortConfig, generate_cohort

    out = demo_dir() / f"cohort-{cfg.patients}x{cfg.timepoints}x{cfg.phases}-{cfg.size}-{cfg.seed}"
    if (out / "manifest.csv").is_file():
        return out
    step = "Rendering synthetic CT (phantom cohort, DICOM)"
    total = cfg.patients * cfg.timepoints * cfg.phases
    progress(step, 0, total)
    generate_cohort(
        out,
        CohortConfig(patients=cfg.patients, timepoints=cfg.timepoints, phases=cfg.phases,
                     seed=cfg.seed, size=cfg.size, dicom=True),
        progress=lambda done, n: progress(step, done, n),
        workers=os.cpu_count() or 1,  # patients render independently; the pool never exceeds them
    )
    return out


def _manifest(cohort: Path) -> list[dict[str, str]]:
    with (cohort / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _tracker(progress: Progress) -> Callable[..., Iterator[Any]]:
    """Adapt ``progress`` to the ingest service's ``track(items, description, total)``."""

    def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        n = total or 0
        step = f"Ingesting DICOM: {description.lower()}"
        progress(step, 0, n)
        for done, item in enumerate(items, start=1):
            yield item
            progress(step, done, n)

    return track


def build_demo(cfg: DemoConfig | None = None, progress: Progress = _quiet) -> DemoReport:
    """Build or refresh the demo cohort in the configured database (see the module docstring)."""
    from app.services.ingest import IngestOptions, ingest_paths
    from app.services.measurements import import_measurements

    cfg = cfg or DemoConfig()
    if cfg.size not in SIZES:
        raise UserError(f"unknown demo size {cfg.size!r}: choose one of {', '.join(SIZES)}")
    url = default_url()
    progress("Preparing database", 0, 1)
    ensure_schema(url)
    report = DemoReport()
    with session_scope(url) as session:
        report.users, report.users_kept = ensure_demo_users(session)
    progress("Preparing database", 1, 1)

    cohort = generate(cfg, progress)
    report.cohort_dir = str(cohort)
    rows = _manifest(cohort)
    dicom_dirs = [cohort / r["dicom_dir"] for r in rows]
    ingested = ingest_paths(dicom_dirs, IngestOptions(), url=url, track=_tracker(progress))
    report.series_added, report.series_present = len(ingested.added), len(ingested.already_present)

    progress("Importing radiologist measurements", 0, 1)
    imported = import_measurements(cohort / "measurements.csv", url=url)
    report.measurements_added, report.measurements_present = imported.added, imported.already_present
    progress("Importing radiologist measurements", 1, 1)

    checkpoint = Path(cfg.model) if cfg.model is not None else get_settings().model_path
    if checkpoint.is_file():
        _segment_with_model(checkpoint, url, report, progress)
    else:
        log.warning("model checkpoint %s not found: showing phantom ground truth", checkpoint)
        progress(f"MODEL NOT FOUND at {checkpoint}: using the phantom ground truth instead", 0, 0)
        _import_ground_truth(cohort, rows, url, report, progress)
    with session_scope(url) as session:
        from db.models import Patient

        report.patients = len(session.scalars(select(Patient.id)).all())
    return report


def _segment_with_model(checkpoint: Path, url: str, report: DemoReport, progress: Progress) -> None:
    """Batch inference over every series without a result of this model and this LVT version
    (none: quick), so the demo shows what the installed pipeline draws after an upgrade."""
    from app.services.batch import BatchOptions, run_batch

    step = f"Segmenting with {checkpoint.name} (model loaded once; analytics after the last series)"
    progress(step, 0, 0)
    planned = run_batch(BatchOptions(all=True, model=checkpoint, dry_run=True, outdated=True), url=url)
    if planned.series_total == 0:  # everything segmented already: no empty batch run is recorded
        report.model = f"{planned.model['name']} {planned.model['version']}"
        report.model_note = f"results of model {report.model} ({checkpoint}); nothing new to segment."
        progress(step, 0, 0)
        return
    summary = run_batch(
        BatchOptions(all=True, model=checkpoint, device="cpu", outdated=True),
        url=url,
        on_progress=lambda done, total, _result: progress(step, done, total),
    )
    progress(step, summary.series_total, summary.series_total)
    report.model = f"{summary.model['name']} {summary.model['version']}"
    report.series_segmented, report.series_failed = summary.done, summary.failed
    report.patients_analysed = summary.patients_refreshed
    report.model_note = (
        f"results of model {report.model} ({checkpoint}); "
        f"{summary.done} series segmented now, {summary.failed} failed."
    )
    if summary.failed:
        report.model_note += " See `lvt batch --all` for the errors."


def _ground_truth_model_id(url: str) -> int:
    name, version = GROUND_TRUTH_MODEL
    with session_scope(url) as session:
        model = session.scalar(select(Model).where(Model.name == name, Model.version == version))
        if model is None:
            model = Model(name=name, version=version, checksum="-", path=None)
            session.add(model)
            session.flush()
        return model.id


def _import_ground_truth(cohort: Path, rows: list[dict[str, str]], url: str, report: DemoReport,
                         progress: Progress) -> None:
    """Store each series' phantom label map as a result (the shared batch path), then refresh."""
    import SimpleITK as sitk

    from app.services.analytics import refresh_patient
    from app.services.batch import import_label_map
    from app.services.deid import Deidentifier

    model_id = _ground_truth_model_id(url)
    deid = Deidentifier.from_settings()
    truth_by_uid = {deid.uid(r["series_uid"]): cohort / r["labels"] for r in rows}
    with session_scope(url) as session:
        present = session.execute(
            select(Series.id, Series.series_instance_uid, Study.patient_id, Series.image_path)
            .join(Study, Study.id == Series.study_id)
            .outerjoin(Segmentation, (Segmentation.series_id == Series.id)
                       & (Segmentation.model_id == model_id) & (Segmentation.status == "done"))
            .where(Segmentation.id.is_(None), Series.series_instance_uid.in_(list(truth_by_uid)))
            .order_by(Series.id)
        ).all()
    step = "Importing ground-truth label maps (no model)"
    patients: set[int] = set()
    for i, (series_id, uid, patient_id, image_path) in enumerate(present):
        progress(step, i, len(present))
        labels = sitk.ReadImage(str(truth_by_uid[uid]))
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(storage.resolve(image_path)))
        reader.ReadImageInformation()  # header only: the ingested grid
        if tuple(reader.GetSize()) != labels.GetSize():
            raise UserError(f"{truth_by_uid[uid]}: ground truth grid {labels.GetSize()} differs "
                            f"from the ingested series {series_id} {reader.GetSize()}")
        labels.SetOrigin(reader.GetOrigin())  # same grid, DICOM rounding aside: adopt it exactly
        labels.SetSpacing(reader.GetSpacing())
        labels.SetDirection(reader.GetDirection())
        import_label_map(series_id, model_id, labels, url=url, refresh=False)
        patients.add(patient_id)
    progress(step, len(present), len(present))
    step = "Analysing patients (tracks, volumetry, RECIST)"
    for i, patient_id in enumerate(sorted(patients)):
        progress(step, i, len(patients))
        with session_scope(url) as session:
            refresh_patient(session, patient_id, model_id)
    progress(step, len(patients), len(patients))
    report.model, report.ground_truth = " ".join(GROUND_TRUTH_MODEL), True
    report.series_segmented, report.patients_analysed = len(present), len(patients)
    report.model_note = (
        f"MODEL NOT FOUND at {get_settings().model_path}: the pages show the phantom's "
        "GROUND-TRUTH label maps, labelled 'phantom ground truth', not model results. "
        "Train a model (`lvt train`) or set LVT_MODEL_PATH, then run `lvt demo` again."
    )
