"""``lvt batch``: segment every series that has no current segmentation for a model.

Work is spread with Dask (in-process for one worker, a ``LocalCluster`` for several, or an
existing cluster with ``scheduler``); workers only read images and write content-addressed
label maps (:mod:`app.services.batch_worker`). This client alone writes rows, one short
transaction per finished series, so:

- a batch killed at any moment (``kill -9`` included) resumes by simply running again: a
  segmentation is ``done`` only in the transaction that also stores its lesions and volumes,
  and only after its label map file was atomically published; unfinished rows are redone;
- the unique (series, model) segmentation row and in-place lesion updates mean no duplicate
  rows, and lesion ids survive a ``--force`` re-run that finds the same lesions (so clinician
  overrides that point at them are kept);
- a failing series is stored as ``failed`` with its error and the batch goes on.

A task is one day (the studies of a patient's date, :mod:`app.services.timepoints`): the
phases of a day pending in this run are segmented together, so the checkpoint's cross-phase
rule (:mod:`lvt_core.cross_phase`) can read them side by side. After the series, tracks,
volumetry and responses are refreshed per touched patient
(:func:`app.services.analytics.refresh_patient`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from app.cli.common import UserError, open_current_store
from app.services.batch_worker import measure_labels, segment_day
from app.services.patient_lookup import require_patient
from app.services.timepoints import DayKey, day_key
from db import storage
from db.engine import acquire_lock, default_url, ensure_schema, make_session_factory
from db.models import (
    AuditEvent,
    BatchJob,
    BatchRun,
    Lesion,
    Model,
    Segmentation,
    Series,
    Study,
    TrackOverride,
    VolumetryResult,
    utcnow,
)
from lvt_core import __version__ as lvt_version

log = logging.getLogger(__name__)
ProgressFn = Callable[[int, int, dict[str, Any]], None]
THROTTLE_ENV = "LVT_BATCH_THROTTLE_S"
"""Seconds each task sleeps after its work (crash tests and demos only)."""


@dataclass
class BatchOptions:
    """Choices of one batch run (mirrors the CLI flags)."""

    patients: list[str] = field(default_factory=list)
    all: bool = False
    model: Path | None = None
    workers: int = 1
    scheduler: str | None = None
    force: bool = False
    dry_run: bool = False
    run_id: int | None = None
    device: str = "auto"
    refresh: bool = False  # also refresh the analytics of every selected patient with results
    outdated: bool = False  # also redo segmentations another LVT version's pipeline drew


@dataclass
class BatchSummary:
    """What a batch did (the ``--json`` document)."""

    run_id: int | None
    model: dict[str, Any]
    dry_run: bool
    series_total: int
    done: int = 0
    failed: int = 0
    runtime_s: float = 0.0
    studies_per_hour: float | None = None
    series_per_hour: float | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    patients_refreshed: int = 0
    analytics_errors: list[dict[str, Any]] = field(default_factory=list)
    analytics_warnings: list[dict[str, Any]] = field(default_factory=list)
    series: list[int] = field(default_factory=list)
    engine: str = "in-process"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- model and series selection -------------------------------------------------------------


def resolve_checkpoint(model: Path | None) -> Path:
    """The checkpoint to use: ``model`` or ``LVT_MODEL_PATH`` (the shipped model)."""
    from app.settings import get_settings

    path = Path(model) if model is not None else get_settings().model_path
    if not path.is_file():
        raise UserError(
            f"{path}: model checkpoint not found; pass --model PATH.pt or set LVT_MODEL_PATH "
            "(train one with `lvt train CONFIG`)"
        )
    return path.resolve()


def register_model(session: Session, checkpoint: Path) -> Model:
    """The Model row of ``checkpoint`` (created on first use; name+version+checksum)."""
    from lvt_core.checkpoint import CheckpointError, checkpoint_checksum, load_checkpoint

    try:
        _, meta = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None
    checksum = checkpoint_checksum(checkpoint)
    name, version = str(meta["name"]), str(meta["version"])
    row = session.scalar(select(Model).where(Model.name == name, Model.version == version))
    if row is None:
        row = Model(name=name, version=version, checksum=checksum, path=str(checkpoint))
        session.add(row)
        session.flush()
    elif row.checksum != checksum:
        raise UserError(
            f"{checkpoint}: model {name} {version} is already registered with a different "
            f"checksum ({row.checksum[:12]}… vs {checksum[:12]}…); give the new checkpoint a "
            "new version"
        )
    return row


def resolve_patients(session: Session, ids: Iterable[str]) -> tuple[list[int], list[str]]:
    """Patient row ids and pseudonyms for the ids a user typed (pseudonyms or source ids).

    A run's params record the pseudonyms: a typed source id is an identifier the store
    must not keep.
    """
    patients = [require_patient(session, pid) for pid in ids]
    return [p.id for p in patients], [p.pseudo_id for p in patients]


def current_series(model_id: int, outdated: bool = False) -> Select[tuple[int]]:
    """Series with a ``done`` segmentation by the model; with ``outdated``, only those this
    LVT version's pipeline drew and no correction made stale (the others, and those from
    before versions were recorded, count as not done)."""
    stmt = select(Segmentation.series_id).where(
        Segmentation.model_id == model_id, Segmentation.status == "done"
    )
    if not outdated:
        return stmt
    return stmt.where(Segmentation.lvt_version == lvt_version, Segmentation.redraw_reason.is_(None))


def pending_series(
    session: Session, model_id: int, patient_ids: list[int] | None, force: bool = False,
    outdated: bool = False,
) -> list[int]:
    """Series without a current segmentation for the model (all of them with ``force``), less
    those another live run has claimed: two batches at once segmented every series twice."""
    stmt = select(Series.id).join(Study, Study.id == Series.study_id)
    if patient_ids is not None:
        stmt = stmt.where(Study.patient_id.in_(patient_ids))
    if not force:
        stmt = stmt.where(Series.id.not_in(current_series(model_id, outdated)))
    stmt = stmt.where(Series.id.not_in(claimed_series(model_id)))
    stmt = stmt.order_by(Study.patient_id, Study.study_date, Series.id)
    return [int(v) for v in session.scalars(stmt)]


UNSTARTED_RUN_CLAIM = dt.timedelta(minutes=10)
"""How long a run the app created keeps its series while its process starts."""


def claimed_series(model_id: int, now: dt.datetime | None = None) -> Select[tuple[int]]:
    """Series with an unfinished job in a run of the model that is running, or was created by
    the app moments ago and is starting (a run whose client died is failed first, by
    :func:`close_stale_runs`)."""
    return _claimed_by_any_model(now or utcnow()).where(BatchRun.model_id == model_id)


def run_segmenting(session: Session, series_id: int) -> int | None:
    """The run that is segmenting ``series_id`` now (any model; a run whose client process on
    this host is gone does not count), else ``None``."""
    claimed = _claimed_by_any_model(utcnow()).where(BatchJob.series_id == series_id)
    runs = session.scalars(select(BatchRun).where(BatchRun.id.in_(claimed.with_only_columns(BatchJob.run_id))))
    return next((run.id for run in runs if not _client_gone(run)), None)


def _claimed_by_any_model(now: dt.datetime) -> Select[tuple[int]]:
    recent = now - UNSTARTED_RUN_CLAIM
    live = (BatchRun.status == "running") | ((BatchRun.status == "pending") & (BatchRun.created_at >= recent))
    return (select(BatchJob.series_id).join(BatchRun, BatchRun.id == BatchJob.run_id)
            .where(live, BatchJob.status.in_(("pending", "running"))))


def _client_gone(run: BatchRun) -> bool:
    """Whether the run's client process ran on this host and has ended (killed, crashed)."""
    params = run.params or {}
    pid = params.get("pid")
    return pid is not None and params.get("host") == socket.gethostname() and not storage.process_alive(int(pid))


