"""The matched-filter search for faint lesions the network left as liver."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from model_fixtures import save_tiny_checkpoint, tiny_phantom_cohort

from lvt_core.checkpoint import load_checkpoint
from lvt_core.faint_lesions import (
    FaintLesionSearch,
    add_faint_lesions,
    faint_candidates,
    kept_faint_lesions,
)
from lvt_core.inference import Predictor
from lvt_core.labels import BACKGROUND, LIVER, TUMOR, VESSEL
from lvt_core.lesions import extract_lesions
from lvt_core.metrics import dice
from training.calibrate_faint import calibrate_faint_search
from training.evaluate_model import evaluate_checkpoint

SPACING_XYZ = (1.0, 1.0, 2.0)
SHAPE_ZYX = (40, 96, 96)
LIVER_HU = 110.0
NOISE_HU = 15.0


def _distance_mm(centre_zyx: tuple[float, float, float]) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE_ZYX, SPACING_XYZ[::-1], strict=True)],
                          indexing="ij")
    cz, cy, cx = (c * s for c, s in zip(centre_zyx, SPACING_XYZ[::-1], strict=True))
    return np.sqrt((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2)


def _liver_scan(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A block of liver in fat with white noise, all labelled liver: what the network returns
    when it sees no lesion."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE_ZYX, np.uint8)
    labels[3:-3, 6:-6, 6:-6] = LIVER
    hu = np.where(labels == LIVER, LIVER_HU, -100.0) + rng.normal(0.0, NOISE_HU, SHAPE_ZYX)
    return hu.astype(np.float32), labels


def test_a_faint_sphere_is_found_and_drawn_where_it_is() -> None:
    hu, labels = _liver_scan()
    lesion = _distance_mm((20, 48, 40)) <= 7.0  # 14 mm across, 12 HU darker: 0.8 noise sd
    hu[lesion] -= 12.0
    out = add_faint_lesions(labels, hu, SPACING_XYZ, FaintLesionSearch(min_z=6.0, min_blobness=0.3))
    found = out == TUMOR
    assert dice(found, lesion) > 0.6
    assert not (found & ~(_distance_mm((20, 48, 40)) <= 14.0)).any()  # nothing elsewhere
    assert ((out != labels) <= (labels == LIVER)).all()  # only liver became tumor


def test_a_brighter_sphere_is_searched_only_when_asked_for() -> None:
    hu, labels = _liver_scan(seed=4)
    lesion = _distance_mm((20, 48, 40)) <= 7.0
    hu[lesion] += 12.0
    dark_only = FaintLesionSearch(min_z=6.0, min_blobness=0.3)
    assert add_faint_lesions(labels, hu, SPACING_XYZ, dark_only) is labels
    both = FaintLesionSearch(min_z=6.0, min_blobness=0.3, min_z_bright=6.0)
    found = add_faint_lesions(labels, hu, SPACING_XYZ, both) == TUMOR
    assert dice(found, lesion) > 0.6
    assert [c.sign for c in kept_faint_lesions(hu, labels, SPACING_XYZ, both)] == [1.0]
    assert not kept_faint_lesions(hu, labels, SPACING_XYZ, FaintLesionSearch(min_z_bright=6.0))  # off


def test_noise_alone_gives_no_lesion_and_the_search_is_off_by_default() -> None:
    hu, labels = _liver_scan(seed=1)
    assert not (add_faint_lesions(labels, hu, SPACING_XYZ, FaintLesionSearch(min_z=6.0)) == TUMOR).any()
    hu[_distance_mm((20, 48, 40)) <= 7.0] -= 40.0
    assert FaintLesionSearch() == FaintLesionSearch.from_meta(None)
    assert add_faint_lesions(labels, hu, SPACING_XYZ, FaintLesionSearch()) is labels


def test_a_dark_tube_is_a_candidate_but_blobness_rejects_it() -> None:
    """Unsegmented veins are dark tubes in the arterial phase; a lesion is round."""
    hu, labels = _liver_scan(seed=2)
    z, y, _ = np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE_ZYX, SPACING_XYZ[::-1], strict=True)],
                          indexing="ij")
    tube = np.sqrt((z - 40.0) ** 2 + (y - 48.0) ** 2) <= 3.0
    hu[tube] -= 40.0
    candidates = faint_candidates(hu, labels, SPACING_XYZ, FaintLesionSearch(min_z=6.0))
    assert candidates and max(c.blobness for c in candidates) < 0.3
    assert not (add_faint_lesions(labels, hu, SPACING_XYZ, FaintLesionSearch(min_z=6.0, min_blobness=0.3))
                == TUMOR).any()


def test_roundness_rejects_an_elongated_region_and_keeps_a_ball() -> None:
    """A region drawn 26 mm long and 7 mm across is a tube, whatever its peak's curvature."""
    hu, labels = _liver_scan(seed=5)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE_ZYX, SPACING_XYZ[::-1], strict=True)],
                          indexing="ij")
    centre = np.array([20, 48, 40]) * np.array(SPACING_XYZ[::-1])
    cigar = (((z - centre[0]) / 3.5) ** 2 + ((y - centre[1]) / 3.5) ** 2 + ((x - centre[2]) / 14.0) ** 2) <= 1
    hu[cigar] -= 35.0
    ball_centre = (20, 48, 12)
    ball = _distance_mm(ball_centre) <= 6.0
    hu[ball] -= 35.0
    candidates = faint_candidates(hu, labels, SPACING_XYZ, FaintLesionSearch(min_z=6.0))
    by_place = {("ball" if abs(c.peak[2] - ball_centre[2]) < 6 else "cigar"): c for c in candidates
                if abs(c.peak[1] - 48) < 6}
    assert set(by_place) == {"ball", "cigar"}
    assert by_place["cigar"].roundness < 0.45 < 0.8 < by_place["ball"].roundness
    kept = kept_faint_lesions(hu, labels, SPACING_XYZ, FaintLesionSearch(min_z=6.0, min_roundness=0.5))
    assert [c.peak for c in kept] == [by_place["ball"].peak]


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_a_lesion_partly_drawn_as_vessel_is_measured_whole_when_asked(seed: int) -> None:
    """The network sometimes continues a vessel through a dark lesion: those voxels are as dark
    as the rest of it, and measuring blobness with them set to the liver's level dents it."""
    hu, labels = _liver_scan(seed)
    lesion = _distance_mm((20, 48, 40)) <= 6.0
    hu[lesion] -= 15.0
    labels[lesion & (np.arange(SHAPE_ZYX[2])[None, None, :] >= 41)] = VESSEL  # a third of it

    def blobness_at_lesion(lesion_side_vessels: bool) -> float:
        search = FaintLesionSearch(min_z=4.0, lesion_side_vessels=lesion_side_vessels)
        near = [c for c in faint_candidates(hu, labels, SPACING_XYZ, search)
                if np.linalg.norm(np.subtract(c.peak, (20, 48, 40))) < 8]
        assert len(near) == 1
        return near[0].blobness

    dented, whole = blobness_at_lesion(False), blobness_at_lesion(True)
    assert dented < 0.4 and whole > 0.45 and whole > dented + 0.15


