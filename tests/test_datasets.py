"""Dataset registry and importers, each on a small fixture written in the source's real layout."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lvt_core.imageio import write_image
from training.datasets import DatasetError, get_source, link_same_scans, list_sources, load_cases
from training.preprocess import cache_key, preprocess
from training.sampling import (
    MixedSourceSampler,
    choose_center,
    class_boxes,
    random_voxel,
    step_rng,
    tumor_lesions,
)

SHAPE = (12, 20, 24)  # z, y, x


def ct_and_labels(seed: int = 0) -> tuple[sitk.Image, np.ndarray]:
    """A small CT-like volume and an exclusive 0..3 map: liver box, a vessel line, a tumor."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:10, 4:16, 4:20] = 1
    lab[6, 10, 4:20] = 2
    lab[4:7, 6:9, 6:9] = 3
    hu = np.where(lab == 1, 100, np.where(lab == 2, 200, np.where(lab == 3, 40, -100)))
    image = sitk.GetImageFromArray((hu + rng.normal(0, 5, SHAPE)).astype(np.int16))
    image.SetSpacing((1.5, 1.5, 2.5))
    image.SetOrigin((-10.0, 5.0, 30.0))
    return image, lab


def labels_like(array: np.ndarray, image: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(image)
    return out


def write_synthetic_cohort(root: Path, patients: int, phases: tuple[str, ...] = ("venous",)) -> Path:
    """A phantom-style cohort folder with manifest.csv (paths relative); each phase of a
    patient is a row of its own (the same image: only the rows' phase differs)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(patients):
        image, lab = ct_and_labels(i)
        write_image(image, root / f"P{i:03d}" / "image.nii.gz")
        write_image(labels_like(lab, image), root / f"P{i:03d}" / "labels.nii.gz")
        rows += [{"patient_id": f"P{i:03d}", "study_index": 0, "phase": phase,
                  "image": f"P{i:03d}/image.nii.gz", "labels": f"P{i:03d}/labels.nii.gz"} for phase in phases]
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def write_dicom_series(image: sitk.Image, folder: Path) -> None:
    """One DICOM file per slice, as 3D-IRCADb ships them."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")  # IRCADb slice files have no extension
    series = f"1.2.826.0.1.3680043.2.1125.{abs(hash(str(folder))) % 10**12}"
    for z in range(image.GetDepth()):
        s = image[:, :, z]
        s.SetMetaData("0020|000e", series)
        s.SetMetaData("0020|000d", series + ".1")
        s.SetMetaData("0008|0060", "CT")
        s.SetMetaData("0020|0013", str(z + 1))
        s.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, z)))))
        s.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        s.SetMetaData("0018|0050", str(image.GetSpacing()[2]))
        writer.SetFileName(str(folder / f"image_{z}"))
        writer.Execute(s)


def write_public_layouts(root: Path, seed: int = 0) -> dict[str, Path]:
    """One small case of each public source in its real layout: LiTS, MSD Task08, HV Liver
    (liver masks of the Task08 images) and 3D-IRCADb-01; returns source name -> folder."""
    image, lab = ct_and_labels(seed)
    lits = root / "LiTS"
    write_image(image, lits / "volume-0.nii")
    write_image(labels_like(np.where(lab == 3, 2, np.where(lab > 0, 1, 0)), image), lits / "segmentation-0.nii")
    task08 = root / "Task08_HepaticVessel"
    write_image(image, task08 / "imagesTr" / "hepaticvessel_001.nii.gz")
    write_image(labels_like(np.where(lab == 3, 2, np.where(lab == 2, 1, 0)), image),
                task08 / "labelsTr" / "hepaticvessel_001.nii.gz")
    (task08 / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "Vessel", "2": "Tumour"},
        "training": [{"image": "./imagesTr/hepaticvessel_001.nii.gz", "label": "./labelsTr/hepaticvessel_001.nii.gz"}]}))
    hv_liver = root / "HVLiver"
    write_image(labels_like((lab > 0) * 255, image), hv_liver / "hepaticvessel_001.nii.gz")
    ircadb = root / "3Dircadb1"
    write_dicom_series(image, ircadb / "3Dircadb1.1" / "PATIENT_DICOM")
    for name, mask in {"liver": lab > 0, "portalvein": lab == 2, "livertumor01": lab == 3}.items():
        write_dicom_series(labels_like(mask * 255, image), ircadb / "3Dircadb1.1" / "MASKS_DICOM" / name)
    return {"lits": lits, "msd_hepaticvessel": task08, "hv_liver": hv_liver, "ircadb": ircadb}