def patients_with_results(
    session: Session, model_id: int, patient_ids: list[int] | None
) -> list[int]:
    """Patients (of ``patient_ids``, or all) with a ``done`` segmentation by the model."""
    stmt = (select(Study.patient_id).join(Series, Series.study_id == Study.id)
            .join(Segmentation, Segmentation.series_id == Series.id)
            .where(Segmentation.model_id == model_id, Segmentation.status == "done").distinct())
    if patient_ids is not None:
        stmt = stmt.where(Study.patient_id.in_(patient_ids))
    return sorted(int(v) for v in session.scalars(stmt))


# -- runs -----------------------------------------------------------------------------------


def close_stale_runs(session: Session) -> set[int]:
    """Mark runs whose client process on this host is gone as failed; return the patients whose
    series such a run finished: the killed client never reached their analytics (tracks,
    volumetry, responses), so the next run refreshes them."""
    unrefreshed: set[int] = set()
    for run in session.scalars(select(BatchRun).where(BatchRun.status.in_(("pending", "running")))):
        if not _client_gone(run):
            continue
        run.status = "failed"
        run.error = f"interrupted: client process {(run.params or {}).get('pid')} is no longer running"
        run.finished_at = utcnow()
        for job in run.jobs:
            if job.status in ("pending", "running"):
                job.status = "cancelled"
        finished = [job.series_id for job in run.jobs if job.status == "done"]
        if finished:
            unrefreshed.update(session.scalars(
                select(Study.patient_id).join(Series, Series.study_id == Study.id).where(Series.id.in_(finished))))
    return unrefreshed


