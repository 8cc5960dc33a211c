"""DICOM discovery: read headers, group slices into series, check their geometry, decode.

Slices group by SeriesInstanceUID; within one UID, localizer slices are skipped and a slice
of another orientation, matrix size or pixel spacing than the rest (the parts of GDCM's
refined series id that matter for a volume) is an error naming the file. An enhanced
(multi-frame) CT file becomes one slice per frame, with the frame's functional groups as its
geometry, so it passes the same checks. Geometry problems are found from the slice positions
before any pixel is decoded.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from lvt_core.imageio import slice_gaps

UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
TILT_TOLERANCE_DEG = 0.5
NONUNIFORM_TOLERANCE = 0.01  # steps varying less are ITK's own
NONUNIFORM_WARNING = 0.10  # a step further than this from the mean is worth a warning
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
SPACING_TOLERANCE = 1e-3  # relative: PixelSpacing differing less is rounding in the export
IN_PLANE_TOLERANCE = 0.1  # pixels: a slice further off the stack's line was moved in-plane
AIR_HU = -1024


class DicomFileError(ValueError):
    """A file that looks like DICOM but is corrupt or truncated; the message names it."""


@dataclass
class Slice:
    """Header facts of one DICOM file."""

    path: Path
    header: pydicom.Dataset
    frame: int | None = None  # the frame of a multi-frame file (0-based), else None

    @property
    def label(self) -> str:
        """The file, and the frame of a multi-frame file, as errors name it."""
        return str(self.path) if self.frame is None else f"{self.path} (frame {self.frame + 1})"

    @property
    def instance(self) -> str:
        """SOPInstanceUID (with the frame for a multi-frame file), or the label without one."""
        uid = str(self.header.get("SOPInstanceUID", "") or "")
        if not uid:
            return self.label
        return uid if self.frame is None else f"{uid}#{self.frame}"


@dataclass
class DicomSeries:
    """The slices of one series, with what was found wrong with them."""

    series_uid: str
    slices: list[Slice]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    step_mm: float | None = None  # the slice step to store when the steps vary
    acquisition: str | None = None  # "AcquisitionNumber 2": one of several under the UID

    @property
    def first(self) -> pydicom.Dataset:
        return self.slices[0].header

    @property
    def source_key(self) -> str:
        """What tells this scan from every other in the sources: the SeriesInstanceUID, and
        for one of several acquisitions under it, which one (``lvt-`` prefix: not a UID)."""
        if self.acquisition is None:
            return self.series_uid
        return f"lvt-acquisition:{self.series_uid}:{self.acquisition}"

    def tag(self, name: str) -> str | None:
        value = self.first.get(name)
        return None if value is None else str(value)


def read_header(path: Path) -> pydicom.Dataset | None:
    """The header of ``path``; None when it is not DICOM; DicomFileError when corrupt.

    Pixel data is not loaded (deferred), but its presence and, for uncompressed transfer
    syntaxes, its length against the file size are checked, so truncated files are found
    before decoding starts. Files without the Part-10 preamble and file meta (older PACS and
    archives) are read as GDCM reads them, see :func:`_read_without_meta`.
    """
    try:
        header = pydicom.dcmread(str(path), defer_size=1024)
    except InvalidDicomError:
        bare = _read_without_meta(path)
        if bare is None:
            return None
        header = bare
    except Exception as exc:
        raise DicomFileError(f"{path}: corrupt DICOM file ({type(exc).__name__}: {exc})") from None
    meta_sop = str(getattr(header.file_meta, "MediaStorageSOPClassUID", "") or "")
    if meta_sop == DICOMDIR_SOP_CLASS:
        return None
    if "PixelData" not in header:
        if "Rows" in header:
            raise DicomFileError(
                f"{path}: truncated DICOM file (image attributes but no pixel data)"
            )
        if not any(tag in header for tag in ("SOPClassUID", "SeriesInstanceUID", "Modality")):
            if header.preamble is not None or meta_sop:
                raise DicomFileError(
                    f"{path}: corrupt or truncated DICOM file (no readable data elements)"
                )
            return None
        return header  # a non-image object (SR, RTSTRUCT...): skipped later with its modality
    syntax = str(getattr(header.file_meta, "TransferSyntaxUID", "1.2.840.10008.1.2"))
    if syntax in UNCOMPRESSED and "Rows" in header:
        expected = (
            int(header.Rows)
            * int(header.Columns)
            * int(header.get("BitsAllocated", 16))
            // 8
            * int(header.get("SamplesPerPixel", 1))
            * int(header.get("NumberOfFrames", 1) or 1)
        )
        # bytes after the start of the pixel data value (the raw element knows where it was):
        # a slice cut short by a few hundred bytes is then found too, not only one smaller
        # than its pixel data alone
        start = getattr(header.get_item("PixelData"), "value_tell", None) or 0
        if path.stat().st_size - start < expected:
            raise DicomFileError(
                f"{path}: truncated DICOM file ({path.stat().st_size} bytes, pixel data "
                f"from byte {start} needs {expected})"
            )
    return header


def _read_without_meta(path: Path) -> pydicom.FileDataset | None:
    """A bare DICOM data set (no preamble, no file meta), or None for any other file.

    pydicom refuses such files unless forced, and forced it parses nearly any bytes; so the
    result counts only with the tags every DICOM object carries (SOPClassUID, Modality).
    """
    try:
        header = pydicom.dcmread(str(path), defer_size=1024, force=True)
    except Exception:
        return None
    if "SOPClassUID" not in header or "Modality" not in header:
        return None
    return header


@dataclass(frozen=True)
class Geometry:
    """Orientation (rounded), matrix size and pixel spacing: what one volume's slices share."""

    orientation: tuple[float, ...]
    rows: object
    columns: object
    spacing: tuple[float, ...]

    def matches(self, other: Geometry) -> bool:
        """Equal, but for pixel spacings within SPACING_TOLERANCE (decimal rounding)."""
        if (self.orientation, self.rows, self.columns) != (other.orientation, other.rows, other.columns):
            return False
        if len(self.spacing) != len(other.spacing):
            return False
        return all(
            abs(a - b) <= SPACING_TOLERANCE * max(abs(a), abs(b))
            for a, b in zip(self.spacing, other.spacing, strict=True)
        )