def lvt_array(case) -> np.ndarray:
    return sitk.GetArrayFromImage(case.load()[1])


def test_registry_class_weights_follow_table_a1() -> None:
    expected = {"lits": [1, 0, 1], "msd_hepaticvessel": [0, 1, 1], "hv_liver": [1, 0, 0],
                "ircadb": [1, 1, 1], "synthetic": [1, 1, 1], "totalsegmentator_liver": [1, 0, 0]}
    for name, weights in expected.items():
        assert get_source(name).class_weights.tolist() == weights
    assert {s.name for s in list_sources()} >= set(expected)
    with pytest.raises(DatasetError, match="unknown dataset source"):
        get_source("nope")


def test_msd_tasks_map_labels_by_dataset_json(tmp_path: Path) -> None:
    image, lab = ct_and_labels()
    for task, names, prefix in (("Task03_Liver", {"0": "background", "1": "liver", "2": "cancer"}, "liver"),
                                ("Task08_HepaticVessel", {"0": "background", "1": "Vessel", "2": "Tumour"}, "hepaticvessel")):
        root = tmp_path / task
        raw = np.where(lab == 3, 2, np.where(lab == (1 if prefix == "liver" else 2), 1, 0))
        write_image(image, root / "imagesTr" / f"{prefix}_7.nii.gz")
        write_image(labels_like(raw, image), root / "labelsTr" / f"{prefix}_7.nii.gz")
        (root / "imagesTr" / f"._{prefix}_7.nii.gz").write_bytes(b"mac junk")
        (root / "dataset.json").write_text(json.dumps({"labels": names, "training": [
            {"image": f"./imagesTr/{prefix}_7.nii.gz", "label": f"./labelsTr/{prefix}_7.nii.gz"}]}))
    liver = load_cases("msd_liver", tmp_path / "Task03_Liver")
    assert len(liver) == 1 and liver[0].annotated == ("liver", "tumor")
    assert np.array_equal(lvt_array(liver[0]), np.where(lab == 2, 0, lab))
    vessel = load_cases("msd_hepaticvessel", tmp_path / "Task08_HepaticVessel")
    assert vessel[0].annotated == ("vessel", "tumor")
    assert vessel[0].class_weights.tolist() == [0, 1, 1]
    assert np.array_equal(lvt_array(vessel[0]), np.where(lab == 1, 0, lab))


