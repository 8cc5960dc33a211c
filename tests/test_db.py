"""The store: migrations, constraints, content-addressed storage and queries, on both backends."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from db import migrate, queries, storage
from db.engine import get_engine, session_scope
from db.models import (
    Base,
    Lesion,
    LesionTrack,
    LesionTrackMember,
    Model,
    Patient,
    Segmentation,
    Series,
    Study,
    User,
)


def _series(study: Study, uid: str, phase: str = "portal") -> Series:
    return Series(
        study=study,
        series_instance_uid=uid,
        phase=phase,
        spacing_x=0.8,
        spacing_y=0.8,
        spacing_z=2.0,
        size_x=16,
        size_y=16,
        size_z=6,
        image_path=f"ab/{uid}.nii.gz",
        content_hash=uid.ljust(64, "0"),
    )


def test_migrations_upgrade_downgrade_upgrade(db_url: str) -> None:
    expected = set(Base.metadata.tables)
    assert migrate.upgrade(db_url) == migrate.head()
    assert expected <= set(inspect(get_engine(db_url)).get_table_names())
    assert migrate.downgrade(db_url, "base") is None
    assert set(inspect(get_engine(db_url)).get_table_names()) <= {"alembic_version"}
    assert migrate.upgrade(db_url) == migrate.head()
    assert expected <= set(inspect(get_engine(db_url)).get_table_names())


def test_schema_matches_models(migrated_db: str) -> None:
    """Autogenerate finds nothing to change: the revision and the models agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with get_engine(migrated_db).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_sqlite_runs_wal_with_foreign_keys(migrated_db: str) -> None:
    engine = get_engine(migrated_db)
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_foreign_keys_and_unique_constraints_are_enforced(migrated_db: str) -> None:
    with pytest.raises(IntegrityError), session_scope(migrated_db) as s:
        s.add(Study(patient_id=9999, study_instance_uid="1.2.3"))
    with session_scope(migrated_db) as s:
        patient = Patient(pseudo_id="P-1")
        study = Study(patient=patient, study_instance_uid="1.2", study_date=dt.date(2024, 1, 2))
        series = _series(study, "1.2.1")
        model = Model(name="lvt", version="1", checksum="c" * 64)
        s.add_all([patient, study, series, model])
        s.flush()
        s.add(Segmentation(series_id=series.id, model_id=model.id, status="done"))
    with pytest.raises(IntegrityError), session_scope(migrated_db) as s:
        series_id = s.scalar(select(Series.id))
        model_id = s.scalar(select(Model.id))
        s.add(Segmentation(series_id=series_id, model_id=model_id))
    with pytest.raises(IntegrityError), session_scope(migrated_db) as s:
        s.add(
            Segmentation(
                series_id=s.scalar(select(Series.id)),
                model_id=s.scalar(select(Model.id)),
                status="bogus",
            )
        )
    with pytest.raises(IntegrityError), session_scope(migrated_db) as s:
        s.add(User(username="a", password_hash="x", role="superuser"))


def _add_tracked_lesion(url: str, pseudo_id: str, study_uid: str) -> None:
    """A patient with one study, series, segmentation and lesion, and a track holding it."""
    with session_scope(url) as s:
        patient = Patient(pseudo_id=pseudo_id)
        study = Study(patient=patient, study_instance_uid=study_uid)
        series = _series(study, f"{study_uid}.1")
        model = Model(name="lvt", version=pseudo_id, checksum="e" * 64)
        s.add_all([patient, study, series, model])
        s.flush()
        seg = Segmentation(series_id=series.id, model_id=model.id, status="done")
        s.add(seg)
        s.flush()
        lesion = Lesion(segmentation_id=seg.id, lesion_index=1, voxels=10, volume_ml=0.1,
                        longest_axial_diameter_mm=5.0, centroid_x=1, centroid_y=2, centroid_z=3)
        track = LesionTrack(patient_id=patient.id, model_id=model.id, track_number=1)
        s.add_all([lesion, track])
        s.flush()
        s.add(LesionTrackMember(track_id=track.id, lesion_id=lesion.id, study_id=study.id))