def _geometry(header: pydicom.Dataset) -> Geometry:
    """The geometry of one slice's grid; slices stacked into a volume must share it, since
    the volume is stored on the first slice's grid."""
    orientation = tuple(round(float(v), 3) for v in header.get("ImageOrientationPatient", []))
    spacing = tuple(float(v) for v in header.get("PixelSpacing", []) or [])
    return Geometry(orientation, header.get("Rows"), header.get("Columns"), spacing)


def _describe(key: Geometry) -> str:
    shown = "[" + ", ".join(f"{v:g}" for v in key.orientation) + "]" if key.orientation else "none"
    spacing = " x ".join(f"{v:g}" for v in key.spacing) + " mm" if key.spacing else "none"
    return f"{key.rows}x{key.columns} pixels, orientation {shown}, pixel spacing {spacing}"


def _by_geometry(slices: list[Slice]) -> list[list[Slice]]:
    """Slices in groups of matching geometry, the largest first (ties: in file order)."""
    groups: list[tuple[Geometry, list[Slice]]] = []
    for s in slices:
        key = _geometry(s.header)
        for known, members in groups:
            if known.matches(key):
                members.append(s)
                break
        else:
            groups.append((key, [s]))
    return sorted((members for _, members in groups), key=len, reverse=True)


def group_series(slices: list[Slice]) -> tuple[list[DicomSeries], list[tuple[str, str]]]:
    """Group slices into series; return (series, skipped (source, reason)).

    Localizer slices filed under a CT series' UID are skipped; several acquisitions under one
    UID (a multiphase series) become one series each (see ``split_acquisitions``); any other
    slice of another size, orientation or pixel spacing is an error of the series naming the
    file, since dropping it would leave a gap or silently shorten the volume, and stacking it
    would put it on the wrong grid. Multi-frame files are split into their frames first.
    """
    slices, unsupported = expand_frames(slices)
    by_uid: dict[str, list[Slice]] = defaultdict(list)
    skipped: list[tuple[str, str]] = []
    for s in slices:
        by_uid[series_key(s.header)].append(s)
    series: list[DicomSeries] = []
    for uid, members in by_uid.items():
        images = [s for s in members if "LOCALIZER" not in _image_type(s.header)]
        if images and len(images) < len(members):
            skipped.append(
                (
                    str(members[0].path.parent),
                    f"series {uid}: {len(members) - len(images)} localizer slice(s) (ImageType "
                    "LOCALIZER) inside the series",
                )
            )
            members = images
        parts = split_acquisitions(members) if images else [(None, members)]
        for acquisition, part in parts:
            found = _one_geometry(uid, part, checked=bool(images))
            found.errors.extend(unsupported[s.path] for s in part if s.path in unsupported)
            if acquisition is not None:
                found.acquisition = acquisition
                found.warnings.append(
                    f"one of {len(parts)} acquisitions under one SeriesInstanceUID "
                    f"(told apart by {acquisition.split()[0]}), stored as a scan of its own"
                )
            series.append(found)
    return series, skipped


