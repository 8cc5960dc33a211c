"""``lvt batch``: in-process and Dask runs, failures, crash–resume with SIGKILL, background runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import model_fixtures
import pytest
from model_fixtures import write_tiny_cohort
from sqlalchemy import func, select, update

from app.cli.common import UserError
from app.services.batch import (
    BatchOptions,
    batch_progress,
    run_batch,
    start_batch_in_background,
)
from app.services.ingest.service import IngestOptions, ingest_paths
from app.web.queries import segmentations_by_version
from db import storage
from db.engine import ensure_schema, make_session_factory
from db.models import BatchRun, Lesion, LesionTrack, Patient, Segmentation, Series, VolumetryResult
from lvt_core import __version__ as lvt_version

tiny_checkpoint = model_fixtures.tiny_checkpoint  # the shared fixture
LVT = Path(sys.executable).with_name("lvt")


@pytest.fixture()
def cohort(lvt_env: Path, tmp_path: Path) -> str:
    """A migrated SQLite store holding 2 patients x 2 tiny studies; returns the URL."""
    from db.engine import default_url

    url = default_url()
    ensure_schema(url)
    ingest_paths([], IngestOptions(manifest=write_tiny_cohort(tmp_path / "in")), url=url)
    return url


def _counts(url: str) -> dict[str, int]:
    with make_session_factory(url)() as s:
        return {
            "series": s.scalar(select(func.count(Series.id))),
            "segs": s.scalar(select(func.count(Segmentation.id))),
            "done": s.scalar(select(func.count()).where(Segmentation.status == "done")),
            "lesions": s.scalar(select(func.count(Lesion.id))),
            "volumes": s.scalar(select(func.count(VolumetryResult.id))),
            "tracks": s.scalar(select(func.count(LesionTrack.id))),
        }


def _hashes(url: str) -> dict[str, str]:
    with make_session_factory(url)() as s:
        rows = s.execute(
            select(Series.series_instance_uid, Segmentation.label_map_hash).join(
                Segmentation, Segmentation.series_id == Series.id
            )
        )
        return {uid: h for uid, h in rows}


def _assert_consistent(url: str) -> None:
    """Every series segmented once, every done row has its file, no duplicate lesions."""
    with make_session_factory(url)() as s:
        per_series = s.execute(
            select(Segmentation.series_id, func.count()).group_by(Segmentation.series_id)
        ).all()
        assert all(n == 1 for _, n in per_series)
        for seg in s.scalars(select(Segmentation).where(Segmentation.status == "done")):
            assert storage.resolve(seg.label_map_path).is_file()
        dup = s.execute(
            select(Lesion.segmentation_id, Lesion.lesion_index, func.count())
            .group_by(Lesion.segmentation_id, Lesion.lesion_index)
            .having(func.count() > 1)
        ).all()
        assert dup == []


def test_in_process_batch_is_idempotent(cohort: str, tiny_checkpoint: Path) -> None:
    summary = run_batch(BatchOptions(all=True, model=tiny_checkpoint))
    counts = _counts(cohort)
    assert summary.series_total == counts["series"] == 4
    assert summary.done == counts["done"] == 4 and summary.failed == 0
    assert summary.patients_refreshed == 2 and not summary.analytics_errors
    assert counts["lesions"] > 0 and counts["volumes"] == 4 and counts["tracks"] > 0
    _assert_consistent(cohort)
    with make_session_factory(cohort)() as s:
        lesion_ids = sorted(s.scalars(select(Lesion.id)))
        assert s.scalar(select(BatchRun.status)) == "done"
        # this checkpoint has no faint-lesion search: every lesion is the network's, on record
        assert set(s.scalars(select(Lesion.found_by))) == {"network"}
        # each result names the arithmetic it ran in: float32 for a model not qualified for bf16
        assert set(s.scalars(select(Segmentation.precision))) == {"fp32"}
        # and the LVT version whose pipeline drew it
        assert set(s.scalars(select(Segmentation.lvt_version))) == {lvt_version}
        # and what it left out as fluid: recorded (nothing, without a cross-phase rule), not NULL
        assert [seg.fluid_places for seg in s.scalars(select(Segmentation))] == [[]] * 4

    again = run_batch(BatchOptions(all=True, model=tiny_checkpoint))
    assert again.series_total == 0 and again.patients_refreshed == 0
    # results an older pipeline drew (or one that did not record its version) are redone
    # with --outdated only, keeping their lesions' ids
    with make_session_factory(cohort)() as s:
        first, second = sorted(s.scalars(select(Segmentation.id)))[:2]
        s.execute(update(Segmentation).where(Segmentation.id == first).values(lvt_version="0.1.0"))
        s.execute(update(Segmentation).where(Segmentation.id == second).values(lvt_version=None))
        s.commit()
    assert run_batch(BatchOptions(all=True, model=tiny_checkpoint, dry_run=True)).series_total == 0
    with make_session_factory(cohort)() as s:  # what the admin page counts
        versions = segmentations_by_version(s)
        assert versions.loc[versions["outdated"], "segmentations"].sum() == 2
        assert set(versions["lvt_version"]) == {"0.1.0", "not recorded", lvt_version}
    outdated = run_batch(BatchOptions(all=True, model=tiny_checkpoint, outdated=True))
    assert outdated.series_total == outdated.done == 2 and outdated.patients_refreshed >= 1
    with make_session_factory(cohort)() as s:
        assert set(s.scalars(select(Segmentation.lvt_version))) == {lvt_version}
        assert sorted(s.scalars(select(Lesion.id))) == lesion_ids
        assert not segmentations_by_version(s)["outdated"].any()
    assert run_batch(BatchOptions(all=True, model=tiny_checkpoint, outdated=True)).series_total == 0
    # a store upgraded past migration 0005 lacks the liver coverage: --refresh measures it
    with make_session_factory(cohort)() as s:
        measured = sorted(s.scalars(select(VolumetryResult.liver_cut_at)))
        assert None not in measured
        s.execute(update(VolumetryResult).values(liver_cut_at=None))
        s.commit()
    refreshed = run_batch(BatchOptions(all=True, model=tiny_checkpoint, refresh=True))
    assert refreshed.series_total == 0 and refreshed.patients_refreshed == 2
    with make_session_factory(cohort)() as s:
        assert sorted(s.scalars(select(VolumetryResult.liver_cut_at))) == measured
    forced = run_batch(BatchOptions(all=True, model=tiny_checkpoint, force=True))
    assert forced.done == 4
    assert _counts(cohort) == counts
    with make_session_factory(cohort)() as s:  # same lesions found: same ids (overrides kept)
        assert sorted(s.scalars(select(Lesion.id))) == lesion_ids


def test_failing_series_is_recorded_and_batch_goes_on(cohort: str, tiny_checkpoint: Path) -> None:
    with make_session_factory(cohort)() as s:
        broken, truncated = s.scalars(select(Series).order_by(Series.id)).all()[:2]
        path = storage.resolve(broken.image_path)
        cut = storage.resolve(truncated.image_path)
    path.write_bytes(b"not a nifti file")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 3])  # read as zeros by ITK alone
    summary = run_batch(BatchOptions(all=True, model=tiny_checkpoint))
    assert summary.done == 2 and summary.failed == 2
    # the rate counts finished series only (4 series in 4 studies were 2x the rate of 2 done)
    assert summary.series_per_hour == round(2 / summary.runtime_s * 3600, 1)
    assert summary.studies_per_hour == round(2 / summary.runtime_s * 3600, 1)
    assert sorted(f["series_id"] for f in summary.failures) == sorted([broken.id, truncated.id])
    with make_session_factory(cohort)() as s:
        for series, said in ((broken, "damaged"), (truncated, "truncated")):
            seg = s.scalar(select(Segmentation).where(Segmentation.series_id == series.id))
            assert seg is not None and seg.status == "failed" and said in seg.error
            assert seg.label_map_path is None


def test_a_redo_that_fails_leaves_none_of_the_earlier_results(cohort: str, tiny_checkpoint: Path) -> None:
    """The failed series kept its lesions and liver volume, which still fed tracks and exports."""
    run_batch(BatchOptions(all=True, model=tiny_checkpoint))
    with make_session_factory(cohort)() as s:
        series = s.scalars(select(Series).order_by(Series.id)).first()
        assert s.scalar(select(func.count(VolumetryResult.id)).where(VolumetryResult.series_id == series.id)) == 1
    storage.resolve(series.image_path).write_bytes(b"not a nifti file")
    forced = run_batch(BatchOptions(all=True, model=tiny_checkpoint, force=True))
    assert forced.failed == 1 and forced.failures[0]["series_id"] == series.id
    with make_session_factory(cohort)() as s:
        seg = s.scalar(select(Segmentation).where(Segmentation.series_id == series.id))
        assert seg.status == "failed" and seg.label_map_path is None
        assert s.scalar(select(func.count(Lesion.id)).where(Lesion.segmentation_id == seg.id)) == 0
        assert s.scalar(select(func.count(VolumetryResult.id)).where(VolumetryResult.series_id == series.id)) == 0
    _assert_consistent(cohort)


def _confirming_every_candidate(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """The tiny checkpoint with a cross-phase rule that keeps any candidate another phase of
    the day confirms, so that reading a day's phases together shows ("other_phase")."""
    from lvt_core.checkpoint import copy_with_meta, load_checkpoint

    _, meta = load_checkpoint(tiny_checkpoint)
    rule = {"min_peak": 0.01, "max_distance_mm": 500.0, "min_volume_ml": 0.0}
    meta = {**meta, "version": "0.0.2", "inference": {**meta["inference"], "cross_phase": rule}}
    return copy_with_meta(tiny_checkpoint, tmp_path / "cross.pt", meta)


