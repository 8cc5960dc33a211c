"""Model evaluation with threshold overrides, and decision calibration into a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from model_fixtures import save_tiny_checkpoint, tiny_phantom_cohort

from lvt_core.checkpoint import load_checkpoint
from lvt_core.inference import Predictor
from lvt_core.labels import TUMOR
from training.calibrate import calibrate_decisions, choose_operating_point, tumor_score
from training.evaluate_model import evaluate_checkpoint, false_lesions

# the tiny network's tumor components at threshold 0.4 peak at 0.40-0.49 (one at 0.99):
# 0.45 keeps a few of them and drops the rest
PEAK = 0.45


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_phantom_cohort(tmp_path_factory, "val", seed=77)


def test_threshold_override_changes_the_tumor_decision(tmp_path: Path, cohort: Path) -> None:
    # the tiny network's tumor bias gives p ≈ 0.45 almost everywhere: little tumor at 0.5, much at 0.4
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    default = evaluate_checkpoint(checkpoint, cohort, device="cpu")
    lowered = evaluate_checkpoint(checkpoint, cohort, device="cpu", thresholds={"tumor": 0.4})
    assert default["thresholds"] == {"liver": 0.5, "vessel": 0.5, "tumor": 0.5}
    assert lowered["thresholds"]["tumor"] == 0.4
    assert default["per_class"]["tumor"]["recall"] < 0.2
    assert lowered["per_class"]["tumor"]["recall"] > default["per_class"]["tumor"]["recall"] + 0.2
    # one scan: pooled (global) Dice equals the per-scan mean
    for name in ("liver", "vessel", "tumor"):
        assert lowered["global_dsc"][name] == pytest.approx(lowered[f"{name}_dsc"])
    with pytest.raises(ValueError, match="unknown channel"):
        evaluate_checkpoint(checkpoint, cohort, device="cpu", thresholds={"spleen": 0.3})


def test_calibration_writes_the_best_decisions_into_a_copy(tmp_path: Path, cohort: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    result = calibrate_decisions(checkpoint, cohort, tmp_path / "calibrated.pt", candidates=(0.5, 0.4),
                                 vessel_candidates=(0.5, 0.3), min_volumes_ml=(0.0, 1.0), device="cpu",
                                 min_peaks=(0.0, 0.9))
    scores = {(row["tumor_threshold"], row["min_tumor_peak"], row["min_tumor_volume_ml"]): row["score"]
              for row in result["candidates"]}
    assert set(scores) == {(t, p, v) for t in (0.5, 0.4) for p in (0.0, 0.9) for v in (0.0, 1.0)}
    best = (result["best_tumor_threshold"], result["best_min_tumor_peak"], result["best_min_tumor_volume_ml"])
    assert scores[best] == max(scores.values())
    vessel = {row["vessel_threshold"]: row["vessel_dsc"] for row in result["vessel_candidates"]}
    assert vessel[result["best_vessel_threshold"]] == max(vessel.values())
    state, meta = load_checkpoint(result["out"])
    assert meta["inference"]["thresholds"]["tumor"] == result["best_tumor_threshold"]
    assert meta["inference"]["thresholds"]["vessel"] == result["best_vessel_threshold"]
    assert meta["inference"]["min_tumor_volume_ml"] == result["best_min_tumor_volume_ml"]
    assert meta["inference"]["min_tumor_peak"] == result["best_min_tumor_peak"]
    assert len(meta["calibration"]["candidates"]) == 8 and meta["calibration"]["cases"] == 1
    original_state, original_meta = load_checkpoint(checkpoint)
    assert meta["version"] == original_meta["version"]  # kept unless a new one is given
    assert all((state[k] == original_state[k]).all() for k in original_state)  # weights untouched
    calibrated = Predictor(result["out"], device="cpu")
    assert calibrated.thresholds[2] == result["best_tumor_threshold"]
    assert calibrated.min_tumor_volume_ml == result["best_min_tumor_volume_ml"]
    assert calibrated.min_tumor_peak == result["best_min_tumor_peak"]
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        calibrate_decisions(checkpoint, cohort, None, candidates=(0.5, 1.2), device="cpu")
    with pytest.raises(ValueError, match="0 or more"):
        calibrate_decisions(checkpoint, cohort, None, min_volumes_ml=(-0.1,), device="cpu")


def test_calibration_scores_match_a_full_evaluation(tmp_path: Path, cohort: Path) -> None:
    """Decoding one network pass many ways gives the numbers evaluate-model gets by re-running."""
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    result = calibrate_decisions(checkpoint, cohort, None, candidates=(0.4,), vessel_candidates=(0.5,),
                                 min_volumes_ml=(0.0,), device="cpu")
    full = evaluate_checkpoint(checkpoint, cohort, device="cpu", thresholds={"tumor": 0.4})
    assert result["candidates"][0]["tumor_dsc"] == pytest.approx(full["tumor_dsc"], abs=1e-4)
    assert result["candidates"][0]["lesion_sensitivity_10mm"] == full["lesion_sensitivity_10mm"]
    assert result["candidates"][0]["lesions_10mm"] == full["lesions_10mm"]
    assert result["vessel_candidates"][0]["vessel_dsc"] == pytest.approx(
        evaluate_checkpoint(checkpoint, cohort, device="cpu")["vessel_dsc"], abs=1e-4)


def test_peak_filter_scores_match_the_calibrated_checkpoint(tmp_path: Path, cohort: Path) -> None:
    """The hysteresis calibrate scores on the liver box is the one the calibrated Predictor applies."""
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    plain, hysteresis = (
        calibrate_decisions(checkpoint, cohort, tmp_path / f"peak{peak}.pt", candidates=(0.4,),
                            vessel_candidates=(0.5,), min_volumes_ml=(0.0,), min_peaks=(peak,), device="cpu")
        for peak in (0.0, PEAK)
    )
    from training.datasets import load_cases

    image, _ = load_cases("synthetic", cohort)[0].load()
    tumor_voxels = [int((sitk.GetArrayFromImage(Predictor(r["out"], device="cpu").predict(image)) == TUMOR).sum())
                    for r in (plain, hysteresis)]
    assert 0 < tumor_voxels[1] < tumor_voxels[0]  # some components go, not all
    full = evaluate_checkpoint(hysteresis["out"], cohort, device="cpu")
    assert full["tumor_dsc"] == pytest.approx(hysteresis["candidates"][0]["tumor_dsc"], abs=1e-4)


def test_tumor_score_falls_back_to_dsc_without_large_lesions() -> None:
    assert tumor_score({"tumor_dsc": 0.4, "lesion_sensitivity_10mm": 0.8}) == pytest.approx(0.6)
    assert tumor_score({"tumor_dsc": 0.4, "lesion_sensitivity_10mm": None}) == pytest.approx(0.4)


def test_operating_point_keeps_false_lesions_within_the_budget() -> None:
    def row(score: float, false: float) -> dict[str, float]:
        return {"score": score, "false_lesions_per_scan": false}

    rows = [row(0.60, 2.7), row(0.55, 1.0), row(0.50, 0.5)]
    assert choose_operating_point(rows, 1.0) == rows[1]
    assert choose_operating_point(rows, 0.5) == rows[2]
    assert choose_operating_point(rows, None) == rows[0]
    assert choose_operating_point(rows, 0.1) == rows[2]  # none within budget: the fewest


def test_false_lesions_are_predicted_components_touching_no_reference_tumor() -> None:
    ref = np.zeros((20, 20, 20), bool)
    ref[2:6, 2:6, 2:6] = True
    pred = np.zeros_like(ref)
    pred[4:8, 4:8, 4:8] = True  # overlaps the reference lesion
    pred[12:15, 12:15, 12:15] = True  # a false lesion
    pred[16:19, 2:5, 15:18] = True  # another
    pred[2:4, 15:17, 2:4] = True  # a speck of 8 voxels: no row in the app's lesion table, not counted
    assert false_lesions(pred, ref) == (3, 2)
    assert false_lesions(np.zeros_like(ref), ref) == (0, 0)


def test_lesion_findings_measure_size_contrast_and_coverage() -> None:
    from training.evaluate_model import diameter_agreement, lesion_findings

    ref = np.zeros((40, 40, 40), np.uint8)
    ref[4:36, 4:36, 4:36] = 1
    zz, yy, xx = np.mgrid[:40, :40, :40]
    big = (zz - 14) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 <= 36  # radius 6 voxels = 12 mm wide at 1 mm
    small = (zz - 28) ** 2 + (yy - 28) ** 2 + (xx - 28) ** 2 <= 4
    ref[big | small] = 3
    hu = np.full(ref.shape, 110.0, np.float32)
    hu[big] = 70.0  # hypodense by 40 HU
    hu[small] = 130.0
    pred = ref.copy()
    pred[small] = 1  # the small lesion is missed
    rows = sorted(lesion_findings(pred, ref, hu, (1.0, 1.0, 1.0)), key=lambda r: -r["voxels"])
    assert [r["found"] for r in rows] == [True, False]
    assert rows[0]["diameter_mm"] == pytest.approx(13.0, abs=0.5)  # edge to edge, as `lvt lesions`
    assert rows[0]["contrast_hu"] == pytest.approx(-40.0)
    assert rows[1]["contrast_hu"] == pytest.approx(20.0)
    assert rows[0]["coverage"] == 1.0 and rows[1]["coverage"] == 0.0
    assert rows[0]["predicted_diameter_mm"] == rows[0]["diameter_mm"] and rows[1]["predicted_diameter_mm"] is None
    grown = pred.copy()
    grown[((zz - 14) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 <= 64) & (ref == 1)] = 3  # drawn 2 mm too wide
    rows = sorted(lesion_findings(grown, ref, hu, (1.0, 1.0, 1.0)), key=lambda r: -r["voxels"])
    assert rows[0]["predicted_diameter_mm"] == pytest.approx(17.0, abs=0.5)
    agreement = diameter_agreement(rows)
    assert agreement["lesions"] == 1 and agreement["mean_signed_error_mm"] == pytest.approx(4.0, abs=0.5)
    assert diameter_agreement(rows[1:])["median_abs_error_mm"] is None


def test_a_lesion_at_the_livers_surface_is_counted_apart() -> None:
    """Phantom lesions never reached the capsule, so no figure said how a model (or a rule that
    looks around a lesion) treats one that does, as real metastases often do."""
    from training.evaluate_model import capsule_sensitivity, lesion_findings

    ref = np.zeros((40, 40, 40), np.uint8)
    ref[4:36, 4:36, 4:36] = 1
    zz, yy, xx = np.mgrid[:40, :40, :40]
    inner = (zz - 20) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 <= 36
    at_surface = ((zz - 20) ** 2 + (yy - 27) ** 2 + (xx - 35) ** 2 <= 36) & (ref == 1)  # cut flat at x = 35
    ref[inner | at_surface] = 3
    pred = ref.copy()
    pred[at_surface] = 1  # missed
    rows = sorted(lesion_findings(pred, ref, np.full(ref.shape, 100.0, np.float32), (1.0, 1.0, 1.0)),
                  key=lambda r: r["capsule"])
    assert rows[0]["capsule"] == 0.0 and 0.2 < rows[1]["capsule"] < 0.6
    assert capsule_sensitivity(rows) == {"lesions_10mm_at_capsule": 1, "lesions_10mm_at_capsule_found": 0,
                                         "lesion_sensitivity_10mm_at_capsule": 0.0}
    assert capsule_sensitivity(rows[:1])["lesion_sensitivity_10mm_at_capsule"] is None


def test_evaluation_runs_with_and_without_mirroring_tta(tmp_path: Path, cohort: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    plain = evaluate_checkpoint(checkpoint, cohort, device="cpu", tta=False)
    mirrored = evaluate_checkpoint(checkpoint, cohort, device="cpu", tta=True)
    assert plain["tta"] is False and mirrored["tta"] is True
    assert 0.0 < mirrored["liver_dsc"] <= 1.0 and mirrored["cases"] == plain["cases"] == 1


def test_calibration_pools_several_cohorts_scan_by_scan(tmp_path: Path, cohort: Path) -> None:
    """Thin- and thick-slice validation sets calibrate together: every scan counts once."""
    from lvt_core.phantom import CohortConfig, generate_cohort

    other = tmp_path / "other"
    generate_cohort(other, CohortConfig(patients=1, timepoints=1, phases=1, size="tiny", seed=78))
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    options = {"candidates": (0.4,), "vessel_candidates": (0.5,), "min_volumes_ml": (0.0,),
               "min_peaks": (0.0,), "device": "cpu"}
    alone = [calibrate_decisions(checkpoint, c, None, **options)["candidates"][0] for c in (cohort, other)]
    pooled = calibrate_decisions(checkpoint, [cohort, other], tmp_path / "pooled.pt", version="9.9.1", **options)
    assert pooled["cases"] == 2
    row = pooled["candidates"][0]
    assert row["tumor_dsc"] == pytest.approx((alone[0]["tumor_dsc"] + alone[1]["tumor_dsc"]) / 2, abs=1e-4)
    assert row["lesions_10mm"] == alone[0]["lesions_10mm"] + alone[1]["lesions_10mm"]
    _, meta = load_checkpoint(pooled["out"])
    assert str(other) in meta["calibration"]["cohort"]
    assert meta["version"] == "9.9.1"  # new decisions, new version for the store


def test_calibration_with_extra_windows_stores_them_with_the_decisions(
        tmp_path: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Decisions chosen on window-averaged probabilities only hold with those windows, so the
    calibrated copy carries both; a window without width is refused before any scan is read."""
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    options = {"candidates": (0.4,), "vessel_candidates": (0.5,), "min_volumes_ml": (0.0,),
               "min_peaks": (0.0,), "device": "cpu"}
    plain = calibrate_decisions(checkpoint, cohort, tmp_path / "plain.pt", **options)
    windowed = calibrate_decisions(checkpoint, cohort, tmp_path / "windowed.pt",
                                   extra_windows=[(20.0, 141.2)], **options)
    assert load_checkpoint(plain["out"])[1]["inference"]["extra_windows"] == []
    assert load_checkpoint(windowed["out"])[1]["inference"]["extra_windows"] == [{"level": 20.0, "width": 141.2}]
    assert Predictor(windowed["out"], device="cpu").extra_windows == [(20.0, 141.2)]
    assert windowed["candidates"][0]["tumor_dsc"] != plain["candidates"][0]["tumor_dsc"]
    with pytest.raises(ValueError, match="width must be a positive"):
        calibrate_decisions(checkpoint, cohort, tmp_path / "bad.pt", extra_windows=[(80.0, 0.0)], **options)
    assert not (tmp_path / "bad.pt").exists()
    _assert_cli_refuses(checkpoint, cohort, tmp_path, "--extra-window",
                        (("82", "LEVEL:WIDTH"), ("82:-5", "width must be a positive")), monkeypatch, capsys)