def _one_geometry(uid: str, members: list[Slice], checked: bool) -> DicomSeries:
    """The series of ``members``' usual geometry, naming each slice of another (when
    ``checked``: slices without geometry belong to a secondary capture, skipped later)."""
    groups = _by_geometry(members)
    found = DicomSeries(uid, groups[0])
    if checked and len(groups) > 1:
        usual = _describe(_geometry(groups[0][0].header))
        odd = [s for group in groups[1:] for s in group]
        found.errors.extend(
            f"{s.label}: {_describe(_geometry(s.header))} where the series' other "
            f"{len(groups[0])} slices have {usual}"
            for s in odd[:5]
        )
        if len(odd) > 5:
            found.errors.append(
                f"and {len(odd) - 5} more slice(s) of another size, orientation or pixel spacing"
            )
    return found


ACQUISITION_TAGS = ("StackID", "TemporalPositionIndex", "FrameAcquisitionNumber",
                    "TemporalPositionIdentifier", "AcquisitionNumber")
"""Tags that tell acquisitions under one SeriesInstanceUID apart, the most specific first:
an enhanced CT's stack and temporal position (from each frame's FrameContentSequence), then
a classic slice's temporal position and acquisition number."""


def split_acquisitions(slices: list[Slice]) -> list[tuple[str | None, list[Slice]]]:
    """``slices`` as one or more acquisitions: [(label such as "AcquisitionNumber 2", slices)],
    or [(None, slices)] when they are one.

    A scanner or an export may file the arterial and portal phase (or a perfusion's time
    points) under one SeriesInstanceUID; stacked as one volume, their slices repeat
    positions. They are split by the first of ACQUISITION_TAGS whose values part the slices
    into groups of two or more that share a position or differ in grid (another field of
    view): that is several volumes. Values that merely vary (some scanners number every
    slice's acquisition) leave the series whole, and its duplicate positions an error.
    """
    for tag in ACQUISITION_TAGS:
        groups: dict[str, list[Slice]] = defaultdict(list)
        for s in slices:
            groups[str(s.header.get(tag, "") or "").strip()].append(s)
        if len(groups) < 2 or "" in groups or min(len(g) for g in groups.values()) < 2:
            continue
        if _overlap(list(groups.values())):
            ordered = sorted(groups.items(), key=lambda item: _number_first(item[0]))
            return [(f"{tag} {value}", members) for value, members in ordered]
    return [(None, slices)]


def _overlap(groups: list[list[Slice]]) -> bool:
    """Whether groups of slices share a position or differ in grid: several volumes."""
    owner: dict[tuple[float, ...], int] = {}
    for index, members in enumerate(groups):
        for s in members:
            position = s.header.get("ImagePositionPatient")
            if position is None:
                return False
            key = tuple(round(float(v), 2) for v in position)
            if owner.setdefault(key, index) != index:
                return True
    grids = [_geometry(members[0].header) for members in groups]
    return any(not grids[0].matches(other) for other in grids[1:])


def _number_first(value: str) -> tuple[float, str]:
    """Sort key: numeric values in number order (2 before 10), then text."""
    try:
        return float(value), value
    except ValueError:
        return math.inf, value