def test_a_label_value_the_source_does_not_name_is_refused(tmp_path: Path) -> None:
    """MSD and LiTS define every value their files hold; an unnamed one (a tumor relabelled 3,
    a mask stored as 255) was made background silently, teaching "no tumor here"."""
    image, lab = ct_and_labels()
    root = tmp_path / "Task03_Liver"
    raw = np.where(lab == 3, 3, np.where(lab > 0, 1, 0))  # tumor written as 3, not 2
    write_image(image, root / "imagesTr" / "liver_7.nii.gz")
    write_image(labels_like(raw, image), root / "labelsTr" / "liver_7.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "cancer"}}))
    (case,) = load_cases("msd_liver", root)
    with pytest.raises(DatasetError, match=r"liver_7\.nii\.gz: label value\(s\) \[3\]"):
        case.load()
    write_image(image, tmp_path / "LiTS" / "volume-3.nii")
    write_image(labels_like(raw, image), tmp_path / "LiTS" / "segmentation-3.nii")
    (lits,) = load_cases("lits", tmp_path / "LiTS")
    with pytest.raises(DatasetError, match=r"segmentation-3\.nii: label value\(s\) \[3\]"):
        lits.load()


def test_lits_and_hv_liver(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    image, lab = ct_and_labels()
    raw = np.where(lab == 3, 2, np.where(lab > 0, 1, 0))
    write_image(image, tmp_path / "LiTS" / "Training Batch 1" / "volume-3.nii")
    write_image(labels_like(raw, image), tmp_path / "LiTS" / "Training Batch 1" / "segmentation-3.nii")
    cases = load_cases("lits", tmp_path / "LiTS")
    assert [c.case_id for c in cases] == ["lits_003"]
    out = lvt_array(cases[0])
    assert set(np.unique(out)) == {0, 1, 3} and (out == 3).sum() == (lab == 3).sum()

    write_image(image, tmp_path / "Task08_HepaticVessel" / "imagesTr" / "hepaticvessel_012.nii.gz")
    write_image(image, tmp_path / "Task08_HepaticVessel" / "imagesTr" / "hepaticvessel_013.nii.gz")
    write_image(labels_like((lab > 0) * 255, image), tmp_path / "HVLiver" / "hepaticvessel_012.nii.gz")
    write_image(labels_like((lab > 0) * 255, image), tmp_path / "HVLiver" / "hepaticvessel_777.nii.gz")
    with caplog.at_level(logging.WARNING):
        hv = load_cases("hv_liver", tmp_path / "HVLiver", images=tmp_path / "Task08_HepaticVessel")
    assert len(hv) == 1 and hv[0].image.name == "hepaticvessel_012.nii.gz"
    assert "hepaticvessel_777.nii.gz" in caplog.text  # a mask without its image is named, not lost
    assert hv[0].annotated == ("liver",)
    assert np.array_equal(lvt_array(hv[0]), (lab > 0).astype(np.uint8))  # whole organ, no cutouts


def test_one_image_under_two_sources_stays_on_one_side_of_every_split(tmp_path: Path) -> None:
    """HV Liver labels Task08's images and Task03 holds LiTS's volumes: a split kept the image
    in training under one source and in validation under the other."""
    from training.splits import split_cases

    image, lab = ct_and_labels()
    task08, task03 = tmp_path / "Task08_HepaticVessel", tmp_path / "Task03_Liver"
    entries08, entries03 = [], []
    for n in range(1, 6):
        write_image(image, task08 / "imagesTr" / f"hepaticvessel_{n:03d}.nii.gz")
        write_image(labels_like((lab == 2) * 1, image), task08 / "labelsTr" / f"hepaticvessel_{n:03d}.nii.gz")
        write_image(labels_like((lab > 0) * 1, image), tmp_path / "HVLiver" / f"hepaticvessel_{n:03d}.nii.gz")
        entries08.append({"image": f"./imagesTr/hepaticvessel_{n:03d}.nii.gz",
                          "label": f"./labelsTr/hepaticvessel_{n:03d}.nii.gz"})
        write_image(image, task03 / "imagesTr" / f"liver_{n}.nii.gz")
        write_image(labels_like((lab > 0) * 1, image), task03 / "labelsTr" / f"liver_{n}.nii.gz")
        entries03.append({"image": f"./imagesTr/liver_{n}.nii.gz", "label": f"./labelsTr/liver_{n}.nii.gz"})
        write_image(image, tmp_path / "LiTS" / f"volume-{n}.nii")
        write_image(labels_like((lab > 0) * 1, image), tmp_path / "LiTS" / f"segmentation-{n}.nii")
    (task08 / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "vessel", "2": "tumour"},
                                                     "training": entries08}))
    (task03 / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "cancer"},
                                                     "training": entries03}))
    cases = (load_cases("msd_hepaticvessel", task08) + load_cases("hv_liver", tmp_path / "HVLiver", images=task08)
             + load_cases("msd_liver", task03) + load_cases("lits", tmp_path / "LiTS"))
    assert len(cases) == 20
    for fold in range(5):
        train, validation = split_cases(cases, fold, 5)
        assert {c.split_group for c in train}.isdisjoint({c.split_group for c in validation})
        assert len({c.split_group for c in validation}) == 2  # one Task08 image, one LiTS volume
    with pytest.raises(ValueError, match=r"fold 0 of 5 needs at least 5 patients, the data has 2"):
        split_cases([c for c in cases if c.split_group in {"lits_001", "lits_002"}], 0, 5)


def test_a_dataset_json_that_names_missing_files_or_is_malformed_says_so(tmp_path: Path) -> None:
    image, lab = ct_and_labels()
    root = tmp_path / "Task03_Liver"
    write_image(image, root / "imagesTr" / "liver_1.nii.gz")
    for meta, said in (
        ({"labels": ["background", "liver"], "training": []}, "must map label values to names"),
        ({"labels": {"0": "background", "1": "liver"}, "training": ["imagesTr/liver_1.nii.gz"]},
         "training entry 0 must hold"),
        ({"labels": {"0": "background", "1": "liver"},
          "training": [{"image": "./imagesTr/liver_1.nii.gz", "label": "./labelsTr/liver_1.nii.gz"}]},
         "1 file.s. it lists are missing: .*labelsTr/liver_1.nii.gz"),
    ):
        (root / "dataset.json").write_text(json.dumps(meta))
        with pytest.raises(DatasetError, match=said):
            load_cases("msd_liver", root)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))  # nnU-Net v2
    write_image(labels_like((lab > 0) * 1, image), root / "labelsTr" / "liver_1.nii.gz")
    assert load_cases("msd_liver", root)[0].annotated == ("liver",)