def test_a_downgrade_and_upgrade_keep_lesions_and_tracks(migrated_db: str) -> None:
    """On SQLite, batch mode rebuilt ``segmentations`` with foreign keys on: dropping the old
    table cascaded into ``lesions`` and ``lesion_track_members``, emptying both."""
    _add_tracked_lesion(migrated_db, "P-3", "7.1")
    assert migrate.downgrade(migrated_db, "0003") == "0003"  # 0006 and 0004 rebuild segmentations
    assert migrate.upgrade(migrated_db) == migrate.head()
    with session_scope(migrated_db) as s:
        for table in ("segmentations", "lesions", "lesion_tracks", "lesion_track_members"):
            assert s.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 1, table
    if get_engine(migrated_db).dialect.name == "sqlite":  # and the app's connections enforce them again
        with get_engine(migrated_db).connect() as conn:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_revision_0010_gives_a_model_response_the_model_of_its_study(migrated_db: str) -> None:
    """Model responses from before 0010 had no model: the one that drew the study is theirs."""
    _add_tracked_lesion(migrated_db, "P-4", "8.1")
    assert migrate.downgrade(migrated_db, "0009") == "0009"
    with session_scope(migrated_db) as s:
        study_id, patient_id = s.execute(text("SELECT id, patient_id FROM studies")).one()
        for source in ("model", "radiologist"):
            s.execute(text("INSERT INTO responses (patient_id, study_id, source, recist_category, "
                           "sum_diameters_mm, created_at) VALUES (:p, :s, :src, 'SD', 10.0, CURRENT_TIMESTAMP)"),
                      {"p": patient_id, "s": study_id, "src": source})
    assert migrate.upgrade(migrated_db) == migrate.head()
    with session_scope(migrated_db) as s:
        model_id = s.execute(text("SELECT id FROM models")).scalar()
        rows = dict(s.execute(text("SELECT source, model_id FROM responses")).all())
    assert rows == {"model": model_id, "radiologist": None}


def test_revision_0011_flags_the_stored_lesions_the_scan_edge_cuts(migrated_db: str) -> None:
    """The flag is read from each lesion's stored box and its series' grid, as tracking reads it
    from the label map; a lesion without a box stays unknown."""
    _add_tracked_lesion(migrated_db, "P-6", "9.1")
    assert migrate.downgrade(migrated_db, "0010") == "0010"
    with session_scope(migrated_db) as s:
        seg_id, nx, _ny, nz = s.execute(text(
            "SELECT g.id, s.size_x, s.size_y, s.size_z FROM segmentations g JOIN series s ON s.id = g.series_id")).one()
        boxes = {2: [3, 3, 0, 6, 6, 2], 3: [3, 3, 1, 6, 6, 2], 4: [3, 3, 1, nx - 1, 6, 2], 5: None}
        for index, box in boxes.items():
            s.execute(text("INSERT INTO lesions (segmentation_id, lesion_index, voxels, volume_ml, "
                           "longest_axial_diameter_mm, centroid_x, centroid_y, centroid_z, bbox) "
                           "VALUES (:g, :i, 10, 0.1, 5.0, 0, 0, 0, :b)"),
                      {"g": seg_id, "i": index, "b": None if box is None else json.dumps(box)})
    assert nz > 3 and migrate.upgrade(migrated_db) == migrate.head()
    with session_scope(migrated_db) as s:
        flags = dict(s.execute(text("SELECT lesion_index, cut_by_scan_edge FROM lesions")).all())
    assert {i: None if f is None else bool(f) for i, f in flags.items()} == {
        1: None, 2: True, 3: False, 4: True, 5: None}


def test_one_radiologist_response_per_study_stays_enforced(migrated_db: str) -> None:
    """With the model in the key (0010) the radiologist's rows, whose model is NULL, never
    collided: two refreshes at once stored two responses per study."""
    from sqlalchemy.exc import IntegrityError

    _add_tracked_lesion(migrated_db, "P-5", "6.1")
    insert = text("INSERT INTO responses (patient_id, study_id, source, recist_category, sum_diameters_mm, "
                  "created_at) SELECT patient_id, id, 'radiologist', 'SD', 10.0, CURRENT_TIMESTAMP FROM studies")
    with session_scope(migrated_db) as s:
        s.execute(insert)
    with pytest.raises(IntegrityError), session_scope(migrated_db) as s:
        s.execute(insert)