def series_key(header: pydicom.Dataset) -> str:
    """SeriesInstanceUID, or for anonymised files without one a GDCM-style id built from
    the tags that stay constant within a series (``lvt-gdcm:`` prefix)."""
    uid = str(header.get("SeriesInstanceUID", "") or "").strip()
    if uid:
        return uid
    parts = [
        str(header.get(tag, "") or "")
        for tag in (
            "StudyInstanceUID",
            "FrameOfReferenceUID",
            "SeriesNumber",
            "SeriesDescription",
            "SeriesDate",
            "SeriesTime",
            "Rows",
            "Columns",
        )
    ]
    return "lvt-gdcm:" + "|".join(parts)


CT_VOLUME_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"}
FRAME_GROUPS = "PerFrameFunctionalGroupsSequence"
NOT_PER_FRAME = {
    pydicom.tag.Tag(k) for k in (FRAME_GROUPS, "SharedFunctionalGroupsSequence", "PixelData")
}


class _Unsupported(ValueError):
    """An enhanced multi-frame file whose frames cannot be placed; the message says why."""


def expand_frames(slices: list[Slice]) -> tuple[list[Slice], dict[Path, str]]:
    """Replace each enhanced multi-frame file by one slice per frame; return (slices,
    {path: error}) for the files whose frames cannot be placed (kept whole, then refused).

    Enhanced CT keeps a frame's position, and possibly its orientation, spacing and rescale,
    in the per-frame and shared functional groups rather than at the top level.
    """
    out: list[Slice] = []
    unsupported: dict[Path, str] = {}
    for s in slices:
        if FRAME_GROUPS not in s.header:
            out.append(s)
            continue
        try:
            out.extend(_frames(s))
        except _Unsupported as exc:
            unsupported[s.path] = f"{s.path}: Enhanced multi-frame CT not supported because {exc}"
            out.append(s)
    return out, unsupported


def _frames(s: Slice) -> list[Slice]:
    """One slice per frame of ``s``, each header the file's top level plus its frame's
    functional groups (position, orientation, pixel measures, rescale)."""
    header = s.header
    per_frame = list(header[FRAME_GROUPS].value)
    count = int(header.get("NumberOfFrames", 1) or 1)
    if len(per_frame) != count:
        raise _Unsupported(f"it has {len(per_frame)} per-frame functional groups for {count} frames")
    shared_groups = header.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()]
    shared = shared_groups[0]
    # iterating a Dataset would read every element, the deferred pixel data included
    top = {tag: header[tag] for tag in header.keys() if tag not in NOT_PER_FRAME}  # noqa: SIM118
    frames = []
    for index, own in enumerate(per_frame):
        ds = pydicom.Dataset(dict(top))
        ds.file_meta = header.file_meta
        for macro, keywords in (
            ("PlanePositionSequence", ("ImagePositionPatient",)),
            ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
            ("PixelMeasuresSequence", ("PixelSpacing", "SliceThickness")),
            ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
        ):
            item = _macro(own, shared, macro)
            for keyword in keywords:
                if item is not None and keyword in item:
                    _set(ds, keyword, item[keyword].value)
        _frame_content(own, ds)
        for needed, macro in (
            ("ImagePositionPatient", "PlanePositionSequence"),
            ("ImageOrientationPatient", "PlaneOrientationSequence"),
            ("PixelSpacing", "PixelMeasuresSequence"),
        ):
            if needed not in ds:
                raise _Unsupported(f"frame {index + 1} has no {needed} (no {macro} in its functional groups)")
        frames.append(Slice(s.path, ds, index))
    return frames


def _frame_content(own: pydicom.Dataset, ds: pydicom.Dataset) -> None:
    """Copy the frame's stack, temporal position and acquisition (FrameContentSequence) onto
    ``ds``, as a classic slice carries them: they tell several acquisitions in one file apart,
    and the acquisition time dates the frame's contrast phase."""
    content = own.get("FrameContentSequence")
    if not content:
        return
    item = content[0]
    for keyword in ("StackID", "TemporalPositionIndex", "FrameAcquisitionNumber"):
        if keyword in item:
            _set(ds, keyword, item[keyword].value)
    stamp = str(item.get("FrameAcquisitionDateTime", "") or "")
    if len(stamp) >= 14:  # YYYYMMDDHHMMSS[.FFFFFF][&ZZXX]
        _set(ds, "AcquisitionDate", stamp[:8])
        _set(ds, "AcquisitionTime", stamp[8:].split("+")[0].split("-")[0])