def test_segmented_structures_are_never_overwritten_and_meta_round_trips() -> None:
    hu, labels = _liver_scan(seed=3)
    lesion = _distance_mm((20, 48, 48)) <= 7.0
    hu[lesion] -= 20.0
    labels[lesion & (_distance_mm((20, 48, 48)) <= 2.0)] = VESSEL
    labels[:, :, :8] = BACKGROUND
    out = add_faint_lesions(labels, hu, SPACING_XYZ, FaintLesionSearch(min_z=6.0))
    assert (out[labels != LIVER] == labels[labels != LIVER]).all()
    assert (out[lesion] == TUMOR).mean() > 0.5
    search = FaintLesionSearch(min_z=7.0, min_blobness=0.4, draw_edge_mm=1.0, radii_mm=(4.0, 8.0),
                               lesion_side_vessels=True, min_roundness=0.4)
    assert FaintLesionSearch.from_meta(search.to_meta()) == search


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_phantom_cohort(tmp_path_factory, "faint", seed=78)


def test_calibration_scores_what_the_calibrated_checkpoint_then_does(tmp_path: Path, cohort: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    result = calibrate_faint_search(checkpoint, [cohort], tmp_path / "faint.pt", min_zs=(3.0, 6.0),
                                    min_blobness=(0.0,), device="cpu", max_false_per_scan=None,
                                    version="0.0.2", min_z_bright=(0.0, 3.0))
    rows = {(row["min_z"], row["min_blobness"], row["min_z_bright"]): row for row in result["candidates"]}
    assert set(rows) == {(0.0, 0.0, 0.0), (3.0, 0.0, 0.0), (6.0, 0.0, 0.0), (3.0, 0.0, 3.0), (6.0, 0.0, 3.0)}
    plain = evaluate_checkpoint(checkpoint, cohort, device="cpu")
    assert rows[(0.0, 0.0, 0.0)]["tumor_dsc"] == pytest.approx(plain["tumor_dsc"], abs=1e-4)
    best = rows[(result["best_min_z"], result["best_min_blobness"], result["best_min_z_bright"])]
    assert best["score"] == max(row["score"] for row in rows.values())
    _, meta = load_checkpoint(result["out"])
    assert meta["version"] == "0.0.2"
    assert Predictor(result["out"], device="cpu").faint_search == FaintLesionSearch(
        min_z=result["best_min_z"], min_z_bright=result["best_min_z_bright"])
    # a copy searching at min_z 3 scores on a full evaluation what the calibration said it would
    _, base_meta = load_checkpoint(checkpoint)
    from lvt_core.checkpoint import copy_with_meta

    searching = copy_with_meta(checkpoint, tmp_path / "z3.pt", {
        **base_meta, "inference": {**base_meta["inference"], "faint_lesions": FaintLesionSearch(min_z=3.0).to_meta()}})
    full = evaluate_checkpoint(searching, cohort, device="cpu")
    assert full["tumor_dsc"] == pytest.approx(rows[(3.0, 0.0, 0.0)]["tumor_dsc"], abs=1e-4)
    # and it says how many lesions the search, not the network, added (summary.json's regions)
    from training.datasets import load_cases

    image, _ = load_cases("synthetic", cohort)[0].load()
    predictor = Predictor(searching, device="cpu")
    label_image = predictor.predict(image)
    labels = sitk.GetArrayFromImage(label_image)
    network_only = sitk.GetArrayFromImage(Predictor(checkpoint, device="cpu").predict(image))
    added = predictor.last_info["faint_lesions_added"]
    assert added > 0 and added == len(kept_faint_lesions(
        sitk.GetArrayViewFromImage(image), network_only, image.GetSpacing(), FaintLesionSearch(min_z=3.0)))
    # each added lesion is named by a point inside it, so its lesion says who found it
    points = predictor.last_info["faint_lesion_points_mm"]
    assert len(points) == added
    for point in points:
        x, y, z = label_image.TransformPhysicalPointToIndex(point)
        assert labels[z, y, x] == TUMOR and network_only[z, y, x] != TUMOR
    found_by = [lesion.found_by for lesion in extract_lesions(label_image, image, faint_points_mm=points)]
    assert 0 < found_by.count("faint_search") <= added
    assert set(found_by) <= {"network", "faint_search"}
    # the user can switch the search off: the network's lesions alone, none said to be searched
    switched_off = Predictor(searching, device="cpu", faint_search=False)
    assert np.array_equal(sitk.GetArrayFromImage(switched_off.predict(image)), network_only)
    assert switched_off.last_info["faint_lesion_points_mm"] == []
    with pytest.raises(ValueError, match="above 0"):
        calibrate_faint_search(checkpoint, [cohort], None, min_zs=(0.0,), device="cpu")
    with pytest.raises(ValueError, match="brighter lesions must be 0"):
        calibrate_faint_search(checkpoint, [cohort], None, min_z_bright=(-1.0,), device="cpu")


def test_segment_says_which_lesions_the_search_found_and_can_switch_it_off(
    tmp_path: Path, cohort: Path, lvt_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import json

    from test_cli_segment import run_lvt

    from lvt_core.checkpoint import copy_with_meta
    from training.datasets import load_cases

    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    _, meta = load_checkpoint(checkpoint)
    searching = copy_with_meta(checkpoint, tmp_path / "z3.pt", {
        **meta, "inference": {**meta["inference"], "faint_lesions": FaintLesionSearch(min_z=3.0).to_meta()}})
    scan = tmp_path / "ct.nii.gz"
    sitk.WriteImage(load_cases("synthetic", cohort)[0].load()[0], str(scan))

    def segment(*extra: str) -> dict:
        code, out, err = run_lvt(["segment", "-i", str(scan), "-o", str(tmp_path / "out"), "--model",
                                  str(searching), "--device", "cpu", "--json", *extra], monkeypatch, capsys)
        assert code == 0, err
        return json.loads(out)

    summary = segment()
    searched = [lesion for lesion in summary["lesions"] if lesion["found_by"] == "faint_search"]
    assert 0 < len(searched) <= summary["regions"]["faint_lesions_added"]
    assert {lesion["found_by"] for lesion in summary["lesions"]} <= {"network", "faint_search"}
    assert summary["faint_search"]["min_z"] == 3.0
    off = segment("--no-faint-search")
    assert off["faint_search"] is None and "faint_lesions_added" not in off["regions"]
    assert {lesion["found_by"] for lesion in off["lesions"]} <= {"network"}
    assert off["volumes_ml"]["tumor"] < summary["volumes_ml"]["tumor"]
    # the line on the terminal (stderr: stdout is for --json) says it too
    code, _, err = run_lvt(["segment", "-i", str(scan), "-o", str(tmp_path / "out"), "--model",
                            str(searching), "--device", "cpu"], monkeypatch, capsys)
    assert code == 0 and f"({len(searched)} found by the faint-lesion search" in " ".join(err.split()), err


def test_calibrate_faint_command(
    tmp_path: Path, cohort: Path, lvt_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from test_cli_segment import run_lvt

    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    base = ["calibrate-faint", str(checkpoint), "--cohort", str(cohort), "--out", str(tmp_path / "out.pt"),
            "--device", "cpu"]
    code, out, err = run_lvt([*base, "--min-z", "3", "--min-blobness", "0", "--min-z-bright", "0,3"],
                             monkeypatch, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("off: score") and len(lines) == 4  # off, dark only, dark and bright, chosen
    assert "brighter lesions from z 3.0" in lines[2] and lines[-1].startswith("chosen: ")
    assert (tmp_path / "out.pt").is_file()
    for option, value, message in (("--min-z", "0", "above 0"), ("--min-z-bright", "-1", "brighter lesions"),
                                   ("--min-blobness", "2", "-1..1")):
        (tmp_path / "bad.pt").unlink(missing_ok=True)
        code, out, err = run_lvt([*base[:4], "--out", str(tmp_path / "bad.pt"), option, value], monkeypatch, capsys)
        assert code == 1 and message in " ".join(err.split()), (option, err)
        assert not (tmp_path / "bad.pt").exists()


def test_calibration_puts_lesion_side_vessels_on_the_grid(tmp_path: Path, cohort: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    result = calibrate_faint_search(checkpoint, [cohort], tmp_path / "faint.pt", min_zs=(3.0,),
                                    min_blobness=(0.0, 0.5), device="cpu", max_false_per_scan=None,
                                    lesion_side_vessels=(False, True))
    rows = {(row["min_z"], row["min_blobness"], row["lesion_side_vessels"]) for row in result["candidates"]}
    assert rows == {(0.0, 0.0, False), (3.0, 0.0, False), (3.0, 0.5, False), (3.0, 0.0, True), (3.0, 0.5, True)}
    # without a blobness limit the flag changes nothing: it only changes how blobness is measured
    by_key = {(row["min_z"], row["min_blobness"], row["lesion_side_vessels"]): row for row in result["candidates"]}
    assert by_key[(3.0, 0.0, False)]["tumor_dsc"] == by_key[(3.0, 0.0, True)]["tumor_dsc"]
    chosen = Predictor(result["out"], device="cpu").faint_search
    assert chosen.lesion_side_vessels == result["best_lesion_side_vessels"]
    with pytest.raises(ValueError, match="at least one"):
        calibrate_faint_search(checkpoint, [cohort], None, lesion_side_vessels=(), device="cpu")


def test_calibration_puts_roundness_on_the_grid(tmp_path: Path, cohort: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from test_cli_segment import run_lvt

    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    result = calibrate_faint_search(checkpoint, [cohort], tmp_path / "faint.pt", min_zs=(3.0,),
                                    min_blobness=(0.0,), device="cpu", max_false_per_scan=None,
                                    min_roundness=(0.0, 0.99))
    rows = {(row["min_z"], row["min_roundness"]): row for row in result["candidates"]}
    assert set(rows) == {(0.0, 0.0), (3.0, 0.0), (3.0, 0.99)}
    chosen = Predictor(result["out"], device="cpu").faint_search
    assert chosen.min_roundness == result["best_min_roundness"]
    code, _, err = run_lvt(["calibrate-faint", str(checkpoint), "--cohort", str(cohort), "--out",
                            str(tmp_path / "bad.pt"), "--device", "cpu", "--min-roundness", "1.5"],
                             monkeypatch, capsys)
    assert code == 1 and "0..1" in " ".join(err.split())
    assert not (tmp_path / "bad.pt").exists()
