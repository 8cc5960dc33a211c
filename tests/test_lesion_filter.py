"""The false-lesion filter: candidate features, the stored logistic regression, its fitting,
and its calibration into a checkpoint the Predictor applies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_fixtures import save_tiny_checkpoint, tiny_phantom_cohort

from lvt_core.checkpoint import load_checkpoint
from lvt_core.inference import Predictor
from lvt_core.labels import BACKGROUND, LIVER, TUMOR, VESSEL
from lvt_core.lesion_filter import (
    FEATURES,
    LesionFilter,
    candidate_features,
    remove_extrahepatic_tumors,
    remove_unlikely_lesions,
)
from training.calibrate import calibrate_decisions
from training.evaluate_model import evaluate_checkpoint
from training.lesion_filter import fit_filter, fit_lesion_filter

SPACING = (1.0, 1.0, 2.0)  # x, y, z in mm: thicker slices, like a clinical scan


def _liver_with_a_ball_and_a_tube() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, tumor probability and HU of a liver holding a hypodense ball (a lesion) and a
    tumor-labelled tube lying along a vessel (a typical false lesion)."""
    shape = (30, 60, 60)
    labels = np.zeros(shape, np.uint8)
    labels[2:28, 5:55, 5:55] = LIVER
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    ball = ((zz - 10) * 2.0) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 36  # radius 6 mm
    vessel = ((yy - 40) ** 2 + (xx - 40) ** 2 <= 4) & (zz >= 4) & (zz < 26)
    tube = ((yy - 40) ** 2 + (xx - 43) ** 2 <= 1) & (zz >= 8) & (zz < 22)
    labels[vessel] = VESSEL
    labels[ball | tube] = TUMOR
    hu = np.random.default_rng(0).normal(100.0, 10.0, shape).astype(np.float32)
    hu[ball] -= 40.0
    hu[vessel] += 80.0
    probability = np.where(ball, 0.9, np.where(tube, 0.6, 0.05)).astype(np.float16)
    return labels, probability, hu


def test_candidate_features_tell_a_round_lesion_from_a_tube_on_a_vessel() -> None:
    labels, probability, hu = _liver_with_a_ball_and_a_tube()
    candidates = candidate_features(labels, probability, hu, SPACING)
    assert candidates.count == 2 and candidates.features.shape == (2, len(FEATURES))
    ball_id = int(candidates.components[10, 20, 20])
    ball, tube = (candidates.features[k] for k in ((ball_id - 1), 2 - ball_id))
    column = {name: FEATURES.index(name) for name in FEATURES}
    assert ball[column["contrast_hu"]] == pytest.approx(-40.0, abs=3.0)
    assert ball[column["liver_noise_hu"]] == pytest.approx(10.0, abs=1.5)
    assert ball[column["roundness"]] > 0.8 > 0.4 > tube[column["roundness"]]
    assert tube[column["vessel_contact"]] > 0.1 and ball[column["vessel_contact"]] == 0.0
    assert ball[column["peak_probability"]] == pytest.approx(0.9, abs=1e-3)
    volume_ml = (candidates.components == ball_id).sum() * 2.0 / 1000.0
    assert ball[column["log_volume_ml"]] == pytest.approx(np.log10(volume_ml))
    assert ball[column["log_detectability"]] > tube[column["log_detectability"]]
    empty = candidate_features(np.full((5, 5, 5), LIVER, np.uint8), np.zeros((5, 5, 5)), np.zeros((5, 5, 5)), SPACING)
    assert empty.count == 0 and empty.features.shape == (0, len(FEATURES))


def test_a_tumor_bulging_out_of_the_organ_becomes_background() -> None:
    """A neighbour drawn as tumor (the gallbladder, against the liver's underside) has much of
    the shell around it outside the organ, where a lesion is wrapped in parenchyma: with
    ``max_outside`` below its share it becomes background, the lesion stays, and 1 is off."""
    labels, probability, hu = _liver_with_a_ball_and_a_tube()
    zz, yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1], : labels.shape[2]]
    neighbour = ((zz - 14) * 2.0) ** 2 + (yy - 55) ** 2 + (xx - 25) ** 2 <= 64  # centred on the liver's edge
    labels[neighbour] = TUMOR
    probability[neighbour] = 0.9
    candidates = candidate_features(labels, probability, hu, SPACING)
    outside = {int(candidates.components[10, 20, 20]): "ball", int(candidates.components[14, 54, 25]): "neighbour"}
    shares = {outside[k]: candidates.column("edge_contact")[k - 1] for k in outside}
    assert shares["ball"] == 0.0 and 0.2 < shares["neighbour"] < 0.6
    cleaned = remove_extrahepatic_tumors(labels, probability, hu, SPACING, max_outside=0.2)
    assert (cleaned[neighbour] == BACKGROUND).all()
    ball = candidates.components == int(candidates.components[10, 20, 20])
    assert (cleaned[ball] == TUMOR).all() and (cleaned == VESSEL).sum() == (labels == VESSEL).sum()
    assert np.array_equal(remove_extrahepatic_tumors(labels, probability, hu, SPACING, 1.0), labels)
    assert np.array_equal(remove_extrahepatic_tumors(labels, probability, hu, SPACING, 0.6), labels)