def _set(ds: pydicom.Dataset, keyword: str, value: object) -> None:
    """Give ``ds`` its own element: the frames' datasets share the file's top-level elements,
    and setting a shared one's value would set it for every frame."""
    if keyword in ds:
        del ds[keyword]
    setattr(ds, keyword, value)


def _macro(own: pydicom.Dataset, shared: pydicom.Dataset, name: str) -> pydicom.Dataset | None:
    """A functional group macro's item for one frame: its own, else the shared one."""
    for groups in (own, shared):
        value = groups.get(name)
        if value:
            return value[0]
    return None


def _image_type(header: pydicom.Dataset) -> set[str]:
    value = header.get("ImageType") or []
    values = [value] if isinstance(value, str) else list(value)
    return {str(v).strip().upper() for v in values}


def not_a_volume(series: DicomSeries) -> str | None:
    """Why a series is no 3D volume but an export's by-product (scout, dose screen), or None.

    Such series come with nearly every CT export; refusing them would refuse the export,
    so they are skipped with this reason. A CT image series lacking geometry stays an error.
    """
    if any("LOCALIZER" in _image_type(s.header) for s in series.slices):
        return "a localizer (scout) image (ImageType LOCALIZER), not a 3D volume"
    first = series.first
    # an anonymiser may blank SOPInstanceUID (TotalSegmentator's example): then each file counts
    single = len({s.instance for s in series.slices}) == 1
    if FRAME_GROUPS in first:  # an enhanced CT whose frames could not be placed: its error says why
        return None
    if "ImagePositionPatient" not in first or "ImageOrientationPatient" not in first:
        sop_class = str(first.get("SOPClassUID", "") or "")
        if single or sop_class not in CT_VOLUME_SOP_CLASSES or "SECONDARY" in _image_type(first):
            return (
                "no ImagePositionPatient/ImageOrientationPatient: a secondary capture "
                "(e.g. a dose screen), not a 3D volume"
            )
        return None
    if single:
        return "a single slice (a scout?), not a 3D volume"
    return _derived_view(first)


PROJECTION_TYPES = {"MIP", "MINIP", "MIN IP", "MAX IP", "PROJECTION IMAGE", "VOLUME RENDER", "VR", "CURVED"}
"""ImageType values of a rendering rather than a volume of Hounsfield units."""


def _derived_view(first: pydicom.Dataset) -> str | None:
    """Why a DERIVED series is another view of a scan rather than a scan, or None.

    Exports carry coronal and sagittal reformats and maximum-intensity projections beside the
    axial series they came from. Ingested, a reformat became a second scan of its phase (the
    day's volumetry compared the scan with itself) and a projection's slab maxima are no
    Hounsfield units to segment. Axial derived series (thick-slice reconstructions) are kept.
    """
    image_type = _image_type(first)
    if "DERIVED" not in image_type:
        return None
    if shown := image_type & PROJECTION_TYPES:
        return (f"a derived projection or rendering (ImageType {'/'.join(sorted(shown))}), not "
                "a volume of Hounsfield units")
    normal = _normal(first)
    if abs(normal[2]) < np.cos(np.deg2rad(45.0)):
        plane = "coronal" if abs(normal[1]) >= abs(normal[0]) else "sagittal"
        return (f"a derived {plane} reformat (ImageType DERIVED, slices not axial) of a scan "
                "ingested from its axial series")
    return None


def _normal(header: pydicom.Dataset) -> np.ndarray:
    o = np.array([float(v) for v in header.ImageOrientationPatient])
    return np.cross(o[:3], o[3:])


def _same_pixels(a: Path, b: Path) -> bool:
    """Whether two files hold the same pixel data (bytes, else decoded values)."""
    try:
        first, second = pydicom.dcmread(str(a)), pydicom.dcmread(str(b))
        if first.get("PixelData") == second.get("PixelData"):
            return True
        return bool(np.array_equal(first.pixel_array, second.pixel_array))
    except Exception:
        return False


