"""Lesion edges drawn where the CT changes: half way from the liver around a lesion to its core."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from model_fixtures import save_tiny_checkpoint, tiny_phantom_cohort

from lvt_core.checkpoint import load_checkpoint
from lvt_core.inference import Predictor
from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.lesion_edges import LesionEdgeRule, trim_lesion_edges
from lvt_core.metrics import dice
from training.calibrate import calibrate_decisions
from training.evaluate_model import evaluate_checkpoint

SPACING_XYZ = (0.8, 0.8, 2.0)
SHAPE_ZYX = (30, 90, 90)
CENTRE_ZYX = (15, 45, 45)
HALF = LesionEdgeRule(fraction=0.5)


def _distance_mm() -> np.ndarray:
    axes = [(np.arange(n) - c) * s for n, c, s in zip(SHAPE_ZYX, CENTRE_ZYX, SPACING_XYZ[::-1], strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return np.sqrt(z**2 + y**2 + x**2)


def _scan(lesion_hu: float, drawn_mm: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Liver at 60 HU with 12 HU noise and a 7 mm-radius lesion, drawn by a 'network' out to
    ``drawn_mm``, its probability falling from 1 at the centre to 0.3 at the drawn edge."""
    rng = np.random.default_rng(seed)
    distance = _distance_mm()
    truth = distance <= 7.0
    hu = np.where(truth, lesion_hu, 60.0) + rng.normal(0.0, 12.0, SHAPE_ZYX)
    hu = np.asarray(sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(hu), 0.6)))
    labels = np.full(SHAPE_ZYX, LIVER, np.uint8)
    labels[distance <= drawn_mm] = TUMOR
    probability = np.clip(1.0 - 0.7 * distance / drawn_mm, 0.0, 1.0).astype(np.float32)
    return hu.astype(np.float32), labels, probability, truth


@pytest.mark.parametrize("lesion_hu", [20.0, 110.0])
def test_an_overdrawn_lesion_is_trimmed_to_its_edge_in_the_ct(lesion_hu: float) -> None:
    hu, labels, probability, truth = _scan(lesion_hu, drawn_mm=10.0)
    before = labels == TUMOR
    out = trim_lesion_edges(labels, probability, hu, SPACING_XYZ, HALF)
    after = out == TUMOR
    assert dice(before, truth) < 0.6  # the network's rim: nearly three times the volume
    assert dice(after, truth) > 0.9
    assert (after <= before).all()  # only ever removes
    assert (out[before & ~after] == LIVER).all()


def test_a_lesion_without_contrast_is_left_as_drawn() -> None:
    hu, labels, probability, _ = _scan(lesion_hu=64.0, drawn_mm=10.0)
    assert trim_lesion_edges(labels, probability, hu, SPACING_XYZ, HALF) is labels


def test_a_lesion_drawn_inside_its_edge_is_not_grown() -> None:
    hu, labels, probability, truth = _scan(lesion_hu=20.0, drawn_mm=5.0)
    out = trim_lesion_edges(labels, probability, hu, SPACING_XYZ, HALF)
    assert ((out == TUMOR) == (labels == TUMOR)).all()
    assert (out == TUMOR).sum() < truth.sum()


def test_the_rule_off_changes_nothing_and_trimmed_vessel_voxels_stay_vessel() -> None:
    hu, labels, probability, _ = _scan(lesion_hu=20.0, drawn_mm=10.0)
    assert trim_lesion_edges(labels, probability, hu, SPACING_XYZ, LesionEdgeRule()) is labels
    vessel = np.zeros(SHAPE_ZYX, np.float32)
    vessel[:, :, :42] = 0.8  # the network also saw a vessel along one side of the lesion
    out = trim_lesion_edges(labels, probability, hu, SPACING_XYZ, HALF, vessel, 0.5)
    rim = (labels == TUMOR) & (out != TUMOR)
    assert (out[rim & (vessel >= 0.5)] == VESSEL).all() and (out[rim & (vessel < 0.5)] == LIVER).all()
    assert (rim & (vessel >= 0.5)).any()


def test_scans_with_voxels_past_the_largest_keep_the_networks_edge() -> None:
    hu, labels, probability, truth = _scan(lesion_hu=20.0, drawn_mm=10.0)
    thin_only = LesionEdgeRule(fraction=0.5, max_voxel_mm=1.5)  # this scan has 2 mm slices
    assert not thin_only.applies_to(SPACING_XYZ) and thin_only.applies_to((0.8, 0.8, 1.0))
    assert trim_lesion_edges(labels, probability, hu, SPACING_XYZ, thin_only) is labels
    up_to_two = LesionEdgeRule(fraction=0.5, max_voxel_mm=2.0)
    assert dice(trim_lesion_edges(labels, probability, hu, SPACING_XYZ, up_to_two) == TUMOR, truth) > 0.9
    assert not LesionEdgeRule(max_voxel_mm=2.0).applies_to(SPACING_XYZ)  # fraction 0 is off


def test_the_rule_round_trips_through_checkpoint_metadata() -> None:
    rule = LesionEdgeRule(fraction=0.4, ring_mm=(2.5, 7.0), max_voxel_mm=2.5)
    assert LesionEdgeRule.from_meta(rule.to_meta()) == rule
    assert not LesionEdgeRule.from_meta(None).enabled


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_phantom_cohort(tmp_path_factory, "edges", seed=77)


def test_calibrated_edge_fraction_is_what_the_predictor_and_evaluation_apply(tmp_path: Path, cohort: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    result = calibrate_decisions(checkpoint, cohort, tmp_path / "edges.pt", candidates=(0.4,),
                                 vessel_candidates=(0.5,), min_volumes_ml=(0.0,), min_peaks=(0.0,),
                                 edge_fractions=(0.0, 0.5), edge_max_voxels_mm=(0.0, 1.0), device="cpu",
                                 max_false_per_scan=None)
    rows = {(row["edge_fraction"], row["edge_max_voxel_mm"]): row for row in result["candidates"]}
    assert set(rows) == {(0.0, 0.0), (0.5, 0.0), (0.5, 1.0)}
    # tiny phantoms have ~3.6 mm voxels: a 1 mm limit leaves every edge as the network drew it
    assert rows[(0.5, 1.0)]["tumor_dsc"] == rows[(0.0, 0.0)]["tumor_dsc"]
    _, meta = load_checkpoint(result["out"])
    assert meta["inference"]["lesion_edges"]["fraction"] == result["best_edge_fraction"]
    assert meta["inference"]["lesion_edges"]["max_voxel_mm"] == result["best_edge_max_voxel_mm"]
    assert Predictor(result["out"], device="cpu").lesion_edges.fraction == result["best_edge_fraction"]
    chosen = rows[(result["best_edge_fraction"], result["best_edge_max_voxel_mm"])]
    full = evaluate_checkpoint(result["out"], cohort, device="cpu")
    assert full["tumor_dsc"] == pytest.approx(chosen["tumor_dsc"], abs=1e-4)
    with pytest.raises(ValueError, match="below 1"):
        calibrate_decisions(checkpoint, cohort, None, edge_fractions=(0.0, 1.0), device="cpu")
