"""Every page through Streamlit's AppTest on a tiny demo cohort: no exceptions, database values,
role gates, login and the audit of patient openings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app" / "web" / "streamlit_app.py")


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny demo cohort (2 patients × 2 studies × 2 phases) in a module-wide var dir.

    No model file: the demo's ground-truth fallback (the batch path is in test_demo.py).
    """
    from app.services.demo import DemoConfig, build_demo
    from app.settings import get_settings
    from db.engine import get_engine

    var = tmp_path_factory.mktemp("web") / "var"
    saved = {k: os.environ.get(k) for k in ("LVT_VAR_DIR", "LVT_DATABASE_URL", "LVT_SECRET_KEY", "LVT_DATA_DIR",
                                            "LVT_MODEL_PATH")}
    os.environ.update(LVT_VAR_DIR=str(var), LVT_SECRET_KEY="web-test-key", LVT_MODEL_PATH=str(var / "none.pt"))
    os.environ.pop("LVT_DATABASE_URL", None)
    os.environ.pop("LVT_DATA_DIR", None)
    get_settings.cache_clear()
    build_demo(DemoConfig(patients=2, timepoints=2, phases=2, size="tiny"))
    yield get_settings().resolved_database_url
    get_engine.cache_clear()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


def _scalar(url: str, stmt):  # type: ignore[no-untyped-def]
    from db.engine import session_scope

    with session_scope(url) as session:
        return session.scalar(stmt)


def _rows(url: str, stmt):  # type: ignore[no-untyped-def]
    from db.engine import session_scope

    with session_scope(url) as s:
        result = s.execute(stmt).all()
        return [row[0] if len(row) == 1 else tuple(row) for row in result]


def _signed_in(role: str) -> AppTest:
    """An app whose browser session is signed in with the demo account of ``role``."""
    from app.services.demo import DEMO_USERS

    at = AppTest.from_file(APP, default_timeout=60).run()
    name, password = DEMO_USERS[role]
    at.text_input(key="login_user").input(name)
    at.text_input(key="login_password").input(password)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def _set_found_by(url: str, patient_id: int, value: str | None) -> None:
    """Mark every lesion of the patient as found by ``value`` (what a segmenter records)."""
    from db.engine import session_scope
    from db.models import Lesion, Segmentation, Series, Study

    with session_scope(url) as session:
        ids = select(Lesion.id).join(Segmentation).join(Series).join(Study).where(Study.patient_id == patient_id)
        session.execute(update(Lesion).where(Lesion.id.in_(ids)).values(found_by=value))


def _text(at: AppTest) -> str:
    parts = [e.value for e in (*at.title, *at.markdown, *at.caption, *at.info, *at.success, *at.error, *at.subheader)]
    return "\n".join(str(p) for p in parts)


def test_anonymous_visitor_sees_only_login(demo_db: str) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert "Patients" not in [t.value for t in at.title]
    assert len(at.dataframe) == 0
    at.switch_page("views/followup.py").run()  # a shared link: the sign-in form, nothing else
    assert not at.exception
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert "Patient follow-up" not in [t.value for t in at.title] and len(at.dataframe) == 0
    assert at.session_state["requested_page"] == ("views/followup.py", {})


def test_wrong_password_is_refused(demo_db: str) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input(key="login_user").input("clinician")
    at.text_input(key="login_password").input("not-the-password")
    at.button[0].click().run()
    assert not at.exception
    assert any("wrong password" in e.value for e in at.error)
    assert "user" not in at.session_state


def test_patients_page_matches_database(demo_db: str) -> None:
    from db.models import LesionTrack, Patient, Study

    at = _signed_in("clinician")
    assert [t.value for t in at.title] == ["Patients"]
    table = at.dataframe[0].value
    n_patients = _scalar(demo_db, select(func.count(Patient.id)))
    assert len(table) == n_patients == 2
    for _, row in table.iterrows():
        pid = _scalar(demo_db, select(Patient.id).where(Patient.pseudo_id == row["patient"]))
        assert row["studies"] == _scalar(demo_db, select(func.count(Study.id)).where(Study.patient_id == pid))
        assert row["tracked lesions"] == _scalar(
            demo_db, select(func.count(LesionTrack.id)).where(LesionTrack.patient_id == pid)
        )
    assert "not for clinical decisions" in _text(at)


