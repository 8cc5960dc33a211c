"""``lvt demo`` on tiny phantoms: the real generator, DICOM ingest, measurement import, then
batch inference with a model, or (no model file) the ground-truth fallback; both idempotent."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import model_fixtures
import pytest
import SimpleITK as sitk
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli.main import app
from app.services.demo import GROUND_TRUTH_MODEL, DemoConfig, build_demo
from app.settings import get_settings
from db.engine import session_scope
from db.models import (
    BatchRun,
    LesionTrack,
    Measurement,
    MeasurementLink,
    Model,
    Response,
    Segmentation,
    Series,
    VolumetryResult,
)
from lvt_core.volumetry import liver_volumes_ml

tiny_checkpoint = model_fixtures.tiny_checkpoint
TINY = DemoConfig(patients=2, timepoints=2, phases=2, size="tiny")


def _counts(url: str) -> dict[str, int]:
    tables = {"series": Series, "segmentations": Segmentation, "tracks": LesionTrack,
              "measurements": Measurement, "links": MeasurementLink, "responses": Response,
              "volumetry": VolumetryResult}
    with session_scope(url) as s:
        return {name: int(s.scalar(select(func.count()).select_from(t)) or 0) for name, t in tables.items()}


def test_ground_truth_fallback_cli_json_and_idempotent(lvt_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LVT_MODEL_PATH", str(lvt_env / "missing.pt"))
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["demo", "--json", "--size", "tiny", "--patients", "2",
                                      "--timepoints", "2"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ground_truth"] is True and doc["model"] == " ".join(GROUND_TRUTH_MODEL)
    assert "MODEL NOT FOUND" in doc["model_note"] and "missing.pt" in doc["model_note"]
    assert doc["patients"] == 2 and doc["series_added"] == 8 and doc["series_segmented"] == 8
    assert doc["measurements_added"] > 0
    url = get_settings().resolved_database_url
    counts = _counts(url)
    assert counts["segmentations"] == 8 and counts["volumetry"] == 8
    assert counts["tracks"] > 0 and counts["responses"] > 0
    assert counts["links"] == counts["measurements"]  # every measurement has a stored link row
    with session_scope(url) as s:
        model = s.scalar(select(Model).where(Model.name == GROUND_TRUTH_MODEL[0]))
        assert model is not None
        linked = s.scalar(select(func.count(MeasurementLink.id)).where(
            MeasurementLink.model_id == model.id, MeasurementLink.lesion_id.is_not(None)))
        assert linked and linked >= counts["measurements"] * 0.8  # truth lesions match the reader
    # stored volumes are those of the phantom's own label maps
    cohort = Path(doc["cohort_dir"])
    manifest = (cohort / "manifest.csv").read_text().splitlines()[1:]
    truth_ml = sorted(liver_volumes_ml(sitk.ReadImage(str(cohort / row.split(",")[13])))[0]
                      for row in manifest)
    with session_scope(url) as s:
        stored = sorted(s.scalars(select(VolumetryResult.total_ml)))
    assert stored == pytest.approx(truth_ml, rel=1e-4)  # DICOM rounds the spacing

    start = time.perf_counter()
    again = build_demo(TINY)
    elapsed = time.perf_counter() - start
    assert (again.series_added, again.series_present) == (0, 8)
    assert (again.measurements_added, again.series_segmented) == (0, 0)
    assert _counts(url) == counts
    assert elapsed < 15, f"a second demo run took {elapsed:.1f} s"


def test_demo_segments_with_the_model_through_batch(lvt_env: Path, tiny_checkpoint: Path) -> None:
    steps: list[str] = []
    report = build_demo(DemoConfig(patients=1, timepoints=2, phases=2, size="tiny", model=tiny_checkpoint),
                        progress=lambda step, _d, _t: steps.append(step))
    assert not report.ground_truth and report.model == "tiny-test 0.0.1"
    assert report.series_segmented == 4 and report.series_failed == 0
    assert report.patients_analysed == 1
    assert any(s.startswith("Rendering synthetic CT") for s in steps)
    assert any(s.startswith("Segmenting with tiny.pt") for s in steps)
    url = get_settings().resolved_database_url
    with session_scope(url) as s:
        models = s.scalars(select(Model.name)).all()
        assert models == ["tiny-test"]  # no ground-truth rows when a model exists
        assert s.scalar(select(func.count(BatchRun.id))) == 1  # and the re-run below adds none
        done = s.scalar(select(func.count(Segmentation.id)).where(Segmentation.status == "done"))
        assert done == 4
    counts = _counts(url)
    assert counts["links"] == counts["measurements"]
    again = build_demo(DemoConfig(patients=1, timepoints=2, phases=2, size="tiny", model=tiny_checkpoint))
    assert again.series_added == 0 and again.series_segmented == 0
    assert _counts(url) == counts
    with session_scope(url) as s:
        assert s.scalar(select(func.count(BatchRun.id))) == 1


def test_unknown_size_is_a_user_error(lvt_env: Path) -> None:
    lvt = Path(sys.executable).with_name("lvt")
    done = subprocess.run([str(lvt), "demo", "--no-serve", "--size", "huge"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "huge" in done.stderr + done.stdout and "tiny" in done.stderr + done.stdout
