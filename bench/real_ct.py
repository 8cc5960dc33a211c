"""Transfer check: the shipped model on the real CT samples in ``../shared/data/real``.

For each real scan it runs the Predictor, prints runtime, liver volume and the scan ends the
liver runs into (``lvt_core.coverage``), and where a reference liver exists the liver DSC
against it (our liver = labels 1–3): TotalSegmentator's output (label 5) on two scans, and the
manual mask of the three-slice dcmqi sample. Preview PNGs go to ``var/real_ct/<case>/`` to be
looked at.

    .venv/bin/python bench/real_ct.py [--model PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lvt_core.coverage import liver_coverage
from lvt_core.imageio import read_image
from lvt_core.inference import Predictor
from lvt_core.metrics import dice
from lvt_core.phantom.preview import write_previews

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real"
TOTALSEG_LIVER = 5
MANUAL_LIVER = 1
CASES: list[tuple[str, str, str | None, int]] = [  # name, scan, reference liver, its label
    ("totalseg_ct_sm", "totalsegmentator/example_ct_sm.nii.gz", "totalsegmentator/example_seg.nii.gz",
     TOTALSEG_LIVER),
    ("totalseg_ct_dicom", "totalsegmentator/example_ct_dicom", "totalsegmentator/example_seg_dicom.nii.gz",
     TOTALSEG_LIVER),
    ("totalseg_ct", "totalsegmentator/example_ct.nii.gz", None, 0),
    ("lits_volume0", "lits-volume-0-dicom", None, 0),
    ("dcmqi_3slice", "dcmqi-ct-3slice", "dcmqi-ct-3slice/liver_seg.nrrd", MANUAL_LIVER),
]


def crop_offset(whole: np.ndarray, crop: np.ndarray) -> int | None:
    """The first slice of ``whole`` from which ``crop`` repeats it voxel for voxel (``None``
    if nowhere): ``example_ct_sm`` is the top 30 slices of ``example_ct``, but its header keeps
    ``example_ct``'s origin, so the geometry cannot place it."""
    for start in range(whole.shape[0] - crop.shape[0] + 1):
        if np.array_equal(whole[start:start + crop.shape[0]], crop):
            return start
    return None


def crop_reference_dsc(labels: sitk.Image, image: sitk.Image) -> tuple[float, range] | None:
    """Liver DSC of ``example_ct``'s labels against TotalSegmentator's liver of
    ``example_ct_sm`` over the slices the two scans share, and those slices."""
    crop = sitk.GetArrayFromImage(read_image(REAL / "totalsegmentator/example_ct_sm.nii.gz"))
    start = crop_offset(sitk.GetArrayFromImage(image).astype(crop.dtype), crop)
    if start is None:
        return None
    ref = sitk.GetArrayFromImage(read_image(REAL / "totalsegmentator/example_seg.nii.gz")) == TOTALSEG_LIVER
    ours = sitk.GetArrayViewFromImage(labels)[start:start + crop.shape[0]] > 0
    return dice(ours, ref), range(start, start + crop.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("var/real_ct"))
    args = parser.parse_args()
    if not REAL.is_dir():
        print(f"real CT samples not found at {REAL}; nothing to do")
        return
    from app.settings import get_settings

    predictor = Predictor(args.model or get_settings().model_path, device="cpu")
    print(f"model {predictor.name} {predictor.version} sha256 {predictor.checksum[:12]}")
    print(f"{'case':<20} {'size':<16} {'spacing mm':<20} {'s':>6} {'liver ml':>9} "
          f"{'ref ml':>8} {'liver DSC':>9} {'tumor ml':>9}  liver cut at")
    for name, image_rel, ref_rel, ref_label in CASES:
        image = read_image(REAL / image_rel)
        started = time.perf_counter()
        labels = predictor.predict(image)
        seconds = time.perf_counter() - started
        lab = sitk.GetArrayViewFromImage(labels)
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        liver_ml = float((lab > 0).sum()) * voxel_ml
        tumor_ml = float((lab == 3).sum()) * voxel_ml
        ref_ml = dsc = float("nan")
        if ref_rel:
            ref_image = sitk.Resample(read_image(REAL / ref_rel), labels, sitk.Transform(),
                                      sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            ref = sitk.GetArrayViewFromImage(ref_image) == ref_label
            ref_ml = float(ref.sum()) * voxel_ml
            dsc = dice(lab > 0, ref)
        coverage = liver_coverage(labels)
        cut = "no liver" if not coverage.liver_found else (" and ".join(coverage.cut_at) or "-")
        oriented_image = sitk.DICOMOrient(image, "LPS")
        oriented_labels = sitk.DICOMOrient(labels, "LPS")
        write_previews(oriented_image, oriented_labels, args.out / name)
        spacing = "×".join(f"{s:.2f}" for s in image.GetSpacing())
        size = "×".join(str(s) for s in image.GetSize())
        print(f"{name:<20} {size:<16} {spacing:<20} {seconds:6.1f} {liver_ml:9.0f} "
              f"{ref_ml:8.0f} {dsc:9.3f} {tumor_ml:9.1f}  {cut}")
        if name == "totalseg_ct" and (shared := crop_reference_dsc(labels, image)) is not None:
            print(f"  its slices {shared[1].start}-{shared[1].stop - 1} are example_ct_sm's: liver DSC there "
                  f"{shared[0]:.3f} against TotalSegmentator")
    print(f"previews in {args.out}/<case>/preview_*.png")


if __name__ == "__main__":
    main()