def test_phases_of_a_day_are_segmented_together_and_a_broken_one_fails_alone(
        lvt_env: Path, tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One task per study: with the cross-phase rule on, both phases go through
    ``predict_day``, each named by its series' phase; an unreadable arterial series fails alone
    and its portal sibling is stored."""
    from db.engine import default_url
    from lvt_core.inference import Predictor

    phases_read: list[list[str] | None] = []
    predict_day = Predictor.predict_day

    def recording(self: Predictor, images: list, phases: list[str] | None = None) -> list:
        phases_read.append(None if phases is None else list(phases))
        return predict_day(self, images, phases)

    monkeypatch.setattr(Predictor, "predict_day", recording)

    url = default_url()
    ensure_schema(url)
    manifest = write_tiny_cohort(tmp_path / "in", patients=1, timepoints=1, phases=("portal", "arterial"))
    ingest_paths([], IngestOptions(manifest=manifest), url=url)
    model = _confirming_every_candidate(tiny_checkpoint, tmp_path)

    summary = run_batch(BatchOptions(all=True, model=model))
    assert summary.done == 2 and summary.failed == 0
    assert [sorted(p) for p in phases_read if p is not None] == [["arterial", "portal"]]
    _assert_consistent(url)
    with make_session_factory(url)() as s:
        found_by = set(s.scalars(select(Lesion.found_by)))
        assert "other_phase" in found_by and found_by <= {"network", "other_phase"}
        assert s.scalar(select(func.count(func.distinct(Series.study_id)))) == 1
        arterial = s.scalar(select(Series).where(Series.phase == "arterial"))
        assert arterial is not None
        path = storage.resolve(arterial.image_path)
    path.write_bytes(b"not a nifti file")
    forced = run_batch(BatchOptions(all=True, model=model, force=True))
    assert forced.done == 1 and forced.failed == 1
    assert forced.failures[0]["series_id"] == arterial.id



def test_the_phases_of_a_day_in_separate_studies_are_read_together(
        lvt_env: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Many sites give each phase its own study UID: the batch made one task per study, so
    the cross-phase rule never saw the day's other phase (no lesion "other_phase")."""
    from db.engine import default_url

    url = default_url()
    ensure_schema(url)
    manifest = write_tiny_cohort(tmp_path / "in", patients=1, timepoints=1, phases=("portal", "arterial"))
    header, *rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join([f"{header},study_uid"]
                                  + [f"{row},1.2.826.0.7.{k}" for k, row in enumerate(rows)]) + "\n")
    ingest_paths([], IngestOptions(manifest=manifest), url=url)
    model = _confirming_every_candidate(tiny_checkpoint, tmp_path)

    summary = run_batch(BatchOptions(all=True, model=model))
    assert summary.done == 2 and summary.failed == 0
    with make_session_factory(url)() as s:
        assert s.scalar(select(func.count(func.distinct(Series.study_id)))) == 2
        assert "other_phase" in set(s.scalars(select(Lesion.found_by)))
    _assert_consistent(url)