def create_run(
    session: Session, model_id: int, series_ids: list[int], params: dict[str, Any]
) -> BatchRun:
    """A pending run with one pending job per series."""
    run = BatchRun(model_id=model_id, status="pending", params=params)
    session.add(run)
    session.flush()
    session.add_all(BatchJob(run_id=run.id, series_id=sid, status="pending") for sid in series_ids)
    session.flush()
    return run


def _segmentation_row(session: Session, series_id: int, model_id: int) -> Segmentation:
    seg = session.scalar(
        select(Segmentation).where(
            Segmentation.series_id == series_id, Segmentation.model_id == model_id
        )
    )
    if seg is None:
        seg = Segmentation(series_id=series_id, model_id=model_id)
        session.add(seg)
    return seg


# -- storing results ------------------------------------------------------------------------


def store_result(
    session: Session,
    series_id: int,
    model_id: int,
    result: dict[str, Any],
    data_root: Path,
    job: BatchJob | None = None,
) -> Segmentation:
    """Write one worker result (label map already published) as rows; caller commits."""
    seg = _segmentation_row(session, series_id, model_id)
    seg.finished_at = utcnow()
    seg.runtime_s = result.get("runtime_s")
    error = result.get("error")
    rel = result.get("label_map_path")
    if error is None and (not rel or not storage.resolve(rel, data_root).is_file()):
        error = f"label map {rel} is missing from the store"
    if job is not None:
        job.attempts = (job.attempts or 0) + 1
        job.finished_at = seg.finished_at
    if error is not None:
        seg.status, seg.error = "failed", str(error)
        if job is not None:
            job.status, job.error = "failed", str(error)
        # a redo that failed leaves no earlier result behind: its lesions and liver volume
        # would still feed the tracks, the exports and the study's phase deviation
        seg.label_map_path = seg.label_map_hash = seg.fluid_places = None
        session.flush()
        _store_lesions(session, seg.id, [])
        session.execute(delete(VolumetryResult).where(
            VolumetryResult.series_id == series_id, VolumetryResult.model_id == model_id))
        session.flush()
        return seg
    seg.status, seg.error = "done", None
    seg.label_map_path, seg.label_map_hash = rel, result["label_map_hash"]
    seg.precision = result.get("precision")
    seg.lvt_version = result.get("lvt_version")
    seg.fluid_places = result.get("fluid_places")
    seg.redraw_reason = None
    session.flush()
    _store_lesions(session, seg.id, result["lesions"])
    series = session.get(Series, series_id)
    assert series is not None
    vol = session.scalar(
        select(VolumetryResult).where(
            VolumetryResult.series_id == series_id, VolumetryResult.model_id == model_id
        )
    )
    if vol is None:
        vol = VolumetryResult(series_id=series_id, model_id=model_id, study_id=series.study_id)
        session.add(vol)
    vol.total_ml, vol.functional_ml = float(result["total_ml"]), float(result["functional_ml"])
    vol.liver_cut_at = result.get("liver_cut_at")
    if job is not None:
        job.status, job.error, job.segmentation_id = "done", None, seg.id
    session.flush()
    return seg