def test_followup_page_shows_patient_and_audits_opening(demo_db: str) -> None:
    from db.models import AuditEvent, LesionTrack, Patient

    at = _signed_in("clinician")
    patient = at.dataframe[0].value["patient"].iloc[0]
    _set_found_by(demo_db, _scalar(demo_db, select(Patient.id).where(Patient.pseudo_id == patient)), "faint_search")
    at.selectbox(key="patient_pick").select(patient)
    at.button(key="open_patient").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == f"Patient {patient[:10]}"  # short label; full pseudonym in the caption
    assert any(patient in c.value for c in at.caption)
    pid = _scalar(demo_db, select(Patient.id).where(Patient.pseudo_id == patient))
    tracks = _scalar(demo_db, select(func.count(LesionTrack.id)).where(LesionTrack.patient_id == pid))
    at.number_input(key="fu_min_diameter").set_value(0.0).run()  # the size filter off: every track
    metric = {m.label: m.value for m in at.metric}
    assert metric["Lesion tracks"] == str(tracks)
    at.number_input(key="fu_min_diameter").set_value(100.0).run()  # larger than any phantom lesion
    assert {m.label: m.value for m in at.metric}["Lesion tracks"] == "0"
    assert any("at this size filter" in i.value for i in at.info)
    assert "before the radiologist" not in _text(at)  # no badge for a track the filter hides
    # no track to chart, but the liver volume and where its scans stop are still shown
    assert len(at.get("plotly_chart")) == 2  # timeline and liver volume
    assert any("stops inside the liver" in c.value for c in at.caption)
    at.number_input(key="fu_min_diameter").set_value(0.0).run()
    assert len(at.get("plotly_chart")) >= 2  # timeline and trajectory
    from db.models import Study, VolumetryResult

    cut = _scalar(demo_db, select(func.count(VolumetryResult.id)).join(Study, Study.id == VolumetryResult.study_id)
                  .where(Study.patient_id == pid, VolumetryResult.liver_cut_at > ""))
    cut_caption = [c.value for c in at.caption if "stops inside the liver" in c.value]
    assert cut > 0 and len(cut_caption) == 1  # the tiny phantoms' scans stop in the right lobe
    assert len(re.findall(r"\((?:head|foot)[a-z ]* ends?\)", cut_caption[0])) == cut
    assert "lower bound" in cut_caption[0]
    # each lesion says who drew it (marked as a searching segmenter would, before opening)
    table = next(d.value for d in at.dataframe if "found_by" in d.value.columns and "track" in d.value.columns)
    assert len(table) > 0 and set(table["found_by"]) == {"faint search"}
    # the CT slice, then the largest track's lesion on each of its days, side by side
    from app.web import queries
    from db.engine import session_scope

    with session_scope(demo_db) as session:
        page = queries.followup(session, patient)
    assert page is not None
    largest = int(page.lesions.groupby("track")["diameter_mm"].max().idxmax())
    gallery = at.selectbox(key="fu_gallery_track")
    from app.web import response_table

    target = " · RECIST target" if largest in response_table.model_target_tracks(page.responses) else ""
    assert gallery.value is None and gallery.options[0] == f"track {largest}{target} (largest ⌀ " \
        f"{page.lesions['diameter_mm'].max():.1f} mm)"  # nothing read until a track is chosen, largest first
    assert len(at.get("image")) == 1
    gallery.select(largest).run()
    assert len(at.get("image")) == 1 + int((page.lesions["track"] == largest).sum())
    assert "longest diameter is measured" in _text(at)
    # the RECIST table says what each category was read from: targets, sums, changes
    responses = next(d.value for d in at.dataframe if "read by" in d.value.columns)
    assert {"model", "radiologist"} == set(responses["read by"])
    assert (responses["response"] == "baseline").sum() == 2 and responses["targets (mm)"].str.contains("track").any()
    assert [b.label for b in at.get("download_button")] == ["Download report (HTML)", "Download report (PDF)"]
    tracked = at.radio(key="fu_phase").value  # the portal phase opens first, and tracks follow it
    other = next(o for o in at.radio(key="fu_phase").options if o != tracked)
    at.radio(key="fu_phase").set_value(other).run()  # the table lists the tracked phase's lesions: said so
    assert any(f"Tracks follow the {tracked} phase" in c.value and f"The {other} image" in c.value
               for c in at.caption)
    at.radio(key="fu_phase").set_value(tracked).run()
    # a jump lands on the slice the lesion's longest diameter is measured on: the table's ⌀ is there
    from app.settings import get_settings
    from app.web import slices
    from lvt_core.lesions import feret_in_plane

    jump = next(s for s in at.selectbox if s.key.startswith("fu_lesion_"))
    series_id = int(jump.key.removeprefix("fu_lesion_"))
    jumped = page.lesions[(page.lesions["series_id"] == series_id)].iloc[0]
    jump.select(int(jumped["track"])).run()
    z = at.slider(key=f"fu_slice_{series_id}").value - 1
    data_dir = get_settings().resolved_data_dir
    components = slices.components_for_display(slices.read_stored(page.label_maps[series_id], data_dir))
    spacing = slices.read_for_display(page.label_maps[series_id], data_dir).GetSpacing()
    assert feret_in_plane(components[z] == jumped["lesion_index"], spacing[:2])[0] == pytest.approx(
        jumped["diameter_mm"], abs=0.05)
    opened = _scalar(
        demo_db,
        select(func.count(AuditEvent.id)).where(
            AuditEvent.action == "open_patient", AuditEvent.target == patient, AuditEvent.actor == "clinician"
        ),
    )
    assert opened == 1
    at.slider(key=next(s.key for s in at.slider if s.key.startswith("fu_slice_"))).set_value(1).run()
    assert not at.exception
    image = at.get("image")[0].proto
    assert " · slice 1/" in str(image)  # the slider counts slices from 1, as the image's caption does
    opened_again = _scalar(
        demo_db, select(func.count(AuditEvent.id)).where(AuditEvent.action == "open_patient", AuditEvent.target == patient)
    )
    assert opened_again == 1  # a rerun is not a new opening
    at.switch_page("views/scene.py").run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 1
    assert [b.label for b in at.get("download_button")] == ["Download GLB", "Download STL (ZIP)"]
    _set_found_by(demo_db, pid, None)  # back to the demo's ground truth (origin unknown)


