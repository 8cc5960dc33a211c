"""DICOM SEG export of a stored segmentation (highdicom, BINARY, SNOMED CT codes).

The store keeps each series as a NIfTI volume and, when ingest de-identifies, only
pseudonymous UIDs, so the original slices cannot be referenced. The export therefore writes
the referenced CT series itself (:func:`lvt_core.dicom_series.write_ct_series`, from the stored
voxels and the stored study/series UIDs; SOP instance UIDs are derived deterministically) and a
SEG that references it. Both share one frame of reference, so viewers overlay them exactly;
highdicom positions every frame from the source slices, so there are no hand-written flips.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from lvt_core.dicom_series import Deidentification
from lvt_core.labels import LIVER, TUMOR, VESSEL

DCIODVFY = "/usr/bin/dciodvfy"


def segment_descriptions(algorithm: str, version: str) -> list[hd.seg.SegmentDescription]:
    """Liver, vessel and tumor segments (numbers = LVT label values) with SNOMED CT codes."""
    algo = hd.AlgorithmIdentificationSequence(name=algorithm, version=version,
                                              family=codes.DCM.ArtificialIntelligence)
    spec = [
        (LIVER, "liver parenchyma", codes.SCT.AnatomicalStructure, codes.SCT.Liver),
        (VESSEL, "intrahepatic vessel", codes.SCT.AnatomicalStructure, codes.SCT.BloodVessel),
        (TUMOR, "tumor", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm),
    ]
    return [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=label, segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
        )
        for number, label, category, kind in spec
    ]


def write_source_series(
    image: sitk.Image, out_dir: Path, patient: str, study_uid: str, series_uid: str,
    study_date: dt.date | None, description: str | None,
    deidentification: Deidentification | None = None,
) -> list[Path]:
    """Write the stored CT volume as the DICOM series the SEG references.

    It is a new, derived series (its own Series UID, ImageType DERIVED\\SECONDARY) in the same
    study: under the stored Series UID, with new instances and Frame of Reference, a PACS
    holding the original would have merged two differing copies into one series.
    """
    from lvt_core.dicom_series import SeriesInfo, write_ct_series

    array = sitk.GetArrayFromImage(image)
    hu = sitk.GetImageFromArray(np.clip(np.rint(array), -32768, 32767).astype(np.int16))
    hu.CopyInformation(image)
    info = SeriesInfo(
        patient_id=patient, study_uid=study_uid, series_uid=exported_series_uid(series_uid),
        frame_of_reference_uid=generate_uid(entropy_srcs=[series_uid, "frame-of-reference"]),
        study_date=study_date, series_description=description or "",
        manufacturer="LVT", uid_entropy=[series_uid], patient_name=f"{patient[:MAX_PN_COMPONENT]}^",
        image_type=("DERIVED", "SECONDARY", "AXIAL"), deidentification=deidentification,
    )
    return write_ct_series(hu, out_dir, info)


MAX_PN_COMPONENT = 63
"""A person name holds 64 characters at most: the id, then the ``^`` of an empty given name."""


def exported_series_uid(stored_series_uid: str) -> str:
    """The Series UID of the CT a SEG export writes for a stored series (reproducible)."""
    return generate_uid(entropy_srcs=[stored_series_uid, "lvt-exported-ct"])


def build_segmentation(
    labels: sitk.Image, sources: list[pydicom.Dataset], algorithm: str, version: str,
    content_key: str = "", lvt_version: str | None = None,
) -> hd.seg.Segmentation:
    """A BINARY SEG of the exclusive label map; ``sources`` are the slices in index order.

    Its UIDs derive from the source series, the model and ``content_key`` (the label map's
    hash): exporting one segmentation twice gives the same instance, and a segmentation the
    pipeline redrew gives a new one instead of a second object under the old UID.
    ``SoftwareVersions`` names the model's version and, when known, the LVT pipeline's.
    """
    array = sitk.GetArrayFromImage(labels).astype(np.uint8)
    present = [d for d in segment_descriptions(algorithm, version)
               if (array == d.SegmentNumber).any()]
    if not present:
        raise ValueError("the label map is empty: nothing to put in a DICOM SEG")
    keep = np.isin(array, [d.SegmentNumber for d in present])
    array = np.where(keep, array, 0)
    # Renumber to 1..n (highdicom wants consecutive segment numbers).
    lut = np.zeros(256, np.uint8)
    for i, d in enumerate(present, start=1):
        lut[d.SegmentNumber] = i
        d.SegmentNumber = i
    series_uid = sources[0].SeriesInstanceUID
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=lut[array],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=present,
        series_instance_uid=generate_uid(entropy_srcs=[series_uid, algorithm, version, content_key, "seg"]),
        series_number=900,
        sop_instance_uid=generate_uid(entropy_srcs=[series_uid, algorithm, version, content_key, "seg-sop"]),
        instance_number=1,
        manufacturer="LVT",
        manufacturer_model_name=algorithm,
        software_versions=[version, f"LVT {lvt_version}"] if lvt_version else version,  # type: ignore[arg-type]
        device_serial_number="0",
        series_description=f"LVT {algorithm} {version}",
    )


def source_slices_in_order(labels: sitk.Image, files: list[Path]) -> list[pydicom.Dataset]:
    """The original slices ``labels`` was drawn on, one per slice in its index order, placed
    by each slice's position (not by file order): a SEG's frames reference them one by one.
    Raises ValueError for files that are not one single-frame slice per slice of the grid
    (an enhanced multi-frame CT, a series whose positions do not fall on the label map's grid)."""
    sources = [pydicom.dcmread(str(f)) for f in files]
    for ds in sources:  # an empty Specific Character Set (seen in real exports) means the default: say so
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet
    if any(int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 for ds in sources):
        raise ValueError("the series is an enhanced (multi-frame) CT; a SEG is written for classic "
                         "single-frame series only")
    slice_of = [labels.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])[2]
                for ds in sources]
    if sorted(slice_of) != list(range(labels.GetSize()[2])):
        raise ValueError("the series' slice positions do not fall one by one on the label map's slices")
    return [ds for _, ds in sorted(zip(slice_of, sources, strict=True), key=lambda pair: pair[0])]