SAME_LESION_MIN_MM = 5.0
"""A redrawn lesion is the stored one when their centroids lie within half the larger one's
diameter, or this, whichever is more."""


def _store_lesions(session: Session, segmentation_id: int, lesions: list[dict[str, Any]]) -> None:
    """Store a segmentation's lesions, keeping the row (its id) of each lesion drawn before.

    A clinician's correction ("not a lesion", a relink) and the track numbers are keyed on the
    row id. Matched by index, a redraw that numbered its lesions in another order (one more
    speck is enough) moved a "not a lesion" mark onto another lesion; so rows are matched to
    the new lesions by place (one to one, nearest centroids), and a row left without a lesion is
    dropped with its corrections, which the audit log keeps.
    """
    existing = list(session.scalars(select(Lesion).where(Lesion.segmentation_id == segmentation_id)))
    pairs = _same_lesions(existing, lesions)
    kept = {id(row) for row, _ in pairs}
    for row in existing:
        if id(row) not in kept:
            _drop_lesion(session, row)
    session.flush()
    for k, (row, _) in enumerate(pairs):  # out of the way of the unique (segmentation, index)
        row.lesion_index = -1 - k
    session.flush()
    rows = {int(item["lesion_index"]): row for row, item in pairs}
    for item in lesions:
        row = rows.get(int(item["lesion_index"]))
        if row is None:
            row = Lesion(segmentation_id=segmentation_id)
            session.add(row)
        row.lesion_index = int(item["lesion_index"])
        row.voxels = int(item["voxels"])
        row.volume_ml = float(item["volume_ml"])
        row.longest_axial_diameter_mm = float(item["longest_axial_diameter_mm"])
        row.short_axis_mm = item.get("short_axis_mm")
        row.centroid_x, row.centroid_y, row.centroid_z = (float(v) for v in item["centroid_mm"])
        row.bbox = [int(v) for v in item.get("bbox") or []] or None
        row.mean_hu = item.get("mean_hu")
        row.found_by = item.get("found_by")
        row.cut_by_scan_edge = item.get("cut_by_scan_edge")


def _same_lesions(rows: list[Lesion], lesions: list[dict[str, Any]]) -> list[tuple[Lesion, dict[str, Any]]]:
    """One-to-one pairs of stored rows and redrawn lesions at the same place."""
    if not rows or not lesions:
        return []
    from scipy.optimize import linear_sum_assignment

    old = np.array([[r.centroid_x, r.centroid_y, r.centroid_z] for r in rows])
    new = np.array([[float(v) for v in item["centroid_mm"]] for item in lesions])
    distance = np.linalg.norm(old[:, None, :] - new[None, :, :], axis=2)
    reach = np.maximum(SAME_LESION_MIN_MM, 0.5 * np.maximum.outer(
        [r.longest_axial_diameter_mm for r in rows], [float(i["longest_axial_diameter_mm"]) for i in lesions]))
    cost = np.where(distance <= reach, distance, 1e9)
    return [(rows[i], lesions[j]) for i, j in zip(*linear_sum_assignment(cost), strict=True) if cost[i, j] < 1e9]


def _drop_lesion(session: Session, row: Lesion) -> None:
    """Delete a lesion no longer drawn; its corrections go with it (cascade), so say so."""
    for override in session.scalars(select(TrackOverride).where(TrackOverride.lesion_id == row.id)):
        session.add(AuditEvent(action="track_override_dropped", actor="lvt batch", target=f"lesion {row.id}",
                               detail={"kind": override.kind, "note": override.note,
                                       "reason": "the redrawn segmentation has no lesion at its place"}))
    session.delete(row)