def test_the_address_decides_which_patient_a_page_shows(demo_db: str) -> None:
    """Back to ``?patient=A`` showed the patient opened last (B) and rewrote the address; a
    patient opened by its address was lost on the next page."""
    at = _signed_in("clinician")
    first, second = at.dataframe[0].value["patient"].iloc[:2]
    at.selectbox(key="patient_pick").select(second)
    at.button(key="open_patient").click().run()
    assert at.title[0].value == f"Patient {second[:10]}"
    at.query_params["patient"] = first  # the browser's Back to an earlier follow-up
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == f"Patient {first[:10]}" and at.query_params["patient"] == first
    assert at.session_state["patient"] == first  # the sidebar's 3D scene link follows it


def _latest_tracked_scene(url: str) -> tuple[str, int, str, dict[int, int]]:
    """(patient, study id, label map, lesion index → track) of a demo patient's latest study,
    as the 3D page opens it."""
    from app.web import queries, scene3d
    from db.engine import session_scope
    from db.models import Patient

    with session_scope(url) as session:
        patient = session.scalars(select(Patient.pseudo_id).order_by(Patient.id)).first()
        info = queries.followup(session, patient)
    choices = scene3d.series_choices(info.studies, info.label_maps, info.tracked_series)
    chosen = choices[scene3d.default_choice(choices)]
    in_series = info.lesions[info.lesions["series_id"] == chosen.series_id]
    track_of = {int(r["lesion_index"]): int(r["track"]) for _, r in in_series.iterrows()}
    return patient, chosen.study_id, info.label_maps[chosen.series_id], track_of


def test_the_pages_downloads_are_what_lvt_export_mesh_writes(demo_db: str, tmp_path: Path) -> None:
    """The page's GLB came from a second writer (LPS millimetres: a 180 m object lying on its
    back; no materials: an opaque liver hid every tumor) and its STL merged every structure into
    one body. Both are now the CLI's files, tumors named by the track the page shows."""
    import io
    import zipfile

    import numpy as np
    import trimesh

    from app.services.export import export_mesh
    from app.settings import get_settings
    from app.web import imaging, scene3d

    patient, study_id, label_map, track_of = _latest_tracked_scene(demo_db)
    data_dir = str(get_settings().resolved_data_dir)
    keys = [key for key, _mesh in imaging.scene_meshes(label_map, data_dir).items()]
    names = tuple((part.key, part.file_name) for part in scene3d.structures(keys, track_of))
    assert any(name.startswith("tumor_track_") for _key, name in names)
    export_mesh(patient, str(study_id), tmp_path / "cli", ("stl", "glb"))

    web = trimesh.load(io.BytesIO(imaging.glb_file(label_map, data_dir, names)), file_type="glb")
    cli = trimesh.load(tmp_path / "cli" / "scene.glb")
    assert set(web.geometry) == {name for _key, name in names}
    for key, name in names:
        np.testing.assert_array_equal(web.geometry[name].vertices, cli.geometry[key].vertices)
        np.testing.assert_array_equal(web.geometry[name].faces, cli.geometry[key].faces)
    assert web.geometry["liver"].visual.material.alphaMode == "BLEND"
    assert float(np.ptp(web.geometry["liver"].vertices, axis=0).max()) < 1.0  # metres, not millimetres

    with zipfile.ZipFile(io.BytesIO(imaging.stl_zip(label_map, data_dir, names))) as archive:
        assert sorted(archive.namelist()) == sorted(f"{name}.stl" for _key, name in names)
        for key, name in names:
            assert archive.read(f"{name}.stl") == (tmp_path / "cli" / f"{key}.stl").read_bytes()


def test_a_series_with_nothing_segmented_says_so_without_downloads(demo_db: str) -> None:
    """An empty label map crashed the 3D page with trimesh's "Can't export empty scenes!"."""
    import numpy as np
    import SimpleITK as sitk

    from app.settings import get_settings
    from app.web import data
    from db import storage
    from db.models import Segmentation

    patient, _study_id, label_map, _tracks = _latest_tracked_scene(demo_db)
    root = get_settings().resolved_data_dir
    labels = storage.read_stored(label_map, root)
    empty = sitk.GetImageFromArray(np.zeros(sitk.GetArrayViewFromImage(labels).shape, np.uint8))
    empty.CopyInformation(labels)
    empty_path, _sha = storage.store_image(empty, root)
    _set_label_map(demo_db, label_map, empty_path)
    try:
        data.clear()
        at = _signed_in("clinician")
        at.query_params["patient"] = patient
        at.switch_page("views/scene.py").run()
        assert not at.exception, at.exception
        assert any("Nothing was found in this series" in i.value for i in at.info)
        assert not at.get("download_button") and not at.get("plotly_chart")
    finally:
        _set_label_map(demo_db, empty_path, label_map)
        data.clear()
    assert _scalar(demo_db, select(func.count(Segmentation.id)).where(Segmentation.label_map_path == label_map)) == 1