def _shared_instance_uids(slices: list[Slice], positions: list[np.ndarray]) -> list[str]:
    """Files that share one SOPInstanceUID but are not copies of one slice, named in pairs.

    A copy (same position, same pixels) is dropped later; the same UID at another position,
    or with other pixels, means one of the files is wrong and no file order can tell which.
    """
    by_uid: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(slices):
        if s.header.get("SOPInstanceUID"):
            by_uid[s.instance].append(i)
    problems = []
    for uid, members in by_uid.items():
        first = members[0]
        for other in members[1:]:
            a, b = slices[first].path, slices[other].path
            if not np.allclose(positions[first], positions[other], atol=1e-3):
                at = ", ".join(f"{float(v):.2f}" for v in positions[other])
                problems.append(
                    f"{a} and {b} share SOPInstanceUID {uid} but lie at different positions "
                    f"(the second at {at} mm): two slices cannot be one instance"
                )
            elif not _same_pixels(a, b):
                problems.append(
                    f"{a} and {b} are the same slice (SOPInstanceUID {uid}) with different "
                    "pixel data: conflicting copies, remove the wrong one"
                )
    return problems


def check_series(series: DicomSeries) -> None:
    """Sort slices along the normal and record tilt, gaps, duplicates and spacing issues."""
    first = series.first
    if "ImagePositionPatient" not in first or "ImageOrientationPatient" not in first:
        series.errors.append("slices carry no ImagePositionPatient/ImageOrientationPatient")
        return
    normal = _normal(first)
    positions = [np.array([float(v) for v in s.header.ImagePositionPatient]) for s in series.slices]
    order = np.argsort([float(np.dot(normal, p)) for p in positions], kind="stable")
    series.slices = [series.slices[i] for i in order]
    positions = [positions[i] for i in order]
    if problems := _shared_instance_uids(series.slices, positions):
        series.errors.extend(problems)
        return
    if len(series.slices) < 2:
        series.errors.append("a single slice is not a 3D volume")
        return
    if moved := _moved_in_plane(series.slices, np.array(positions), first):
        series.errors.extend(moved)
        return
    tilt_tag = float(first.get("GantryDetectorTilt", 0) or 0)
    step = positions[-1] - positions[0]
    if np.linalg.norm(step) > 0:
        cos = abs(float(np.dot(step, normal))) / float(np.linalg.norm(step))
        tilt = math.degrees(math.acos(min(1.0, cos)))
    else:
        tilt = 0.0
    if abs(tilt_tag) > TILT_TOLERANCE_DEG or tilt > TILT_TOLERANCE_DEG:
        series.errors.append(
            f"gantry tilt of {max(abs(tilt_tag), tilt):.1f}° (slices are sheared); "
            "reconstruct or resample to axial slices before ingest"
        )
        return
    z = np.array([float(np.dot(normal, p)) for p in positions])
    diffs = np.diff(z)
    duplicates = int((np.abs(diffs) < 1e-3).sum())
    if duplicates:
        uids = {s.instance for s in series.slices}
        if len(uids) == len(series.slices) - duplicates and len(uids) == len(set(np.round(z, 3))):
            series.warnings.append(f"{duplicates} duplicate file(s) of the same slice were ignored")
            keep = [0, *[i + 1 for i, d in enumerate(diffs) if abs(d) >= 1e-3]]
            series.slices = [series.slices[i] for i in keep]
            z = z[keep]
            diffs = np.diff(z)
            if len(series.slices) < 2:  # copies of one file: still a single slice
                series.errors.append("a single slice is not a 3D volume")
                return
        else:
            pairs = [i for i, d in enumerate(diffs) if abs(d) < 1e-3]
            at = "; ".join(
                f"{series.slices[i].label} and {series.slices[i + 1].label} at {z[i]:.2f} mm"
                for i in pairs[:3]
            )
            more = f" and {len(pairs) - 3} more" if len(pairs) > 3 else ""
            series.errors.append(
                f"{duplicates} duplicate slice position(s): {at}{more} (several acquisitions "
                "under one SeriesInstanceUID?)"
            )
            return
    gaps, step_mm = slice_gaps(z)
    if len(gaps):
        i = int(gaps[0])
        missing = round(float(diffs[gaps].sum()) / step_mm) - len(gaps)
        series.errors.append(
            f"missing slices: about {missing} slice(s) absent, first gap of {diffs[i]:.2f} mm "
            f"between {series.slices[i].label} ({z[i]:.2f} mm) and {series.slices[i + 1].label} "
            f"({z[i + 1]:.2f} mm) where {step_mm:.2f} mm is expected"
        )
        return
    _check_uniform(series, z, diffs)


