"""The synthetic cohort: determinism, label consistency, phases, longitudinal truth, CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from typer.testing import CliRunner

from lvt_core.phantom import (
    LESION_COLUMNS,
    MANIFEST_COLUMNS,
    MEASUREMENT_COLUMNS,
    PHASE_HU_TABLE,
    PHASES,
    CohortConfig,
    LesionMix,
    generate_cohort,
    generate_cohorts,
    phantom_scan,
)
from lvt_core.phantom.scan import make_patient
from lvt_core.phantom.tables import phase_table_markdown

SEED = 4  # patient 0 of this seed has two lasting lesions and one appearing at timepoint 1
CONFIG = CohortConfig(patients=1, timepoints=2, phases=2, seed=SEED, size="tiny", dicom=True,
                      preview=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, CONFIG)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_layout_and_csv_columns(cohort: Path) -> None:
    manifest = _rows(cohort / "manifest.csv")
    assert tuple(manifest[0]) == MANIFEST_COLUMNS
    assert tuple(_rows(cohort / "lesions.csv")[0]) == LESION_COLUMNS
    with (cohort / "measurements.csv").open() as handle:
        assert tuple(next(csv.reader(handle))) == MEASUREMENT_COLUMNS
    assert [(r["study_index"], r["phase"]) for r in manifest] == [
        ("0", "portal"), ("0", "arterial"), ("1", "portal"), ("1", "arterial")]
    for row in manifest:
        assert row["patient_id"] == "LVT-0001"
        folder = cohort / row["patient_id"] / f"{row['study_date']}_{row['phase']}"
        assert (cohort / row["image"]).parent == folder
        image = sitk.ReadImage(str(cohort / row["image"]))
        assert image.GetPixelID() == sitk.sitkInt16
        assert sitk.ReadImage(str(cohort / row["labels"])).GetPixelID() == sitk.sitkUInt8
        assert sitk.ReadImage(str(cohort / row["lesion_ids"])).GetPixelID() == sitk.sitkUInt16
        assert list(image.GetSize()) == [int(row[f"size_{a}"]) for a in "xyz"]
        assert np.allclose(image.GetSpacing(), [float(row[f"spacing_{a}"]) for a in "xyz"], rtol=1e-5)
        assert (folder / "preview_axial.png").read_bytes()[:4] == b"\x89PNG"
        assert (folder / "preview_coronal.png").is_file()
        assert len(list((cohort / row["dicom_dir"]).glob("*.dcm"))) == image.GetSize()[2]
    drawn = json.loads((cohort / "cohort.json").read_text())  # how to draw it again
    assert (drawn["seed"], drawn["size"], drawn["patients"], drawn["timepoints"]) == (SEED, "tiny", 1, 2)
    assert drawn["phases"] == ["portal", "arterial"]
    assert LesionMix(**drawn["lesion_mix"]) == LesionMix()
    dates = sorted({r["study_date"] for r in manifest})
    gap = np.datetime64(dates[1]) - np.datetime64(dates[0])
    assert 60 <= gap.astype(int) <= 180  # studies months apart


def test_same_seed_same_bytes_across_processes_via_cli(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    lvt = Path(sys.executable).with_name("lvt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(lvt), "phantom", str(out), "--patients", "1", "--timepoints", "2", "--phases", "2",
         "--seed", str(SEED), "--size", "tiny", "--dicom", "--preview", "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert summary["scans"] == 4 and summary["phases"] == ["portal", "arterial"]
    first, second = _files(cohort), _files(out)
    assert sorted(first) == sorted(second)
    different = [name for name in first if first[name] != second[name]]
    assert different == []


def test_api_scan_matches_cohort_file_and_other_seed_differs(cohort: Path) -> None:
    row = _rows(cohort / "manifest.csv")[1]  # timepoint 0, arterial
    scan = phantom_scan(SEED, "tiny", "arterial", 0, 0)
    assert np.array_equal(sitk.GetArrayFromImage(scan.image), _array(cohort / row["image"]))
    assert np.array_equal(sitk.GetArrayFromImage(scan.lesion_ids), _array(cohort / row["lesion_ids"]))
    other = phantom_scan(SEED + 1, "tiny", "arterial", 0, 0)
    assert not np.array_equal(sitk.GetArrayFromImage(other.image), _array(cohort / row["image"]))


def test_labels_exclusive_and_vessels_tumors_in_the_liver(cohort: Path) -> None:
    for row in _rows(cohort / "manifest.csv"):
        labels = _array(cohort / row["labels"])
        ids = _array(cohort / row["lesion_ids"])
        image = _array(cohort / row["image"])
        spacing = [float(row[f"spacing_{a}"]) for a in "zyx"]
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        assert np.array_equal(labels == 3, ids > 0)
        liver_ml = (labels > 0).sum() * np.prod(spacing) / 1000
        assert 900 < liver_ml < 2600
        # every component of liver ∪ vessel ∪ tumor holds parenchyma: nothing floats outside
        components, n = ndimage.label(labels > 0, structure=np.ones((3, 3, 3)))
        with_liver = np.unique(components[labels == 1])
        assert set(range(1, n + 1)) <= set(with_liver.tolist())
        # intrahepatic vessels (radius <= 8 mm) lie within a few mm of parenchyma
        to_liver = ndimage.distance_transform_edt(labels != 1, sampling=spacing)
        assert (labels == 2).any()
        assert to_liver[labels == 2].max() <= 9.0
        # bright extrahepatic vessels (aorta, IVC) and bone are not labelled
        assert np.mean(labels[image > 250] == 0) > 0.9


def test_phases_of_one_study_share_the_anatomy(cohort: Path) -> None:
    manifest = _rows(cohort / "manifest.csv")
    lesions = _rows(cohort / "lesions.csv")
    for t in ("0", "1"):
        portal, arterial = (r for r in manifest if r["study_index"] == t)
        assert portal["spacing_x"] == arterial["spacing_x"] and portal["size_z"] == arterial["size_z"]
        assert portal["study_uid"] == arterial["study_uid"]
        assert portal["series_uid"] != arterial["series_uid"]
        a, b = (_array(cohort / r["labels"]) > 0 for r in (portal, arterial))
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert 0.9 < dice < 1.0  # same liver, small breathing shift
        ids = [{r["lesion_uid"] for r in lesions
                if r["study_date"] == portal["study_date"] and r["phase"] == phase}
               for phase in ("portal", "arterial")]
        assert ids[0] == ids[1]
        # contrast differs: the liver enhances more in the portal-venous phase
        liver_hu = [_array(cohort / r["image"])[_array(cohort / r["labels"]) == 1].mean()
                    for r in (portal, arterial)]
        assert liver_hu[0] > liver_hu[1]


def _longest_axial(ids: np.ndarray, uid: int, spacing_xy: tuple[float, float]) -> float:
    best = 0.0
    for k in np.unique(np.nonzero(ids == uid)[0]):
        yy, xx = np.nonzero(ids[k] == uid)
        pts = np.column_stack([xx * spacing_xy[0], yy * spacing_xy[1]])
        if len(pts) > 1:
            best = max(best, float(np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()))
    return best


def test_longitudinal_truth_matches_maps(cohort: Path) -> None:
    manifest = _rows(cohort / "manifest.csv")
    lesions = _rows(cohort / "lesions.csv")
    tracks = {t.uid: t for t in make_patient(SEED, 0).tracks}
    seen: dict[str, set[int]] = {}
    for row in manifest:
        ids = _array(cohort / row["lesion_ids"])
        sx, sy, sz = (float(row[f"spacing_{a}"]) for a in "xyz")
        rows = {int(r["lesion_uid"]): r for r in lesions
                if r["study_date"] == row["study_date"] and r["phase"] == row["phase"]}
        assert set(rows) == set(np.unique(ids[ids > 0]).tolist())
        for uid, lesion in rows.items():
            assert uid in tracks and tracks[uid].diameters[int(row["study_index"])] > 0
            voxels = int((ids == uid).sum())
            assert int(lesion["voxels"]) == voxels
            assert float(lesion["volume_ml"]) == pytest.approx(voxels * sx * sy * sz / 1000, rel=1e-3)
            # edge to edge, as lvt lesions measures: between the centres' span and one pixel more
            centres = _longest_axial(ids, uid, (sx, sy))
            assert centres <= float(lesion["longest_axial_diameter_mm"]) <= centres + np.hypot(sx, sy) + 1e-3
            true_d = tracks[uid].diameters[int(row["study_index"])]
            if true_d > 15:
                assert abs(float(lesion["longest_axial_diameter_mm"]) - true_d) < 0.35 * true_d + 8
        seen.setdefault(row["study_index"], set()).update(rows)
    # identities persist: a lesion present at both timepoints keeps its number
    both = {uid for uid, t in tracks.items() if min(t.diameters[:2]) > 15}
    assert both and both <= seen["0"] & seen["1"]
    # the appearing lesion is absent at baseline
    new = {uid for uid, t in tracks.items() if t.diameters[0] == 0 and t.diameters[1] > 0}
    assert not new & seen["0"]


def test_measurements_are_noisy_reads_of_target_lesions(cohort: Path) -> None:
    lesions = {(r["study_date"], int(r["lesion_uid"])): r for r in _rows(cohort / "lesions.csv")
               if r["phase"] == "portal"}
    measurements = _rows(cohort / "measurements.csv")
    assert measurements
    for m in measurements:
        truth = lesions[(m["study_date"], int(m["lesion_label"][1:]))]
        true_d = float(truth["longest_axial_diameter_mm"])
        assert true_d >= 10
        assert abs(float(m["longest_diameter_mm"]) - true_d) < 8  # ~±2 mm reader noise
        assert float(m["short_axis_mm"]) <= float(m["longest_diameter_mm"]) + 8
        assert abs(float(m["location_z_mm"]) - float(truth["centroid_z_mm"])) < 10
        assert m["accession"] and m["reader"]


def test_reader_reports_new_lesions_at_first_sight_or_one_study_later(cohort: Path) -> None:
    tracks = {t.uid: t for t in make_patient(SEED, 0).tracks}
    dates = sorted({r["study_date"] for r in _rows(cohort / "manifest.csv")})
    first_report: dict[int, int] = {}
    for m in _rows(cohort / "measurements.csv"):
        uid, t = int(m["lesion_label"][1:]), dates.index(m["study_date"])
        assert (m["note"] == "new") == (uid not in first_report)
        first_report.setdefault(uid, t)
        assert float(m["short_axis_mm"]) <= float(m["longest_diameter_mm"])
    for uid, t in first_report.items():
        visible = [i for i, d in enumerate(tracks[uid].diameters[:len(dates)]) if d >= 10]
        assert visible and t - visible[0] in (0, 1)  # missed at most once, when small


def test_phase_table_is_documented_and_complete() -> None:
    assert set(PHASES) == {"noncontrast", "arterial", "portal", "late"}
    for tissue in ("liver", "portal_vein", "hepatic_vein", "aorta"):
        assert set(PHASE_HU_TABLE[tissue]) == set(PHASES)
    assert PHASE_HU_TABLE["aorta"]["arterial"][0] > PHASE_HU_TABLE["aorta"]["portal"][0]
    assert PHASE_HU_TABLE["liver"]["portal"][0] > PHASE_HU_TABLE["liver"]["noncontrast"][0]
    readme = Path(__file__).resolve().parent.parent / "lvt_core" / "phantom" / "README.md"
    assert phase_table_markdown() in readme.read_text()  # the documented table is the one used


def test_cli_errors(tmp_path: Path) -> None:
    from app.cli.main import app

    runner = CliRunner()
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["phantom", str(full), "--size", "tiny"])
    assert result.exit_code == 1
    assert "not empty" in str(result.exception) or "not empty" in result.output
    result = runner.invoke(app, ["phantom", str(full), "--size", "tiny", "--overwrite"])
    assert result.exit_code == 1 and (full / "notes.txt").exists()
    result = runner.invoke(app, ["phantom", str(tmp_path / "x"), "--size", "huge"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["phantom", str(tmp_path / "x"), "--phases", "5"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["phantom", str(tmp_path / "x"), "--kinds", "hyper=1,cyst=1"])
    assert result.exit_code == 2 and "'cyst=1' is not KIND=WEIGHT" in result.output
    result = runner.invoke(app, ["phantom", str(tmp_path / "x"), "--kinds", "hyper=much"])
    assert result.exit_code == 2 and "'much' is not a number" in result.output
    result = runner.invoke(app, ["phantom", str(tmp_path / "x"), "--near-vessel", "1.5"])
    assert result.exit_code == 2
    assert not (tmp_path / "x").exists()


def _gap_to_thick_vessel_mm(patient_index: int, mix: LesionMix) -> list[tuple[float, str]]:
    """Per lesion of patient ``patient_index`` (seed 31): how far its surface, at its largest,
    lies from the nearest vessel at least 5 mm wide (negative: the vessel runs into it)."""
    patient = make_patient(31, patient_index, mix)
    vessels = [c for c in patient.anatomy.portal_tree + patient.anatomy.hepatic_tree if c.rb >= 2.5]
    rows = []
    for track in patient.tracks:
        x, y, z = (track.center[i : i + 1].astype(np.float32) for i in range(3))
        surface = min(float(vessel.distance(x, y, z)[0]) for vessel in vessels)
        rows.append((surface - max(track.diameters) / 2, track.kind))
    return rows


def test_a_lesion_mix_places_every_lesion_against_a_vessel_and_draws_the_asked_kinds() -> None:
    against = LesionMix(near_vessel=1.0, hypo=0.0, hyper=1.0, rim=0.0)
    anywhere = LesionMix(near_vessel=0.0)
    stressed = [row for p in range(6) for row in _gap_to_thick_vessel_mm(p, against)]
    spread = [row for p in range(6) for row in _gap_to_thick_vessel_mm(p, anywhere)]
    assert len(stressed) == len(spread) >= 10  # the same patients, the same lesion count
    assert all(gap <= 1.0 for gap, _ in stressed)  # every lesion touches a thick vessel
    assert sum(gap > 1.0 for gap, _ in spread) >= 3  # placed anywhere, many do not
    assert {kind for _, kind in stressed} == {"hyper"}
    assert {kind for _, kind in spread} > {"hyper"}
    assert np.array_equal(make_patient(31, 0, against).anatomy.liver_bbox()[0],
                          make_patient(31, 0).anatomy.liver_bbox()[0])
    with pytest.raises(ValueError, match="near_vessel"):
        LesionMix(near_vessel=-0.1)


def test_a_subcapsular_mix_cuts_every_lesion_flat_at_the_livers_surface() -> None:
    """No phantom lesion reached the capsule, so a rule that removes tumors with much of their
    surroundings outside the organ looked safe on phantoms, and removed a real one."""
    from lvt_core.phantom.lesions import CAPSULE_DEPTH

    at_capsule, depths = LesionMix(subcapsular=1.0), []
    for index in range(4):
        patient = make_patient(31, index, at_capsule)
        for track in patient.tracks:
            x, y, z = (track.center[i : i + 1].astype(np.float32) for i in range(3))
            depths.append(-float(patient.anatomy.liver(x, y, z)[0]) / (max(track.diameters) / 2))
    assert len(depths) >= 6
    assert all(CAPSULE_DEPTH[0] <= d <= CAPSULE_DEPTH[1] for d in depths)  # the surface cuts each one
    assert make_patient(31, 0).tracks[0].center.tolist() != make_patient(31, 0, at_capsule).tracks[0].center.tolist()
    with pytest.raises(ValueError, match="subcapsular"):
        LesionMix(subcapsular=1.5)


def test_a_cystic_mix_turns_lesions_to_fluid_from_their_second_study_in_every_phase() -> None:
    """A metastasis turned cystic under treatment reads as water in every phase, and the
    pipeline's fluid rule stops drawing it; the phantom drew none, so the follow-up's warning
    for it could not be seen on a phantom. The truth keeps it a lesion, as a radiologist does."""
    mix = LesionMix(cystic=1.0)
    patient = make_patient(31, 1, mix)
    assert patient.tracks and all(track.cystic_from is not None for track in patient.tracks)
    assert all(track.cystic_from is None for track in make_patient(31, 1).tracks)
    seen = 0
    for timepoint in (0, 1):
        for phase in ("portal", "arterial"):
            scan = phantom_scan(31, "tiny", phase, timepoint, 1, mix)
            hu = sitk.GetArrayFromImage(scan.image)
            ids, labels = sitk.GetArrayFromImage(scan.lesion_ids), sitk.GetArrayFromImage(scan.labels)
            for track in patient.tracks:
                inside = ndimage.binary_erosion(ids == track.uid)  # away from the blurred edge
                if np.count_nonzero(inside) < 5:
                    continue
                assert (labels[inside] == 3).all()  # still tumor in the truth
                fluid = timepoint >= track.cystic_from
                assert (abs(np.median(hu[inside]) - 15) < 12) == fluid, (timepoint, phase, track.uid)
                seen += fluid
    assert seen >= 2
    with pytest.raises(ValueError, match="cystic"):
        LesionMix(cystic=2.0)


def test_patients_rendered_by_worker_processes_give_the_same_files(tmp_path: Path) -> None:
    config = CohortConfig(patients=3, timepoints=2, phases=1, seed=11, size="tiny")
    calls: list[tuple[int, int]] = []
    generate_cohort(tmp_path / "one", config)
    generate_cohort(tmp_path / "three", config, progress=lambda done, total: calls.append((done, total)),
                    workers=3)
    first, second = _files(tmp_path / "one"), _files(tmp_path / "three")
    assert sorted(first) == sorted(second) and len(first) > 3 * 2 * 3
    assert [name for name in first if first[name] != second[name]] == []
    assert calls[-1] == (6, 6) and len(calls) == 3  # one report per patient


def test_cohorts_rendered_in_one_shared_pool_match_cohorts_rendered_alone(tmp_path: Path) -> None:
    small = CohortConfig(patients=1, timepoints=1, phases=2, seed=11, size="tiny")
    large = CohortConfig(patients=3, timepoints=1, phases=1, seed=12, size="tiny")
    generate_cohort(tmp_path / "alone_small", small)
    generate_cohort(tmp_path / "alone_large", large)
    calls: list[tuple[int, int]] = []
    manifests = generate_cohorts([(tmp_path / "shared_small", small), (tmp_path / "shared_large", large)],
                                 workers=2, progress=lambda done, total: calls.append((done, total)))
    assert manifests == [tmp_path / "shared_small" / "manifest.csv", tmp_path / "shared_large" / "manifest.csv"]
    for name in ("small", "large"):
        alone, shared = _files(tmp_path / f"alone_{name}"), _files(tmp_path / f"shared_{name}")
        assert sorted(alone) == sorted(shared) and len(alone) >= 5
        assert [path for path in alone if alone[path] != shared[path]] == []
    assert calls[-1] == (5, 5) and len(calls) == 4  # one report per patient of either cohort
