"""Analytics on a synthetic longitudinal cohort with known truth (ground-truth label maps).

One patient, three studies three months apart. Tumor A (liver) shrinks 18 → 14 → 10 mm;
tumor B appears at the second study (12 mm) and the radiologist first measures it at the
third. The first study has a portal and an arterial phase whose livers differ by ~5 %.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from sqlalchemy import func, select, update

from app.cli.common import UserError
from app.services import analytics
from app.services.batch import import_label_map
from app.services.ingest.service import IngestOptions, IngestReport, ingest_paths
from app.services.measurements import import_measurements
from app.web import queries
from db.engine import default_url, ensure_schema, make_session_factory
from db.models import AuditEvent, Lesion, Measurement, Model, Patient, Response

SPACING = (1.5, 1.5, 3.0)
SIZE = (64, 64, 20)  # x, y, z
A_CENTER = (-12.0, 0.0, 30.0)
B_CENTER = (18.0, 12.0, 27.0)
A_RADII = [9.0, 7.0, 5.0]
B_RADII = [0.0, 6.0, 6.0]
DATES = ["2024-01-15", "2024-04-15", "2024-07-15"]


def _world() -> tuple[sitk.Image, np.ndarray]:
    ref = sitk.Image(list(SIZE), sitk.sitkInt16)
    ref.SetSpacing(SPACING)
    ref.SetOrigin((-48.0, -48.0, 0.0))
    z, y, x = np.meshgrid(*[np.arange(n) for n in reversed(SIZE)], indexing="ij")
    pts = np.stack([x * SPACING[0] - 48.0, y * SPACING[1] - 48.0, z * SPACING[2]], -1)
    return ref, pts


def _scan(t: int, liver_scale: float = 1.0) -> tuple[sitk.Image, sitk.Image]:
    return _scan_of([(A_CENTER, A_RADII[t]), (B_CENTER, B_RADII[t])], liver_scale)


def _scan_of(
    tumors: list[tuple[tuple[float, float, float], float]], liver_scale: float = 1.0
) -> tuple[sitk.Image, sitk.Image]:
    """A CT and its label map: the liver ellipsoid with a ball tumor per (centre, radius)."""
    ref, pts = _world()
    labels = np.zeros(pts.shape[:3], np.uint8)
    liver = ((pts[..., 0] / 40) ** 2 + (pts[..., 1] / 34) ** 2 + ((pts[..., 2] - 30) / 24) ** 2
             ) < liver_scale**2
    labels[liver] = 1
    for center, radius in tumors:
        if radius > 0:
            labels[np.linalg.norm(pts - np.array(center), axis=-1) < radius] = 3
    hu = np.where(labels == 1, 110, np.where(labels == 3, 40, 0)).astype(np.int16)

    def image(a: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(a)
        img.CopyInformation(ref)
        return img

    return image(hu), image(labels)


def _store_truth(url: str, manifest: Path, truth: dict[str, sitk.Image]) -> tuple[IngestReport, int]:
    """Ingest a manifest's images and store each one's true label map (``truth`` by file name)
    as a "ground-truth" model's output; returns the ingest report and the model id."""
    report = ingest_paths([], IngestOptions(manifest=manifest), url=url)
    with make_session_factory(url)() as s:
        model = Model(name="ground-truth", version="1", checksum="0" * 64)
        s.add(model)
        s.commit()
        model_id = model.id
    for added in report.added:
        import_label_map(added["series_id"], model_id, truth[Path(added["source"]).name], url=url)
    return report, model_id


@pytest.fixture()
def store(lvt_env: Path, tmp_path: Path) -> dict:
    return _build_store(default_url(), tmp_path)


@pytest.fixture()
def store_on_each_backend(db_url: str, tmp_path: Path) -> dict:
    """The same store on SQLite and on PostgreSQL (JSON columns round-trip on both)."""
    return _build_store(db_url, tmp_path)


