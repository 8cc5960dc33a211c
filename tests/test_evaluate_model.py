"""evaluate-model measures what the app's volumetry check will see: how far the model's
liver volume strays between the same-day phases, next to the ground truth's own spread."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lvt_core.metrics import evaluate_pair
from tests.model_fixtures import save_tiny_checkpoint, tiny_phantom_cohort
from training.datasets import load_cases
from training.evaluate_model import evaluate_checkpoint, fluid_on_true_tumor, phase_volumetry


def _row(study: str, phase: str, predicted: float, reference: float) -> dict[str, object]:
    return {"study": study, "phase": phase, "liver_total_ml": predicted, "reference_total_ml": reference}


def test_phase_volumetry_flags_a_model_whose_phases_disagree() -> None:
    rows = [
        _row("P1_0", "portal", 1000.0, 1500.0), _row("P1_0", "arterial", 1060.0, 1500.0),  # ±2.9 %: flagged
        _row("P2_0", "portal", 1490.0, 1500.0), _row("P2_0", "arterial", 1510.0, 1501.0),  # ±0.67 %
        _row("P3_0", "portal", 1200.0, 1200.0),  # one phase: nothing to compare
        _row("", "portal", 900.0, 900.0),  # study unknown (a source without one)
    ]
    result = phase_volumetry(rows)
    assert result["studies"] == 2 and result["flagged_studies"] == 1
    assert result["max_abs_deviation_pct"] == pytest.approx(100 * 30 / 1030)
    assert result["median_abs_deviation_pct"] == pytest.approx((100 * 30 / 1030 + 100 * 10 / 1500) / 2)
    assert result["reference_max_abs_deviation_pct"] == pytest.approx(100 * 0.5 / 1500.5)
    by_phase = result["mean_deviation_pct_by_phase"]
    assert set(by_phase) == {"arterial", "portal"}
    assert by_phase["arterial"] > 0 > by_phase["portal"]  # the model draws arterial livers larger
    assert phase_volumetry(rows, threshold_pct=3.0)["flagged_studies"] == 0
    assert phase_volumetry(rows[4:])["studies"] == 0 and phase_volumetry(rows[4:])["max_abs_deviation_pct"] is None


def test_evaluate_model_reports_the_phase_volumetry_of_a_two_phase_study(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    cohort = tiny_phantom_cohort(tmp_path_factory, "phases", seed=91, phases=2)
    cases = load_cases("synthetic", cohort)
    assert len(cases) == 2 and len({c.study for c in cases}) == 1 and {c.phase for c in cases} == {"portal", "arterial"}
    summary = evaluate_checkpoint(save_tiny_checkpoint(tmp_path / "tiny.pt"), cohort, tmp_path / "eval", device="cpu")
    volumetry = summary["phase_volumetry"]
    assert volumetry["studies"] == 1 and set(volumetry["mean_deviation_pct_by_phase"]) == {"portal", "arterial"}
    assert volumetry["reference_max_abs_deviation_pct"] < 2.0  # the phantom's liver is one organ on one day
    with (tmp_path / "eval" / "per_case.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["phase"] for r in rows} == {"portal", "arterial"}
    assert all(float(r["reference_total_ml"]) > 0 for r in rows)
    # a checkpoint without the fluid rule leaves nothing out: counted, not missing
    assert summary["fluid_places_removed"] == summary["fluid_places_on_true_lesions"] == 0
    assert {r["fluid_places_removed"] for r in rows} == {"0"}
    assert phase_volumetry([{**r, "liver_total_ml": float(r["liver_total_ml"]),
                             "reference_total_ml": float(r["reference_total_ml"])} for r in rows]) == volumetry


def test_evaluate_model_scores_lesions_as_lvt_evaluate_does(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same name, the same number: ``lesion_precision`` was pooled over scans and counted a
    touch as a hit, so it disagreed with ``lvt evaluate`` on the very same label maps."""
    cohort = tiny_phantom_cohort(tmp_path_factory, "phases", seed=91, phases=2)
    summary = evaluate_checkpoint(save_tiny_checkpoint(tmp_path / "tiny.pt"), cohort, tmp_path / "eval",
                                  device="cpu", save_predictions=True)
    scored = [evaluate_pair(sitk.ReadImage(str(tmp_path / "eval" / "predictions" / f"{case.case_id}.nii.gz")),
                            sitk.ReadImage(str(case.labels)))
              for case in load_cases("synthetic", cohort)]
    assert len(scored) == summary["cases"] == 2
    for key in ("lesion_sensitivity", "lesion_precision"):
        assert summary[key] == pytest.approx(sum(s[key] for s in scored) / 2)
    assert 0.0 <= summary["lesion_precision_pooled"] <= 1.0


def test_lesion_diameter_is_measured_as_lvt_lesions_measures_it() -> None:
    """The evaluation measured between voxel centres, one voxel less than ``lvt lesions``, the
    app and the phantom's own ``lesions.csv``, so "lesions of 10 mm or more" were not the
    lesions a user measures at 10 mm or more."""
    from lvt_core.lesions import lesion_component_map
    from training.evaluate_model import large_lesion_ids, lesion_findings

    spacing = (0.75, 0.75, 2.0)
    yy, xx = np.mgrid[:90, :90]
    disc = ((yy - 45) ** 2 + (xx - 45) ** 2) <= 33**2  # 67 voxels across: 50.25 mm edge to edge
    labels = np.stack([np.zeros_like(disc), disc, np.zeros_like(disc)]).astype(np.uint8) * 3
    labels[1, 0, 0:14] = 3  # 14 voxels in a row: 10.5 mm edge to edge, 9.75 mm between centres
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(spacing)
    from lvt_core.lesions import extract_lesions

    app_sizes = sorted(les.longest_axial_diameter_mm for les in extract_lesions(image, min_voxels=1))
    rows = lesion_findings(labels, labels, np.zeros(labels.shape, np.float32), spacing)
    assert sorted(r["diameter_mm"] for r in rows) == pytest.approx([round(d, 1) for d in app_sizes])
    assert app_sizes[1] == pytest.approx(50.25, abs=0.05)
    components = sitk.GetArrayFromImage(lesion_component_map(image, min_voxels=1))
    assert len(large_lesion_ids(components, spacing)) == 2  # the 10.5 mm line counts too


def test_fluid_left_out_on_a_true_lesion_is_counted_as_the_rules_cost() -> None:
    """The fluid rule removes the gallbladder (no tumor in the truth) and, at a cost, a lesion
    turned cystic (tumor in the truth): evaluate-model counts the second kind."""
    truth = np.zeros((10, 20, 30), np.uint8)
    truth[4:7, 5:10, 5:10] = 3  # a lesion
    truth[4:7, 12:18, 20:28] = 1  # liver (the gallbladder's neighbour, say)
    reference = sitk.GetImageFromArray(truth)
    reference.SetSpacing((0.8, 0.8, 2.5))
    reference.SetOrigin((-100.0, 50.0, 10.0))

    def at(z: int, y: int, x: int) -> dict[str, object]:
        return {"centre_mm": list(reference.TransformIndexToPhysicalPoint((x, y, z))), "volume_ml": 1.0, "densest_hu": 9.0}

    assert fluid_on_true_tumor([at(5, 7, 7), at(5, 15, 24)], reference) == 1
    assert fluid_on_true_tumor([{"centre_mm": [500.0, 0.0, 0.0], "volume_ml": 1.0, "densest_hu": 9.0}], reference) == 0
    assert fluid_on_true_tumor([], reference) == 0