def test_cli_json_dry_run_and_usage_errors(cohort: str, tiny_checkpoint: Path) -> None:
    env = {**os.environ, "LVT_DATABASE_URL": cohort}
    dry = subprocess.run(
        [str(LVT), "batch", "--all", "--dry-run", "--json", "--model", str(tiny_checkpoint)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert doc["dry_run"] is True and doc["series_total"] == 4
    assert _counts(cohort)["segs"] == 0
    nothing = subprocess.run([str(LVT), "batch"], capture_output=True, text=True, env=env,
                             timeout=120)
    assert nothing.returncode == 1 and "--all" in nothing.stderr
    with pytest.raises(UserError, match=r"/nope\.pt"):
        run_batch(BatchOptions(all=True, model=Path("/nope.pt")))
    bad_device = subprocess.run(  # ran, and stored every series as failed, with exit status 0
        [str(LVT), "batch", "--all", "--device", "gpu", "--json", "--model", str(tiny_checkpoint)],
        capture_output=True, text=True, env=env, timeout=120)
    assert bad_device.returncode == 2 and json.loads(bad_device.stdout)["exit_code"] == 2
    assert "auto, cpu, cuda" in bad_device.stderr
    bad_env = subprocess.run([str(LVT), "batch", "--all", "--json"], capture_output=True, text=True,
                             env={**env, "LVT_DEVICE": "gpu"}, timeout=120)  # a traceback, no JSON
    assert bad_env.returncode == 1 and "LVT_DEVICE='gpu'" in json.loads(bad_env.stdout)["error"]
    with make_session_factory(cohort)() as s:
        assert s.scalar(select(func.count(BatchRun.id))) == 0
    assert _counts(cohort)["segs"] == 0
    two = subprocess.run(  # LVT_WORKERS was documented as the default but never read
        [str(LVT), "batch", "--all", "--dry-run", "--json", "--model", str(tiny_checkpoint)],
        capture_output=True, text=True, env={**env, "LVT_WORKERS": "2"}, timeout=120)
    assert json.loads(two.stdout)["engine"] == "dask LocalCluster(2 workers)"
    cluster = subprocess.run(  # compose sets LVT_DASK_SCHEDULER; nothing read it
        [str(LVT), "batch", "--all", "--dry-run", "--json", "--model", str(tiny_checkpoint)],
        capture_output=True, text=True, env={**env, "LVT_DASK_SCHEDULER": "tcp://scheduler:8786"}, timeout=120)
    assert json.loads(cluster.stdout)["engine"] == "dask tcp://scheduler:8786"


def test_a_dry_run_refuses_an_older_schema_instead_of_migrating_it(cohort: str, tiny_checkpoint: Path) -> None:
    """"Change nothing" migrated the store to this version's schema (ingest --dry-run refuses)."""
    from db import migrate

    migrate.downgrade(cohort, "0009")
    with pytest.raises(UserError, match="lvt db upgrade"):
        run_batch(BatchOptions(all=True, model=tiny_checkpoint, dry_run=True))
    assert migrate.current(cohort) == "0009"


def test_cli_batch_with_a_failed_series_exits_1_and_prints_its_summary(
    cohort: str, tiny_checkpoint: Path
) -> None:
    """Exit status 0 for a batch whose series failed: a script took it for done."""
    with make_session_factory(cohort)() as s:
        broken = s.scalars(select(Series).order_by(Series.id)).first()
        assert broken is not None
        storage.resolve(broken.image_path).write_bytes(b"not a nifti file")
    env = {**os.environ, "LVT_DATABASE_URL": cohort}
    done = subprocess.run([str(LVT), "batch", "--all", "--json", "--model", str(tiny_checkpoint)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)  # one document: the summary with the failure's error and exit code
    assert doc["done"] == 3 and doc["failed"] == 1 and doc["exit_code"] == 1
    assert doc["error"].startswith("1 of 4 series failed")
    assert _counts(cohort)["segs"] == 4


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cli_batch_device_defaults_to_lvt_device(cohort: str, tiny_checkpoint: Path) -> None:
    """LVT_DEVICE was documented (SLURM, compose) but batch hard-coded auto."""
    env = {**os.environ, "LVT_DATABASE_URL": cohort, "LVT_DEVICE": "cuda"}
    done = subprocess.run([str(LVT), "batch", "--all", "--json", "--model", str(tiny_checkpoint)],
                          capture_output=True, text=True, env=env, timeout=300)
    doc = json.loads(done.stdout)
    assert done.returncode == 1 and doc["failed"] == 4
    assert all("CUDA" in failure["error"] for failure in doc["failures"])


@pytest.fixture()
def cohort_on_each_backend(migrated_db: str, tmp_path: Path) -> str:
    """``cohort``'s 2 patients x 2 tiny studies on SQLite and on PostgreSQL; returns the URL."""
    ingest_paths([], IngestOptions(manifest=write_tiny_cohort(tmp_path / "in")), url=migrated_db)
    return migrated_db


def test_local_cluster_two_workers_matches_in_process(
    cohort_on_each_backend: str, tiny_checkpoint: Path
) -> None:
    """Two worker processes write results at once: on PostgreSQL too (row locks, not
    SQLite's file lock), each scan is done once and matches the in-process run."""
    cohort = cohort_on_each_backend
    summary = run_batch(BatchOptions(all=True, model=tiny_checkpoint, workers=2))
    assert summary.engine.startswith("dask LocalCluster") and summary.done == 4
    dask_hashes = _hashes(cohort)
    _assert_consistent(cohort)
    forced = run_batch(BatchOptions(all=True, model=tiny_checkpoint, force=True))
    assert forced.engine == "in-process"
    assert _hashes(cohort) == dask_hashes


def test_sigkill_mid_batch_resumes_without_duplicates(
    cohort: str, tiny_checkpoint: Path
) -> None:
    env = {**os.environ, "LVT_DATABASE_URL": cohort, "LVT_BATCH_THROTTLE_S": "1.5"}
    proc = subprocess.Popen(
        [str(LVT), "batch", "--all", "--model", str(tiny_checkpoint)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 90
    while _counts(cohort)["done"] < 1:
        assert proc.poll() is None, "batch ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = _counts(cohort)
    assert 1 <= killed["done"] < 4
    _assert_consistent(cohort)

    summary = run_batch(BatchOptions(all=True, model=tiny_checkpoint))
    assert summary.series_total == 4 - killed["done"] and summary.failed == 0
    with make_session_factory(cohort)() as s:  # a patient finished by the killed run too
        assert summary.patients_refreshed == s.scalar(select(func.count(Patient.id)))
    counts = _counts(cohort)
    assert counts["segs"] == counts["done"] == counts["series"] == 4
    _assert_consistent(cohort)
    with make_session_factory(cohort)() as s:
        statuses = sorted(s.scalars(select(BatchRun.status)))
    assert statuses == ["done", "failed"]  # the killed run is closed as interrupted


def test_background_batch_reports_progress(cohort: str, tiny_checkpoint: Path) -> None:
    run_id = start_batch_in_background(BatchOptions(all=True, model=tiny_checkpoint))
    factory = make_session_factory(cohort)
    with factory() as s:
        first = batch_progress(s, run_id)
    assert first is not None and first.total == 4
    deadline = time.time() + 120
    while True:
        with factory() as s:
            progress = batch_progress(s, run_id)
        assert progress is not None
        if progress.status in ("done", "failed"):
            break
        assert time.time() < deadline, progress
        time.sleep(0.2)
    assert progress.status == "done", progress.error
    assert progress.counts == {"done": 4} and progress.finished == 4
    _assert_consistent(cohort)


def test_run_params_record_pseudonyms_not_source_ids(
    cohort: str, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lvt batch --patient P000` (a source id) stored "P000" in batch_runs.params."""
    from app.services import batch
    from app.services.deid import Deidentifier

    run_batch(BatchOptions(patients=["P000"], model=tiny_checkpoint))
    monkeypatch.setattr(batch.subprocess, "Popen", lambda *args, **kwargs: None)
    start_batch_in_background(BatchOptions(patients=["P001"], model=tiny_checkpoint))
    with make_session_factory(cohort)() as s:
        params = [run.params for run in s.scalars(select(BatchRun).order_by(BatchRun.id))]
    deid = Deidentifier.from_settings()
    assert [p["patients"] for p in params] == [[deid.patient_id("P000")], [deid.patient_id("P001")]]
    assert "P000" not in json.dumps(params) and "P001" not in json.dumps(params)


def test_series_a_live_run_claimed_are_left_to_it(cohort: str, tiny_checkpoint: Path) -> None:
    """Two batches at once segmented every series twice; now the second takes what is left."""
    import socket

    from app.services.batch import create_run, register_model

    with make_session_factory(cohort)() as s:
        model = register_model(s, tiny_checkpoint)
        claimed = sorted(s.scalars(select(Series.id)))[:2]
        run = create_run(s, model.id, claimed, {"pid": os.getpid(), "host": socket.gethostname()})
        run.status = "running"
        for job in run.jobs:
            job.status = "running"
        s.commit()
        run_id = run.id
    for force in (False, True):
        summary = run_batch(BatchOptions(all=True, model=tiny_checkpoint, dry_run=True, force=force))
        assert summary.series_total == 2 and not set(summary.series) & set(claimed)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    with make_session_factory(cohort)() as s:  # its client died: the series are free again
        run = s.get(BatchRun, run_id)
        run.params = {**run.params, "pid": int(gone.stdout)}
        s.commit()
    assert run_batch(BatchOptions(all=True, model=tiny_checkpoint, dry_run=True)).series_total == 4