def test_ircadb_dicom_masks_compose_intrahepatic_vessels(tmp_path: Path) -> None:
    image, lab = ct_and_labels()
    patient = tmp_path / "3Dircadb1.1"
    write_dicom_series(image, patient / "PATIENT_DICOM")
    portal = lab == 2
    outside = np.zeros(SHAPE, bool)
    outside[11, 18, 2:22] = True  # a vein outside the liver box: must not become label 2
    masks = {"liver": lab > 0, "portalvein": portal | outside, "venoussystem": np.zeros(SHAPE, bool),
             "livertumor01": lab == 3, "artery": np.ones(SHAPE, bool)}
    for name, mask in masks.items():
        write_dicom_series(labels_like(mask * 255, image), patient / "MASKS_DICOM" / name)
    cases = load_cases("ircadb", tmp_path)
    assert len(cases) == 1 and cases[0].annotated == ("liver", "vessel", "tumor")
    out = lvt_array(cases[0])
    assert np.array_equal(out, lab)


def test_folder_with_mapping_yaml_and_synthetic(tmp_path: Path) -> None:
    image, lab = ct_and_labels()
    raw = np.where(lab == 3, 7, np.where(lab == 1, 4, 0))
    write_image(image, tmp_path / "mine" / "img" / "case_a_0000.nii.gz")
    write_image(labels_like(raw, image), tmp_path / "mine" / "lab" / "case_a.nii.gz")
    (tmp_path / "mine" / "mapping.yaml").write_text("name: mine\nimages: img\nlabels: lab\nmapping: {4: liver, 7: tumor}\n")
    cases = load_cases("folder", tmp_path / "mine")
    assert cases[0].annotated == ("liver", "tumor") and cases[0].case_id == "mine_case_a"
    assert np.array_equal(lvt_array(cases[0]), np.where(lab == 2, 0, lab))
    (tmp_path / "bad.yaml").write_text("images: img\nlabels: lab\nmapping: {4: spleen}\n")
    with pytest.raises(DatasetError, match="spleen"):
        load_cases("folder", tmp_path / "bad.yaml")
    for text, said in (("images: img\nlabels: lab\nmapping: {4: liver}\nanotated: [liver]\n", r"unknown key\(s\) \['anotated'\]"),
                       ("images: img\nlabels: lables\nmapping: {4: liver}\n", r"labels folder .*lables does not exist"),
                       ("images: img\nlabels: lab\nmapping: [liver, tumor]\n", "mapping must map label values")):
        (tmp_path / "mine" / "typo.yaml").write_text(text)
        with pytest.raises(DatasetError, match=said):
            load_cases("folder", tmp_path / "mine" / "typo.yaml")

    cohort = write_synthetic_cohort(tmp_path / "cohort", 3)
    synth = load_cases("synthetic", cohort)
    assert [c.split_group for c in synth] == ["P000", "P001", "P002"]
    assert np.array_equal(lvt_array(synth[1]), ct_and_labels(1)[1])


def test_totalsegmentator_real_liver_is_a_partial_source(real_data: Path) -> None:
    cases = load_cases("totalsegmentator_liver", real_data / "totalsegmentator")
    small = next(c for c in cases if c.image.name == "example_ct_sm.nii.gz")
    assert small.annotated == ("liver",)
    out = lvt_array(small)
    assert set(np.unique(out)) == {0, 1}
    assert int((out == 1).sum()) == 38634  # TotalSegmentator label 5, as documented
    # the DICOM example's labels store y the other way round from the series: every training
    # config that lists this source stopped at "do not lie on the image's grid"
    dicom = next(c for c in cases if c.image.is_dir())
    image, labels = dicom.load()
    assert labels.GetDirection() == image.GetDirection() and labels.GetSize() == image.GetSize()
    raw = sitk.ReadImage(str(dicom.labels))
    assert int((sitk.GetArrayViewFromImage(labels) == 1).sum()) == int((sitk.GetArrayViewFromImage(raw) == 5).sum())
    probe = tuple(int(v) for v in np.argwhere(sitk.GetArrayViewFromImage(raw) == 5)[0][::-1])  # x, y, z
    point = raw.TransformIndexToPhysicalPoint(probe)  # one liver voxel stays where it was in space
    assert labels[image.TransformPhysicalPointToIndex(point)] == 1


