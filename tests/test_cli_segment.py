"""``lvt segment`` and ``lvt evaluate`` end to end, in process, with a tiny trained model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_inference import toy_scan, train_toy_checkpoint

from app.cli.main import main
from lvt_core import __version__ as lvt_version


def run_lvt(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> tuple[int, str, str]:
    """Run the real ``lvt`` entry point; return (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["lvt", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return train_toy_checkpoint(tmp_path_factory.mktemp("model") / "toy.pt")


def test_segment_end_to_end_and_evaluate(
    toy_model: Path, tmp_path: Path, lvt_env: Path, monkeypatch, capsys
) -> None:
    ct, truth = toy_scan(center_mm=(4.0, -6.0, 10.0), spacing=(1.5, 1.5, 2.5), size=(64, 64, 36))
    sitk.WriteImage(ct, str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(truth, str(tmp_path / "ref.nii.gz"))
    code, out, err = run_lvt(
        [
            "segment",
            "-i",
            str(tmp_path / "ct.nrrd"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(toy_model),
            "--device",
            "cpu",
            "--json",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out)
    labels = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    assert labels.GetSize() == ct.GetSize()
    assert np.allclose(labels.GetOrigin(), ct.GetOrigin())
    assert np.allclose(labels.GetSpacing(), ct.GetSpacing())
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["volumes_ml"] == summary["volumes_ml"]
    true_liver_ml = (sitk.GetArrayFromImage(truth) > 0).sum() * 1.5 * 1.5 * 2.5 / 1000
    assert summary["volumes_ml"]["liver_total"] == pytest.approx(true_liver_ml, rel=0.25)
    assert summary["volumes_ml"]["liver_functional"] <= summary["volumes_ml"]["liver_total"]
    assert summary["tta"] is False and summary["runtime_s"]["total_s"] > 0
    assert summary["precision"] == "fp32"  # the toy checkpoint is not qualified for bfloat16
    assert summary["lvt_version"] == lvt_version  # the pipeline around the checkpoint
    assert isinstance(summary["lesions"], list) and summary["n_lesions"] == len(summary["lesions"])
    # each class's CT values, as drawn: the toy's liver reads 120 HU, its tumor 20 HU
    hu = summary["intensity_hu"]
    assert hu["liver_parenchyma"]["median"] == pytest.approx(120.0, abs=3.0)  # noise of SD 10 HU
    assert hu["liver_parenchyma"]["p5"] <= hu["liver_parenchyma"]["median"] <= hu["liver_parenchyma"]["p95"]
    assert hu["tumor"] is None or hu["tumor"]["median"] == pytest.approx(20.0, abs=5.0)
    assert summary["model"]["name"] == "toy" and len(summary["model"]["sha256"]) == 64
    assert summary["liver_coverage"]["cut_at"] == [] and summary["liver_coverage"]["head_foot_mm"] == 90.0
    assert summary["liver_coverage"]["liver_ml"] == pytest.approx(summary["volumes_ml"]["liver_total"], abs=1e-3)
    assert summary["warnings"] == [] and "warning" not in err

    code, out, err = run_lvt(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "out" / "labels.nii.gz"),
            "--ref",
            str(tmp_path / "ref.nii.gz"),
            "--json",
            "--csv",
            str(tmp_path / "m.csv"),
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    metrics = json.loads(out)
    assert set(metrics) >= {"liver", "vessel", "tumor", "lesion_sensitivity", "lesion_precision"}
    assert metrics["liver"]["dsc"] > 0.8 and set(metrics["liver"]) >= {
        "dsc",
        "nsd",
        "precision",
        "recall",
    }
    assert (tmp_path / "m.csv").read_text().splitlines()[0].startswith("case,liver_dsc")


def test_segment_runs_in_the_precision_asked_for_and_refuses_an_unknown_one(
    toy_model: Path, tmp_path: Path, lvt_env: Path, monkeypatch, capsys
) -> None:
    from lvt_core.precision import cpu_has_bf16

    ct, _ = toy_scan(size=(48, 48, 24))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    args = ["segment", "-i", str(tmp_path / "ct.nii.gz"), "--model", str(toy_model), "--device", "cpu", "--json"]
    code, out, err = run_lvt([*args, "-o", str(tmp_path / "bad"), "--precision", "fp64"], monkeypatch, capsys)
    assert code == 2 and "is not one of auto, fp32, bf16" in err  # bad usage, as --device gpu
    assert json.loads(out)["exit_code"] == 2
    assert not (tmp_path / "bad").exists()
    code, out, err = run_lvt(["evaluate-model", str(toy_model), "--cohort", str(tmp_path), "--precision", "fp16",
                              "--json"], monkeypatch, capsys)
    assert code == 2 and json.loads(out)["exit_code"] == 2 and "--precision" in err
    if cpu_has_bf16():  # on other CPUs bf16 is refused (tests/test_train.py)
        code, out, err = run_lvt([*args, "-o", str(tmp_path / "bf16"), "--precision", "bf16"], monkeypatch, capsys)
        assert code == 0, err
        assert json.loads(out)["precision"] == "bf16"
        assert json.loads((tmp_path / "bf16" / "summary.json").read_text())["precision"] == "bf16"


def test_evaluate_folders_reports_cases_and_mean(tmp_path: Path, monkeypatch, capsys) -> None:
    _, ref = toy_scan()
    arr = sitk.GetArrayFromImage(ref)
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    for name, shift in (("a", 0), ("b", 2)):
        pred = sitk.GetImageFromArray(np.roll(arr, shift, axis=2))
        pred.CopyInformation(ref)
        sitk.WriteImage(pred, str(tmp_path / "pred" / f"{name}.nii.gz"))
        sitk.WriteImage(ref, str(tmp_path / "ref" / f"{name}.nii.gz"))
    code, out, err = run_lvt(
        ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--json"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["n_cases"] == 2 and [c["case"] for c in doc["cases"]] == ["a", "b"]
    assert doc["cases"][0]["liver"]["dsc"] == 1.0 and doc["cases"][1]["liver"]["dsc"] < 1.0
    assert doc["liver"]["dsc"] == pytest.approx(np.mean([c["liver"]["dsc"] for c in doc["cases"]]))

    # a reference without its prediction was skipped, so the mean covered the other cases only
    sitk.WriteImage(ref, str(tmp_path / "ref" / "c.nii.gz"))
    code, _, err = run_lvt(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")],
                           monkeypatch, capsys)
    err = " ".join(err.split())  # the console wraps long lines
    assert code == 1 and "no prediction for 1 reference(s)" in err and "c.nii.gz" in err
    sitk.WriteImage(ref, str(tmp_path / "pred" / "c.nii.gz"))
    sitk.WriteImage(ref, str(tmp_path / "ref" / "c.nrrd"))  # which of the two is the reference?
    code, _, err = run_lvt(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")],
                           monkeypatch, capsys)
    assert code == 1 and "two files for case 'c'" in " ".join(err.split())


def test_segment_warns_when_the_scan_stops_inside_the_liver(
    toy_model: Path, tmp_path: Path, lvt_env: Path, monkeypatch, capsys
) -> None:
    """A scan whose head end cuts through the liver: its volume is a lower bound, and the user
    is told so on the console and in summary.json."""
    ct, _ = toy_scan()  # 40 slices of 2 mm, the liver a sphere of 22 mm radius at their centre
    sitk.WriteImage(ct[:, :, :26], str(tmp_path / "cut.nrrd"))  # +z is the head (LPS)
    code, _, err = run_lvt(
        ["segment", "-i", str(tmp_path / "cut.nrrd"), "-o", str(tmp_path / "o"), "--model",
         str(toy_model), "--device", "cpu"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["liver_coverage"]["cut_at"] == ["head"]
    assert summary["liver_coverage"]["head_foot_mm"] == 52.0
    assert "head end" in summary["warnings"][0] and "lower bound" in summary["warnings"][0]
    assert "warning" in err and "cut.nrrd" in err


def test_segment_real_dicom_series(
    toy_model: Path, real_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """A real DICOM series folder goes through: labels land on the series' own grid."""
    series = real_data / "dcmqi-ct-3slice"
    code, out, err = run_lvt(
        [
            "segment",
            "-i",
            str(series),
            "-o",
            str(tmp_path / "o"),
            "--model",
            str(toy_model),
            "--json",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    labels = sitk.ReadImage(str(tmp_path / "o" / "labels.nii.gz"))
    assert list(labels.GetSize()) == json.loads(out)["size"] == [512, 512, 3]


@pytest.mark.parametrize("kind", ["text", "2d", "nan", "nifti-nan"])
def test_segment_bad_input_names_the_file(
    kind: str, toy_model: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    if kind == "text":
        path = tmp_path / "notes.nii.gz"
        path.write_text("not an image")
    elif kind == "2d":
        path = tmp_path / "slice.nrrd"
        sitk.WriteImage(sitk.Image(16, 16, sitk.sitkInt16), str(path))
    elif kind == "nan":
        path = tmp_path / "nan.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(np.full((8, 8, 8), np.nan, np.float32)), str(path))
    else:  # ITK alone reads a NIfTI's NaN as 0; lvt_core.nifti_integrity catches it
        import nibabel as nib

        path = tmp_path / "nan.nii.gz"
        array = np.zeros((8, 8, 8), np.float32)
        array[4, 4, 4] = np.nan
        nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    code, out, err = run_lvt(
        ["segment", "-i", str(path), "-o", str(tmp_path / "o"), "--model", str(toy_model)],
        monkeypatch,
        capsys,
    )
    assert code == 1
    assert path.name in err and out == ""
    assert not (tmp_path / "o" / "labels.nii.gz").exists()


def test_segment_refuses_an_output_that_is_a_file_before_inference(
    toy_model: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    ct, _ = toy_scan()
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    (tmp_path / "taken").write_text("a file already here")
    for out in (tmp_path / "taken", tmp_path / "taken" / "below"):
        code, stdout, err = run_lvt(
            ["segment", "-i", str(tmp_path / "ct.nii.gz"), "-o", str(out), "--model", str(toy_model)],
            monkeypatch,
            capsys,
        )
        assert code == 1 and stdout == ""
        assert "is a file, not a folder" in " ".join(err.split()) and "Traceback" not in err
    assert (tmp_path / "taken").read_text() == "a file already here"


def test_segment_missing_model_says_how_to_train(
    tmp_path: Path, lvt_env, monkeypatch, capsys
) -> None:
    ct, _ = toy_scan()
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    monkeypatch.setenv("LVT_MODEL_PATH", str(tmp_path / "absent.pt"))
    from app.settings import get_settings

    get_settings.cache_clear()
    code, _, err = run_lvt(
        ["segment", "-i", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "o")],
        monkeypatch,
        capsys,
    )
    assert code == 1
    assert "absent.pt" in err and "lvt train" in err


def test_evaluate_rejects_non_lvt_labels_and_missing_pairs(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    _, ref = toy_scan()
    sitk.WriteImage(ref, str(tmp_path / "ref.nii.gz"))
    other = sitk.GetImageFromArray(sitk.GetArrayFromImage(ref) * 5)  # TotalSegmentator-like ids
    other.CopyInformation(ref)
    sitk.WriteImage(other, str(tmp_path / "ts.nii.gz"))
    code, _, err = run_lvt(
        ["evaluate", "--pred", str(tmp_path / "ts.nii.gz"), "--ref", str(tmp_path / "ref.nii.gz")],
        monkeypatch,
        capsys,
    )
    assert code == 1 and "ts.nii.gz" in err and "0..3" in err
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    sitk.WriteImage(ref, str(tmp_path / "p" / "case7.nii.gz"))
    code, _, err = run_lvt(
        ["evaluate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r")],
        monkeypatch,
        capsys,
    )
    assert code == 1 and "case7" in err


def test_segment_device_defaults_to_lvt_device(
    toy_model: Path, tmp_path: Path, lvt_env: Path, monkeypatch, capsys
) -> None:
    """LVT_DEVICE was documented (SLURM example, compose) but segment hard-coded auto: the
    device asked for is the one auto would not pick on this machine."""
    from app.settings import get_settings

    ct, _ = toy_scan(size=(48, 48, 24))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    wanted = "cpu" if torch.cuda.is_available() else "cuda"
    monkeypatch.setenv("LVT_DEVICE", wanted)
    get_settings.cache_clear()
    code, out, err = run_lvt(["segment", "-i", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "out"),
                              "--model", str(toy_model), "--fast", "--json"], monkeypatch, capsys)
    if wanted == "cpu":
        assert code == 0 and json.loads(out)["device"] == "cpu", err
    else:
        assert code == 1 and "no CUDA GPU" in json.loads(out)["error"]


def test_a_dicom_series_gets_a_dicom_seg_over_its_own_slices(
    toy_model: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """DICOM in, DICOM SEG out: the SEG references the input's own slices (their UIDs and its
    patient), so a viewer overlays it on the series it came from, and every frame lands where
    the label map says, whatever order the files are listed in."""
    import pydicom

    from app.services import dicom_seg
    from lvt_core.dicom_series import SeriesInfo, write_ct_series

    ct, _ = toy_scan(center_mm=(4.0, -6.0, 10.0), spacing=(1.5, 1.5, 2.5), size=(64, 64, 36))
    hu = sitk.Cast(ct, sitk.sitkInt16)
    folder = tmp_path / "dicom"
    files = write_ct_series(hu, folder, SeriesInfo("PAT-7", "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2",
                                                   "1.2.826.0.1.3680043.8.498.3", None, patient_name="DOE^JANE"))
    code, out, err = run_lvt(["segment", "-i", str(folder), "-o", str(tmp_path / "out"), "--model", str(toy_model),
                              "--json"], monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads(out)
    seg_path = tmp_path / "out" / "seg.dcm"
    assert summary["dicom_seg"]["path"] == str(seg_path) and summary["dicom_seg"].get("dciodvfy", {}).get("errors", []) == []
    labels = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    assert dicom_seg.check_against_labels(seg_path, labels) == 0
    seg = pydicom.dcmread(seg_path)
    assert (seg.PatientID, str(seg.PatientName)) == ("PAT-7", "DOE^JANE") and seg.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == "1.2.826.0.1.3680043.8.498.2"
    source_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} <= source_uids
    assert "liver parenchyma" in summary["dicom_seg"]["segments"]

    # files listed out of order still give each slice its own frame; a file off the grid is refused
    shuffled = dicom_seg.source_slices_in_order(labels, list(reversed(files)))
    assert [ds.SOPInstanceUID for ds in shuffled] == [pydicom.dcmread(f).SOPInstanceUID for f in files]
    with pytest.raises(ValueError, match="do not fall one by one"):
        dicom_seg.source_slices_in_order(labels, files[:-1])

    # --no-dicom-seg, and a volume file, write none
    code, out, err = run_lvt(["segment", "-i", str(folder), "-o", str(tmp_path / "plain"), "--model",
                              str(toy_model), "--no-dicom-seg", "--json"], monkeypatch, capsys)
    assert code == 0, err
    assert "dicom_seg" not in json.loads(out) and not (tmp_path / "plain" / "seg.dcm").exists()