def import_label_map(
    series_id: int,
    model_id: int,
    labels: Any,
    url: str | None = None,
    data_root: Path | None = None,
    refresh: bool = True,
) -> int:
    """Store an external label map (e.g. ground truth) as the segmentation of a series.

    Goes through the same path as a batch result; returns the segmentation id.
    """

    root = data_root or storage.data_dir()
    factory = make_session_factory(url or default_url())
    with factory() as session:
        series = session.get(Series, series_id)
        if series is None:
            raise UserError(f"series {series_id} is not in the store")
        image = storage.read_stored(series.image_path, root)
        rel, sha = storage.store_image(labels, root)
        result = {**measure_labels(labels, image), "label_map_path": rel, "label_map_hash": sha}
        seg = store_result(session, series_id, model_id, result, root)
        patient_id = session.get(Study, series.study_id).patient_id  # type: ignore[union-attr]
        session.commit()
        seg_id = seg.id
        if refresh:
            from app.services.analytics import refresh_patient

            refresh_patient(session, patient_id, model_id, root)
            session.commit()
    return seg_id


# -- execution ------------------------------------------------------------------------------


def _engine(workers: int, scheduler: str | None) -> str:
    if scheduler:
        return f"dask {scheduler}"
    return "in-process" if workers <= 1 else f"dask LocalCluster({workers} workers)"


