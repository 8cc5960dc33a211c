"""nnU-Net v2 export: layout, region-based dataset.json, labels unchanged."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from test_datasets import ct_and_labels, write_synthetic_cohort

from training.datasets import load_cases
from training.experiment import partial_case
from training.export_nnunet import export_cases

REPO = Path(__file__).resolve().parent.parent


def test_cli_exports_a_phantom_cohort(tmp_path: Path) -> None:
    cohort = write_synthetic_cohort(tmp_path / "cohort", 2)
    out = tmp_path / "Dataset501_LVT"
    done = subprocess.run([str(REPO / ".venv" / "bin" / "lvt"), "export", "nnunet", str(out),
                           "--input", str(cohort), "--json"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cases"] == 2
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": [1, 2, 3], "vessel": [2], "tumor": [3]}
    assert meta["regions_class_order"] == [1, 2, 3] and meta["numTraining"] == 2
    assert meta["channel_names"] == {"0": "CT"} and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["P000_0_venous_0000.nii.gz", "P001_0_venous_0000.nii.gz"]
    label = sitk.ReadImage(str(out / "labelsTr" / "P001_0_venous.nii.gz"))
    image = sitk.ReadImage(str(out / "imagesTr" / "P001_0_venous_0000.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(label), ct_and_labels(1)[1])
    assert label.GetSize() == image.GetSize() and label.GetOrigin() == image.GetOrigin()

    missing = subprocess.run([str(REPO / ".venv" / "bin" / "lvt"), "export", "nnunet", str(out),
                              "--input", str(tmp_path / "nowhere")], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 1 and "nowhere" in missing.stderr
    again = subprocess.run([str(REPO / ".venv" / "bin" / "lvt"), "export", "nnunet", str(out),
                            "--input", str(cohort)], cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr  # the same export again is fine
    (out / "imagesTr" / "STALE_0000.nii.gz").write_bytes(b"")  # nnU-Net would train on it
    stale = subprocess.run([str(REPO / ".venv" / "bin" / "lvt"), "export", "nnunet", str(out),
                            "--input", str(cohort)], cwd=REPO, capture_output=True, text=True)
    assert stale.returncode == 1 and "STALE_0000.nii.gz" in stale.stderr


def test_folder_names_nnunet_would_not_find_are_refused(tmp_path: Path) -> None:
    """`nn/whatever` and `Dataset5017_x` were written, and a second folder with an id in use."""
    import pytest

    cases = load_cases("synthetic", write_synthetic_cohort(tmp_path / "cohort", 1))
    for name in ("whatever", "Dataset5017_x", "Dataset01_x", "Dataset501"):
        with pytest.raises(ValueError, match=rf"DatasetNNN_Name .* not '{name}'"):
            export_cases(cases, tmp_path / "nn" / name)
    export_cases(cases, tmp_path / "nn" / "Dataset504_lits")
    export_cases(cases, tmp_path / "nn" / "Dataset504_lits")  # the same folder again is fine
    with pytest.raises(ValueError, match="already holds Dataset504_lits with dataset id 504"):
        export_cases(cases, tmp_path / "nn" / "Dataset504_ircadb")
    assert sorted(p.name for p in (tmp_path / "nn").iterdir()) == ["Dataset504_lits"]
    done = subprocess.run([str(REPO / ".venv" / "bin" / "lvt"), "export", "nnunet", str(tmp_path / "nn" / "x"),
                           "--input", str(tmp_path / "cohort")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1 and "DatasetNNN_Name" in done.stderr


def test_partial_cases_are_recorded(tmp_path: Path) -> None:
    cases = load_cases("synthetic", write_synthetic_cohort(tmp_path / "cohort", 2))
    summary = export_cases([cases[0], partial_case(cases[1], "liver")], tmp_path / "Dataset502_LVT")
    assert summary["partially_annotated"] == 1
    meta = json.loads((tmp_path / "Dataset502_LVT" / "dataset.json").read_text())
    assert meta["lvt_partially_annotated"] == {"P001_0_venous_liveronly": ["liver"]}


def test_a_refused_case_leaves_no_half_written_dataset(tmp_path: Path) -> None:
    """A case refused halfway left imagesTr/labelsTr with the earlier cases and no dataset.json."""
    import pytest

    from training.datasets import DatasetError

    cohort = write_synthetic_cohort(tmp_path / "cohort", 2)
    moved = sitk.ReadImage(str(cohort / "P001" / "labels.nii.gz"))
    moved.SetOrigin((0.0, 0.0, 900.0))
    sitk.WriteImage(moved, str(cohort / "P001" / "labels.nii.gz"))
    out = tmp_path / "Dataset501_LVT"
    with pytest.raises(DatasetError, match="P001"):
        export_cases(load_cases("synthetic", cohort), out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]  # no staging folder left


def test_an_output_that_is_a_file_or_holds_other_files_is_refused_before_any_work(tmp_path: Path) -> None:
    """A file as OUT failed after writing every case with a raw "[Errno 20] Not a directory";
    a folder holding other files was accepted and the strays stayed beside the dataset."""
    import pytest

    cases = load_cases("synthetic", write_synthetic_cohort(tmp_path / "cohort", 1))
    (tmp_path / "Dataset505_file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        export_cases(cases, tmp_path / "Dataset505_file")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        export_cases(cases, tmp_path / "Dataset505_file" / "Dataset506_below")
    strays = tmp_path / "nn" / "Dataset507_LVT"
    (strays / "imagesTs").mkdir(parents=True)
    (strays / "README.txt").write_text("x")
    with pytest.raises(ValueError, match=r"holds file\(s\) this export would not write \(README.txt, imagesTs\)"):
        export_cases(cases, strays)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left
    assert sorted(p.name for p in strays.iterdir()) == ["README.txt", "imagesTs"]