def test_preprocessing_is_cached_and_resampled(tmp_path: Path) -> None:
    case = load_cases("synthetic", write_synthetic_cohort(tmp_path / "c", 1))[0]
    first = preprocess(case, (3.0, 3.0, 3.0), tmp_path / "cache")
    folder = next((tmp_path / "cache").iterdir())
    stamp = (folder / "image.npy").stat().st_mtime_ns
    again = preprocess(case, (3.0, 3.0, 3.0), tmp_path / "cache")
    assert (folder / "image.npy").stat().st_mtime_ns == stamp
    assert np.array_equal(first.labels, again.labels)
    assert first.image.shape == (10, 10, 12)  # 12×2.5, 20×1.5, 24×1.5 mm at 3 mm
    assert first.image.dtype == np.int16 and set(np.unique(first.labels)) <= {0, 1, 2, 3}
    preprocess(case, (2.0, 2.0, 2.0), tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2
    smooth = preprocess(case, (3.0, 3.0, 3.0), tmp_path / "cache", antialiased=True)
    assert len(list((tmp_path / "cache").iterdir())) == 3  # its own entry, the plain one kept
    assert smooth.image.shape == first.image.shape and np.array_equal(smooth.labels, first.labels)
    assert not np.array_equal(smooth.image, first.image)
    assert cache_key(case, (3.0, 3.0, 3.0)) == cache_key(case, (3.0, 3.0, 3.0), False)


def test_mixed_source_sampling_follows_weights() -> None:
    sampler = MixedSourceSampler(["a"] * 9 + ["b"], {"a": 1.0, "b": 3.0})
    picks = [sampler.choose(step_rng(0, s)) for s in range(2000)]
    share_b = np.mean([p == 9 for p in picks])
    assert 0.7 < share_b < 0.8  # 3 / (1 + 3), although b has one case against nine
    assert picks[:50] == [sampler.choose(step_rng(0, s)) for s in range(50)]


def test_foreground_class_weights_favour_rare_classes() -> None:
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:18, 2:18, 2:18] = 1  # a big liver
    labels[9:11, 9:11, 9:11] = 3  # a small tumor inside it
    annotated = ("liver", "vessel", "tumor")

    def tumor_share(weights: dict[str, float] | None) -> float:
        rng = np.random.default_rng(0)
        hits = [labels[choose_center(labels, annotated, rng, 1.0, weights)] == 3 for _ in range(400)]
        return float(np.mean(hits))

    equal = tumor_share(None)
    assert 0.35 < equal < 0.65  # liver or tumor first, about half each (no vessel present)
    assert tumor_share({"tumor": 4.0, "liver": 1.0, "vessel": 1.0}) > 0.75


def test_a_class_voxel_is_drawn_uniformly_from_its_bounding_box_without_a_full_scan() -> None:
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[2:6, 2:6, 2:6] = 2  # 64 vessel voxels
    labels[20:28, 20:28, 20:24] = 2  # 256 more, far away: the box is mostly background
    boxes = class_boxes(labels)
    assert set(boxes) == {2} and boxes[2] == (slice(2, 28), slice(2, 28), slice(2, 24))
    rng = np.random.default_rng(3)
    drawn = [random_voxel(labels, 2, boxes[2], rng) for _ in range(2000)]
    assert all(labels[voxel] == 2 for voxel in drawn)
    assert 0.16 < np.mean([voxel[0] < 10 for voxel in drawn]) < 0.24  # 64 of 320 voxels
    lone = np.zeros((60, 60, 60), np.uint8)
    lone[1, 1, 1] = lone[58, 58, 58] = 3  # two voxels in a 58³ box: the listing fallback
    assert {random_voxel(lone, 3, class_boxes(lone)[3], rng) for _ in range(40)} == {(1, 1, 1), (58, 58, 58)}


def test_lesion_balanced_sampling_centres_small_lesions_as_often_as_big_ones() -> None:
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[2:38, 2:38, 2:38] = 1
    labels[4:20, 4:20, 4:20] = 3  # 4,096 voxels
    labels[30:32, 30:32, 30:32] = 3  # 8 voxels, far from the big one
    lesions = tumor_lesions(labels)
    assert sorted(len(lesion) for lesion in lesions) == [8, 4096]
    annotated = ("liver", "vessel", "tumor")
    weights = {"tumor": 1.0, "liver": 0.0, "vessel": 0.0}

    def small_share(lesion_list: list[np.ndarray] | None) -> float:
        rng = np.random.default_rng(1)
        centres = [choose_center(labels, annotated, rng, 1.0, weights, lesion_list) for _ in range(400)]
        assert all(labels[c] == 3 for c in centres)
        return float(np.mean([min(c) >= 30 for c in centres]))

    assert small_share(None) < 0.02  # voxel sampling: 8 of 4,104 voxels
    assert 0.4 < small_share(lesions) < 0.6  # one lesion of two
    assert tumor_lesions(np.ones((4, 4, 4), np.uint8)) == []


