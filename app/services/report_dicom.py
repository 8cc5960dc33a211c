"""The follow-up report as a DICOM Encapsulated PDF, filed in the patient's latest study.

A PACS keeps documents beside the images as DICOM objects, and a radiologist opening the study
finds the report there, as the exported SEG and CT series are found. The PDF/A the page
downloads (:mod:`app.web.report_pdf`) is wrapped whole in an Encapsulated PDF instance
(PS3.3 A.45.1) of a new DOC series in the study, under the store's study UID (a pseudonym
where ingest de-identified, the original otherwise) and with the de-identification
attributes the other exports write.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from app.services.dicom_seg import MAX_PN_COMPONENT
from lvt_core import __version__ as lvt_version
from lvt_core.dicom_series import Deidentification

DOCUMENT_TITLE = "LVT follow-up report"
REPORT_CONCEPT = ("18748-4", "LN", "Diagnostic Imaging Report")
"""The document's kind, from PS3.16 CID 7020 (Document Titles)."""
ACCESSION_MAX = 16
SERIES_NUMBER = 9901
"""A high number, so the document's series sorts after the scanner's in a viewer's list."""


@dataclass(frozen=True)
class ReportStudy:
    """The study the report is filed in, as the store holds it."""

    patient_id: str
    study_uid: str
    study_date: dt.date | None
    accession: str | None
    deidentification: Deidentification | None


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def encapsulated_pdf(pdf: bytes, study: ReportStudy, now: dt.datetime) -> Dataset:
    """An Encapsulated PDF instance holding ``pdf``, in ``study``, made at ``now`` (UTC)."""
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("the document to encapsulate is not a PDF")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8
    ds.SOPClassUID, ds.SOPInstanceUID = EncapsulatedPDFStorage, meta.MediaStorageSOPInstanceUID
    # Patient and General Study: the study's own, so the document files beside its images
    ds.PatientID = study.patient_id
    ds.PatientName = f"{study.patient_id[:MAX_PN_COMPONENT]}^"  # as the exported CT series names the patient
    ds.PatientBirthDate, ds.PatientSex = "", ""  # Type 2: not kept by the store
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.study_date.strftime("%Y%m%d") if study.study_date else ""
    ds.StudyTime = ds.StudyID = ""  # Type 2: the store keeps neither
    # SH holds 16 characters: an original accession fits; a store's pseudonym ("A-" and 16 hex
    # digits) does not, and matches no PACS order anyway, so it is left empty (Type 2)
    accession = study.accession or ""
    ds.AccessionNumber = accession if len(accession) <= ACCESSION_MAX else ""
    ds.ReferringPhysicianName = ""
    # Encapsulated Document Series, General and SC Equipment
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = DOCUMENT_TITLE
    ds.Manufacturer = "LVT"
    ds.SoftwareVersions = lvt_version
    ds.ConversionType = "WSD"  # made on a workstation, not scanned
    # Encapsulated Document
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "YES"  # the pages name the patient
    ds.DocumentTitle = DOCUMENT_TITLE
    ds.ConceptNameCodeSequence = [_code(*REPORT_CONCEPT)]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)  # an OB value has even length
    if study.deidentification is not None:
        study.deidentification.apply(ds)
    return ds