def _moved_in_plane(slices: list[Slice], positions: np.ndarray, first: pydicom.Dataset) -> list[str]:
    """Slices whose position lies off the stack's line by more than IN_PLANE_TOLERANCE pixels,
    named; the volume is stored on the first slice's grid, so a slice whose reconstruction
    centre moved would be stacked shifted.

    The line (a slope per mm along the normal, for a tilted stack, and an offset) is the
    median over the slices, so the moved slices are the ones named even at the ends.
    """
    o = np.array([float(v) for v in first.ImageOrientationPatient])
    normal = np.cross(o[:3], o[3:])
    z = positions @ normal
    in_plane = positions @ np.column_stack([o[:3], o[3:]])  # mm along rows, along columns
    steps = np.diff(z)
    apart = np.abs(steps) >= 1e-3
    if not apart.any():
        return []
    slope = np.median(np.diff(in_plane, axis=0)[apart] / steps[apart, None], axis=0)
    offset = np.median(in_plane - z[:, None] * slope, axis=0)
    off = in_plane - z[:, None] * slope - offset
    spacing = first.get("PixelSpacing") or [1.0, 1.0]  # ITK's default when it is missing
    row_mm, col_mm = (float(v) for v in spacing)  # between rows, between columns
    tolerance = IN_PLANE_TOLERANCE * np.array([col_mm, row_mm])
    moved = np.nonzero((np.abs(off) > tolerance).any(axis=1))[0]
    problems = [
        f"{slices[i].label}: moved in-plane by {float(np.hypot(*off[i])):.2f} mm ({off[i][0]:+.2f} mm "
        f"along the rows, {off[i][1]:+.2f} mm along the columns) from the line of the series' "
        f"other {len(slices) - len(moved)} slices (reconstruction centre changed?)"
        for i in moved[:5]
    ]
    if len(moved) > 5:
        problems.append(f"and {len(moved) - 5} more slice(s) moved in-plane")
    return problems


def _padding(header: pydicom.Dataset) -> tuple[int, int] | None:
    """The stored pixel values that are padding (PixelPaddingValue up to
    PixelPaddingRangeLimit, inclusive), or None; read in the pixels' own signedness, since
    the VR (US or SS) is often written wrong."""
    if header.get("PixelPaddingValue") is None:
        return None
    values = [int(header.PixelPaddingValue)]
    if header.get("PixelPaddingRangeLimit") is not None:
        values.append(int(header.PixelPaddingRangeLimit))
    bits = int(header.get("BitsAllocated", 16) or 16)
    signed = int(header.get("PixelRepresentation", 0) or 0) == 1
    values = [_as_stored(v, bits, signed) for v in values]
    return min(values), max(values)


def _as_stored(value: int, bits: int, signed: bool) -> int:
    """``value`` as a ``bits``-bit integer of the pixels' signedness (two's complement)."""
    value %= 1 << bits
    return value - (1 << bits) if signed and value >= 1 << (bits - 1) else value


def _shown_range(padding: tuple[int, int]) -> str:
    low, high = padding
    return str(low) if low == high else f"{low} to {high}"


def _check_uniform(series: DicomSeries, z: np.ndarray, diffs: np.ndarray) -> None:
    """Set the stored step of a series whose steps vary, warning when they vary much.

    The step is (last - first)/(n - 1), so the volume spans what was scanned (the median
    step of alternating 3.6/4.4 mm would stretch it); gaps are refused before this.
    """
    step = float(z[-1] - z[0]) / (len(z) - 1)
    if float(diffs.max() - diffs.min()) / step <= NONUNIFORM_TOLERANCE:
        return
    series.step_mm = step
    off = float(np.abs(diffs - step).max()) / step
    if off > NONUNIFORM_WARNING:
        series.warnings.append(
            f"non-uniform slice spacing: steps of {diffs.min():.3f}–{diffs.max():.3f} mm differ "
            f"by up to {off:.1%} from the mean step; stored with {step:.3f} mm (first to last "
            "slice over n − 1), so the extent is kept but slices between are placed evenly"
        )