def test_large_tumor_exemption_scores_match_the_calibrated_checkpoint(
    tmp_path: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A volume from which components skip the peak rule is scored as the Predictor applies it:
    at a volume every component reaches, the peak rule keeps everything again."""
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    common = {"candidates": (0.4,), "vessel_candidates": (0.5,), "min_volumes_ml": (0.0,), "device": "cpu"}
    plain = calibrate_decisions(checkpoint, cohort, None, min_peaks=(0.0,), **common)
    grid = calibrate_decisions(checkpoint, cohort, None, min_peaks=(PEAK,), large_tumor_mls=(1e-6, 0.0), **common)
    rows = {row["large_tumor_ml"]: row for row in grid["candidates"]}
    assert list(rows) == [0.0, 1e-6]  # strictest first: ties keep the peak rule for every size
    def metrics(row: dict) -> tuple:
        return (row["tumor_dsc"], row["false_lesions_per_scan"], row["lesion_precision_pooled"], row["detected_10mm"],
                row["components_per_scan"])

    assert metrics(rows[1e-6]) == metrics(plain["candidates"][0])
    assert metrics(rows[0.0]) != metrics(rows[1e-6])  # the peak rule alone drops components

    exempt = calibrate_decisions(checkpoint, cohort, tmp_path / "exempt.pt", min_peaks=(PEAK,),
                                 large_tumor_mls=(1e-6,), **common)
    assert load_checkpoint(exempt["out"])[1]["inference"]["large_tumor_ml"] == 1e-6
    full = evaluate_checkpoint(exempt["out"], cohort, device="cpu")
    assert full["large_tumor_ml"] == 1e-6 and full["min_tumor_peak"] == PEAK
    assert full["tumor_dsc"] == pytest.approx(rows[1e-6]["tumor_dsc"], abs=1e-4)
    with pytest.raises(ValueError, match="large tumor volume candidates must be 0 or more"):
        calibrate_decisions(checkpoint, cohort, None, large_tumor_mls=(-1.0,), **common)
    from test_cli_segment import run_lvt

    code, out, err = run_lvt(["calibrate", str(checkpoint), "--cohort", str(cohort), "--out", str(tmp_path / "cli.pt"),
                              "--device", "cpu", "--candidates", "0.4", "--vessel-candidates", "0.5",
                              "--min-tumor-volumes", "0", "--min-tumor-peaks", str(PEAK),
                              "--large-tumor-mls", "0,0.000001"], monkeypatch, capsys)
    assert code == 0, err
    assert f"min peak {PEAK} (any size)" in out and f"min peak {PEAK} (below 1e-06 ml)" in out
    _assert_cli_refuses(checkpoint, cohort, tmp_path, "--large-tumor-mls",
                        (("ten", "--large-tumor-mls"), ("-1", "0 or more")), monkeypatch, capsys)


def _assert_cli_refuses(checkpoint: Path, cohort: Path, tmp_path: Path, option: str,
                        cases: tuple[tuple[str, str], ...], monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    """`lvt calibrate … OPTION TEXT` exits non-zero with MESSAGE for each case, writing nothing."""
    from test_cli_segment import run_lvt

    for text, message in cases:
        code, _, err = run_lvt(["calibrate", str(checkpoint), "--cohort", str(cohort), "--out",
                                str(tmp_path / "bad.pt"), "--device", "cpu", option, text], monkeypatch, capsys)
        assert code != 0 and message in " ".join(err.split()), err
    assert not (tmp_path / "bad.pt").exists()


@pytest.mark.parametrize("command", ["calibrate", "calibrate-faint", "calibrate-cross-phase", "fit-lesion-filter"])
def test_calibrations_refuse_a_bad_device_before_any_work(command: str, tmp_path: Path) -> None:
    """They hard-coded "auto" and never checked --device (nor read LVT_DEVICE): a typo failed
    only after the checkpoint and the cohort were read."""
    from typer.testing import CliRunner

    from app.cli.main import app

    args = [command, str(tmp_path / "none.pt"), "--cohort", str(tmp_path), "--out", str(tmp_path / "out.pt")]
    bad = CliRunner().invoke(app, [*args, "--device", "gpu"])
    assert bad.exit_code == 2 and "'gpu' is not one of auto, cpu, cuda" in bad.output
    assert not (tmp_path / "out.pt").exists()


def test_shape_and_outside_rules_score_as_the_calibrated_checkpoint_applies_them(tmp_path: Path, cohort: Path) -> None:
    """A lowest roundness and a largest outside share are scored as the Predictor applies
    them: the calibrated copy stores both, and a full evaluation of that copy reproduces the
    grid's tumor DSC; a large-tumor volume every component reaches exempts them all from the
    roundness rule, and an outside share of 1 is off."""
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    common = {"candidates": (0.4,), "vessel_candidates": (0.5,), "min_volumes_ml": (0.0,),
              "min_peaks": (0.0,), "device": "cpu"}
    grid = calibrate_decisions(checkpoint, cohort, None, min_roundnesses=(0.0, 0.5), large_tumor_mls=(0.0, 1e-6),
                               max_outsides=(0.1, 1.0), **common)
    every = {(row["min_tumor_roundness"], row["large_tumor_ml"], row["max_tumor_outside"]): row
             for row in grid["candidates"]}
    plain = every[(0.0, 0.0, 1.0)]["components_per_scan"]
    assert every[(0.5, 0.0, 1.0)]["components_per_scan"] < plain  # some components are tubes or sheets
    assert every[(0.5, 1e-6, 1.0)]["components_per_scan"] == plain
    assert every[(0.0, 0.0, 0.1)]["components_per_scan"] < plain  # some reach the organ's edge
    both = every[(0.5, 0.0, 0.1)]
    chosen = calibrate_decisions(checkpoint, cohort, tmp_path / "shape.pt", min_roundnesses=(0.5,),
                                 max_outsides=(0.1,), **common)
    assert (chosen["best_min_tumor_roundness"], chosen["best_max_tumor_outside"]) == (0.5, 0.1)
    inference = load_checkpoint(chosen["out"])[1]["inference"]
    assert (inference["min_tumor_roundness"], inference["max_tumor_outside"]) == (0.5, 0.1)
    full = evaluate_checkpoint(chosen["out"], cohort, device="cpu")
    assert (full["min_tumor_roundness"], full["max_tumor_outside"]) == (0.5, 0.1)
    assert full["tumor_dsc"] == pytest.approx(both["tumor_dsc"], abs=1e-4)
    with pytest.raises(ValueError, match="roundness candidates must be below 1"):
        calibrate_decisions(checkpoint, cohort, None, min_roundnesses=(1.0,), **common)
    with pytest.raises(ValueError, match="outside share candidates must be between 0 and 1"):
        calibrate_decisions(checkpoint, cohort, None, max_outsides=(1.5,), **common)