def test_processes_migrating_a_fresh_store_at_once_all_succeed(db_url: str) -> None:
    """Two processes starting on an empty store raced to create the tables; one died."""
    import subprocess
    import sys

    code = "import sys; from db.engine import ensure_schema; print(ensure_schema(sys.argv[1]))"
    runs = [subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    for returncode, out, err in outcomes:
        assert returncode == 0, err
        assert out.strip() == migrate.head()


def test_delete_patient_cascades_to_lesions_and_tracks(migrated_db: str) -> None:
    _add_tracked_lesion(migrated_db, "P-2", "9.1")
    with session_scope(migrated_db) as s:
        s.execute(text("DELETE FROM patients"))
    with session_scope(migrated_db) as s:
        for table in (
            "studies",
            "series",
            "segmentations",
            "lesions",
            "lesion_tracks",
            "lesion_track_members",
        ):
            assert s.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
        assert s.execute(text("SELECT count(*) FROM models")).scalar() == 1


def test_queries_patient_list_and_timeline(migrated_db: str) -> None:
    with session_scope(migrated_db) as s:
        for p in range(3):
            patient = Patient(pseudo_id=f"P-{p}")
            for k in range(p + 1):
                study = Study(
                    patient=patient,
                    study_instance_uid=f"1.{p}.{k}",
                    study_date=dt.date(2020 + k, 1, 1),
                )
                _series(study, f"1.{p}.{k}.1", "arterial")
                _series(study, f"1.{p}.{k}.2", "portal")
                s.add(study)
        s.add(Patient(pseudo_id="P-empty"))
    with session_scope(migrated_db) as s:
        rows = {r.pseudo_id: r for r in queries.list_patients(s)}
        timeline = queries.patient_timeline(s, "P-2")
        assert queries.patient_timeline(s, "P-unknown") is None
        empty = queries.patient_timeline(s, "P-empty")
    assert rows["P-2"].studies == 3 and rows["P-2"].series == 6
    assert rows["P-2"].last_study_date == dt.date(2022, 1, 1)
    assert rows["P-2"].first_study_date == dt.date(2020, 1, 1)
    assert rows["P-empty"].studies == 0 and rows["P-empty"].last_study_date is None
    assert timeline is not None
    assert [st.study_date.year for st in timeline.studies if st.study_date] == [2020, 2021, 2022]
    assert [x.phase for x in timeline.studies[0].series] == ["arterial", "portal"]
    assert empty is not None and empty.studies == []


def _image(seed: int = 0) -> sitk.Image:
    arr = np.random.default_rng(seed).integers(-1000, 1000, size=(4, 5, 6), dtype=np.int16)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.7, 0.7, 2.5))
    image.SetOrigin((1.0, 2.0, 3.0))
    return image


def test_store_image_is_content_addressed_and_atomic(tmp_path: Path) -> None:
    image = _image()
    rel, sha = storage.store_image(image, tmp_path)
    assert rel == f"{sha[:2]}/{sha}.nii.gz"
    stored = sitk.ReadImage(str(tmp_path / rel))
    assert storage.image_hash(stored) == sha  # hash of voxels + geometry survives the round trip
    np.testing.assert_array_equal(sitk.GetArrayFromImage(stored), sitk.GetArrayFromImage(image))
    assert storage.store_image(image, tmp_path) == (rel, sha)  # idempotent
    moved = _image()
    moved.SetOrigin((1.0, 2.0, 4.0))
    assert storage.image_hash(moved) != sha  # geometry is part of the address
    assert storage.image_hash(_image(seed=1)) != sha
    assert not list((tmp_path / ".staging").iterdir())  # no temp files left behind