def execute(
    tasks: list[dict[str, Any]], workers: int = 1, scheduler: str | None = None
) -> Iterator[dict[str, Any]]:
    """Run :func:`segment_day` over ``tasks`` (one day's series each); yield one result per
    series as its day finishes."""
    if not tasks:
        return
    if scheduler is None and workers <= 1:
        for task in tasks:
            yield from segment_day(task)
        return
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise UserError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    try:
        tag = uuid.uuid4().hex[:8]
        futures = {
            client.submit(
                segment_day, task, key=f"lvt-day-{task['series'][0]['series_id']}-{tag}", pure=False
            ): task
            for task in tasks
        }
        for future in as_completed(list(futures)):
            task = futures[future]
            try:
                results = future.result()
            except Exception as exc:  # worker lost too often, cancelled, ...
                results = [{"series_id": item["series_id"], "error": f"{type(exc).__name__}: {exc}"}
                           for item in task["series"]]
            future.release()
            yield from results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_batch(
    options: BatchOptions,
    url: str | None = None,
    data_root: Path | None = None,
    on_progress: ProgressFn | None = None,
) -> BatchSummary:
    """Segment the selected series and refresh analytics; see the module docstring."""
    url = url or default_url()
    root = (data_root or storage.data_dir()).resolve()
    if options.run_id is None and not options.all and not options.patients:
        raise UserError("say which series to segment: --patient ID (repeatable) or --all")
    if options.workers < 1:
        raise UserError(f"--workers must be at least 1, got {options.workers}")
    checkpoint = resolve_checkpoint(options.model)
    if options.dry_run:
        open_current_store(url)  # "change nothing": no store created, no migration run
    else:
        ensure_schema(url)
    factory = make_session_factory(url)
    started = time.perf_counter()
    to_refresh: list[int] = []
    pseudonyms: list[str] = []
    with factory() as session:
        acquire_lock(session, "batch-claim")  # one process claims series at a time, until commit
        model = register_model(session, checkpoint)
        to_refresh = sorted(close_stale_runs(session))
        if options.run_id is not None:
            run = session.get(BatchRun, options.run_id)
            if run is None:
                raise UserError(f"batch run {options.run_id} does not exist")
            done_ids = set(session.scalars(current_series(model.id, options.outdated)))
            jobs = [
                j
                for j in run.jobs
                if j.status != "done" and (options.force or j.series_id not in done_ids)
            ]
            for j in run.jobs:
                if j.status != "done" and j not in jobs:
                    j.status = "done"  # already segmented by another run
            series_ids = [j.series_id for j in jobs]
        else:
            patient_ids = None
            if not options.all:
                patient_ids, pseudonyms = resolve_patients(session, options.patients)
            series_ids = pending_series(session, model.id, patient_ids, options.force,
                                        options.outdated)
            run = None
            if options.refresh:
                to_refresh = sorted(set(to_refresh) | set(patients_with_results(session, model.id, patient_ids)))
        summary = BatchSummary(
            run_id=options.run_id,
            model={"id": model.id, "name": model.name, "version": model.version,
                   "checksum": model.checksum, "path": str(checkpoint)},
            dry_run=options.dry_run,
            series_total=len(series_ids),
            series=series_ids,
            engine=_engine(options.workers, options.scheduler),
        )
        if options.dry_run:
            session.rollback()
            return summary
        params = {
            "patients": pseudonyms, "all": options.all, "model": str(checkpoint),
            "workers": options.workers, "scheduler": options.scheduler, "force": options.force,
            "outdated": options.outdated, "pid": os.getpid(), "host": socket.gethostname(),
        }
        if run is None:
            run = create_run(session, model.id, series_ids, params)
        else:
            run.params = {**(run.params or {}), "pid": os.getpid(), "host": socket.gethostname()}
        run.status, run.started_at, run.error = "running", utcnow(), None
        jobs_by_series = {j.series_id: j for j in run.jobs}
        rows = session.execute(
            select(Series.id, Series.image_path, Study.patient_id, Study.id, Series.phase,
                   Study.study_date)
            .join(Study, Study.id == Series.study_id)
            .where(Series.id.in_(series_ids))
        ).all()
        info = {int(r[0]): (r[1], int(r[2]), int(r[3]), r[4], r[5]) for r in rows}
        for sid in series_ids:
            seg = _segmentation_row(session, sid, model.id)
            seg.status, seg.started_at, seg.error = "running", utcnow(), None
            job = jobs_by_series[sid]
            job.status, job.started_at = "running", utcnow()
        session.commit()
        summary.run_id = run.id
        model_id, run_id = model.id, run.id

    threads = 0
    if options.scheduler is None and options.workers > 1:
        threads = max(1, (os.cpu_count() or 1) // options.workers)
    throttle = float(os.environ.get(THROTTLE_ENV) or 0.0)
    tasks = [
        {"series": [{"series_id": sid, "image_path": info[sid][0], "phase": info[sid][3]} for sid in day],
         "data_root": str(root), "checkpoint": str(checkpoint), "device": options.device,
         "threads": threads, "test_delay_s": throttle}
        for day in _days(series_ids, info)
    ]
    patients: set[int] = set(to_refresh)
    done_ids: list[int] = []
    try:
        for n, result in enumerate(execute(tasks, options.workers, options.scheduler), start=1):
            sid = int(result["series_id"])
            with factory() as session:
                job = session.scalar(
                    select(BatchJob).where(BatchJob.run_id == run_id, BatchJob.series_id == sid)
                )
                seg = store_result(session, sid, model_id, result, root, job)
                session.commit()
                if seg.status == "done":
                    summary.done += 1
                    done_ids.append(sid)
                    patients.add(info[sid][1])
                else:
                    summary.failed += 1
                    patients.add(info[sid][1])  # its earlier results are gone from the analytics too
                    summary.failures.append({"series_id": sid, "error": seg.error})
                    log.warning("series %s failed: %s", sid, seg.error)
            if on_progress is not None:
                on_progress(n, len(series_ids), result)
        _refresh(factory, sorted(patients), model_id, root, summary)
    except BaseException as exc:
        with factory() as session:
            run_row = session.get(BatchRun, run_id)
            if run_row is not None:
                run_row.status, run_row.finished_at = "failed", utcnow()
                run_row.error = f"{type(exc).__name__}: {exc}"
                session.commit()
        raise
    summary.runtime_s = round(time.perf_counter() - started, 3)
    with factory() as session:
        run_row = session.get(BatchRun, run_id)
        assert run_row is not None
        run_row.status, run_row.finished_at = "done", utcnow()
        if summary.failed:
            run_row.error = f"{summary.failed} series failed"
        studies = session.scalar(  # finished ones only: failed series made no throughput
            select(func.count(func.distinct(Series.study_id))).where(Series.id.in_(done_ids))
        ) if done_ids else 0
        session.commit()
    if summary.runtime_s > 0 and series_ids:
        summary.series_per_hour = round(len(done_ids) / summary.runtime_s * 3600, 1)
        summary.studies_per_hour = round(int(studies or 0) / summary.runtime_s * 3600, 1)
    return summary


def _days(series_ids: list[int], info: dict[int, tuple[Any, ...]]) -> list[list[int]]:
    """The series of each day (``info``: path, patient, study, phase, date per series), so the
    phases of one date are read together even when stored as separate studies."""
    days: dict[DayKey, list[int]] = {}
    for sid in series_ids:
        _, patient_id, study_id, _, study_date = info[sid]
        days.setdefault(day_key(patient_id, study_id, study_date), []).append(sid)
    return list(days.values())


def _refresh(
    factory: Any, patient_ids: list[int], model_id: int, root: Path, summary: BatchSummary
) -> None:
    from app.services.analytics import refresh_patient

    for pid in patient_ids:
        with factory() as session:
            try:
                refreshed = refresh_patient(session, pid, model_id, root)
                session.commit()
                summary.patients_refreshed += 1
                summary.analytics_warnings.extend(
                    {"patient_id": pid, "warning": w} for w in refreshed["warnings"]
                )
            except Exception as exc:
                session.rollback()
                log.exception("analytics for patient %s failed", pid)
                summary.analytics_errors.append({"patient_id": pid, "error": str(exc)})


# -- background runs and progress -----------------------------------------------------------


def _lvt_command() -> list[str]:
    script = Path(sys.executable).with_name("lvt")
    if script.is_file():
        return [str(script)]
    found = shutil.which("lvt")
    return [found] if found else [sys.executable, "-c", "from app.cli.main import main; main()"]


def start_batch_in_background(
    options: BatchOptions, url: str | None = None, log_dir: Path | None = None
) -> int:
    """Create a pending run and start a detached ``lvt batch --run-id`` on it; return its id.

    The run and its jobs exist before this returns, so the caller can watch progress at once.
    """
    from app.settings import get_settings

    url = url or default_url()
    checkpoint = resolve_checkpoint(options.model)
    ensure_schema(url)
    with make_session_factory(url)() as session:
        model = register_model(session, checkpoint)
        if not options.all and not options.patients:
            raise UserError("say which series to segment: patients or all")
        patient_ids, pseudonyms = (None, []) if options.all else resolve_patients(session, options.patients)
        series_ids = pending_series(session, model.id, patient_ids, options.force,
                                    options.outdated)
        params = {"patients": pseudonyms, "all": options.all, "model": str(checkpoint),
                  "workers": options.workers, "scheduler": options.scheduler,
                  "force": options.force, "outdated": options.outdated, "pid": None,
                  "host": socket.gethostname()}
        run = create_run(session, model.id, series_ids, params)
        session.commit()
        run_id = run.id
    cmd = [*_lvt_command(), "batch", "--run-id", str(run_id), "--model", str(checkpoint),
           "--workers", str(options.workers), "--json"]
    if options.scheduler:
        cmd += ["--scheduler", options.scheduler]
    if options.force:
        cmd.append("--force")
    if options.outdated:
        cmd.append("--outdated")
    logs = log_dir or (get_settings().var_dir / "logs")
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"batch-{run_id}.log", "ab") as handle:
        subprocess.Popen(
            cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "LVT_DATABASE_URL": url},
        )
    return run_id