def test_a_slice_rewritten_inside_a_dicom_folder_changes_the_fingerprint(tmp_path: Path) -> None:
    """A folder's own time stays put when a file inside is rewritten: the cache was reused."""
    import os

    from training.datasets import Case, MaskPart

    for folder in ("PATIENT_DICOM", "liver"):
        (tmp_path / folder).mkdir()
        for k in range(3):
            (tmp_path / folder / f"image_{k}").write_bytes(b"slice %d" % k)
    case = Case("p1", "ircadb", ("liver",), tmp_path / "PATIENT_DICOM",
                masks=(MaskPart(tmp_path / "liver", 1),))
    before = case.fingerprint()
    folder_times = os.stat(tmp_path / "liver")
    (tmp_path / "liver" / "image_1").write_bytes(b"edited!")  # same size, new content
    os.utime(tmp_path / "liver", ns=(folder_times.st_atime_ns, folder_times.st_mtime_ns))
    os.utime(tmp_path / "liver" / "image_1", ns=(1, 10**18))
    assert case.fingerprint() != before


def test_labels_stored_with_flipped_axes_are_reordered_and_mirrored_ones_refused(tmp_path: Path) -> None:
    """TotalSegmentator stores ``y`` the other way round from the DICOM it read: the same voxel
    grid, which was refused; a label mirrored in ``z`` at the same origin was accepted."""
    image, lab = ct_and_labels()
    folder = tmp_path / "LiTS"
    write_image(image, folder / "volume-1.nii")
    raw = np.where(lab == 3, 2, np.where(lab > 0, 1, 0))
    flipped = sitk.Flip(labels_like(raw, image), [False, True, False])  # same voxels, y reversed
    assert flipped.GetDirection() != image.GetDirection()
    write_image(flipped, folder / "segmentation-1.nii")
    (case,) = load_cases("lits", folder)
    _, loaded = case.load()
    assert loaded.GetDirection() == image.GetDirection() and loaded.GetOrigin() == image.GetOrigin()
    assert np.array_equal(sitk.GetArrayFromImage(loaded), np.where(lab == 2, 1, lab))
    mirrored = labels_like(raw, image)
    mirrored.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    write_image(mirrored, folder / "segmentation-1.nii")
    with pytest.raises(DatasetError, match=r"do not lie on the image's grid .*axes \[1\.0, 0\.0, 0\.0, 0\.0, 1\.0, 0\.0, 0\.0, 0\.0, -1\.0\]"):
        load_cases("lits", folder)[0].load()


def test_labels_off_the_image_grid_or_without_the_annotated_liver_are_refused(tmp_path: Path) -> None:
    """Each was trained on before: a moved label resampled to background, a liver stored as
    255 dropped, a float label map rounded away; the masked loss then taught "no liver here"."""
    image, lab = ct_and_labels()
    folder = tmp_path / "LiTS"
    write_image(image, folder / "volume-1.nii")
    raw = np.where(lab == 3, 2, np.where(lab > 0, 1, 0))
    moved = labels_like(raw, image)
    moved.SetOrigin(tuple(np.add(image.GetOrigin(), (0.0, 0.0, 1000.0))))
    cases = [(moved, "do not lie on the image's grid"),
             (labels_like(np.where(raw == 1, 255, raw), image), r"label value\(s\) \[255\] are not among"),
             (labels_like(np.zeros_like(raw), image), "annotates liver but this case has none")]
    as_float = sitk.Cast(labels_like(raw, image), sitk.sitkFloat32) * 0.9999999
    cases.append((as_float, "whole numbers"))
    for labels, said in cases:
        write_image(labels, folder / "segmentation-1.nii")
        (case,) = load_cases("lits", folder)
        with pytest.raises(DatasetError, match=said) as caught:
            case.load()
        assert "segmentation-1.nii" in str(caught.value)
    write_image(image, folder / "volume-2.nii")  # its segmentation-2.nii is missing
    with pytest.raises(DatasetError, match=r"1 volume\(s\) without their segmentation-N file: .*volume-2.nii"):
        load_cases("lits", folder)
    (folder / "volume-2.nii").unlink()
    no_tumor = labels_like(np.where(raw == 2, 1, raw), image)  # a case without tumors is fine
    write_image(no_tumor, folder / "segmentation-1.nii")
    assert (lvt_array(load_cases("lits", folder)[0]) == 3).sum() == 0