def test_db_cli_upgrade_current_downgrade(db_url: str) -> None:
    import json

    from typer.testing import CliRunner

    from app.cli.main import app

    runner = CliRunner()
    if db_url.startswith("sqlite"):  # no file yet: `db current` names the missing store, creates none
        assert "no LVT store at" in str(runner.invoke(app, ["db", "current", "--json"]).exception)
    else:
        before = json.loads(runner.invoke(app, ["db", "current", "--json"]).stdout)
        assert before["current"] is None and not before["up_to_date"]
    up = json.loads(runner.invoke(app, ["db", "upgrade", "--json"]).stdout)
    assert up["to"] == up["head"] == migrate.head() and up["next"] is None  # a new store: nothing to redo
    assert json.loads(runner.invoke(app, ["db", "current", "--json"]).stdout)["up_to_date"]
    older = runner.invoke(app, ["db", "upgrade", "0003"])  # a no-op that printed "0007 -> 0007"
    assert older.exit_code == 1 and "`lvt db downgrade 0003`" in str(older.exception)
    unconfirmed = runner.invoke(app, ["db", "downgrade", "base"])  # would drop the audit log too
    assert unconfirmed.exit_code == 1 and "--yes" in str(unconfirmed.exception)
    assert json.loads(runner.invoke(app, ["db", "current", "--json"]).stdout)["up_to_date"]
    unasked = runner.invoke(app, ["db", "downgrade", "--steps", "2"])  # 0008's policies went unasked
    assert unasked.exit_code == 1 and "--yes" in str(unasked.exception)
    assert "0013: response targets, nadir and new lesions; 0012: fluid places a segmentation left out" in str(unasked.exception)
    assert json.loads(runner.invoke(app, ["db", "current", "--json"]).stdout)["up_to_date"]
    back = runner.invoke(app, ["db", "downgrade", "--steps", "2", "--yes", "--json"])  # `-2` read as an option
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["to"] == f"{int(migrate.head()) - 2:04d}"
    relative_to_base = runner.invoke(app, ["db", "downgrade", "--steps", "99"])  # dropped it all unasked
    assert relative_to_base.exit_code == 1 and "reaches base" in str(relative_to_base.exception)
    assert json.loads(runner.invoke(app, ["db", "current", "--json"]).stdout)["current"] is not None
    both = runner.invoke(app, ["db", "downgrade", "0003", "--steps", "1"])
    assert both.exit_code == 2 and "not both" in both.output  # bad usage
    assert runner.invoke(app, ["db", "downgrade", "0007", "--yes"]).exit_code == 0  # the last release's schema
    again = json.loads(runner.invoke(app, ["db", "upgrade", "--json"]).stdout)
    assert again["next"] == "lvt batch --all --refresh"  # its results follow the older rules
    down = runner.invoke(app, ["db", "downgrade", "base", "--yes", "--json"])
    assert down.exit_code == 0 and json.loads(down.stdout)["to"] is None
    for verb in ("upgrade", "downgrade"):  # a mistyped revision: one line, exit 1, schema kept
        bad = runner.invoke(app, ["db", verb, "nonsense"])
        assert bad.exit_code == 1 and "revision 'nonsense'" in str(bad.exception)
    assert json.loads(runner.invoke(app, ["db", "current", "--json"]).stdout)["current"] is None


def test_timestamps_come_back_aware_in_utc_on_every_backend(migrated_db: str) -> None:
    """SQLite returned naive datetimes, PostgreSQL aware ones: the same store printed two ways."""
    from app.services import auth

    with session_scope(migrated_db) as s:
        auth.add_user(s, "dr.t", "clinician", "correct-horse")
    with session_scope(migrated_db) as s:
        (info,) = auth.list_users(s)
    assert info.created_at.tzinfo is not None and info.created_at.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.UTC) - info.created_at) < dt.timedelta(minutes=5)