def test_a_shared_scene_link_is_audited_and_an_address_never_renders_as_markdown(demo_db: str) -> None:
    """The 3D page showed a patient without an audit event, and a crafted ``?patient=`` put a
    live link into the app ("[click here](http://evil.example)")."""
    from db.models import AuditEvent

    patient, *_ = _latest_tracked_scene(demo_db)

    def opened() -> int:
        return _scalar(demo_db, select(func.count(AuditEvent.id)).where(
            AuditEvent.action == "open_patient", AuditEvent.target == patient, AuditEvent.actor == "admin"))

    before = opened()
    at = _signed_in("admin")
    at.query_params["patient"] = patient
    at.switch_page("views/scene.py").run()
    assert not at.exception, at.exception
    assert opened() == before + 1
    crafted = "[click here](http://evil.example) **bold**"
    for page in ("views/scene.py", "views/followup.py"):
        at = _signed_in("clinician")
        at.query_params["patient"] = crafted
        at.switch_page(page).run()
        assert not at.exception, at.exception
        shown = [e.value for e in at.error]  # the Markdown source: a code span, shown as typed
        assert len(shown) == 1 and shown[0] == f"Patient `{crafted}` is not in the database."


def _set_label_map(url: str, old: str, new: str) -> None:
    from db.engine import session_scope
    from db.models import Segmentation

    with session_scope(url) as session:
        session.execute(update(Segmentation).where(Segmentation.label_map_path == old).values(label_map_path=new))


def test_volumetry_page_counts_flags(demo_db: str) -> None:
    from db.models import VolumetryResult

    at = _signed_in("clinician")
    at.switch_page("views/volumetry.py").run()
    assert not at.exception, at.exception
    metric = {m.label: m.value for m in at.metric}
    flagged_studies = _scalar(
        demo_db, select(func.count(func.distinct(VolumetryResult.study_id))).where(VolumetryResult.flagged.is_(True))
    )
    assert metric["Flagged days"] == str(flagged_studies)
    multi = _scalar(demo_db, select(func.count(func.distinct(VolumetryResult.study_id)))
                    .where(VolumetryResult.deviation_pct.is_not(None)))
    assert metric["Multi-phase days"] == str(multi) == "4"
    # a reader learns that the model alone can cross the band (MODEL_CARD, Known limits)
    assert any("arterial phase first" in c.value for c in at.caption)
    # the tiny phantoms' 192 mm scans stop inside the liver's right lobe in most phases
    cut_phases = _scalar(demo_db, select(func.count(VolumetryResult.id)).where(
        VolumetryResult.deviation_pct.is_not(None), VolumetryResult.liver_cut_at > ""))
    cut_studies = _scalar(demo_db, select(func.count(func.distinct(VolumetryResult.study_id))).where(
        VolumetryResult.deviation_pct.is_not(None), VolumetryResult.liver_cut_at > ""))
    assert cut_phases > 0 and metric["Phases cut off"] == str(cut_phases)
    assert len(at.warning) == 1
    assert f"In {cut_studies} studies a phase's scan stops inside the liver" in at.warning[0].value


def _cannot_open(at: AppTest, page: str, title: str) -> None:
    """The page is either unknown to the navigation or renders something else."""
    try:
        at.switch_page(page)
    except ValueError:
        return
    at.run()
    assert title not in [t.value for t in at.title]