def write_ircad_patient(patient: Path, image: sitk.Image, lab: np.ndarray, zipped: bool = False) -> None:
    """A 3D-IRCADb-01 patient folder; ``zipped`` as the download ships it (PATIENT_DICOM.zip,
    MASKS_DICOM.zip holding the ``PATIENT_DICOM/`` and ``MASKS_DICOM/<structure>/`` folders)."""
    write_dicom_series(image, patient / "PATIENT_DICOM")
    for name, mask in {"liver": lab > 0, "portalvein": lab == 2, "livertumor01": lab == 3,
                       "artery": lab == 2}.items():
        write_dicom_series(labels_like(mask * 255, image), patient / "MASKS_DICOM" / name)
    if zipped:
        for sub in ("PATIENT_DICOM", "MASKS_DICOM"):
            with zipfile.ZipFile(patient / f"{sub}.zip", "w") as zf:
                for file in sorted((patient / sub).rglob("*")):
                    zf.write(file, file.relative_to(patient))
            shutil.rmtree(patient / sub)


def test_zipped_ircadb_patients_are_extracted_once_and_none_is_left_out_silently(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The download zips every patient's DICOM folders; such patients were skipped without a word."""
    image, lab = ct_and_labels()
    root = tmp_path / "3Dircadb1"
    write_ircad_patient(root / "3Dircadb1.1", image, lab)
    write_ircad_patient(root / "3Dircadb1.2", image, lab, zipped=True)
    write_ircad_patient(root / "3Dircadb1.3", image, lab, zipped=True)
    (root / "3Dircadb1.3" / "MASKS_DICOM.zip").unlink()
    (root / "3Dircadb1.4" / "LABELLED_DICOM").mkdir(parents=True)
    unzip = tmp_path / "unzipped"
    with caplog.at_level(logging.WARNING):
        cases = load_cases("ircadb", root, unzip_dir=unzip)
    assert [c.case_id for c in cases] == ["ircadb_3Dircadb1.1", "ircadb_3Dircadb1.2"]
    assert "3Dircadb1.3 (no MASKS_DICOM folder or MASKS_DICOM.zip)" in caplog.text
    assert "3Dircadb1.4 (no PATIENT_DICOM folder or PATIENT_DICOM.zip)" in caplog.text
    zipped = cases[1]
    assert zipped.image.is_relative_to(unzip) and np.array_equal(lvt_array(zipped), lab)
    assert {m.path.name for m in zipped.masks} == {"liver", "portalvein", "livertumor01"}
    assert not list(unzip.rglob("artery"))  # only the structures LVT reads are extracted
    again = load_cases("ircadb", root, unzip_dir=unzip)[1]
    assert again.image == zipped.image and again.fingerprint() == zipped.fingerprint()  # extracted once
    (root / "3Dircadb1.2" / "PATIENT_DICOM.zip").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match=r"3Dircadb1\.2/PATIENT_DICOM\.zip: cannot extract"):
        load_cases("ircadb", root, unzip_dir=unzip)