def _roundness_filter() -> LesionFilter:
    """A hand-set filter that believes round components only."""
    coef = tuple(4.0 if name == "roundness" else 0.0 for name in FEATURES)
    return LesionFilter(FEATURES, (0.5,) * len(FEATURES), (0.1,) * len(FEATURES), coef, 0.0)


def test_the_filter_drops_low_scoring_components_into_the_liver_and_round_trips() -> None:
    labels, probability, hu = _liver_with_a_ball_and_a_tube()
    lesion_filter = _roundness_filter()
    assert LesionFilter.from_meta(lesion_filter.to_meta()) == lesion_filter
    cleaned = remove_unlikely_lesions(labels, probability, hu, SPACING, lesion_filter, 0.5)
    assert cleaned[10, 20, 20] == TUMOR  # the ball stays
    tube_voxel = (15, 40, 43)
    assert labels[tube_voxel] == TUMOR and cleaned[tube_voxel] == LIVER
    assert (cleaned == VESSEL).sum() == (labels == VESSEL).sum()
    assert remove_unlikely_lesions(labels, probability, hu, SPACING, lesion_filter, 0.0) is labels
    with pytest.raises(ValueError, match="unknown features"):
        LesionFilter(("spleen_size",), (0.0,), (1.0,), (1.0,), 0.0)
    with pytest.raises(ValueError, match="mismatched lengths"):
        LesionFilter(FEATURES, (0.0,), (1.0,), (1.0,), 0.0)


def test_fitting_learns_a_separating_feature_and_reports_grouped_cv_auc() -> None:
    rng = np.random.default_rng(1)
    n = 200
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 1.0, (n, len(FEATURES)))
    x[:, FEATURES.index("log_detectability")] += 2.5 * y  # true lesions stand out of the noise
    groups = np.asarray([f"patient{i % 8}" for i in range(n)])
    lesion_filter, report = fit_filter(x, y, groups)
    assert report["cv_folds"] == 5 and report["cv_roc_auc"] > 0.85
    weights = report["weights"]
    assert max(weights, key=lambda k: abs(weights[k])) == "log_detectability" and weights["log_detectability"] > 0
    fitted_scores = lesion_filter.scores(x)
    assert fitted_scores[y == 1].mean() > fitted_scores[y == 0].mean() + 0.3
    with pytest.raises(ValueError, match="at least 2 true and 2 false"):
        fit_filter(x[:5], np.array([1, 0, 0, 0, 0]), groups[:5])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_phantom_cohort(tmp_path_factory, "filter", seed=81, patients=2)


def test_a_fitted_filter_is_calibrated_and_applied_like_calibration_scored_it(tmp_path: Path, cohort: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    fitted = fit_lesion_filter(checkpoint, [cohort], tmp_path / "filtered.pt", thresholds=(0.4, 0.42),
                               device="cpu", candidates_csv=tmp_path / "candidates.csv", version="9.9.2")
    assert fitted["candidates"] == fitted["true_candidates"] + fitted["false_candidates"] > 0
    assert len((tmp_path / "candidates.csv").read_text().splitlines()) == fitted["candidates"] + 1
    _, meta = load_checkpoint(fitted["out"])
    assert meta["version"] == "9.9.2" and meta["inference"]["min_lesion_score"] == 0.0
    assert Predictor(fitted["out"], device="cpu").lesion_filter is not None

    options = {"candidates": (0.4,), "vessel_candidates": (0.5,), "min_volumes_ml": (0.0,),
               "min_peaks": (0.0,), "device": "cpu", "max_false_per_scan": None}
    result = calibrate_decisions(fitted["out"], cohort, tmp_path / "calibrated.pt",
                                 min_lesion_scores=(0.0, 0.5, 0.9), **options)
    rows = {row["min_lesion_score"]: row for row in result["candidates"]}
    assert set(rows) == {0.0, 0.5, 0.9}
    assert rows[0.9]["false_lesions_per_scan"] <= rows[0.0]["false_lesions_per_scan"]
    # the calibrated checkpoint, re-run end to end, scores what calibration said it would
    for score in (0.5, 0.9):
        _, meta = load_checkpoint(result["out"])
        meta["inference"]["min_lesion_score"] = score
        from lvt_core.checkpoint import save_checkpoint

        state, _ = load_checkpoint(result["out"])
        path = save_checkpoint(tmp_path / f"score{score}.pt", state, meta)
        full = evaluate_checkpoint(path, cohort, device="cpu")
        assert full["tumor_dsc"] == pytest.approx(rows[score]["tumor_dsc"], abs=1e-4)
        assert full["false_lesions_per_scan"] == pytest.approx(rows[score]["false_lesions_per_scan"], abs=1e-3)
    with pytest.raises(ValueError, match="no lesion filter"):
        calibrate_decisions(checkpoint, cohort, None, min_lesion_scores=(0.5,), **options)
