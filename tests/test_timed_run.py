"""Training inside a fixed wall-clock slot: cohorts generated first, steps sized to the time left."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import yaml

from lvt_core.checkpoint import load_checkpoint
from training.config import load_config
from training.timed_run import generate_all, main, planned_steps, replace_epochs


def slot_config(tmp_path: Path, epochs: int = 50) -> Path:
    """A tiny run whose phantom cohort does not exist yet (the slot must render it)."""
    raw = {"name": "slot", "version": "0.0.1", "mode": "ML", "output_dir": str(tmp_path / "run"),
           "cache_dir": str(tmp_path / "cache"), "spacing_mm": [4, 4, 4], "patch_size": [16, 16, 16],
           "batch_size": 2, "epochs": epochs, "steps_per_epoch": 2, "checkpoint_every": 2,
           "network": {"variant": "plain_in", "filters": [4, 8, 16], "deep_supr_num": 1},
           "fold": -1, "max_val_cases": 0, "num_threads": 1,
           "datasets": [{"source": "synthetic", "path": str(tmp_path / "cohort"),
                         "generate": {"patients": 2, "timepoints": 1, "phases": 1, "size": "tiny",
                                      "seed": 7}}]}
    path = tmp_path / "slot.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_plan_grows_with_the_slot_and_never_drops_below_one_epoch(tmp_path: Path) -> None:
    config = load_config(slot_config(tmp_path))
    generate_all(config, workers=2)
    assert (tmp_path / "cohort" / "manifest.csv").is_file()
    short = planned_steps(config, time.monotonic() + 1.0, workers=0, device=torch.device("cpu"))
    long = planned_steps(config, time.monotonic() + 120.0, workers=0, device=torch.device("cpu"))
    assert short >= config.steps_per_epoch
    assert long > 10 * short or long > 100
    assert replace_epochs(config, 7).total_steps == 14


def test_a_slot_ends_with_a_loadable_model_and_a_summary(tmp_path: Path) -> None:
    config_path = slot_config(tmp_path)
    summary_path = tmp_path / "summary.json"
    assert main([str(config_path), "--minutes", "0.5", "--device", "cpu", "--workers", "0",
                 "--summary", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["step"] >= 2 and summary["planned_steps"] % 2 == 0
    _, meta = load_checkpoint(summary["checkpoint"])
    assert meta["name"] == "slot" and meta["network"]["filters"] == [4, 8, 16]
    if not summary["finished"]:  # the backstop fired: the model says where it stopped
        assert meta["metrics"]["stopped_early"] is True