def test_a_lits_volume_that_is_an_ircad_patient_shares_its_split_group(tmp_path: Path) -> None:
    """LiTS volumes 28-47 are the 3D-IRCADb-01 scans in an undocumented order: a fold validated an
    IRCAD patient whose LiTS copy it trained on. Same grid from headers, other source: one group."""
    from training.splits import split_cases
    from training.train import gather_cases

    ircad, lits = tmp_path / "3Dircadb1", tmp_path / "LiTS"
    for n in range(6):
        image, lab = ct_and_labels(n)
        image.SetSpacing((0.6 + 0.05 * n, 0.6 + 0.05 * n, 1.6))  # each patient its own voxel size
        seg = labels_like(np.where(lab == 3, 2, np.where(lab > 0, 1, 0)), image)
        write_image(image, lits / f"volume-{40 - n}.nii")  # the copy under another number
        write_image(seg, lits / f"segmentation-{40 - n}.nii")
        if n < 3:
            write_ircad_patient(ircad / f"3Dircadb1.{n + 1}", image, lab, zipped=n == 2)
    other, lab = ct_and_labels(9)  # same voxel size as IRCAD patient 1, another depth: another scan
    other = sitk.Resample(other, [SHAPE[2], SHAPE[1], SHAPE[0] + 1], sitk.Transform(), sitk.sitkLinear,
                          other.GetOrigin(), (0.6, 0.6, 1.6))
    write_image(other, lits / "volume-1.nii")
    write_image(sitk.Cast(other * 0 + 1, sitk.sitkUInt8), lits / "segmentation-1.nii")
    cases = load_cases("lits", lits) + load_cases("ircadb", ircad, unzip_dir=tmp_path / "unzip")
    linked = {c.case_id: c.split_group for c in link_same_scans(cases)}
    assert linked["ircadb_3Dircadb1.1"] == linked["lits_040"] == "ircadb_3Dircadb1.1+lits_040"
    assert linked["ircadb_3Dircadb1.3"] == linked["lits_038"]  # the zipped patient too
    assert linked["lits_001"] == "lits_001" and linked["lits_035"] == "lits_035"
    assert len(set(linked.values())) == 7
    for fold in range(5):
        train, validation = split_cases(link_same_scans(cases), fold, 5)
        assert {c.split_group for c in train}.isdisjoint({c.split_group for c in validation})

    from training.config import TrainConfig
    config = TrainConfig.model_validate({"name": "t", "output_dir": str(tmp_path / "run"), "datasets": [
        {"source": "lits", "path": str(lits)},
        {"source": "ircadb", "path": str(ircad), "options": {"unzip_dir": str(tmp_path / "unzip")}}]})
    gathered = {c.case_id: c.split_group for c in gather_cases(config)}
    assert gathered == linked  # training splits on the linked groups


def test_an_nnunet_v2_region_based_dataset_imports_as_exclusive_labels(tmp_path: Path) -> None:
    """``lvt export nnunet`` writes region-based labels ("liver": [1, 2, 3]); reading them back
    crashed with ``TypeError: unhashable type: 'list'``."""
    from training.export_nnunet import export_cases

    cohort = load_cases("synthetic", write_synthetic_cohort(tmp_path / "cohort", 2))
    out = tmp_path / "Dataset501_LVT"
    export_cases(cohort, out)
    cases = load_cases("msd_liver", out)
    assert [c.annotated for c in cases] == [("liver", "vessel", "tumor")] * 2
    for case, original in zip(cases, cohort, strict=True):
        assert np.array_equal(lvt_array(case), lvt_array(original))
    meta = json.loads((out / "dataset.json").read_text())
    del meta["regions_class_order"]
    (out / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"dataset\.json: region-based .*regions_class_order"):
        load_cases("msd_liver", out)


def test_the_folder_source_names_what_it_cannot_use(tmp_path: Path) -> None:
    """A misnamed label file dropped its image, an unmapped value (vessels left out of the
    mapping) became background inside an annotated liver, ``annotated: liver`` was split into
    letters: each is now said, with the file."""
    image, lab = ct_and_labels()
    raw = np.where(lab == 3, 2, np.where(lab == 2, 5, lab))  # vessel stored as 5
    root = tmp_path / "mine"
    for name in ("case0", "case1"):
        write_image(image, root / "img" / f"{name}_0000.nii.gz")
        write_image(labels_like(raw, image), root / "lab" / f"{name}.nii.gz")
    yaml_path = root / "mapping.yaml"
    yaml_path.write_text("images: img\nlabels: lab\nmapping: {1: liver, 2: tumor}\nannotated: liver\n")
    cases = load_cases("folder", root)
    assert [c.annotated for c in cases] == [("liver",), ("liver",)]
    with pytest.raises(DatasetError, match=r"case0\.nii\.gz: label value\(s\) \[5\] are not among"):
        cases[0].load()
    yaml_path.write_text("images: img\nlabels: lab\nmapping: {1: liver, 2: tumor, 5: background}\n")
    assert np.array_equal(lvt_array(load_cases("folder", root)[0]), np.where(lab == 2, 0, lab))
    (root / "lab" / "case0.nii.gz").rename(root / "lab" / "case0_seg.nii.gz")
    with pytest.raises(DatasetError, match=r"no label file named like image\(s\) \['case0_0000\.nii\.gz'\]"):
        load_cases("folder", root)
    yaml_path.write_text("images: img\nlabels: lab\nmapping: {1: liver}\nannotated: {liver: 1}\n")
    with pytest.raises(DatasetError, match="annotated must be a list"):
        load_cases("folder", root)