def test_an_unreachable_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "LVT_VAR_DIR": str(tmp_path / "var"),
           "LVT_DATABASE_URL": "postgresql+psycopg://lvt:s3cret@127.0.0.1:9/nowhere"}
    done = subprocess.run([sys.executable, "-c", "from app.cli.main import main; main()", "patients", "list",
                           "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    error = json.loads(done.stdout)["error"]
    assert "127.0.0.1:9/nowhere" in error and "s3cret" not in error + done.stderr


def test_undated_studies_sort_as_the_earliest_on_every_backend(migrated_db: str) -> None:
    """NULL sorted first on SQLite and last on PostgreSQL: the same store listed differently."""
    with session_scope(migrated_db) as s:
        dated, undated = Patient(pseudo_id="P-dated"), Patient(pseudo_id="P-undated")
        s.add_all([dated, undated,
                   Study(patient=dated, study_instance_uid="5.1", study_date=dt.date(2020, 3, 1)),
                   Study(patient=dated, study_instance_uid="5.2", study_date=None),
                   Study(patient=undated, study_instance_uid="5.3", study_date=None)])
    with session_scope(migrated_db) as s:
        timeline = queries.patient_timeline(s, "P-dated")
        assert [study.study_date for study in timeline.studies] == [None, dt.date(2020, 3, 1)]
        assert [p.pseudo_id for p in queries.list_patients(s)] == ["P-dated", "P-undated"]


def test_files_a_killed_process_staged_are_swept(tmp_path: Path) -> None:
    """kill -9 during ingest skipped the clean-up, and the staged scans stayed for good."""
    import os
    import subprocess
    import sys
    import time

    staging = tmp_path / ".staging"
    code = ("import sys, SimpleITK as sitk; from pathlib import Path; from db import storage; "
            "storage.write_staged(sitk.Image(4, 4, 2, sitk.sitkInt16), Path(sys.argv[1]))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)  # it exits unpublished
    (left,) = staging.iterdir()
    old_style = staging / "0123456789ab-x1y2z3.nii.gz"  # an unknown writer: a day's grace
    old_style.write_bytes(b"")
    # this process's first staged write sweeps: the dead writer's file goes, a live one's stays
    mine, _ = storage.write_staged(sitk.Image(4, 4, 2, sitk.sitkInt16), tmp_path)
    assert not left.exists() and sorted(staging.iterdir()) == sorted([old_style, mine])
    assert storage.sweep_staging(staging) == []
    day_ago = time.time() - storage.FOREIGN_STAGED_MAX_AGE_S - 60
    os.utime(old_style, (day_ago, day_ago))
    assert storage.sweep_staging(staging) == [old_style] and list(staging.iterdir()) == [mine]


def test_a_writer_killed_before_gzipping_leaves_no_raw_nifti(tmp_path: Path) -> None:
    """kill -9 between ITK's write and the gzip left the uncompressed .nii (150 MB for a
    300-slice scan) in .staging for good: the sweep only looked at .nii.gz files."""
    import os
    import socket
    import subprocess
    import sys

    staging = tmp_path / ".staging"
    killed_mid_gzip = ("import os, shutil, signal, sys, SimpleITK as sitk; from pathlib import Path; "
                       "from db import storage; shutil.copyfileobj = lambda *a: os.kill(os.getpid(), signal.SIGKILL); "
                       "storage.write_staged(sitk.Image(4, 4, 2, sitk.sitkInt16), Path(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", killed_mid_gzip, str(tmp_path)], timeout=120)
    assert done.returncode == -9
    left = sorted(staging.iterdir())
    assert any(p.name.endswith(".nii") for p in left), left  # the raw copy the gzip reads
    live_raw = staging / f"0123456789ab_{socket.gethostname()}.{os.getpid()}_x1y2z3.nii"  # a live writer's
    live_raw.write_bytes(b"")
    assert sorted(storage.sweep_staging(staging)) == left
    assert list(staging.iterdir()) == [live_raw]


def test_a_listing_in_the_wrong_place_names_the_missing_store(tmp_path: Path) -> None:
    """It created an empty store there and printed "0 patients", as if the store were empty."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LVT_DATABASE_URL"}
    env["LVT_VAR_DIR"] = str(tmp_path / "var")
    # `db current` created the store there too, and the exports wrote an empty cohort from it
    for command in (["patients", "list"], ["users", "list"], ["studies", "list", "P-1"], ["db", "current"],
                    ["db", "downgrade"], ["export", "cohort", str(tmp_path / "out")],
                    ["export", "seg", "1", str(tmp_path / "seg.dcm")]):
        done = subprocess.run([sys.executable, "-c", "from app.cli.main import main; main()", *command],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 1 and "no LVT store at" in " ".join(done.stderr.split()), command
    assert not (tmp_path / "var").exists() and not (tmp_path / "out").exists()
    upgraded = subprocess.run([sys.executable, "-c", "from app.cli.main import main; main()", "db", "upgrade"],
                              capture_output=True, text=True, env=env, timeout=120)
    assert upgraded.returncode == 0 and (tmp_path / "var" / "lvt.db").is_file()  # upgrade still creates it


def test_a_bad_setting_or_database_url_is_one_message_naming_it(tmp_path: Path) -> None:
    """A traceback and no JSON document: pydantic's error named the field, SQLAlchemy's the
    module it could not load (``postgres://``)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("LVT_")}
    env["LVT_VAR_DIR"] = str(tmp_path / "var")
    cases = (({"LVT_DEVICE": "gpu"}, "LVT_DEVICE='gpu': Input should be 'auto', 'cpu' or 'cuda'"),
             ({"LVT_PRECISION": "fp16"}, "LVT_PRECISION='fp16'"),
             ({"LVT_DATABASE_URL": "postgres://lvt:secret@127.0.0.1:5432/lvt"}, "use postgresql+psycopg://"))
    for extra, said in cases:
        done = subprocess.run([sys.executable, "-c", "from app.cli.main import main; main()",
                               "patients", "list", "--json"],
                              capture_output=True, text=True, env={**env, **extra}, timeout=120)
        doc = json.loads(done.stdout)
        assert done.returncode == 1 and doc["exit_code"] == 1 and said in doc["error"], done.stderr
        assert "Traceback" not in done.stderr and "secret" not in done.stdout + done.stderr


FAILING_REVISION = '''"""fails half way"""
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    raise RuntimeError("killed half way")


def downgrade() -> None:
    op.drop_table("half_done")
'''


def test_a_migration_that_stops_half_way_leaves_the_sqlite_store_as_it_was(tmp_path: Path) -> None:
    """Python's SQLite driver ran each CREATE TABLE outside any transaction: a first `lvt db
    upgrade` killed half way left some tables, and every later run failed on "table models
    already exists". A revision that fails after creating a table stands in for the kill."""
    import shutil

    from alembic import command
    from alembic.script import ScriptDirectory

    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    url = f"sqlite:///{tmp_path / 'lvt.db'}"
    config = migrate.alembic_config(url)
    config.set_main_option("script_location", str(scripts))
    head = ScriptDirectory.from_config(config).get_current_head()
    (scripts / "versions" / "9999_fails.py").write_text(FAILING_REVISION.format(head=head))

    with pytest.raises(RuntimeError, match="killed half way"):
        command.upgrade(config, "head")  # a first upgrade: every revision in one go
    assert inspect(get_engine(url)).get_table_names() == []
    command.upgrade(config, head)
    with pytest.raises(RuntimeError, match="killed half way"):
        command.upgrade(config, "head")
    assert "half_done" not in inspect(get_engine(url)).get_table_names()
    assert migrate.current(url) == head


def test_two_writers_taking_a_new_lock_at_once_wait_in_turn(migrated_db: str) -> None:
    """On a new PostgreSQL store the `batch-claim` lock row did not exist: two batches both
    inserted it and the second failed on "duplicate key value violates pk_store_locks"."""
    import threading

    from db.engine import acquire_lock, make_session_factory
    from db.models import StoreLock

    factory = make_session_factory(migrated_db)
    first = factory()
    acquire_lock(first, "qa-new-lock")  # creates the row, not yet committed
    errors: list[BaseException] = []
    order: list[str] = []

    def second_writer() -> None:
        try:
            with factory() as session:
                acquire_lock(session, "qa-new-lock")
                order.append("second")
                session.commit()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=second_writer)
    thread.start()
    thread.join(timeout=1.0)
    order.append("first")
    first.commit()
    first.close()
    thread.join(timeout=30)
    assert not errors, errors
    assert order == ["first", "second"]  # the second waited for the first's transaction
    with session_scope(migrated_db) as s:
        assert s.scalar(select(func.count()).select_from(StoreLock).where(StoreLock.name == "qa-new-lock")) == 1