def _build_store(url: str, tmp_path: Path) -> dict:
    ensure_schema(url)
    folder = tmp_path / "in"
    folder.mkdir()
    lines = ["patient_id,image,study_date,phase"]
    truth: dict[str, sitk.Image] = {}
    for t in range(3):
        phases = [("portal", 1.0), ("arterial", 0.983)] if t == 0 else [("portal", 1.0)]
        for phase, scale in phases:
            ct, labels = _scan(t, scale)
            name = f"t{t}_{phase}.nii.gz"
            sitk.WriteImage(ct, str(folder / name))
            truth[name] = labels
            lines.append(f"SRC1,{name},{DATES[t]},{phase}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    report, model_id = _store_truth(url, folder / "manifest.csv", truth)
    centroid_a = [A_CENTER[0], A_CENTER[1], A_CENTER[2]]
    csv = tmp_path / "measurements.csv"
    rows = ["patient_id,study_date,lesion_label,longest_diameter_mm,slice_index,"
            "location_x_mm,location_y_mm,location_z_mm,reader"]
    for t in range(3):
        rows.append(f"SRC1,{DATES[t]},A,{2 * A_RADII[t] + 1:.1f},,"
                    f"{centroid_a[0]},{centroid_a[1]},{centroid_a[2]},dr")
    rows.append(f"SRC1,{DATES[2]},B,{2 * B_RADII[2] + 1:.1f},{round(B_CENTER[2] / 3.0)},,,,dr")
    csv.write_text("\n".join(rows) + "\n")
    import_measurements(csv, url=url)
    assert analytics.refresh_responses(url=url) == 1
    return {"url": url, "model_id": model_id, "patient": report.added[0]["patient"], "tmp": tmp_path}


def _track_of(followup: analytics.PatientFollowup, x_sign: float) -> dict:
    return next(t for t in followup.tracks if np.sign(t["points"][0]["centroid_mm"][0]) == x_sign)


def test_tracks_response_volumetry_and_agreement(store: dict) -> None:
    with make_session_factory(store["url"])() as s:  # imported label maps: origin not known
        assert set(s.scalars(select(Lesion.found_by))) == {None}
    f = analytics.patient_followup(store["patient"], store["model_id"])
    assert len(f.timeline) == 3 and len(f.tracks) == 2
    assert {p["found_by"] for t in f.tracks for p in t["points"]} == {None}
    a, b = _track_of(f, -1.0), _track_of(f, 1.0)
    assert [p["date"] for p in a["points"]] == [s["date"] for s in f.timeline]
    diam = [p["diameter_mm"] for p in a["points"]]
    assert all(abs(d - 2 * r) <= 2.0 for d, r in zip(diam, A_RADII, strict=True))
    assert len(b["points"]) == 2 and abs(b["points"][0]["diameter_mm"] - 12.0) <= 2.0

    # RECIST on model tracks: new lesion B at t1 -> PD; t2 target A -44 % from baseline -> PR.
    assert [r["category"] for r in f.responses["model"]] == ["PD", "PR"]
    # Radiologist (no new-lesion flag): 19 -> 15 (-21 %, SD) -> 11 (-42 %, PR).
    assert [r["category"] for r in f.responses["radiologist"]] == ["SD", "PR"]
    assert f.responses["volumetric"][0]["response"] == "BL"

    # Earlier detection: B seen at t1, measured at t2 (91 days).
    assert len(f.earlier_detection) == 1
    badge = f.earlier_detection[0]
    assert badge["track_id"] == b["track_number"] == b["earlier_detection"]["track_id"]
    assert badge["lead_months"] == pytest.approx(91 / (365.25 / 12), abs=0.01)

    # Agreement: radiologist = truth + 1 mm, so bias ~ -1 mm; every measurement linked.
    assert {m["method"] for m in f.measurements} == {"location", "slice"}
    assert all(m["track_number"] is not None for m in f.measurements)
    assert [m["track_number"] for m in f.measurements if m["lesion_label"] == "A"] == [
        a["track_number"]] * 3
    stats = analytics.agreement(store["patient"], store["model_id"])
    assert stats["cohort"]["n"] == 4 and stats["unlinked_measurements"] == 0
    assert -3.0 < stats["cohort"]["bias_mm"] < 1.0 and stats["cohort"]["pearson_r"] > 0.9

    # Volumetry: portal vs arterial at t0 differ by ~5 % -> both flagged (> 2 %).
    vols = [v for v in f.volumes if v["deviation_pct"] is not None]
    assert len(vols) == 2 and all(v["flagged"] for v in vols)
    assert vols[0]["deviation_pct"] == pytest.approx(-vols[1]["deviation_pct"])
    overview = analytics.volumetry_overview(store["model_id"])
    assert len(overview) == 1 and bool(overview.iloc[0]["flagged"])
    assert overview.iloc[0]["max_abs_deviation_pct"] > 2.0
    assert overview.iloc[0]["warning"] is None  # both scans hold the whole liver

    tables = analytics.cohort_tables({"model_id": store["model_id"]})
    assert set(tables) == {"patients", "studies", "series", "lesions", "tracks", "volumetry",
                           "response", "response_targets", "measurements", "agreement", "tracking_warnings",
                           "fluid_places"}
    assert len(tables["series"]) == 4 and len(tables["lesions"]) == 6  # both phases at t0
    assert len(tables["response"]) == 4 and len(tables["measurements"]) == 4
    # lengths and positions name their unit, as the lesion diameters always did
    assert {"spacing_x_mm", "spacing_z_mm", "slice_thickness_mm"} <= set(tables["series"].columns)
    assert {"centroid_x_mm", "centroid_y_mm", "centroid_z_mm"} <= set(tables["lesions"].columns)
    assert tables["series"]["spacing_x_mm"].between(0.1, 10).all()
    assert tables["volumetry"]["liver_cut_at"].isna().all()  # whole livers: no "" that reads as a cut
    by_source_id = analytics.cohort_tables({"model_id": store["model_id"], "patients": ["SRC1"]})
    assert len(by_source_id["series"]) == 4  # as export mesh and the CLI take it


def test_each_response_records_its_targets_and_nadir_for_the_page_the_report_and_the_export(
    store_on_each_backend: dict,
) -> None:
    """A stored response held a category and a sum: nobody could see which lesions were the
    targets, their baseline, or the nadir a progression is measured from."""
    from app.web import analysis, report, response_table

    store = store_on_each_backend

    with make_session_factory(store["url"])() as s:
        rows = list(s.scalars(select(Response).order_by(Response.study_id, Response.source)))
        page = queries.followup(s, store["patient"])
    reader = [r for r in rows if r.source == "radiologist"]  # A: 19 -> 15 -> 11 mm; B only at t2
    assert [r.targets for r in reader] == [[{"target": "A", "baseline_mm": 19.0, "mm": 15.0}],
                                           [{"target": "A", "baseline_mm": 19.0, "mm": 11.0}]]
    assert [r.nadir_sum_mm for r in reader] == [19.0, 15.0]
    model = [r for r in rows if r.source == "model"]
    track_a = int(page.lesions.loc[page.lesions["x"] < 0, "track"].iloc[0])
    assert [[t["target"] for t in r.targets] for r in model] == [[f"track {track_a}"]] * 2  # B came later
    baseline = model[0].targets[0]["baseline_mm"]
    assert baseline == pytest.approx(2 * A_RADII[0], abs=2.0)
    assert [r.targets[0]["mm"] for r in model] == [r.sum_diameters_mm for r in model]
    assert [r.nadir_sum_mm for r in model] == [baseline, model[0].sum_diameters_mm]  # the smallest earlier sum
    track_b = int(page.lesions.loc[page.lesions["x"] > 0, "track"].iloc[0])
    # the PD at t1, named; B is seen again at t2, so it counts
    assert [r.new_lesions for r in model] == [[{"lesion": f"track {track_b}", "status": "counted"}], []]
    assert [r.new_lesions for r in reader] == [[], []]  # B measured at t2, not marked new

    table = response_table.response_table(page.responses)
    days = sorted({str(study.study_date) for study in page.studies})  # as stored: shifted
    assert table["day"].tolist() == [days[0]] * 2 + [days[1]] * 2 + [days[2]] * 2
    assert table["read by"].tolist() == ["model", "radiologist"] * 3
    assert table["response"].tolist() == ["baseline", "baseline", "PD", "SD", "PR", "PR"]
    assert table["targets (mm)"].tolist()[1::2] == ["A: 19.0", "A: 15.0", "A: 11.0"]
    assert table["vs baseline"].tolist()[1::2] == ["", "−21 %", "−42 %"]
    assert table["vs nadir"].tolist()[1::2] == ["", "−21 %", "−27 %"]
    assert table["new lesion"].tolist()[::2] == ["", f"track {track_b}", "no"]
    assert not response_table.any_unrecorded(page.responses)

    html = report.followup_report(page, page.lesions, analysis.earlier_lines([], page.lesions),
                                  "ground-truth 1", "clinician")
    assert html.count("Not for clinical") + html.count("not for clinical") >= 2
    assert "patient " + store["patient"] in html and "made by clinician" in html
    assert "dates shifted by de-identification" in html  # the store's default policy
    assert "A: 11.0" in html and "−42 %" in html and f"<td>{track_a}</td>" in html
    assert "<th>model's track</th>" in html
    measured = html.split("Radiologist measurements")[1]
    assert measured.count(f"<td>{track_a}</td>") == 3 and "<td>none</td>" not in measured
    # a lesion the radiologist measured where the model drew nothing says so
    import dataclasses

    import pandas as pd

    far = page.measurements.iloc[[0]].assign(lesion="C", location_mm=[[300.0, 300.0, 300.0]], slice_index=None)
    missed = dataclasses.replace(page, measurements=pd.concat([page.measurements, far], ignore_index=True))
    measured = report.followup_report(missed, page.lesions, [], "m", "c").split("Radiologist measurements")[1]
    assert measured.count("<td>none</td>") == 1 and "<td>C</td>" in measured

    # the same report from the command line, by source id, audited; a folder is refused
    out = store["tmp"] / "board" / "report.html"
    (store["tmp"] / "board").mkdir()
    done = subprocess.run([str(Path(sys.executable).with_name("lvt")), "export", "report", "SRC1", str(out),
                           "--min-diameter", "13", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tracks"] == 1  # B (12 mm) is under 13 mm
    written = out.read_text(encoding="utf-8")
    assert "A: 11.0" in written and "under 13 mm are left out" in written and "made by lvt export report" in written
    with make_session_factory(store["url"])() as s:
        assert s.scalar(select(AuditEvent.target).where(AuditEvent.action == "download_report")) == store["patient"]
    refused = subprocess.run([str(Path(sys.executable).with_name("lvt")), "export", "report", "SRC1",
                              str(store["tmp"] / "board")], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "is a folder" in " ".join(refused.stderr.split())  # as wrapped

    exported = analytics.cohort_tables({"model_id": store["model_id"]})
    answers = exported["response"].set_index(["source", "study_id"]).sort_index()
    assert answers.loc["radiologist", "baseline_sum_mm"].tolist() == [19.0, 19.0]
    assert answers.loc["radiologist", "nadir_sum_mm"].tolist() == [19.0, 15.0]
    assert answers.loc["model", "new_lesions"].tolist() == [f"track {track_b}", ""]
    targets = exported["response_targets"]
    assert len(targets) == 4 and targets.loc[targets["source"] == "radiologist", "diameter_mm"].tolist() == [15.0, 11.0]

    with make_session_factory(store["url"])() as s:  # as stored before revision 0013
        s.execute(update(Response).values(targets=None, nadir_sum_mm=None, new_lesions=None))
        s.commit()
        old = queries.followup(s, store["patient"])
    table = response_table.response_table(old.responses)
    assert "baseline" not in table["response"].tolist()  # no baseline is made up
    assert set(table["targets (mm)"]) == {response_table.NOT_RECORDED}
    assert set(table["vs baseline"]) == set(table["vs nadir"]) == {"—"}
    assert table.loc[table["read by"] == "model", "new lesion"].tolist() == ["yes", "no"]  # the flag alone
    assert response_table.any_unrecorded(old.responses)
    assert response_table.model_target_tracks(page.responses) == {track_a}
    assert response_table.model_target_tracks(old.responses) == set()  # not recorded: none named
    with make_session_factory(store["url"])() as s:  # what `lvt batch --refresh` runs
        analytics.refresh_patient(s, s.scalar(select(Patient.id)), store["model_id"])
        s.commit()
        assert None not in set(s.scalars(select(Response.nadir_sum_mm)))


def test_overrides_are_kept_by_later_runs(store: dict) -> None:
    url, model_id = store["url"], store["model_id"]
    f = analytics.patient_followup(store["patient"], model_id)
    a, b = _track_of(f, -1.0), _track_of(f, 1.0)
    b_first, b_last = b["points"][0]["lesion_id"], b["points"][1]["lesion_id"]

    analytics.mark_not_lesion(b_first, note="vessel, not a tumor")
    f2 = analytics.patient_followup(store["patient"], model_id)
    assert _track_of(f2, -1.0)["track_number"] == a["track_number"]  # ids stay stable
    assert all(p["lesion_id"] != b_first for t in f2.tracks for p in t["points"])
    assert f2.earlier_detection == []  # now the model saw B when the radiologist did
    # B is now first drawn at the last study: new, but RECIST waits for a later study to confirm it
    assert [r["category"] for r in f2.responses["model"]] == ["SD", "PR"]
    with make_session_factory(url)() as s:
        last = s.scalars(select(Response).where(Response.source == "model").order_by(Response.study_id.desc())).first()
        assert last.new_lesions == [{"lesion": f"track {b['track_number']}", "status": "awaits confirmation"}]

    analytics.relink_lesion(b_last, a["track_number"], note="same lesion")
    with make_session_factory(url)() as s:  # a later batch refresh replays both overrides
        patient_id = s.scalar(select(Patient.id))
        analytics.refresh_patient(s, patient_id, model_id)
        s.commit()
        assert s.scalar(select(Response.id).limit(1)) is not None
    f3 = analytics.patient_followup(store["patient"], model_id)
    track_a = next(t for t in f3.tracks if t["track_number"] == a["track_number"])
    assert b_last in [p["lesion_id"] for p in track_a["points"]]
    assert all(p["lesion_id"] != b_first for t in f3.tracks for p in t["points"])
    assert track_a["status"] in ("persisting", "merged", "split", "new", "disappeared")


def test_a_redraw_keeps_a_not_a_lesion_mark_on_its_lesion(store: dict) -> None:
    """Lesion rows were kept by their index in the label map: a redraw that numbered its
    lesions in another order (one more speck) moved the mark onto another lesion, and the
    excluded lesion came back on track 1."""
    from app.services.batch import import_label_map
    from db.models import AuditEvent, Segmentation, Series, TrackOverride

    url, model_id = store["url"], store["model_id"]
    b = _track_of(analytics.patient_followup(store["patient"], model_id), 1.0)
    b_first = b["points"][0]["lesion_id"]
    analytics.mark_not_lesion(b_first, note="vessel, not a tumor")
    with make_session_factory(url)() as s:
        series_id = s.scalar(select(Segmentation.series_id).join(Lesion, Lesion.segmentation_id == Segmentation.id)
                             .where(Lesion.id == b_first))
        b_place = s.get(Lesion, b_first).centroid_x
        assert s.scalar(select(Series.phase).where(Series.id == series_id)) == "portal"
    _, labels = _scan(1)
    array = sitk.GetArrayFromImage(labels)
    array[3, 30:34, 30:34] = 3  # a speck on slice 3: the first component in raster order now
    redrawn = sitk.GetImageFromArray(array)
    redrawn.CopyInformation(labels)
    import_label_map(series_id, model_id, redrawn, url=url)
    with make_session_factory(url)() as s:
        assert s.get(Lesion, b_first).centroid_x == pytest.approx(b_place)  # the same lesion, same row
        excluded = s.scalars(select(TrackOverride.lesion_id).where(TrackOverride.kind == "not_lesion")).all()
        assert excluded == [b_first]
    f = analytics.patient_followup(store["patient"], model_id)
    assert all(p["lesion_id"] != b_first for t in f.tracks for p in t["points"])
    # a lesion the redraw no longer holds takes its mark with it, and the audit log says so
    import_label_map(series_id, model_id, _without_tumor(redrawn), url=url)
    with make_session_factory(url)() as s:
        assert s.scalar(select(TrackOverride.id)) is None
        assert s.scalar(select(AuditEvent.target).where(AuditEvent.action == "track_override_dropped")) == \
            f"lesion {b_first}"


def test_each_model_keeps_its_own_responses(store: dict) -> None:
    """Responses had no model: segmenting a patient with a second model overwrote the first
    model's RECIST, and a page showing one model's lesions showed the other's response."""
    from app.services.batch import import_label_map
    from db import storage
    from db.models import Segmentation

    url, first = store["url"], store["model_id"]
    before = [r["category"] for r in analytics.patient_followup(store["patient"], first).responses["model"]]
    with make_session_factory(url)() as s:
        second = Model(name="no-tumor", version="2", checksum="1" * 64)
        s.add(second)
        s.commit()
        second_id = second.id
        series = s.scalars(select(Segmentation.series_id).where(Segmentation.model_id == first)).all()
    for series_id in series:  # the second model draws no tumor anywhere
        with make_session_factory(url)() as s:
            path = s.scalar(select(Segmentation.label_map_path).where(
                Segmentation.series_id == series_id, Segmentation.model_id == first))
        labels = sitk.ReadImage(str(storage.resolve(path)))
        import_label_map(series_id, second_id, _without_tumor(labels), url=url)
    assert [r["category"] for r in analytics.patient_followup(store["patient"], first).responses["model"]] == before
    assert [r["category"] for r in analytics.patient_followup(store["patient"], second_id).responses["model"]] \
        == ["NE", "NE"]  # no measurable disease at baseline
    with make_session_factory(url)() as s:
        assert s.scalar(select(func.count(Response.id)).where(Response.source == "model")) == 4
        s.execute(update(Response).where(Response.model_id == second_id).values(model_id=None))  # as 0010 left
        s.commit()
        analytics.refresh_patient(s, s.scalar(select(Patient.id)), second_id)
        s.commit()
        assert s.scalar(select(func.count(Response.id)).where(Response.model_id.is_(None),
                                                              Response.source == "model")) == 0
    tables = analytics.cohort_tables({"model_id": first})
    assert tables["response"].query("source == 'model'")["recist_category"].tolist() == before


def test_an_undated_study_is_left_out_until_an_admin_dates_it(store: dict, tmp_path: Path) -> None:
    """An undated study sorted first and became the RECIST baseline (the model's; the
    radiologist's put it last): a dated study's lesions read as progression against it."""
    import json

    from typer.testing import CliRunner

    from app.cli.main import app
    from db.models import Study

    url, model_id = store["url"], store["model_id"]
    with make_session_factory(url)() as s:
        first = s.scalar(select(Study).order_by(Study.study_date).limit(1))
        first_id, stored_date = first.id, first.study_date
        first.study_date = None
        s.commit()
        summary = analytics.refresh_patient(s, s.scalar(select(Patient.id)), model_id)
        s.commit()
    assert "1 undated study is left out of tracking and response" in " ".join(summary["warnings"])
    from app.services.export import export_mesh

    meshed = export_mesh(store["patient"], str(first_id), tmp_path / "mesh", formats=("glb",))  # said "run lvt batch"
    assert [Path(f).name for f in meshed["files"]] == ["scene.glb"]
    f = analytics.patient_followup(store["patient"], model_id)
    assert all(p["study_id"] != first_id for t in f.tracks for p in t["points"])
    assert [(r["study_id"] > first_id, r["category"]) for r in f.responses["model"]] == [(True, "SD")]
    runner = CliRunner()
    wrong = runner.invoke(app, ["studies", "set-date", str(first_id), DATES[0], "--patient-id", "SRC9"])
    assert wrong.exit_code == 1 and "is not patient" in str(wrong.exception)
    with make_session_factory(url)() as s:  # a patient stored before its policy was recorded
        patient = s.scalar(select(Patient))
        patient.identity_removed = patient.dates_shifted = None
        s.commit()
    unknown = runner.invoke(app, ["studies", "set-date", str(first_id), DATES[0], "--patient-id", "SRC1"])
    assert unknown.exit_code == 1 and "--dates-shifted or --dates-kept" in str(unknown.exception)
    done = runner.invoke(app, ["studies", "set-date", str(first_id), DATES[0], "--patient-id", "SRC1",
                               "--dates-shifted", "--json"])
    assert done.exit_code == 0, done.output
    with make_session_factory(url)() as s:
        patient = s.scalar(select(Patient))
        assert (patient.identity_removed, patient.dates_shifted) == (True, True)  # now recorded
    assert json.loads(done.stdout)["stored_date"] == stored_date.isoformat()  # shifted as at ingest
    f = analytics.patient_followup(store["patient"], model_id)
    assert [r["category"] for r in f.responses["model"]] == ["PD", "PR"]
    again = runner.invoke(app, ["studies", "set-date", str(first_id), DATES[0], "--patient-id", "SRC1"])
    assert again.exit_code == 1 and "dated" in str(again.exception)


def _stored_links(url: str, model_id: int) -> dict[int, tuple[int | None, int | None, float | None]]:
    from db.models import MeasurementLink

    with make_session_factory(url)() as s:
        return {m: (lesion, track, diff) for m, lesion, track, diff in s.execute(
            select(MeasurementLink.measurement_id, MeasurementLink.lesion_id,
                   MeasurementLink.track_number, MeasurementLink.diff_mm)
            .where(MeasurementLink.model_id == model_id))}


def test_measurement_links_are_stored_and_kept_current(store: dict) -> None:
    url, model_id = store["url"], store["model_id"]
    # the import hook stored one link per measurement, equal to the on-read linking
    live = {m["measurement_id"]: m for m in analytics.agreement(store["patient"], model_id)["links"]}
    stored = _stored_links(url, model_id)
    assert set(stored) == set(live) and len(stored) == 4
    for mid, (lesion, track, diff) in stored.items():
        assert (lesion, track) == (live[mid]["lesion_id"], live[mid]["track_number"])
        assert diff == pytest.approx(live[mid]["model_mm"] - live[mid]["radiologist_mm"])
    # a correction re-tracks the patient, and the stored links follow it
    f = analytics.patient_followup(store["patient"], model_id)
    b = _track_of(f, 1.0)
    b_last = b["points"][1]["lesion_id"]
    analytics.mark_not_lesion(b_last, note="artefact")
    after = _stored_links(url, model_id)
    assert set(after) == set(stored)
    assert all(lesion != b_last for lesion, _t, _d in after.values())
    live_after = {m["measurement_id"]: (m["lesion_id"], m["track_number"])
                  for m in analytics.agreement(store["patient"], model_id)["links"]}
    assert {mid: (lesion, track) for mid, (lesion, track, _d) in after.items()} == live_after
    assert after != stored  # the measurement of B moved off the excluded lesion


def test_a_phase_whose_scan_stops_inside_the_liver_is_named(store: dict) -> None:
    """Shift the arterial liver three slices toward the head so that the scan cuts it: the
    stored volume says so, and the study overview and the web page's queries name that phase."""
    from app.web import queries
    from db.models import Series, VolumetryResult

    url, model_id = store["url"], store["model_id"]
    with make_session_factory(url)() as s:
        arterial = s.scalar(select(Series.id).where(Series.phase == "arterial"))
    _, whole = _scan(0, 0.983)
    array = sitk.GetArrayFromImage(whole)
    shifted = np.zeros_like(array)
    shifted[3:] = array[:-3]  # index z grows toward the head (identity direction)
    cut = sitk.GetImageFromArray(shifted)
    cut.CopyInformation(whole)
    import_label_map(arterial, model_id, cut, url=url)

    overview = analytics.volumetry_overview(model_id)
    assert overview["phases_cut"].tolist() == [1]
    assert overview.iloc[0]["warning"] == (
        "the liver runs out of the scan (arterial at the head end): a lower-bound volume")
    with make_session_factory(url)() as s:
        assert sorted(s.scalars(select(VolumetryResult.liver_cut_at))) == ["", "", "", "head"]
        rows = queries.volumetry_rows(s)
    assert dict(zip(rows["phase"], rows["liver_cut_at"], strict=True)) == {
        "portal": "", "arterial": "head"}
    followup = analytics.patient_followup(store["patient"], model_id)
    assert sorted(v["liver_cut_at"] for v in followup.volumes) == ["", "", "", "head"]
    exported = analytics.cohort_tables({"model_id": model_id})["volumetry"]
    assert exported["liver_cut_at"].isna().sum() == 3 and exported["liver_cut_at"].dropna().tolist() == ["head"]


def test_a_refresh_measures_the_coverage_of_volumes_stored_before_it_was_recorded(store: dict) -> None:
    """Rows from before migration 0005 hold NULL; the next refresh of the patient reads their
    label maps once and fills it in."""
    from sqlalchemy import update

    from db.models import VolumetryResult

    url, model_id = store["url"], store["model_id"]
    with make_session_factory(url)() as s:
        s.execute(update(VolumetryResult).values(liver_cut_at=None))
        s.commit()
        assert set(s.scalars(select(VolumetryResult.liver_cut_at))) == {None}
        analytics.refresh_patient(s, s.scalar(select(Patient.id)), model_id)
        s.commit()
        assert sorted(s.scalars(select(VolumetryResult.liver_cut_at))) == ["", "", "", ""]


def test_an_admin_corrects_a_series_phase_and_the_day_is_named_for_redoing(store: dict) -> None:
    """A phase the ingest rules got wrong could not be corrected: volumetry compared the day
    under the wrong names and the segmentation read it with the wrong phase."""
    import json

    from typer.testing import CliRunner

    from app.cli.main import app
    from db.models import AuditEvent, Series

    with make_session_factory(store["url"])() as s:
        arterial = s.scalar(select(Series.id).where(Series.phase == "arterial"))
    runner = CliRunner()
    wrong = runner.invoke(app, ["studies", "set-phase", str(arterial), "venous", "--json"])
    assert wrong.exit_code == 1 and "'venous' is not one of" in str(wrong.exception)
    done = runner.invoke(app, ["studies", "set-phase", str(arterial), "late", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert (report["from"], report["to"], report["segmentations_to_redo"]) == ("arterial", "late", 2)
    assert report["redo"] == f"lvt batch --patient {store['patient']} --outdated"
    f = analytics.patient_followup(store["patient"], store["model_id"])
    assert sorted(v["phase"] for v in f.volumes if v["deviation_pct"] is not None) == ["late", "portal"]
    with make_session_factory(store["url"])() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "series_phase_set"))
        assert event is not None and event.detail["from"] == "arterial" and "set-phase" in event.actor
    again = json.loads(runner.invoke(app, ["studies", "set-phase", str(arterial), "late", "--json"]).stdout)
    assert again["changed"] is False and again["redo"] is None
    listed = json.loads(runner.invoke(app, ["studies", "list", store["patient"], "--json"]).stdout)
    assert {x["id"]: x["phase"] for st in listed["studies"] for x in st["series"]}[arterial] == "late"
    table = runner.invoke(app, ["studies", "list", store["patient"]])  # on stdout, as a listing
    assert f"{arterial}: late" in table.stdout
    assert store["patient"] in runner.invoke(app, ["patients", "list"]).stdout


def test_a_measurements_import_leaves_the_model_responses_and_new_lesions_count(
    store: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import recomputed the model's RECIST from stored rows that lack the split and merge
    lineage (a split target's fragment became a new lesion: SD read PD, then PR); the
    radiologist's RECIST could never reach PD through a new lesion; the page's volumetric
    response ignored new lesions."""
    from app.settings import get_settings

    with make_session_factory(store["url"])() as s:
        model_rows = {r.study_id: r for r in s.scalars(select(Response).where(Response.source == "model"))}
        assert [(r.recist_category, r.new_lesion) for r in model_rows.values()] == [("PD", True), ("PR", False)]
        follow_up = min(model_rows)
        model_rows[follow_up].recist_category = "SD"  # what only a re-track may change
        s.commit()
    f = analytics.patient_followup(store["patient"], store["model_id"])
    assert [r["response"] for r in f.responses["volumetric"]] == ["BL", "PD", "SD"]  # B is new at t1
    csv = tmp_path / "new.csv"
    csv.write_text("patient_id,study_date,lesion_label,longest_diameter_mm,reader,new_lesion\n"
                   f"SRC1,{DATES[2]},C,11.0,dr,yes\n")
    import_measurements(csv, url=store["url"])
    with make_session_factory(store["url"])() as s:
        after = {(r.source, r.study_id): (r.recist_category, r.new_lesion) for r in s.scalars(select(Response))}
    assert after[("model", follow_up)] == ("SD", True)  # untouched by the import
    radiologist = [after[k] for k in sorted(k for k in after if k[0] == "radiologist")]
    assert radiologist == [("SD", False), ("PD", True)]  # was SD, PR: C is new at t2
    with make_session_factory(store["url"])() as s:  # C as imported before revision 0009
        s.execute(update(Measurement).where(Measurement.lesion_label == "C").values(new_lesion=None))
        s.commit()
    again = import_measurements(csv, url=store["url"])  # the flag fills the stored row
    assert (again.added, again.flags_filled) == (0, 1)
    no = tmp_path / "no.csv"
    no.write_text(csv.read_text().replace(",yes", ",no"))
    with pytest.raises(UserError, match="differs from the stored measurement"):
        import_measurements(no, url=store["url"])  # a recorded flag is not overwritten
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,study_date,lesion_label,longest_diameter_mm,new_lesion\n"
                   f"SRC1,{DATES[2]},D,11.0,maybe\n")
    with pytest.raises(UserError, match=r"row 2: new_lesion 'maybe' is not yes or no"):
        import_measurements(bad, url=store["url"])
    monkeypatch.setenv("LVT_DISPLAY_MIN_LESION_MM", "13")  # B (12 mm) is hidden on the page now
    get_settings.cache_clear()
    with make_session_factory(store["url"])() as s:
        analytics.refresh_patient(s, s.scalar(select(Patient.id)), store["model_id"])
        s.commit()
        rows = s.scalars(select(Response).where(Response.source == "model").order_by(Response.study_id))
        assert [(r.recist_category, r.new_lesion) for r in rows] == [("SD", False), ("PR", False)]


def test_the_follow_up_page_links_measurements_as_the_stored_links_do(lvt_env: Path, tmp_path: Path) -> None:
    """QA store ``sl``: L1 is measured on a slice of lesion A (12 mm) at the size of lesion B
    (16 mm, other slices). The stored links (cohort Bland–Altman) put it on A by its slice; the
    page read the lesions without their slice span and put it on B by size."""
    from app.web import analysis, queries
    from db.models import Measurement, MeasurementLink

    url = default_url()
    ensure_schema(url)
    folder = tmp_path / "in"
    folder.mkdir()
    scans = {}
    for t in range(2):  # A: slices 3-7; B: 12-18, growing (two images, not one stored twice)
        scans[f"t{t}.nii.gz"] = _scan_of([((-12.0, 0.0, 15.0), 6.0), ((15.0, 10.0, 45.0), 8.0 + t / 2)])
        sitk.WriteImage(scans[f"t{t}.nii.gz"][0], str(folder / f"t{t}.nii.gz"))
    (folder / "manifest.csv").write_text(
        "patient_id,image,study_date,phase\n" + "".join(f"SRC5,t{t}.nii.gz,{d},portal\n" for t, d in enumerate(DATES[:2])))
    report, _ = _store_truth(url, folder / "manifest.csv", {name: scan[1] for name, scan in scans.items()})
    csv = tmp_path / "measurements.csv"
    csv.write_text("patient_id,study_date,lesion_label,longest_diameter_mm,slice_index,reader\n"
                   + "".join(f"SRC5,{d},L1,16.5,5,dr\n" for d in DATES[:2]))
    import_measurements(csv, url=url)

    with make_session_factory(url)() as s:
        stored = dict(s.execute(select(Measurement.study_id, MeasurementLink.track_number)
                                .join(MeasurementLink, MeasurementLink.measurement_id == Measurement.id)).all())
        page = queries.followup(s, report.added[0]["patient"])
    assert page is not None
    a_track = int(page.lesions.loc[page.lesions["x"] < 0, "track"].iloc[0])
    assert set(stored.values()) == {a_track}  # by slice, on A
    tracks = analysis.measurement_tracks(page.pseudo_id, page.lesions, page.measurements)
    assert dict(zip(page.measurements["study_id"], tracks, strict=True)) == stored


def test_a_followup_liver_drawn_as_a_blob_keeps_the_tracks_and_says_why(store: dict) -> None:
    """Registered on a follow-up whose liver is a 6 mm blob, lesion A moved away from itself:
    its track broke into "disappeared" and "new". The scanner frame keeps it; the refresh says so."""
    from db.models import Series, Study

    url, model_id = store["url"], store["model_id"]
    with make_session_factory(url)() as s:
        portal = s.scalars(select(Series.id).join(Study, Study.id == Series.study_id)
                           .where(Series.phase == "portal").order_by(Study.study_date)).all()
    followup = portal[1]
    _, labels = _scan(1)
    array = sitk.GetArrayFromImage(labels)
    array[array == 1] = 0  # the liver is lost: the tumors and a blob of 3 mm radius remain
    array[10, 20:24, 50:54] = 1
    blob = sitk.GetImageFromArray(array)
    blob.CopyInformation(labels)
    import_label_map(followup, model_id, blob, url=url, refresh=False)
    with make_session_factory(url)() as s:
        summary = analytics.refresh_patient(s, s.scalar(select(Patient.id)), model_id)
        s.commit()
    assert [w.split(" (")[0] for w in summary["warnings"]] == [  # both pairs the blob is in
        "registering timepoint 1", "registering timepoint 2"]
    assert all("the livers differ too much to register" in w for w in summary["warnings"])
    f = analytics.patient_followup(store["patient"], model_id)
    assert len(f.tracks) == 2 and len(_track_of(f, -1.0)["points"]) == 3
    assert [r["category"] for r in f.responses["model"]] == ["PD", "PR"]  # B is new at t1: truly PD

    # kept for the pages and the export, not only logged; a refresh that registers replaces them
    with make_session_factory(url)() as s:
        page = queries.followup(s, store["patient"])
    assert page is not None and page.tracking_warnings == summary["warnings"]
    exported = analytics.cohort_tables(url=url)["tracking_warnings"]
    assert exported["message"].tolist() == summary["warnings"] and set(exported["patient"]) == {store["patient"]}
    import_label_map(followup, model_id, labels, url=url)
    with make_session_factory(url)() as s:
        assert queries.followup(s, store["patient"]).tracking_warnings == []


def test_a_lesion_gone_where_the_reading_left_fluid_out_is_said_on_the_page(store: dict) -> None:
    """Lesion A is not drawn at the second study: the day's reading left a place of water
    density out there (as it does the gallbladder, and a metastasis turned cystic). The
    refresh reads each segmentation's recorded fluid places and warns on the follow-up page;
    fluid recorded elsewhere, or none recorded (NULL, before migration 0012), says nothing."""
    from db.models import Segmentation, Series, Study

    url, model_id = store["url"], store["model_id"]
    with make_session_factory(url)() as s:
        portal = s.scalars(select(Series.id).join(Study, Study.id == Series.study_id)
                           .where(Series.phase == "portal").order_by(Study.study_date)).all()
    _, without_a = _scan_of([(B_CENTER, B_RADII[1])])
    import_label_map(portal[1], model_id, without_a, url=url, refresh=False)

    def refreshed(places: list[dict] | None) -> list[str]:
        with make_session_factory(url)() as s:
            s.execute(update(Segmentation).where(Segmentation.series_id == portal[1]).values(fluid_places=places))
            summary = analytics.refresh_patient(s, s.scalar(select(Patient.id)), model_id)
            s.commit()
            page = queries.followup(s, store["patient"])
        assert page is not None and page.tracking_warnings == summary["warnings"]
        return [w for w in summary["warnings"] if "fluid" in w]

    assert refreshed(None) == []
    far = {"centre_mm": [A_CENTER[0] + 40.0, A_CENTER[1], A_CENTER[2]], "volume_ml": 20.0, "densest_hu": 6.0}
    assert refreshed([far]) == []
    cystic = {"centre_mm": list(A_CENTER), "volume_ml": 1.4, "densest_hu": 11.0}
    (warning,) = refreshed([far, cystic])
    assert "'s lesion is not drawn at timepoint 1" in warning and "fluid of 1.4 ml (at most 11 HU in every phase)" in warning
    assert warning.endswith("review the CT before reading a response")
    f = analytics.patient_followup(store["patient"], model_id)
    assert len(_track_of(f, -1.0)["points"]) == 2  # A keeps its track across the gap
    # the cohort export lists every place left out, for a study of what the rule removed
    places = analytics.cohort_tables(url=url)["fluid_places"]
    assert places[["volume_ml", "densest_hu"]].values.tolist() == [[20.0, 6.0], [1.4, 11.0]]
    assert places["series_id"].tolist() == [portal[1]] * 2 and places["centre_x_mm"].tolist()[1] == A_CENTER[0]


def test_a_lesion_the_scan_edge_cuts_is_stored_cut_for_the_pages_and_the_export(store: dict) -> None:
    """A lesion reaching the first slice has lower-bound sizes and is never a RECIST target; the
    flag was computed by tracking and then lost, so the page showed its size as whole."""
    from db.models import Segmentation, Series, Study

    url, model_id = store["url"], store["model_id"]
    with make_session_factory(url)() as s:
        last = s.scalars(select(Series.id).join(Study, Study.id == Series.study_id)
                         .where(Series.phase == "portal").order_by(Study.study_date)).all()[-1]
    edge = (0.0, -20.0, 1.5)  # slice 0 of 20 (3 mm): the scan cuts it
    _, labels = _scan_of([(A_CENTER, A_RADII[2]), (B_CENTER, B_RADII[2]), (edge, 6.0)])
    import_label_map(last, model_id, labels, url=url)

    def flags() -> dict[bool, bool | None]:
        with make_session_factory(url)() as s:
            rows = s.scalars(select(Lesion).join(Segmentation, Segmentation.id == Lesion.segmentation_id)
                             .where(Segmentation.series_id == last)).all()
            return {abs(r.centroid_z - edge[2]) < 4: r.cut_by_scan_edge for r in rows}

    assert flags() == {True: True, False: False}
    with make_session_factory(url)() as s:
        page = queries.followup(s, store["patient"])
    assert page is not None
    shown = page.lesions[page.lesions["series_id"] == last]
    assert sorted(shown["cut_by_scan_edge"].tolist()) == [False, False, True]
    exported = analytics.cohort_tables(url=url)["lesions"]
    assert exported.loc[exported["series_id"] == last, "cut_by_scan_edge"].sum() == 1


# -- a day's phases stored as separate studies ----------------------------------------------

SPLIT_DAY = [  # (study UID = accession, date, phase, lesion A drawn): each scan its own study
    ("1.2.826.0.9.1", "2020-01-01", "arterial", False),
    ("1.2.826.0.9.2", "2020-01-01", "portal", True),
    ("1.2.826.0.9.3", "2020-04-01", "portal", True),
]


def _without_tumor(labels: sitk.Image) -> sitk.Image:
    array = sitk.GetArrayFromImage(labels)
    array[array == 3] = 1
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(labels)
    return out


@pytest.fixture()
def split_day(lvt_env: Path, tmp_path: Path) -> dict:
    """Day 1's arterial and portal scans in two study rows (own study UIDs, as many sites
    send them), a portal scan on day 2. Lesion A (18 mm) is drawn in both portal scans, not
    in the arterial one; the arterial liver is ~5 % smaller."""
    url = default_url()
    ensure_schema(url)
    folder = tmp_path / "in"
    folder.mkdir()
    lines = ["patient_id,image,study_date,phase,study_uid,accession"]
    truth: dict[str, sitk.Image] = {}
    for k, (uid, date, phase, drawn) in enumerate(SPLIT_DAY):
        ct, labels = _scan(0, 0.983 if phase == "arterial" else 1.0)
        sitk.WriteImage(ct + k, str(folder / f"s{k}.nii.gz"))  # three distinct images
        truth[f"s{k}.nii.gz"] = labels if drawn else _without_tumor(labels)
        lines.append(f"SPLIT,s{k}.nii.gz,{date},{phase},{uid},{uid}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    report, model_id = _store_truth(url, folder / "manifest.csv", truth)
    series = {Path(a["source"]).name: a["series_id"] for a in report.added}
    with make_session_factory(url)() as s:
        from db.models import Series

        studies = {}  # (manifest date, phase) -> (study id, series id); stored dates are shifted
        for k, (_, date, phase, _) in enumerate(SPLIT_DAY):
            series_id = series[f"s{k}.nii.gz"]
            studies[(date, phase)] = (s.scalar(select(Series.study_id).where(Series.id == series_id)), series_id)
        patient_id = s.scalar(select(Patient.id))
    assert len({sid for sid, _ in studies.values()}) == 3  # three study rows
    return {"url": url, "model_id": model_id, "patient_id": patient_id,
            "patient": report.added[0]["patient"], "studies": studies}


def test_the_phases_of_a_day_stored_as_separate_studies_are_one_timepoint(split_day: dict) -> None:
    """QA defect 4: the arterial study was the baseline and the day's portal study a second
    timepoint, so lesion A, not drawn in the arterial scan, was a new lesion: model PD dated
    the baseline day. The day is one timepoint, tracked on its portal scan; day 2 is SD."""
    from db.models import LesionTrackMember

    url, model_id, studies = split_day["url"], split_day["model_id"], split_day["studies"]
    portal_1 = studies[("2020-01-01", "portal")][0]
    portal_2 = studies[("2020-04-01", "portal")][0]
    with make_session_factory(url)() as s:
        tracked = analytics._tracked_segmentations(s, split_day["patient_id"], model_id)
        assert [study.id for study, _ in tracked] == [portal_1, portal_2]
        responses = s.execute(select(Response.study_id, Response.source, Response.recist_category,
                                     Response.baseline_study_id)).all()
        assert responses == [(portal_2, "model", "SD", portal_1)]
        assert set(s.scalars(select(LesionTrackMember.study_id))) == {portal_1, portal_2}


def test_volumetry_compares_the_phases_of_a_day_across_its_studies(split_day: dict) -> None:
    """The day's two phases were never compared (each study held one): now both carry the
    ~5 % deviation and are flagged, and the overviews show the day as one row."""
    from app.web import queries
    from db.models import VolumetryResult

    url, model_id, studies = split_day["url"], split_day["model_id"], split_day["studies"]
    with make_session_factory(url)() as s:
        deviation = dict(s.execute(select(VolumetryResult.series_id, VolumetryResult.deviation_pct)).all())
        flagged = dict(s.execute(select(VolumetryResult.series_id, VolumetryResult.flagged)).all())
        web = queries.volumetry_rows(s)
    arterial, portal = studies[("2020-01-01", "arterial")][1], studies[("2020-01-01", "portal")][1]
    assert deviation[arterial] == pytest.approx(-deviation[portal]) and deviation[portal] > 2.0
    assert flagged[arterial] and flagged[portal]
    assert deviation[studies[("2020-04-01", "portal")][1]] is None  # alone on its day
    day_1 = min(studies[("2020-01-01", "arterial")][0], studies[("2020-01-01", "portal")][0])
    overview = analytics.volumetry_overview(model_id)
    assert overview[["study_id", "series", "flagged"]].values.tolist() == [[day_1, 2, True]]
    assert sorted(overview.iloc[0]["phases"].split(",")) == ["arterial", "portal"]
    assert sorted(web["phase"]) == ["arterial", "portal"]  # the lone day-2 phase is not a comparison


def test_a_phase_correction_names_every_segmentation_of_the_day(split_day: dict) -> None:
    """The day's segmentations to redo were those of the series' own study only."""
    from app.services.corrections import set_series_phase

    arterial = split_day["studies"][("2020-01-01", "arterial")][1]
    from app.services.batch import pending_series
    from db.models import Segmentation
    from lvt_core import __version__ as lvt_version

    with make_session_factory(split_day["url"])() as s:  # drawn by this version's pipeline
        s.execute(update(Segmentation).values(lvt_version=lvt_version))
        s.commit()
    report = set_series_phase(arterial, "late", actor="test", url=split_day["url"])
    assert report["segmentations_to_redo"] == 2
    # the printed redo draws that day again and no other: `--force` redrew every day, and
    # `--outdated` saw nothing to do
    assert report["redo"] == f"lvt batch --patient {split_day['patient']} --outdated"
    day_1 = sorted(split_day["studies"][("2020-01-01", phase)][1] for phase in ("arterial", "portal"))
    with make_session_factory(split_day["url"])() as s:
        args = (s, split_day["model_id"], [split_day["patient_id"]])
        assert pending_series(*args) == []  # the day's results stay shown until redrawn
        assert pending_series(*args, outdated=True) == day_1
        marked = s.execute(select(Segmentation.series_id, Segmentation.lvt_version, Segmentation.redraw_reason)
                           .where(Segmentation.series_id.in_(day_1))).all()
    # who drew them is kept (the correction erased the LVT version to get them redrawn)
    assert {(v, r) for _, v, r in marked} == {(lvt_version, "contrast phase corrected")}
    with make_session_factory(split_day["url"])() as s:  # and the Admin page lists them
        assert queries.segmentations_to_redraw(s).values.tolist() == [
            [split_day["patient"], "contrast phase corrected", 2]]
    labels = _scan(0)[1]
    for series_id in day_1:  # redrawn: no longer stale
        import_label_map(series_id, split_day["model_id"], labels, url=split_day["url"], refresh=False)
    with make_session_factory(split_day["url"])() as s:
        assert s.scalar(select(func.count(Segmentation.id)).where(Segmentation.redraw_reason.is_not(None))) == 0
        assert queries.segmentations_to_redraw(s).empty


def test_a_measurement_on_the_days_other_study_links_to_its_tracked_lesion(
        split_day: dict, tmp_path: Path) -> None:
    """The report carries the arterial study's accession, the day is tracked on its portal
    study: the measurement of A found no lesion there, so it had no track."""
    url, model_id = split_day["url"], split_day["model_id"]
    csv = tmp_path / "measurements.csv"
    rows = ["patient_id,accession,lesion_label,longest_diameter_mm,location_x_mm,location_y_mm,"
            "location_z_mm,reader"]
    rows += [f"SPLIT,{SPLIT_DAY[k][0]},A,19.0,{A_CENTER[0]},{A_CENTER[1]},{A_CENTER[2]},dr" for k in (0, 2)]
    csv.write_text("\n".join(rows) + "\n")
    import_measurements(csv, url=url)
    analytics.refresh_responses(url=url)
    links = analytics.agreement(split_day["patient"], model_id)["links"]
    assert [link["study_id"] for link in links] == [split_day["studies"][(SPLIT_DAY[k][1], SPLIT_DAY[k][2])][0]
                                                    for k in (0, 2)]  # each on its own study
    numbers = {link["track_number"] for link in links}
    assert len(numbers) == 1 and None not in numbers
    assert _stored_links(url, model_id).keys() == {link["measurement_id"] for link in links}
    assert {track for _, track, _ in _stored_links(url, model_id).values()} == numbers


def test_the_radiologists_day_is_one_timepoint_across_its_studies(split_day: dict, tmp_path: Path) -> None:
    """A reader's measurements of one day on its two studies were two timepoints: a response
    on the baseline day, against itself."""
    url = split_day["url"]
    csv = tmp_path / "measurements.csv"
    rows = ["patient_id,accession,lesion_label,longest_diameter_mm,reader"]
    rows += [f"SPLIT,{SPLIT_DAY[0][0]},A,19.0,dr", f"SPLIT,{SPLIT_DAY[1][0]},B,12.0,dr",  # day 1, two studies
             f"SPLIT,{SPLIT_DAY[2][0]},A,19.0,dr", f"SPLIT,{SPLIT_DAY[2][0]},B,12.0,dr"]
    csv.write_text("\n".join(rows) + "\n")
    import_measurements(csv, url=url)
    with make_session_factory(url)() as s:
        radiologist = s.execute(select(Response.study_id, Response.recist_category, Response.sum_diameters_mm)
                                .where(Response.source == "radiologist")).all()
    day_2 = split_day["studies"][(SPLIT_DAY[2][1], SPLIT_DAY[2][2])][0]
    assert radiologist == [(day_2, "SD", 31.0)]  # both day-1 lesions are its baseline


def test_the_volumetric_response_has_one_timepoint_per_day(split_day: dict) -> None:
    """The page's volumetric response took every study with a segmentation: the day's
    arterial study (no tracked lesion, 0 ml) became the baseline and every timepoint NE."""
    studies = split_day["studies"]
    f = analytics.patient_followup(split_day["patient"], split_day["model_id"])
    volumetric = f.responses["volumetric"]
    assert [v["study_id"] for v in volumetric] == [studies[("2020-01-01", "portal")][0],
                                                   studies[("2020-04-01", "portal")][0]]
    assert [v["response"] for v in volumetric] == ["BL", "SD"] and volumetric[0]["value"] > 0


def test_a_kept_identifier_dates_a_patient_from_before_the_policy_was_recorded(lvt_env: Path) -> None:
    """`--keep-identifiers` patients from before revision 0008 were taken as pseudonymised:
    their source id was hashed, and no id was ever accepted."""
    from app.services.corrections import _identity_of
    from db.models import Patient

    assert _identity_of(Patient(pseudo_id="KEEP-01"), "KEEP-01") is False
    with pytest.raises(UserError, match="is not patient KEEP-01"):
        _identity_of(Patient(pseudo_id="KEEP-01", identity_removed=True), "KEEP-01")


def test_the_cohort_export_holds_finished_segmentations_only(store: dict) -> None:
    """During `lvt batch --force` a series' segmentation is "running" while its old lesions and
    volumes are still stored: the export listed them beside the status saying it was not done."""
    from db.models import Segmentation

    url = store["url"]
    before = analytics.cohort_tables(url=url)
    with make_session_factory(url)() as s:
        redrawn = s.scalars(select(Segmentation).order_by(Segmentation.id)).first()
        redrawn.status, series_id = "running", redrawn.series_id
        s.commit()
    after = analytics.cohort_tables(url=url)
    assert (before["lesions"]["series_id"] == series_id).any() and (before["volumetry"]["series_id"] == series_id).any()
    assert not (after["lesions"]["series_id"] == series_id).any()
    assert not (after["volumetry"]["series_id"] == series_id).any()
    kept = set(after["lesions"]["lesion_id"])
    assert set(after["tracks"]["lesion_id"]) <= kept and len(after["tracks"]) < len(before["tracks"])
    assert after["series"].loc[after["series"]["series_id"] == series_id, "segmentation"].tolist() == ["running"]


def test_an_admin_removes_a_series_and_the_patients_results_follow(store: dict) -> None:
    """A series stored by mistake could not be taken out: ingest refuses the whole series under
    a stored half's UID, and every later page showed the wrong scan's lesions and volumes."""
    import json
    import os
    import socket

    from typer.testing import CliRunner

    from app.cli.main import app
    from app.services.series_removal import remove_series
    from db import storage
    from db.models import AuditEvent, BatchJob, BatchRun, Segmentation, Series, Study

    url, model_id = store["url"], store["model_id"]
    with make_session_factory(url)() as s:
        arterial = s.get(Series, s.scalar(select(Series.id).where(Series.phase == "arterial")))
        assert arterial is not None
        arterial_id, arterial_file = arterial.id, storage.resolve(arterial.image_path)
        label_file = storage.resolve(s.scalar(select(Segmentation.label_map_path)
                                              .where(Segmentation.series_id == arterial_id)) or "")
        last_study = s.scalar(select(Study.id).order_by(Study.study_date.desc()))
        last_portal = s.scalar(select(Series.id).where(Series.study_id == last_study))
        run = BatchRun(model_id=model_id, status="running", params={"pid": os.getpid(), "host": socket.gethostname()})
        s.add(run)
        s.flush()
        s.add(BatchJob(run_id=run.id, series_id=arterial_id, status="running"))
        s.commit()
        run_id = run.id
    assert arterial_file.is_file() and label_file.is_file()
    with pytest.raises(UserError, match=f"being segmented by batch run {run_id}"):
        remove_series(arterial_id, actor="test", url=url)
    with make_session_factory(url)() as s:  # the run's client is gone: it no longer holds the series
        s.get(BatchRun, run_id).params = {"pid": 2**22 + 17, "host": socket.gethostname()}
        s.commit()
    runner = CliRunner()
    assert runner.invoke(app, ["studies", "remove-series", "999999", "--yes"]).exit_code == 1
    declined = runner.invoke(app, ["studies", "remove-series", str(arterial_id)], input="n\n")
    assert declined.exit_code == 1 and arterial_file.is_file()
    done = runner.invoke(app, ["studies", "remove-series", str(arterial_id), "--yes", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert (report["phase"], report["segmentations_removed"], report["lesions_removed"]) == ("arterial", 1, 1)
    assert report["study_removed"] is False and report["patient_removed"] is False  # the portal scan stays
    assert report["redo"] == f"lvt batch --patient {store['patient']} --outdated"  # drawn beside it
    assert not arterial_file.exists() and not label_file.exists()
    f = analytics.patient_followup(store["patient"], model_id)
    assert sorted(v["phase"] for v in f.volumes) == ["portal"] * 3
    assert all(v["deviation_pct"] is None for v in f.volumes)  # no phase left to compare with
    assert len(f.timeline) == 3 and len(f.tracks) == 2
    # the last study keeps its radiologist measurements, so it stays without its only series
    said = runner.invoke(app, ["studies", "remove-series", str(last_portal)], input="y\n")
    assert said.exit_code == 0, said.output
    assert f"series {last_portal} (portal, " in said.output and "study" not in said.output.split("removed with")[1]
    assert "responses refreshed" in said.output and "redo" not in said.output
    assert runner.invoke(app, ["studies", "remove-series", str(last_portal)], input="y\n").exit_code == 1
    f = analytics.patient_followup(store["patient"], model_id)
    # B, new at what is now the last study, awaits a later one to confirm it: SD, no longer PD
    assert len(f.timeline) == 2 and [r["category"] for r in f.responses["model"]] == ["SD"]
    assert len(f.measurements) == 4  # the radiologist's own series of sizes is untouched
    with make_session_factory(url)() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "series_removed")).all()
        assert [e.target for e in events] == [f"series {arterial_id}", f"series {last_portal}"]
        assert "remove-series" in (events[0].actor or "")
        assert s.scalar(select(func.count(Series.id))) == 2


def test_the_report_pictures_each_tracked_lesion_on_the_slice_its_diameter_is_measured_on(
    store: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tumor board compares lesions on the images, and the report held only numbers: each
    lesion of each track now has a key image, the lesion outlined in its track's colour."""
    import io

    from PIL import Image

    from app.settings import get_settings
    from app.web import key_images, report, theme

    with make_session_factory(store["url"])() as s:
        page = queries.followup(s, store["patient"])
    data_dir = get_settings().resolved_data_dir
    pictures = key_images.key_images(page, page.lesions, data_dir)
    assert not pictures.unreadable and not pictures.tracks_left_out
    assert len(pictures.images) == len(page.lesions) == 5  # A on three days, B on two, portal each day
    track_a = int(page.lesions.loc[page.lesions["x"] < 0, "track"].iloc[0])
    a_images = [p for p in pictures.images if p.track == track_a]
    assert [str(p.study_date) for p in a_images] == sorted(str(d) for d in page.lesions["study_date"].unique())
    for picture, radius in zip(a_images, A_RADII, strict=True):
        assert abs(picture.slice_number - 1 - A_CENTER[2] / SPACING[2]) <= 1  # the ball's widest slice
        rgb = np.asarray(Image.open(io.BytesIO(picture.png)).convert("RGB"))
        assert rgb.shape == (key_images.IMAGE_PX, key_images.IMAGE_PX, 3)
        ring = np.all(rgb == theme.hex_to_rgb(theme.track_colour(track_a)), axis=-1)
        centre_row = np.nonzero(ring[key_images.IMAGE_PX // 2])[0]
        px_per_mm = key_images.IMAGE_PX / max(key_images.FIELD_MIN_MM, key_images.FIELD_PER_DIAMETER * 2 * radius)
        # the outline lies just outside the lesion, which is centred and keeps its own grey inside
        inner_width_mm = (np.diff(centre_row).max() - 1) / px_per_mm
        assert abs(inner_width_mm - picture.diameter_mm) <= 3.0
        assert not ring[key_images.IMAGE_PX // 2, key_images.IMAGE_PX // 2]

    # each picture names the radiologist's measurement of that lesion on that day, where one links
    assert [p.reader for p in a_images] == [f"A: {2 * r + 1:.1f} mm" for r in A_RADII]
    assert [p.reader for p in pictures.images if p.track != track_a] == [None, f"B: {2 * B_RADII[2] + 1:.1f} mm"]
    assert a_images[-1].caption_lines[1:3] == [f"model ⌀ {a_images[-1].diameter_mm:.1f} mm", "reader A: 11.0 mm"]

    html = report.followup_report(page, page.lesions, [], "ground-truth 1", "clinician", pictures=pictures)
    assert "<h2>Key images</h2>" in html and html.count("data:image/png;base64,") == 5
    assert " mm<br>reader A: 19.0 mm<br>slice " in html
    # the size chart: each track's line and the reader's crosses, as vector text that prints sharply
    import base64
    import re

    svg = base64.b64decode(re.search(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", html).group(1)).decode()
    assert f"track {track_a} (model)" in svg and "radiologist" in svg and "longest axial diameter" in svg
    empty = page.lesions.iloc[:0]
    assert "Nothing measured yet." in report.followup_report(
        queries.FollowUp(page.pseudo_id, page.model_id, page.studies, empty, page.measurements.iloc[:0],
                         page.responses, page.volumes), empty, [], "m", "c")
    assert f"Track {track_a} · RECIST target</div>" in html and "longest diameter is measured" in html
    track_b = next(p.track for p in pictures.images if p.track != track_a)
    assert f"Track {track_b}</div>" in html  # B came after the baseline: no target

    only_largest = key_images.key_images(page, page.lesions, data_dir, max_tracks=1)
    assert {p.track for p in only_largest.images} == {track_a}
    assert only_largest.tracks_left_out == sorted(set(page.lesions["track"]) - {track_a})
    assert (f"Smaller tracks not pictured, to keep the report readable: tracks {only_largest.tracks_left_out[0]}."
            in report.followup_report(page, page.lesions, [], "m", "c", pictures=only_largest))

    # a place the radiologist measured that no track links to is pictured at its day, circled;
    # one without a position, or outside the scan, is named instead
    import dataclasses

    import pandas as pd

    assert pictures.missed == [] and "None: every measurement with a position links" in html
    reader = page.measurements
    extra = pd.concat([reader.iloc[[0]].assign(lesion="C", diameter_mm=8.0, location_mm=[[10.0, -15.0, 45.0]]),
                       reader.iloc[[0]].assign(lesion="D", location_mm=[[300.0, 0.0, 30.0]]),
                       reader.iloc[[0]].assign(lesion="E", location_mm=None, slice_index=4)], ignore_index=True)
    with_missed = dataclasses.replace(page, measurements=pd.concat([reader, extra], ignore_index=True))
    found = key_images.key_images(with_missed, page.lesions, data_dir)
    assert [(p.lesion, str(p.study_date), p.slice_number, p.whole_slice) for p in found.missed] == [
        ("C", str(reader["study_date"].iloc[0]), round(45.0 / SPACING[2]) + 1, False),
        ("E", str(reader["study_date"].iloc[0]), 4 + 1, True)]  # a slice alone: the whole slice, no circle
    whole = np.asarray(Image.open(io.BytesIO(found.missed[1].png)).convert("RGB"))
    assert not np.all(whole == 255, axis=-1)[key_images.IMAGE_PX // 2].any()  # no circle drawn
    assert "slice given, no position: whole slice" in found.missed[1].caption_lines
    rgb = np.asarray(Image.open(io.BytesIO(found.missed[0].png)).convert("RGB"))
    circle = np.all(rgb == 255, axis=-1)
    row = np.nonzero(circle[key_images.IMAGE_PX // 2])[0]  # the circle crosses the centre row twice
    px_per_mm = key_images.IMAGE_PX / key_images.FIELD_MIN_MM
    assert abs((row.max() - row.min()) / px_per_mm - 8.0) <= 1.0
    assert [why.split(":")[0] for why in found.unreadable] == [f"reader D on {reader['study_date'].iloc[0]}"]
    assert "outside the scan" in found.unreadable[0]
    from app.web import analysis

    assert analysis.unlinked_measurements_line(page.pseudo_id, page.lesions, page.measurements) is None
    line = analysis.unlinked_measurements_line(page.pseudo_id, page.lesions, with_missed.measurements)
    assert line is not None and f"C on {reader['study_date'].iloc[0]} (8.0 mm)" in line and "E on" in line
    assert "<h2>Measured by the radiologist, not linked to a model lesion</h2>" in report.followup_report(
        with_missed, page.lesions, [], "m", "c", pictures=found)

    # the latest day's 3D view, from the front and the right, as the 3D page colours it
    from app.web import report_scene

    scene = report_scene.latest_scene(page, data_dir)
    assert scene is not None and scene.study_date == max(s.study_date for s in page.studies)
    assert scene.not_drawn is None and [caption for caption, _ in scene.pictures] == list(
        report_scene.VIEW_CAPTIONS.values())
    views = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for _, png in scene.pictures]
    assert all((view < 240).any(axis=-1).mean() > 0.05 for view in views)  # a scene, not a white page
    assert not np.array_equal(views[0], views[1])
    html = report.followup_report(page, page.lesions, [], "m", "c", pictures=pictures, scene=scene)
    assert "<h2>3D view</h2>" in html and html.count("class='scene'") == 2
    # beside it, each tumor of that day by its track and its gap to a vessel, as the 3D page lists them
    latest = page.lesions[page.lesions["study_date"] == scene.study_date]
    assert sorted(row["track"] for row in scene.distances) == sorted(latest["track"].astype(int))
    assert sorted(row["⌀ (mm)"] for row in scene.distances) == sorted(latest["diameter_mm"].round(1))
    assert "<h3>Tumor to vessel distance</h3>" in html
    label_file = data_dir / page.label_maps[max(page.tracked_series)]
    moved = label_file.with_name(label_file.name + ".moved")
    label_file.rename(moved)
    try:
        gone = report_scene.latest_scene(page, data_dir)
    finally:
        moved.rename(label_file)
    assert gone is not None and gone.pictures == [] and "missing from the store" in (gone.not_drawn or "")
    assert "Not drawn: " in report.followup_report(page, page.lesions, [], "m", "c", scene=gone)
    from lvt_core import scene as scenes

    monkeypatch.setattr(scenes, "offscreen_rendering_available", lambda: False)  # as without EGL or OSMesa
    blind = report_scene.latest_scene(page, data_dir)
    assert blind is not None and blind.pictures == [] and "not available on this machine" in (blind.not_drawn or "")
    assert blind.distances == scene.distances  # the gaps need no OpenGL

    # a CT gone from the store is named, and the other scans are still pictured
    last = page.lesions.sort_values("study_date").iloc[-1]
    ct_path = next(se.image_path for st in page.studies for se in st.series if se.id == last["series_id"])
    (data_dir / ct_path).unlink()
    damaged = key_images.key_images(page, page.lesions, data_dir)
    assert len(damaged.unreadable) == 1 and damaged.unreadable[0].startswith(f"{last['study_date']} portal: ")
    assert len(damaged.images) == 3


def test_the_report_is_written_as_a_pdf_a_document_for_the_record(store: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hospital's record files PDF documents, and the report was HTML only: `lvt export report
    … OUT.pdf` writes it as PDF/A with the same sections, key images and research-use notice,
    each page naming the patient."""
    import io

    from pypdf import PdfReader

    out = store["tmp"] / "record" / "followup.pdf"
    done = subprocess.run([str(Path(sys.executable).with_name("lvt")), "export", "report", "SRC1", str(out),
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["format"], summary["key_images"], summary["scene_not_drawn"]) == ("pdf", 5, None)
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    document = PdfReader(io.BytesIO(data))
    assert document.metadata.title == f"LVT follow-up · {store['patient']}"
    assert "lvt export report" in document.metadata.author
    xmp = document.xmp_metadata
    assert xmp is not None and (xmp.pdfaid_part, xmp.pdfaid_conformance) == ("3", "A")  # archival, accessible
    assert "/StructTreeRoot" in document.trailer["/Root"] and document.trailer["/Root"]["/Lang"] == "en"
    pages = [page.extract_text() for page in document.pages]
    text = " ".join(" ".join(pages).split())
    for section in ("Studies", "Response (RECIST 1.1)", "Key images", "Liver volume per contrast phase",
                    "Radiologist measurements", "Warnings"):
        assert section in text
    assert "A: 11.0" in text and "not for clinical decisions" in text
    assert all(f"patient {store['patient']}" in page and f"of {len(pages)}" in " ".join(page.split())
               for page in pages)  # every page's foot names the patient and counts the pages
    pictured = sum(len(page.images) for page in document.pages)
    assert pictured >= 5  # the key images (the size chart is vector drawing, not an image)
    with make_session_factory(store["url"])() as s:
        detail = s.scalar(select(AuditEvent.detail).where(AuditEvent.action == "download_report"))
    assert detail == {"file": str(out), "format": "pdf"}

    # the same PDF, filed in the patient's latest study as a DICOM Encapsulated PDF for a PACS
    import pydicom
    from pydicom.uid import EncapsulatedPDFStorage

    from db.models import Study

    filed = store["tmp"] / "record" / "followup.dcm"
    done = subprocess.run([str(Path(sys.executable).with_name("lvt")), "export", "report", "SRC1", str(filed),
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    with make_session_factory(store["url"])() as s:
        latest = s.scalars(select(Study).order_by(Study.study_date.desc())).first()
        assert latest is not None
    assert (summary["format"], summary["study_uid"]) == ("dicom", latest.study_instance_uid)
    assert summary["dciodvfy"].get("errors", []) == []  # checked wherever dicom3tools is installed
    document = pydicom.dcmread(filed)
    assert document.SOPClassUID == EncapsulatedPDFStorage and document.Modality == "DOC"
    assert (document.StudyInstanceUID, document.PatientID) == (latest.study_instance_uid, store["patient"])
    assert document.StudyDate == latest.study_date.strftime("%Y%m%d") and document.PatientIdentityRemoved == "YES"
    assert document.MIMETypeOfEncapsulatedDocument == "application/pdf"
    wrapped = bytes(document.EncapsulatedDocument)[:document.EncapsulatedDocumentLength]
    assert "A: 11.0" in " ".join(page.extract_text() for page in PdfReader(io.BytesIO(wrapped)).pages)

    # where no PDF can be made, the command says why before any work and writes nothing; HTML works
    from app.services.export import export_report
    from app.web import report_pdf

    monkeypatch.setattr(report_pdf, "_NATIVE_LIBRARIES", ("lvt-no-such-library",))
    report_pdf.unavailable_reason.cache_clear()
    try:
        assert report_pdf.unavailable_reason() is None  # the search missed, the import decides: it works here
        report_pdf.unavailable_reason.cache_clear()
        monkeypatch.setitem(sys.modules, "weasyprint", None)  # as on a machine without it
        missing = store["tmp"] / "record" / "missing.pdf"
        with pytest.raises(UserError, match=r"missing\.pdf: PDF needs WeasyPrint.*HTML report works"):
            export_report(store["patient"], missing)
        assert not missing.exists()
        assert export_report(store["patient"], store["tmp"] / "record" / "still.html")["format"] == "html"
    finally:
        report_pdf.unavailable_reason.cache_clear()