def decode(series: DicomSeries) -> sitk.Image:
    """Decode the sorted slices into one volume in HU (GDCM, else pydicom + pylibjpeg).

    Frames of a multi-frame file are decoded with pydicom (GDCM reads files, not frames).
    Pixel padding becomes air, with a warning on ``series`` when any voxel held it. A file
    that neither decoder reads is named in the :class:`DicomFileError`.
    """
    image = None
    if all(s.frame is None for s in series.slices):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(s.path) for s in series.slices])
        with suppress(RuntimeError):  # a transfer syntax GDCM lacks: pydicom below
            image = reader.Execute()
    if image is None:
        image = _decode_with_pydicom(series)
    image = _pad_to_air(image, series)
    if series.step_mm is not None:
        spacing = list(image.GetSpacing())
        spacing[2] = series.step_mm
        image.SetSpacing(spacing)
    return image


def _rescale(header: pydicom.Dataset) -> tuple[float, float]:
    return float(header.get("RescaleSlope", 1) or 1), float(header.get("RescaleIntercept", 0) or 0)


def _narrow(volume: np.ndarray) -> np.ndarray:
    """A float volume as int16 when its values are whole and in range (HU usually are)."""
    if not np.issubdtype(volume.dtype, np.floating):
        return volume
    if np.allclose(volume, np.round(volume)) and volume.min() >= -32768 and volume.max() <= 32767:
        return volume.astype(np.int16)
    return volume


def _pad_to_air(image: sitk.Image, series: DicomSeries) -> sitk.Image:
    """``image`` with the voxels whose stored value is pixel padding set to air.

    The stored value is recovered from the HU value with the slice's own rescale, so this
    holds for both decoders; padding stored as HU was up to 62512 (unsigned, intercept
    −1024) or −2000 outside the field of view.
    """
    ranges = [_padding(s.header) for s in series.slices]
    if not any(ranges):
        return image
    volume = sitk.GetArrayFromImage(image)
    replaced = 0
    for k, (s, padding) in enumerate(zip(series.slices, ranges, strict=True)):
        if padding is None:
            continue
        slope, intercept = _rescale(s.header)
        stored = np.rint((volume[k].astype(np.float64) - intercept) / slope)
        outside = (stored >= padding[0]) & (stored <= padding[1])
        volume[k][outside] = AIR_HU
        replaced += int(np.count_nonzero(outside))
    if not replaced:  # declared but never used: nothing changed, nothing to say
        return image
    shown = _shown_range(next(padding for padding in ranges if padding is not None))
    series.warnings.append(f"pixel padding (stored value {shown}, outside the reconstructed field of view) "
                           f"is stored as air, {AIR_HU} HU ({replaced} voxels)")
    padded = sitk.GetImageFromArray(_narrow(volume))
    padded.CopyInformation(image)
    return padded
@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's logger: for a damaged file its decoders log a traceback per plugin
    (about 60 lines) before the one clear DicomFileError naming the file."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _decode_with_pydicom(series: DicomSeries) -> sitk.Image:
    planes = []
    decoded: dict[Path, np.ndarray] = {}  # a multi-frame file is decoded once
    for s in series.slices:
        if s.path not in decoded:
            try:
                with _quiet_pydicom():
                    decoded[s.path] = pydicom.dcmread(str(s.path)).pixel_array
            except Exception as exc:
                raise DicomFileError(f"{s.path}: cannot decode pixel data ({exc})") from None
        pixels = decoded[s.path]
        if s.frame is not None and pixels.ndim == 3:
            pixels = pixels[s.frame]
        slope, intercept = _rescale(s.header)
        planes.append(pixels.astype(np.float32) * slope + intercept)
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise DicomFileError(f"{series.slices[0].path.parent}: slices differ in size {shapes}")
    image = sitk.GetImageFromArray(_narrow(np.stack(planes)))
    first = series.first
    o = np.array([float(v) for v in first.ImageOrientationPatient])
    normal = np.cross(o[:3], o[3:])
    positions = [np.array([float(v) for v in s.header.ImagePositionPatient]) for s in series.slices]
    dz = series.step_mm or float(np.median(np.diff([float(np.dot(normal, p)) for p in positions])))
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    image.SetSpacing((col_mm, row_mm, abs(dz)))
    image.SetOrigin(tuple(float(v) for v in positions[0]))
    image.SetDirection(tuple(np.column_stack([o[:3], o[3:], normal]).ravel()))
    return image
