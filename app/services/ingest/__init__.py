"""Ingest of DICOM folders, zip files and NIfTI/NRRD volumes into the LVT store."""

from app.services.ingest.service import IngestError, IngestOptions, IngestReport, ingest_paths

__all__ = ["IngestError", "IngestOptions", "IngestReport", "ingest_paths"]
