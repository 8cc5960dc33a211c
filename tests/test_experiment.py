"""The partial-label ablation, end to end at the tiny budget, and its data splits."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_datasets import write_synthetic_cohort

from training.datasets import load_cases
from training.experiment import (
    MODES,
    SETTINGS,
    partial_case,
    protocol_parts,
    run_experiment,
    split_parts,
    training_set,
)

REPO = Path(__file__).resolve().parent.parent


def test_parts_are_patient_disjoint_and_partial_labels_are_right(tmp_path: Path) -> None:
    cases = load_cases("synthetic", write_synthetic_cohort(tmp_path / "c", 10))
    parts = split_parts(cases, seed=3)
    groups = [{c.split_group for c in part} for part in parts.values()]
    assert all(len(g) == 2 for g in groups) and len(set().union(*groups)) == 10
    full = sitk.GetArrayFromImage(cases[0].load()[1])
    liver = sitk.GetArrayFromImage(partial_case(cases[0], "liver").load()[1])
    assert np.array_equal(liver, (full > 0).astype(np.uint8))  # no cutouts
    tumor = sitk.GetArrayFromImage(partial_case(cases[0], "tumor").load()[1])
    assert set(np.unique(tumor)) == {0, 3} and (tumor == 3).sum() == (full == 3).sum()
    fs_only = training_set(parts, "25% FS")
    with_ps = training_set(parts, "25% FS + PS")
    assert len(with_ps) == 4 * len(fs_only)
    assert {c.annotated for c in with_ps} == {("liver", "vessel", "tumor"), ("liver",), ("vessel",), ("tumor",)}
    assert all(c.annotated == ("liver", "vessel", "tumor") for c in training_set(parts, "100% FS"))
    assert not {c.split_group for c in with_ps} & {c.split_group for c in parts["test"]}


def test_tiny_budget_runs_end_to_end_via_cli(tmp_path: Path) -> None:
    cohort = write_synthetic_cohort(tmp_path / "cohort", 5)
    out = tmp_path / "exp"
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "lvt"), "experiment", "partial-labels", "--budget", "tiny",
         "--cohort", str(cohort), "--out", str(out), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["runs"] == len(MODES) * len(SETTINGS)
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["setting"], r["mode"]) for r in rows} == {(s, m) for s in SETTINGS for m in MODES}
    for row in rows:
        for key in ("dsc_liver", "dsc_vessel", "dsc_tumor", "recall_tumor", "lesion_sensitivity"):
            assert 0.0 <= float(row[key]) <= 1.0
    table = (out / "table.md").read_text()
    assert table.count("\n| ") == 1 + 9 and "DSC L" in table
    assert "seeds [0]; one seed, so no spread;" in table and "9 runs," in table and "±" not in table
    assert {r["budget"] for r in rows} == {"tiny"}
    assert (out / "dsc.png").stat().st_size > 1000

    # An interrupted or repeated invocation resumes: finished runs are not trained again.
    again = subprocess.run(
        [str(REPO / ".venv" / "bin" / "lvt"), "experiment", "partial-labels", "--budget", "tiny",
         "--cohort", str(cohort), "--out", str(out), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 0, again.stderr
    with (out / "results.csv").open() as handle:
        assert list(csv.DictReader(handle)) == rows

    # Another seed joins the same table, which then states both seeds and every run it holds.
    more = subprocess.run(
        [str(REPO / ".venv" / "bin" / "lvt"), "experiment", "partial-labels", "--budget", "tiny",
         "--cohort", str(cohort), "--out", str(out), "--seeds", "1", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert more.returncode == 0, more.stderr
    with (out / "results.csv").open() as handle:
        assert {r["seed"] for r in csv.DictReader(handle)} == {"0", "1"}
    table = (out / "table.md").read_text()
    assert "seeds [0, 1]; mean ± std" in table and "18 runs," in table
    result_lines = [line for line in table.splitlines() if line.startswith(("| 25%", "| 100%"))]
    assert len(result_lines) == 9 and all(line.count(" ± ") == 10 for line in result_lines)


THREE_PHASES = ("portal", "arterial", "late")


def test_protocols_design_scans_each_source_in_its_own_phases(tmp_path: Path) -> None:
    cases = load_cases("synthetic", write_synthetic_cohort(tmp_path / "c", 10, THREE_PHASES))
    parts = protocol_parts(split_parts(cases, seed=3))
    assert {c.phase for c in parts["fs"]} == {"portal"} and len(parts["fs"]) == 2
    for name in ("tumor", "vessel", "liver"):
        assert {c.phase for c in parts[name]} == {"arterial", "late"} and len(parts[name]) == 4
    assert {c.phase for c in parts["test"]} == set(THREE_PHASES) and len(parts["test"]) == 6
    with_ps = training_set(parts, "25% FS + PS")
    assert {(c.phase, c.annotated) for c in with_ps if c.phase == "portal"} == {("portal", ("liver", "vessel", "tumor"))}
    assert not {c.split_group for c in with_ps} & {c.split_group for c in parts["test"]}

    one_phase = load_cases("synthetic", write_synthetic_cohort(tmp_path / "one", 10))
    with pytest.raises(ValueError, match="--phases 3"):
        protocol_parts(split_parts(one_phase, seed=3))


def test_protocols_design_end_to_end_scores_each_test_phase(tmp_path: Path) -> None:
    cohort = write_synthetic_cohort(tmp_path / "cohort", 5, THREE_PHASES)
    out = tmp_path / "exp"
    summary = run_experiment(out, "tiny", cohort, (0,), design="protocols")
    assert summary["runs"] == len(MODES) * len(SETTINGS)
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["design"] for r in rows} == {"protocols"}
    for row in rows:
        for phase in THREE_PHASES:
            assert 0.0 <= float(row[f"dsc_tumor@{phase}"]) <= 1.0
    table = (out / "table.md").read_text()
    assert "design `protocols`" in table and "portal phase only" in table
    phase_table = table.split("DSC per test phase:")[1]
    assert "| setting | mode | DSC L portal | DSC L arterial | DSC L late | DSC V portal" in phase_table
    assert phase_table.count("\n| 25%") + phase_table.count("\n| 100%") == 9
    assert (out / "dsc_by_phase.png").stat().st_size > 1000

    # the other design in the same folder would mix two experiments in one table: refused
    before = (out / "results.csv").read_bytes()
    with pytest.raises(ValueError, match="design 'protocols', not 'one'"):
        run_experiment(out, "tiny", cohort, (1,), design="one")
    assert (out / "results.csv").read_bytes() == before


def test_another_budget_never_rewrites_a_result_folder(tmp_path: Path) -> None:
    """`--budget tiny` with the default --out trained nothing and relabelled the committed small
    table `tiny`, because runs counted as done by seed, setting and mode alone."""
    committed = tmp_path / "docs" / "experiments" / "partial_labels"
    shutil.copytree(REPO / "docs" / "experiments" / "partial_labels", committed,
                    ignore=shutil.ignore_patterns("cohort", "cache", "runs"))
    before = {p.name: p.read_bytes() for p in committed.iterdir()}
    assert "budget" not in (committed / "results.csv").read_text().splitlines()[0]  # read via table.md
    done = subprocess.run(  # the default --out, relative to where lvt runs
        [str(REPO / ".venv" / "bin" / "lvt"), "experiment", "partial-labels", "--budget", "tiny", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    assert "holds results of budget 'small', not 'tiny': give this budget its own --out" in " ".join(done.stderr.split())
    assert {p.name: p.read_bytes() for p in committed.iterdir()} == before  # no table, no cohort

    # a folder whose rows name their budget, or whose table is gone and rows name none
    cohort = write_synthetic_cohort(tmp_path / "cohort", 5)
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    (labelled / "results.csv").write_text("seed,budget,design,setting,mode\n0,tiny,one,25% FS,MC\n")
    with pytest.raises(ValueError, match="budget 'tiny', not 'small'"):
        run_experiment(labelled, "small", cohort)
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    (unlabelled / "results.csv").write_text("seed,setting,mode\n0,25% FS,MC\n")
    with pytest.raises(ValueError, match="does not say which budget"):
        run_experiment(unlabelled, "tiny", cohort)
    assert sorted(p.name for p in unlabelled.iterdir()) == ["results.csv"]