@dataclass(frozen=True)
class RunProgress:
    """A batch run as the app shows it."""

    run_id: int
    status: str
    total: int
    counts: dict[str, int]
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    eta_s: float | None
    error: str | None

    @property
    def finished(self) -> int:
        return self.counts.get("done", 0) + self.counts.get("failed", 0)


def batch_progress(session: Session, run_id: int) -> RunProgress | None:
    """Job counts by status and a simple ETA for one run (one grouped query)."""
    run = session.get(BatchRun, run_id)
    if run is None:
        return None
    counts = {
        str(status): int(n)
        for status, n in session.execute(
            select(BatchJob.status, func.count())
            .where(BatchJob.run_id == run_id)
            .group_by(BatchJob.status)
        )
    }
    total = sum(counts.values())
    finished = counts.get("done", 0) + counts.get("failed", 0)
    eta = None
    if run.started_at is not None and 0 < finished < total and run.status == "running":
        elapsed = (utcnow() - run.started_at).total_seconds()
        eta = elapsed / finished * (total - finished)
    return RunProgress(run.id, run.status, total, counts, run.started_at, run.finished_at, eta,
                       run.error)


def list_runs(session: Session, limit: int = 20) -> list[RunProgress]:
    """The most recent runs with their progress."""
    ids = session.scalars(select(BatchRun.id).order_by(BatchRun.id.desc()).limit(limit)).all()
    return [p for rid in ids if (p := batch_progress(session, rid)) is not None]
