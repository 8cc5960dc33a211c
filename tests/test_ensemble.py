"""Ensemble checkpoints: several networks averaged at inference, built by ``lvt ensemble``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from model_fixtures import save_tiny_checkpoint, tiny_ct

from lvt_core.checkpoint import (
    CheckpointError,
    copy_with_meta,
    default_meta,
    load_member_states,
    save_checkpoint,
)
from lvt_core.ensemble import build_ensemble
from lvt_core.inference import Predictor
from lvt_core.network import build_network

REPO = Path(__file__).resolve().parent.parent
LVT = REPO / ".venv" / "bin" / "lvt"


@pytest.fixture()
def members(tmp_path: Path) -> tuple[Path, Path]:
    return save_tiny_checkpoint(tmp_path / "a.pt", seed=0), save_tiny_checkpoint(tmp_path / "b.pt", seed=1)


def test_ensemble_averages_the_probabilities_of_its_networks(members: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = members
    result = build_ensemble([a, b], tmp_path / "ab.pt", version="0.0.1+ab")
    assert result["networks"] == 2 and result["version"] == "0.0.1+ab"
    assert [m["path"] for m in result["members"]] == [str(a), str(b)]
    ensemble = Predictor(result["out"], device="cpu")
    assert len(ensemble.models) == 2
    batch = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        averaged = ensemble._window_fn()(batch)
        alone = [Predictor(path, device="cpu")._window_fn()(batch) for path in (a, b)]
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)  # the members really differ
    torch.testing.assert_close(averaged, (alone[0] + alone[1]) / 2, atol=1e-6, rtol=1e-5)


def test_a_model_averaged_with_itself_segments_like_itself(members: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = members
    twice = build_ensemble([a, a], tmp_path / "aa.pt")["out"]
    image = tiny_ct(seed=4)
    alone = sitk.GetArrayFromImage(Predictor(a, device="cpu").predict(image))
    doubled = sitk.GetArrayFromImage(Predictor(twice, device="cpu").predict(image))
    assert alone.any() and np.array_equal(alone, doubled)


def test_ensembles_flatten_and_keep_their_networks_through_a_metadata_copy(
    members: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = members
    ab = build_ensemble([a, b], tmp_path / "ab.pt")["out"]
    abb = build_ensemble([ab, b], tmp_path / "abb.pt")
    assert abb["networks"] == 3
    states, meta = load_member_states(abb["out"])
    assert meta["ensemble"]["networks"] == 3 and len(states) == 3
    # calibration and the lesion filter rewrite the metadata only: every network survives
    copied = copy_with_meta(abb["out"], tmp_path / "calibrated.pt", {**meta, "version": "9.9.9"})
    copied_states, copied_meta = load_member_states(copied)
    assert copied_meta["version"] == "9.9.9" and len(copied_states) == 3
    for before, after in zip(states, copied_states, strict=True):
        assert all(torch.equal(before[key], after[key]) for key in before)


def test_members_that_see_the_scan_differently_are_refused(members: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = members
    _, meta = load_member_states(a)
    coarse = save_checkpoint(tmp_path / "coarse.pt", build_network(meta["network"]).state_dict(),
                             default_meta(**{**meta, "spacing_mm": [3.0, 3.0, 3.0]}))
    with pytest.raises(CheckpointError, match=r"coarse\.pt: spacing_mm is \[3\.0, 3\.0, 3\.0\]"):
        build_ensemble([a, coarse], tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="at least two"):
        build_ensemble([a], tmp_path / "one.pt")
    with pytest.raises(CheckpointError, match="would overwrite one of its members"):
        build_ensemble([a, coarse], a)
    assert not (tmp_path / "mixed.pt").exists()


def test_lvt_ensemble_command(members: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = members
    done = subprocess.run([str(LVT), "ensemble", str(a), str(b), "--out", str(tmp_path / "e.pt"), "--json"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["networks"] == 2
    missing = subprocess.run([str(LVT), "ensemble", str(a), str(tmp_path / "nope.pt"), "--out",
                              str(tmp_path / "f.pt")], capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 1 and "nope.pt" in missing.stderr and "not found" in missing.stderr
    assert not (tmp_path / "f.pt").exists()