def validated(seg_path: Path, labels: sitk.Image, out: Path, ct_slice: Path | None = None) -> dict[str, Any]:
    """Read the SEG back (highdicom), check it against the label map in world space and run
    ``dciodvfy`` on it (and on ``ct_slice``, a CT slice LVT wrote for it to reference); a
    problem is a UserError naming ``out`` and the counts."""
    from app.cli.common import UserError

    validation: dict[str, Any] = {
        "highdicom_segments": len(hd.seg.segread(str(seg_path)).SegmentSequence),
        "world_space_mismatched_pixels": check_against_labels(seg_path, labels),
        "dciodvfy": dciodvfy(seg_path),
    }
    if ct_slice is not None:  # the referenced series travels with it
        validation["ct_dciodvfy"] = dciodvfy(ct_slice)
    misplaced = validation["world_space_mismatched_pixels"]
    errors = [*validation["dciodvfy"].get("errors", []), *validation.get("ct_dciodvfy", {}).get("errors", [])]
    if misplaced or errors:
        raise UserError(f"{out}: validation failed, no SEG written: {misplaced} misplaced pixels, "
                        f"{len(errors)} dciodvfy error(s)" + (f" (first: {errors[0]})" if errors else ""))
    return validation


def dciodvfy(path: Path) -> dict[str, Any]:
    """Run dicom3tools' validator; ``errors`` lists its Error lines (skipped when absent)."""
    tool = shutil.which("dciodvfy") or (DCIODVFY if Path(DCIODVFY).is_file() else None)
    if tool is None:
        return {"skipped": "dciodvfy not installed (Debian package dicom3tools)"}
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return {
        "errors": [ln for ln in lines if ln.startswith("Error")],
        "warnings": [ln for ln in lines if ln.startswith("Warning")],
    }


def check_against_labels(seg_path: Path, labels: sitk.Image) -> int:
    """Map every SEG pixel to world space (its frame's position and orientation) and back into
    the label map; return how many pixels disagree (0 means correctly placed and oriented)."""
    from lvt_core.lesions import index_to_physical_matrix

    ds = pydicom.dcmread(str(seg_path))
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    numbers = {int(s.SegmentNumber): s.SegmentLabel for s in ds.SegmentSequence}
    by_label = {"liver parenchyma": LIVER, "intrahepatic vessel": VESSEL, "tumor": TUMOR}
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_spacing, col_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    rows, cols = np.meshgrid(np.arange(frames.shape[1]), np.arange(frames.shape[2]), indexing="ij")
    offsets = (cols[..., None] * col_spacing * iop[:3] + rows[..., None] * row_spacing * iop[3:])
    matrix, origin = index_to_physical_matrix(labels)
    inverse = np.linalg.inv(matrix)
    array = sitk.GetArrayFromImage(labels)
    mismatches = 0
    for frame, group in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        position = np.array(group.PlanePositionSequence[0].ImagePositionPatient, float)
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        world = (position + offsets).reshape(-1, 3)
        ijk = np.rint((world - origin) @ inverse.T).astype(int)
        inside = np.all((ijk >= 0) & (ijk < np.array(labels.GetSize())), axis=1)
        expected = np.zeros(len(ijk), bool)
        i, j, k = ijk[inside].T
        expected[inside] = array[k, j, i] == by_label[numbers[segment]]
        mismatches += int((expected != frame.reshape(-1).astype(bool)).sum())
    return mismatches
