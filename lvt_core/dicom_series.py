"""Writing a volume as a DICOM CT series: CT Image Storage, one file per slice.

UIDs come from the caller (derive them from stable seeds for reproducible output, e.g.
``pydicom.uid.generate_uid(entropy_srcs=[...])``); nothing here reads the clock, so the
same inputs give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


@dataclass(frozen=True)
class Deidentification:
    """What de-identification the stored data went through, written as PS3.15's attributes
    (PatientIdentityRemoved, DeidentificationMethod and its code sequence) on export, so a
    receiving PACS or research archive knows the pseudonyms are pseudonyms."""

    identity_removed: bool
    dates_shifted: bool = False

    def apply(self, ds: Dataset) -> None:
        """Set the attributes on ``ds`` (a CT slice or a SEG)."""
        ds.PatientIdentityRemoved = "YES" if self.identity_removed else "NO"
        if not self.identity_removed:
            return
        ds.DeidentificationMethod = [  # LO: 64 characters a value
            "LVT basic profile", "identifiers and UIDs: keyed pseudonyms",
            "names, birth dates, addresses: not kept",
            "dates shifted per patient" if self.dates_shifted else "dates kept",
        ]
        # PS3.16 CID 7050: the basic profile, and how dates were treated
        dates = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option") if self.dates_shifted \
            else ("113106", "Retain Longitudinal Temporal Information Full Dates Option")
        items = []
        for value, meaning in (("113100", "Basic Application Confidentiality Profile"), dates):
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = items


@dataclass(frozen=True)
class SeriesInfo:
    """Identity of the patient, study and series written into every slice."""

    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    study_date: dt.date | None
    """None writes the dates empty (Type 2): a made-up 1900 could not be ingested again."""
    study_time: str = "090000"
    series_description: str = ""
    series_number: int = 1
    patient_name: str = ""
    accession: str = ""
    study_description: str = "CT ABDOMEN"
    study_id: str = "1"
    patient_sex: str = "O"
    patient_birth_date: dt.date | None = None
    manufacturer: str = "LVT phantom"
    uid_entropy: Sequence[str] = ()
    """Strings that make the SOP instance UIDs reproducible; defaults to the series UID."""
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL")
    """DERIVED/SECONDARY for a series rendered from stored data rather than acquired."""
    deidentification: Deidentification | None = None
    """Written when known (an export of de-identified data); None leaves the attributes out."""


def write_ct_series(image: sitk.Image, out_dir: str | Path, info: SeriesInfo) -> list[Path]:
    """Write a 3D integer HU ``image`` as ``out_dir/0001.dcm``… (one file per slice).

    Geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) comes from the
    image's origin, direction and spacing, so reading the folder back gives the same grid.
    """
    array = sitk.GetArrayFromImage(image)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D image, got {array.ndim}D")
    if array.min() < -32768 or array.max() > 32767:
        raise ValueError("values do not fit int16 HU")
    array = array.astype(np.int16)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    row_dir, col_dir, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    sx, sy, sz = image.GetSpacing()
    origin = np.array(image.GetOrigin(), float)
    entropy = list(info.uid_entropy) or [info.series_uid]
    date = info.study_date.strftime("%Y%m%d") if info.study_date is not None else ""
    paths = []
    for k in range(array.shape[0]):
        position = origin + k * sz * normal
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[*entropy, "slice", str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = list(info.image_type)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = info.study_time
        ds.AccessionNumber = info.accession
        ds.Modality = "CT"
        ds.Manufacturer = info.manufacturer
        ds.StudyDescription = info.study_description
        ds.SeriesDescription = info.series_description
        ds.PatientName = info.patient_name or info.patient_id
        ds.PatientID = info.patient_id
        ds.PatientBirthDate = info.patient_birth_date.strftime("%Y%m%d") if info.patient_birth_date else ""
        ds.PatientSex = info.patient_sex
        ds.ReferringPhysicianName = ""  # Type 2: present, empty when unknown
        ds.BodyPartExamined = "ABDOMEN"  # unpaired, so no Laterality is due (Type 2C)
        ds.SliceThickness = f"{sz:.6g}"
        ds.SpacingBetweenSlices = f"{sz:.6g}"
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = info.study_uid
        ds.SeriesInstanceUID = info.series_uid
        ds.StudyID = info.study_id
        ds.SeriesNumber = info.series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
        ds.FrameOfReferenceUID = info.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{float(position @ normal):.6f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.PixelSpacing = [f"{sy:.6g}", f"{sx:.6g}"]  # row spacing, column spacing
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = array[k].tobytes()
        if info.deidentification is not None:
            info.deidentification.apply(ds)
        path = out_dir / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