def test_roles_gate_pages(demo_db: str) -> None:
    at = _signed_in("clinician")
    _cannot_open(at, "views/admin.py", "Admin")
    _cannot_open(at, "views/cohort.py", "Cohort")
    at = _signed_in("researcher")
    at.switch_page("views/cohort.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Cohort"
    _cannot_open(at, "views/admin.py", "Admin")


def test_cohort_and_admin_pages(demo_db: str) -> None:
    from db.models import Lesion, LesionTrackMember, MeasurementLink, Patient, User

    at = _signed_in("admin")
    at.switch_page("views/cohort.py").run()
    assert not at.exception, at.exception
    tracked = _scalar(demo_db, select(func.count(Lesion.id)).join(LesionTrackMember, LesionTrackMember.lesion_id == Lesion.id))
    assert len(at.dataframe[0].value) == tracked
    linked = _scalar(demo_db, select(func.count(MeasurementLink.id)).where(MeasurementLink.lesion_id.is_not(None)))
    assert linked > 0
    assert f"{linked} linked measurement pairs." in [c.value for c in at.caption]
    big = _scalar(demo_db, select(func.count(Lesion.id)).join(LesionTrackMember, LesionTrackMember.lesion_id == Lesion.id)
                  .where(Lesion.longest_axial_diameter_mm >= 15.0))
    at.number_input(key="co_min_d").set_value(15.0).run()  # filtered in SQL
    assert not at.exception, at.exception
    assert len(at.dataframe[0].value) == big < tracked
    assert any(c.value.startswith(f"{big} lesion measurements") for c in at.caption)
    at.number_input(key="co_min_d").set_value(0.0).run()
    from db.models import Response, Study

    latest = {}  # each patient's latest model response, as the filter reads it
    for pid, category in _rows(demo_db, select(Response.patient_id, Response.recist_category)
                               .join(Study, Study.id == Response.study_id)
                               .where(Response.source == "model").order_by(Study.study_date)):
        latest[pid] = category
    category = sorted(latest.values())[0]
    at.multiselect(key="co_resp").select(category).run()  # crashed: the model was not passed on
    assert not at.exception, at.exception
    assert set(at.dataframe[0].value["patient"]) == set(_rows(demo_db, select(Patient.pseudo_id).where(
        Patient.id.in_([pid for pid, c in latest.items() if c == category]))))
    at.switch_page("views/admin.py").run()
    assert not at.exception, at.exception
    users = at.dataframe[0].value
    assert set(users["username"]) >= {"admin", "clinician", "researcher"}
    versions = next(d.value for d in at.dataframe if "lvt_version" in d.value.columns)
    # the demo's imported ground truth: no LVT pipeline drew it, so nothing to redraw
    assert versions[["model", "lvt_version"]].values.tolist() == [["phantom ground truth", "not recorded"]]
    assert not versions["outdated"].any() and not [w for w in at.warning if "--outdated" in w.value]
    audit = at.dataframe[-1].value
    assert "login" in set(audit["action"])
    # disabling offers enabling next (a mistaken disable could only be undone on the command line)
    at.selectbox(key="admin_target").select("researcher").run()
    assert at.button(key="admin_toggle_active").label == "Disable"
    at.button(key="admin_toggle_active").click().run()
    assert not _scalar(demo_db, select(User.active).where(User.username == "researcher"))
    at.selectbox(key="admin_target").select("researcher").run()
    assert at.button(key="admin_toggle_active").label == "Enable"
    at.button(key="admin_toggle_active").click().run()
    assert _scalar(demo_db, select(User.active).where(User.username == "researcher"))


def test_not_a_lesion_correction_goes_through_analytics(demo_db: str) -> None:
    from app.services import auth
    from app.web import actions
    from db.engine import session_scope
    from db.models import AuditEvent, LesionTrackMember, TrackOverride, User, utcnow

    lesion_id = _scalar(demo_db, select(LesionTrackMember.lesion_id).limit(1))
    with session_scope(demo_db) as s:
        row = s.scalar(select(User).where(User.username == "clinician"))
        user = auth.CurrentUser(id=row.id, username=row.username, role=row.role, signed_in_at=utcnow())
        actions.mark_not_lesion(s, user, lesion_id, note="calcification")
    assert _scalar(demo_db, select(func.count(TrackOverride.id)).where(TrackOverride.lesion_id == lesion_id)) == 1
    assert _scalar(demo_db, select(func.count(LesionTrackMember.id)).where(LesionTrackMember.lesion_id == lesion_id)) == 0
    assert _scalar(demo_db, select(func.count(AuditEvent.id)).where(AuditEvent.target == f"lesion {lesion_id}")) >= 1



@pytest.fixture()
def demo_copy(demo_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A copy of the demo store that a test may change (settings point at it); its URL."""
    import shutil

    from app.settings import get_settings

    shutil.copytree(os.environ["LVT_VAR_DIR"], tmp_path / "var")
    monkeypatch.setenv("LVT_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield get_settings().resolved_database_url
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture()
def split_demo(demo_copy: str) -> str:
    """A copy of the demo store whose first patient's last day is two studies (its arterial
    series moved to a study of its own, same date, as sites that give each phase its own
    study UID send it); returns the patient's pseudonym."""
    from app.services.analytics import current_model_id, refresh_patient
    from db.engine import session_scope
    from db.models import Patient, Series, Study, VolumetryResult

    with session_scope(demo_copy) as s:
        patient = s.scalar(select(Patient).order_by(Patient.id).limit(1))
        last = s.scalar(select(Study).where(Study.patient_id == patient.id)
                        .order_by(Study.study_date.desc()).limit(1))
        other = Study(patient_id=patient.id, study_date=last.study_date,
                      study_instance_uid=f"{last.study_instance_uid}.9")
        s.add(other)
        s.flush()
        arterial = s.scalar(select(Series).where(Series.study_id == last.id, Series.phase == "arterial"))
        arterial.study_id = other.id
        for row in s.scalars(select(VolumetryResult).where(VolumetryResult.series_id == arterial.id)):
            row.study_id = other.id
        refresh_patient(s, patient.id, current_model_id(s))
        return patient.pseudo_id


def test_a_day_stored_as_two_studies_reads_as_one_day_on_the_pages(split_demo: str) -> None:
    """The arterial image of a day whose phases are separate studies said "No tracked lesions
    in this study" (the tracks follow the day's portal study), and the volumetry page counted
    the day's phases as two one-phase studies."""
    at = _signed_in("clinician")
    at.selectbox(key="patient_pick").select(split_demo)
    at.button(key="open_patient").click().run()
    assert not at.exception, at.exception
    assert at.radio(key="fu_phase").value == "portal"
    at.radio(key="fu_phase").set_value("arterial").run()
    assert not at.exception, at.exception
    assert any("Tracks follow the portal phase" in c.value for c in at.caption)
    at.switch_page("views/volumetry.py").run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Multi-phase days"] == "4"


def test_a_phase_without_liver_is_named_not_dropped(demo_copy: str) -> None:
    """A phase whose scan held no liver (0 ml) dropped its day from the volumetry page without a
    word, left the patient "ok", and halved the follow-up's mean-of-phases liver line; 0.04 ml
    of stray voxels flagged the good phase at +100 %."""
    from app.services.analytics import current_model_id, refresh_patient, volumetry_overview
    from app.web import queries
    from db.engine import session_scope
    from db.models import Patient, Series, Study, VolumetryResult

    with session_scope(demo_copy) as s:
        patient = s.scalar(select(Patient).order_by(Patient.id).limit(1))
        first = s.scalar(select(Study).where(Study.patient_id == patient.id).order_by(Study.study_date).limit(1))
        portal = s.scalar(select(VolumetryResult).join(Series, Series.id == VolumetryResult.series_id)
                          .where(Series.study_id == first.id, Series.phase == "portal"))
        portal.total_ml = portal.functional_ml = 0.04
        refresh_patient(s, patient.id, current_model_id(s))
        pseudo, day = patient.pseudo_id, first.study_date
    overview = volumetry_overview(url=demo_copy)
    row = overview[(overview["patient"] == pseudo) & (overview["study_date"] == day)].iloc[0]
    assert row["phases_without_liver"] == 1 and not row["flagged"]
    assert "no liver found in the portal (0.0 ml) scan: volumetry not possible" in row["warning"]
    with session_scope(demo_copy) as s:
        listed = queries.patient_rows(s)
        assert listed.loc[listed["patient"] == pseudo, "volumetry"].item() == "⚠ check"
    at = _signed_in("clinician")
    at.switch_page("views/volumetry.py").run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Multi-phase days"] == "4"
    assert any("holds no liver" in e.value and str(day) in e.value for e in at.error)


def test_an_undated_study_opens_on_the_follow_up_page(demo_copy: str) -> None:
    """Choosing an undated study found no series (None is no date to compare) and crashed."""
    from app.services.analytics import current_model_id, refresh_patient
    from db.engine import session_scope
    from db.models import Patient, Study

    with session_scope(demo_copy) as s:
        patient = s.scalar(select(Patient).order_by(Patient.id).limit(1))
        first = s.scalar(select(Study).where(Study.patient_id == patient.id).order_by(Study.study_date).limit(1))
        first.study_date, undated = None, first.id
        refresh_patient(s, patient.id, current_model_id(s))
        pseudo = patient.pseudo_id
    at = _signed_in("clinician")
    at.selectbox(key="patient_pick").select(pseudo)
    at.button(key="open_patient").click().run()
    assert not at.exception, at.exception
    at.selectbox(key="fu_study").select(f"undated study {undated} (not tracked)").run()
    assert not at.exception, at.exception


def test_the_follow_up_page_shows_tracking_warnings_and_lesions_cut_by_the_scan(demo_copy: str) -> None:
    """A registration replaced by the scanner frame, and a lesion the scan's edge cuts, were
    known at batch time and never reached the page: both are stored now and shown."""
    from app.services.analytics import current_model_id
    from db.engine import session_scope
    from db.models import Lesion, LesionTrackMember, Measurement, Patient, TrackingWarning

    with session_scope(demo_copy) as s:
        patient = s.scalar(select(Patient).order_by(Patient.id).limit(1))
        s.add(TrackingWarning(patient_id=patient.id, model_id=current_model_id(s),
                              message="registering timepoint 1 (2024-04-15) to timepoint 0: not registered"))
        s.add(TrackingWarning(patient_id=patient.id, model_id=current_model_id(s),
                              message="track 2's lesion is not drawn at timepoint 1 (2024-04-15), but fluid of "
                                      "1.4 ml (at most 11 HU in every phase) was left out 2 mm from where it was"))
        lesion = s.scalar(select(Lesion).join(LesionTrackMember, LesionTrackMember.lesion_id == Lesion.id)
                          .where(LesionTrackMember.study_id == patient.studies[-1].id).limit(1))
        s.execute(update(Lesion).values(cut_by_scan_edge=False))
        lesion.cut_by_scan_edge = True
        pseudo = patient.pseudo_id
        # a lesion the radiologist measured where the model drew nothing: the page says so
        s.add(Measurement(patient_id=patient.id, study_id=patient.studies[-1].id, lesion_label="L9",
                          longest_diameter_mm=14.0, location_x_mm=500.0, location_y_mm=500.0,
                          location_z_mm=500.0, reader="dr"))
        measured_on = patient.studies[-1].study_date
    from app.services.analytics import refresh_responses

    refresh_responses(url=demo_copy)  # as `lvt measurements import` does
    at = _signed_in("clinician")
    listed = at.dataframe[0].value.set_index("patient")
    at.selectbox(key="patient_pick").select(pseudo)
    at.button(key="open_patient").click().run()
    at.number_input(key="fu_min_diameter").set_value(0.0).run()
    assert not at.exception, at.exception
    assert any("without registration" in w.value and "timepoint 1 (2024-04-15)" in w.value for w in at.warning)
    # a track gone where fluid was left out is said as it is, not as a registration problem
    assert any(w.value.startswith("Track 2's lesion is not drawn at timepoint 1") and w.value.endswith("was.")
               for w in at.warning)
    table = next(d.value for d in at.dataframe if "track" in d.value.columns)  # the last day opens first
    assert table["edge"].tolist().count("cut") == 1 and set(table["edge"]) <= {"cut", ""}
    missed = [w.value for w in at.warning if w.value.startswith("Measured by the radiologist and linked to no")]
    assert len(missed) == 1 and f"L9 on {measured_on} (14.0 mm)" in missed[0]
    # the patients list counts them from the stored links, as the page names them from its own
    assert listed.loc[pseudo, "unlinked measurements"] == missed[0].count(" mm)") >= 1


def test_the_follow_up_page_shows_what_ingest_noted_on_the_scan_in_view(demo_copy: str) -> None:
    """Ingest stores warnings per series (a scan split from a multiphase series, padding stored
    as air, a study date taken from another tag); no page showed them."""
    from db.engine import session_scope
    from db.models import Patient, Series

    note = "one of 2 acquisitions under one SeriesInstanceUID (told apart by AcquisitionNumber), stored as a scan of its own"
    with session_scope(demo_copy) as s:
        patient = s.scalar(select(Patient).order_by(Patient.id).limit(1))
        last = patient.studies[-1]  # the last day opens first
        s.execute(update(Series).where(Series.study_id == last.id).values(warnings=[note]))
        pseudo = patient.pseudo_id
    at = _signed_in("clinician")
    at.selectbox(key="patient_pick").select(pseudo)
    at.button(key="open_patient").click().run()
    assert not at.exception, at.exception
    assert any(c.value == f"Ingest notes on this scan: {note}." for c in at.caption)
    at.selectbox(key="fu_study").select(at.selectbox(key="fu_study").options[0]).run()  # a scan without notes
    assert not any(c.value.startswith("Ingest notes") for c in at.caption)


def test_size_filter_keeps_whole_tracks() -> None:
    import pandas as pd

    from app.web.analysis import tracks_at_least

    lesions = pd.DataFrame({"track": [1, 1, 2, 3], "diameter_mm": [4.0, 12.0, 4.5, 6.0]})
    assert tracks_at_least(lesions, 5.0)["track"].tolist() == [1, 1, 3]  # track 1 grew past 5 mm
    assert tracks_at_least(lesions, 0.0).equals(lesions)
    assert tracks_at_least(lesions, 20.0).empty


def test_early_badge_says_when_the_search_drew_the_first_sighting() -> None:
    import pandas as pd

    from app.web.analysis import first_found_by_search

    lesions = pd.DataFrame({"track": [1, 1, 2, 2], "study_date": ["2024-01-01", "2024-04-01"] * 2,
                            "found_by": ["faint_search", "network", "network", "faint_search"]})
    assert first_found_by_search(lesions, 1)  # first seen by the search, then by the network too
    assert not first_found_by_search(lesions, 2)  # the network saw it first
    assert not first_found_by_search(lesions, 3)  # no such track
    confirmed = pd.DataFrame({"track": [4, 4], "study_date": ["2024-01-01", "2024-04-01"],
                              "found_by": ["other_phase", "network"]})
    assert first_found_by_search(confirmed, 4)  # another phase confirmed the first sighting


def test_an_early_badge_gives_a_short_lead_in_days() -> None:
    """Whole months read a 12-day lead as "seen by the model 0 months before the radiologist"."""
    from app.web.analysis import lead_phrase

    assert [lead_phrase(d) for d in (1, 12, 60, 61, 91, 365)] == [
        "1 day", "12 days", "60 days", "2.0 months", "3.0 months", "12.0 months"]


def test_found_by_labels() -> None:
    from app.web.theme import found_by_label

    assert [found_by_label(v) for v in ("network", "faint_search", "other_phase", None, float("nan"))] == [
        "network", "faint search", "other phase", "unknown", "unknown"]


def test_viewer_shows_a_flipped_series_anterior_up_with_its_lesions(tmp_path: Path) -> None:
    """A series stored posterior-to-anterior and head-to-foot (as LiTS volumes are) is shown
    as radiologists read it: row 0 anterior, column 0 the patient's right, slice 0 the foot;
    its labels and lesion numbering are turned with it, and a lesion's point finds its slice."""
    import numpy as np
    import SimpleITK as sitk

    from app.web import imaging
    from db import storage
    from lvt_core.labels import LIVER, TUMOR
    from lvt_core.lesions import component_array

    ct = np.zeros((6, 8, 10), np.int16)
    ct[:, 0, :] = 100  # the anterior row, stored last once flipped below
    ct[0, :, :] += 7  # the most superior slice
    labels = np.zeros(ct.shape, np.uint8)
    labels[1:5, 2:6, 2:8] = LIVER
    labels[1:3, 3:5, 3:6] = TUMOR  # near the head, 12 voxels (lesions of 10 or more count)
    flipped = [np.ascontiguousarray(a[:, ::-1, :]) for a in (ct, labels)]  # rows posterior→anterior
    images = []
    for array in flipped:
        image = sitk.GetImageFromArray(array)
        image.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, -1))  # rows anterior-ward, slices foot-ward
        image.SetSpacing((1.0, 1.0, 2.0))
        images.append(image)
    root = tmp_path / "store"
    ct_path, _ = storage.store_image(images[0], root)
    label_path, _ = storage.store_image(images[1], root)

    shown = imaging.load_ct(ct_path, str(root))
    shown_labels = imaging.load_labels(label_path, str(root))
    assert (shown.array[:, 0, :] >= 100).all() and (shown.array[:, 1:, :] < 100).all()  # anterior up
    assert (shown.array[-1] % 100 == 7).all() and (shown.array[:-1] % 100 == 0).all()  # head last
    components = imaging.lesion_components(label_path, str(root))
    assert ((components > 0) == (shown_labels.array == TUMOR)).all()
    assert set(np.unique(components)) == set(np.unique(component_array(images[1])))
    tumor_point = images[1].TransformContinuousIndexToPhysicalPoint((4.0, 3.5, 1.5))
    assert shown.index_of(tumor_point)[2] in np.flatnonzero((shown_labels.array == TUMOR).any(axis=(1, 2)))
    # the report's key image picks its slice on the same turned axes, so its number is the viewer's
    from app.web import key_images, theme

    picture = key_images.key_picture(shown.array, components, 1, shown.spacing, 6.0, {1: theme.track_colour(1)})
    assert picture is not None
    rgb, z = picture
    assert (shown_labels.array[z] == TUMOR).any() and rgb.shape == (key_images.IMAGE_PX, key_images.IMAGE_PX, 3)
    assert np.all(rgb == theme.hex_to_rgb(theme.track_colour(1)), axis=-1).any()
    # a reader's slice_index counts the stored slices (head first here): the page shows the viewer's
    import datetime as dt

    import pandas as pd

    from app.web import queries, slices
    from db.queries import SeriesInfo, StudyInfo

    day = dt.date(2024, 1, 2)
    series = SeriesInfo(1, "1.2.3", "portal", "CT", None, (1.0, 1.0, 2.0), (10, 8, 6), 2.0, ct_path, "0" * 64)
    read = pd.DataFrame({"study_date": [day] * 3, "slice_index": [1, None, 6], "location_mm": [None] * 3})
    info = queries.FollowUp("P-x", None, [StudyInfo(1, "1.2", day, None, None, [series])], pd.DataFrame(), read,
                            pd.DataFrame(), pd.DataFrame(), tracked_series=frozenset({1}))
    numbers = slices.reader_slice_numbers(info, str(root))
    assert numbers == [5, None, None]  # stored slice 1 of 6, head first, is the viewer's 5th; 6 is off the scan
    assert (shown.array[numbers[0] - 1] == sitk.GetArrayFromImage(images[0])[1][::-1, :]).all()


def test_the_web_modules_load_without_the_training_stack() -> None:
    """The viewer imported torch and MONAI to reorient a scan (via lvt_core.transforms): about
    2 s of the follow-up page's first render. What the pages import stays free of them, and of
    WeasyPrint, which only a PDF download needs."""
    code = ("import sys; import app.web.imaging, app.web.charts, app.web.data, app.web.queries, app.web.session, "
            "app.web.report, app.web.report_pdf; "
            "print(sorted(m for m in ('torch', 'monai', 'weasyprint') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_server_warms_up_in_the_background_and_says_what_reports_hold(caplog: pytest.LogCaptureFixture) -> None:
    """The first report of a server process waited for VTK's import and the rendering probe; the
    server now does both as it starts and tells the admin whether reports get a 3D view and PDF."""
    import logging

    from app.web import server

    with caplog.at_level(logging.WARNING, logger="app.web.server"):
        server.warm_up()
    assert "LVT ready: reports' 3D views rendered off screen; PDF reports available" in caplog.text
