"""``lvt qualify-bf16``: a model runs in bfloat16 by default only after scoring the same in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from model_fixtures import save_tiny_checkpoint, tiny_phantom_cohort
from test_cli_segment import run_lvt

from lvt_core.checkpoint import copy_with_meta, load_checkpoint
from lvt_core.inference import Predictor
from lvt_core.precision import cpu_has_bf16
from training.qualify_precision import Tolerances, precision_differences

needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16")


def _summary(liver: float = 0.97, vessel: float = 0.71, tumor: float = 0.63, found: int = 25,
             false_per_scan: float = 0.5) -> dict[str, float]:
    """The figures of an ``evaluate_checkpoint`` summary that qualification compares."""
    return {"liver_dsc": liver, "vessel_dsc": vessel, "tumor_dsc": tumor, "lesions_10mm": 30,
            "lesions_10mm_found": found, "false_lesions_per_scan": false_per_scan}


def test_differences_name_each_figure_that_moved_beyond_its_tolerance() -> None:
    tolerances = Tolerances(dsc=0.005, false_lesions_per_scan=0.1)
    base = _summary()
    assert precision_differences(base, _summary(tumor=0.634, false_per_scan=0.56, found=26), tolerances) == []
    moved = precision_differences(base, _summary(vessel=0.70, found=24, false_per_scan=0.7), tolerances)
    assert len(moved) == 3
    assert moved[0].startswith("vessel_dsc 0.7100 in float32, 0.7000 in bfloat16")
    assert moved[1] == "25 of 30 lesions ≥ 10 mm found in float32, 24 in bfloat16"
    assert moved[2].startswith("false lesions per scan 0.50 in float32, 0.70 in bfloat16")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_phantom_cohort(tmp_path_factory, "qualify", seed=77)


@needs_bf16
def test_a_model_that_agrees_is_copied_to_run_in_bf16_and_one_that_does_not_is_refused(
        tmp_path: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    tiny = save_tiny_checkpoint(tmp_path / "tiny.pt")
    assert Predictor(tiny, device="cpu").precision == "fp32"  # not qualified: float32 by default
    code, out, err = run_lvt(["qualify-bf16", str(tiny), "--cohort", str(cohort), "--out",
                              str(tmp_path / "bf16.pt"), "--version", "0.0.1-bf16"], monkeypatch, capsys)
    assert code == 0, err
    assert "fp32: liver_dsc" in out and "bf16: liver_dsc" in out and "qualified; wrote" in out
    _, meta = load_checkpoint(tmp_path / "bf16.pt")
    assert meta["inference"]["cpu_precision"] == "bf16" and meta["version"] == "0.0.1-bf16"
    record = meta["bf16_qualification"]["cohorts"][0]
    assert record["cohort"] == str(cohort) and set(record) >= {"fp32", "bf16"}
    assert Predictor(tmp_path / "bf16.pt", device="cpu").precision == "bf16"
    assert Predictor(tmp_path / "bf16.pt", device="cpu", precision="fp32").precision == "fp32"

    # at a tumor threshold inside the tiny network's bulk of tumor probabilities (about 0.45),
    # bfloat16's rounding splits and adds components: more false lesions than allowed
    _, meta = load_checkpoint(tiny)
    meta = {**meta, "inference": {**meta.get("inference", {}),
                                  "thresholds": {"liver": 0.5, "vessel": 0.5, "tumor": 0.45}}}
    edge = copy_with_meta(tiny, tmp_path / "edge.pt", meta)
    code, out, err = run_lvt(["qualify-bf16", str(edge), "--cohort", str(cohort), "--out",
                              str(tmp_path / "edge_bf16.pt")], monkeypatch, capsys)
    assert code == 1
    assert "no copy was written" in err and f"{cohort}: false lesions per scan" in err
    assert not (tmp_path / "edge_bf16.pt").exists()


def test_a_cpu_without_bf16_gets_a_clear_refusal(tmp_path: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    from lvt_core import precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    tiny = save_tiny_checkpoint(tmp_path / "tiny.pt")
    code, _, err = run_lvt(["qualify-bf16", str(tiny), "--cohort", str(cohort), "--out",
                            str(tmp_path / "bf16.pt")], monkeypatch, capsys)
    assert code == 1 and "no native bfloat16" in err
    assert not (tmp_path / "bf16.pt").exists()


@needs_bf16
def test_evaluate_model_runs_in_the_precision_it_is_told(tmp_path: Path, cohort: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    """``LVT_PRECISION`` and ``--precision`` reach the network (``LVT_PRECISION`` was once
    silently ignored here, and a float32 run was reported as bfloat16's)."""
    import json

    from app.settings import get_settings

    tiny = save_tiny_checkpoint(tmp_path / "tiny.pt")
    args = ["evaluate-model", str(tiny), "--cohort", str(cohort), "--device", "cpu", "--json"]
    monkeypatch.setenv("LVT_PRECISION", "bf16")
    get_settings.cache_clear()
    try:
        code, out, err = run_lvt(args, monkeypatch, capsys)
        assert code == 0, err
        assert json.loads(out)["precision"] == "bf16"
        code, out, err = run_lvt([*args, "--precision", "fp32"], monkeypatch, capsys)
        assert code == 0, err
        assert json.loads(out)["precision"] == "fp32"
    finally:
        get_settings.cache_clear()  # later tests read their own environment
