"""The registry of training sources and the cases they contribute (paper Table A.1).

A *source* is a kind of dataset (LiTS, MSD HepaticVessel, 3D-IRCADb, the synthetic cohort,
a user's own folder...). It declares which classes it annotates; that gives the per-class
loss weights ``w`` of Eq. 1 and the voxel mask of Eq. 2. An *importer* reads one source's
real on-disk layout and returns :class:`Case` records; a case loads as an image plus an
exclusive LVT label map (0 background, 1 liver, 2 vessel, 3 tumor), whatever the source's
own label values were.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from lvt_core.imageio import read_image
from lvt_core.labels import CHANNELS, LIVER, TUMOR, VESSEL, class_weights

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A source folder that does not look like its declared layout; names the path."""


@dataclass(frozen=True)
class MaskPart:
    """One binary mask (a file or a DICOM folder) that becomes ``value`` where it is non-zero."""

    path: Path
    value: int
    inside_liver: bool = False  # vessels of 3D-IRCADb count only inside the liver


@dataclass(frozen=True)
class Case:
    """One training image with its labels, in the source's own files.

    Labels come either from one label file whose values map through ``mapping`` (source
    value → LVT value; values not listed become background) or from binary ``masks``
    composed with the priority tumor > vessel > liver. Where a source defines every value its
    files hold (MSD's ``dataset.json``, LiTS), ``known_values`` lists them and any other value
    is refused: mapped to background, a relabelled tumor would teach "no tumor here".
    """

    case_id: str
    source: str
    annotated: tuple[str, ...]
    image: Path
    labels: Path | None = None
    mapping: Mapping[int, int] = field(default_factory=dict)
    masks: tuple[MaskPart, ...] = ()
    group: str = ""  # cases of one patient share a group, so splits never separate them
    # the training config's dataset entry this case came from; its sampling weight applies
    # (two cohorts of one source can be weighted apart). Empty: the source name.
    dataset: str = ""
    # same-day phases of one study share ``study`` (empty: unknown), so evaluation can check
    # that the liver volume agrees across them, as the app's volumetry does
    study: str = ""
    phase: str = ""
    known_values: frozenset[int] | None = None

    @property
    def sampling_group(self) -> str:
        """The unit mixed-source sampling weights: the dataset entry, else the source."""
        return self.dataset or self.source

    @property
    def split_group(self) -> str:
        """The unit cross-validation splits keep together (the patient when known)."""
        return self.group or self.case_id

    @property
    def class_weights(self) -> np.ndarray:
        """Loss weights ``w`` (liver, vessel, tumor) of this case's source."""
        return class_weights(self.annotated)

    def fingerprint(self) -> str:
        """Identity of the inputs (paths, sizes, times, mapping) for the preprocessing cache."""
        parts = [self.source, self.case_id, ",".join(self.annotated), repr(sorted(self.mapping.items()))]
        files = [self.image] + ([self.labels] if self.labels else []) + [m.path for m in self.masks]
        for path in files:  # a DICOM folder's own time stays put when a slice is rewritten
            for item in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if item.is_file():
                    stat = item.stat()
                    parts.append(f"{item.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        parts.extend(f"{m.value}:{m.inside_liver}" for m in self.masks)
        return "|".join(parts)

    def load(self) -> tuple[sitk.Image, sitk.Image]:
        """The image (as stored) and its exclusive LVT label map (uint8, image geometry)."""
        image = read_image(self.image)
        if self.labels is not None:
            raw = read_image(self.labels)
            array = sitk.GetArrayFromImage(raw)
            if np.issubdtype(array.dtype, np.floating) and not np.array_equal(array, np.round(array)):
                raise DatasetError(f"{self.labels}: label values must be whole numbers, found "
                                   f"{array[array != np.round(array)].ravel()[:3].tolist()}")
            _check_known_values(array, self.known_values, self.labels)
            out = np.zeros(array.shape, dtype=np.uint8)
            for src, dst in self.mapping.items():
                out[array == src] = dst
            label = _on_image_grid(out, raw, image, self.labels)
            where = self.labels
        elif self.masks:
            label = _compose_masks(self.masks, image)
            where = self.masks[0].path.parent
        else:
            raise DatasetError(f"{self.case_id}: case has neither a label file nor masks")
        _check_annotated_present(label, self.annotated, where, array if self.labels is not None else None)
        return image, label


def _check_known_values(array: np.ndarray, known: frozenset[int] | None, path: Path) -> None:
    """Refuse label values the source does not define (see :class:`Case`)."""
    if known is None:
        return
    unknown = sorted(int(v) for v in np.unique(array) if int(v) not in known)
    if unknown:
        raise DatasetError(f"{path}: label value(s) {unknown[:10]} are not among the source's "
                           f"labels {sorted(known)}; fix the file or the source's label list "
                           "(dataset.json, or the folder source's mapping.yaml)")


def _check_annotated_present(label: sitk.Image, annotated: Sequence[str], where: Path,
                             raw: np.ndarray | None) -> None:
    """Refuse a label map without the liver or vessels its source annotates: the masked loss
    would teach "no liver here". (A case without tumors is common; without a liver it is a
    broken file: a liver stored as 255, an empty or misplaced mask.)"""
    counts = np.bincount(sitk.GetArrayViewFromImage(label).ravel(), minlength=4)
    present = {"liver": counts[LIVER], "vessel": counts[VESSEL]}  # parenchyma: never all tumor
    for name in ("liver", "vessel"):
        if name in annotated and present[name] == 0:
            found = f" (its values: {np.unique(raw)[:10].tolist()})" if raw is not None else ""
            raise DatasetError(f"{where}: the source annotates {name} but this case has none{found}; "
                               "check the label values and that the labels lie on the image")


GRID_TOLERANCE_VOXELS = 0.1
"""How far (in voxels) a label voxel's centre may sit from an image voxel's: header rounding."""


def _on_image_grid(array: np.ndarray, ref: sitk.Image, image: sitk.Image, path: Path) -> sitk.Image:
    """Wrap a label array and put it on the image's voxel grid, or refuse it.

    The label's voxel centres must be the image's, in physical space: a label stored with its
    axes flipped or permuted (TotalSegmentator writes ``y`` the other way round from the DICOM
    it read) is reordered, voxel for voxel; a misplaced, mirrored or cropped one is refused,
    since resampling it would teach the wrong anatomy.
    """
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(ref)
    if _same_voxel_centres(label, image):
        if label.GetDirection() == image.GetDirection() and label.GetSize() == image.GetSize():
            label.CopyInformation(image)  # one grid, headers written with rounding
            return label
        return sitk.Resample(label, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    raise DatasetError(
        f"{path}: the labels do not lie on the image's grid (labels: {_geometry(label)}; "
        f"image: {_geometry(image)})"
    )


def _same_voxel_centres(label: sitk.Image, image: sitk.Image) -> bool:
    """True when the label's voxel box covers exactly the image's, corner voxel on corner voxel."""
    if int(np.prod(label.GetSize())) != int(np.prod(image.GetSize())):
        return False
    corners = []
    for corner in np.ndindex(2, 2, 2):
        index = [int(c * (n - 1)) for c, n in zip(corner, label.GetSize(), strict=True)]
        point = label.TransformIndexToPhysicalPoint(index)
        continuous = np.asarray(image.TransformPhysicalPointToContinuousIndex(point))
        if np.abs(continuous - np.round(continuous)).max() > GRID_TOLERANCE_VOXELS:
            return False
        corners.append(tuple(int(v) for v in np.round(continuous)))
    wanted = {tuple(int(c * (n - 1)) for c, n in zip(corner, image.GetSize(), strict=True))
              for corner in np.ndindex(2, 2, 2)}
    return set(corners) == wanted


def _geometry(image: sitk.Image) -> str:
    """Size, spacing, origin and axes in plain numbers, for messages."""
    def plain(values: Sequence[float], digits: int) -> list[float]:
        return [round(float(v), digits) for v in values]

    return (f"size {list(image.GetSize())}, spacing {plain(image.GetSpacing(), 3)}, "
            f"origin {plain(image.GetOrigin(), 1)}, axes {plain(image.GetDirection(), 2)}")


def _compose_masks(masks: Sequence[MaskPart], image: sitk.Image) -> sitk.Image:
    """Exclusive label map from binary masks: liver first, then vessels, then tumors."""
    shape = sitk.GetArrayViewFromImage(image).shape
    out = np.zeros(shape, dtype=np.uint8)
    loaded = []
    for part in masks:
        raw = read_image(part.path)
        array = sitk.GetArrayFromImage(raw) > 0
        if array.shape != shape:
            resampled = _on_image_grid(array.astype(np.uint8), raw, image, part.path)
            array = sitk.GetArrayFromImage(resampled) > 0
        loaded.append((part, array))
    liver = np.zeros(shape, dtype=bool)
    for part, array in loaded:
        if part.value == LIVER:
            liver |= array
    for value in (LIVER, VESSEL, TUMOR):
        for part, array in loaded:
            if part.value == value:
                out[array & liver if part.inside_liver else array] = value
    label = sitk.GetImageFromArray(out)
    label.CopyInformation(image)
    return label


Importer = Callable[..., list[Case]]


@dataclass(frozen=True)
class Source:
    """A registered kind of training data: what it annotates and how to import it."""

    name: str
    annotated: tuple[str, ...]
    importer: Importer
    description: str
    layout: str

    @property
    def class_weights(self) -> np.ndarray:
        """Per-class loss weights ``w`` (Table A.1)."""
        return class_weights(self.annotated)

    def known_options(self) -> list[str] | None:
        """The options the importer takes after its folder, from its signature (None: any)."""
        params = list(inspect.signature(self.importer).parameters.values())[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     inspect.Parameter.KEYWORD_ONLY)]

    def unknown_options(self, options: Mapping[str, Any]) -> list[str]:
        """The keys of ``options`` the importer does not take: a typo otherwise surfaced as a
        raw TypeError from deep inside training."""
        known = self.known_options()
        return [] if known is None else [key for key in options if key not in known]

    def describe_known_options(self) -> str:
        """``known: a, b`` (or that there are none), for messages about an unknown option."""
        known = self.known_options()
        return f"known: {', '.join(known)}" if known else f"{self.name} takes no options"

    def load(self, path: str | Path, **options: Any) -> list[Case]:
        """Import the cases found at ``path`` (options go to the importer)."""
        path = Path(path)
        unknown = self.unknown_options(options)
        if unknown:
            raise DatasetError(f"{self.name}: unknown option {unknown[0]!r} ({self.describe_known_options()})")
        if not path.exists():
            raise DatasetError(f"{path}: {self.name} folder not found")
        cases = self.importer(path, **options)
        if not cases:
            raise DatasetError(f"{path}: no {self.name} cases found (expected {self.layout})")
        return cases


_REGISTRY: dict[str, Source] = {}


def register_source(source: Source) -> Source:
    """Add ``source`` to the registry (a later registration of the same name replaces it)."""
    unknown = [name for name in source.annotated if name not in CHANNELS]
    if unknown:
        raise ValueError(f"source {source.name}: unknown classes {unknown}")
    _REGISTRY[source.name] = source
    return source


def get_source(name: str) -> Source:
    """The registered source called ``name``; a clear error lists the known names."""
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DatasetError(f"unknown dataset source {name!r}; known: {sorted(_REGISTRY)}") from None


def list_sources() -> list[Source]:
    """Every registered source, in registration order."""
    _ensure_builtin()
    return list(_REGISTRY.values())


def cases_by_day(cases: Iterable[Case]) -> list[list[Case]]:
    """The cases grouped by ``study`` (the phases of one day), in order of first appearance;
    a case without a study is a day of its own."""
    days: dict[str, list[Case]] = {}
    for index, case in enumerate(cases):
        days.setdefault(case.study or f"\0{index}", []).append(case)
    return list(days.values())


def load_cases(name: str, path: str | Path, **options: Any) -> list[Case]:
    """Import the cases of the source ``name`` found at ``path``."""
    return get_source(name).load(path, **options)


def _ensure_builtin() -> None:
    if not _REGISTRY:
        import training.importers  # noqa: F401 - registers the built-in sources


# -- one scan under several sources ------------------------------------------------------------

GENERATED_SOURCES = frozenset({"synthetic"})
"""Sources whose images are generated, never another source's scan (their grids repeat)."""

SPACING_REL_TOLERANCE = 0.01
"""Voxel sizes this close (relative) are one: a NIfTI copy rounds what DICOM headers said."""


def header_grid(path: Path) -> tuple[tuple[int, float], ...] | None:
    """(size, spacing) per axis, sorted, read from headers only (no voxels); None if unreadable.

    Sorted so a copy that stores the axes in another order still matches; a DICOM folder's
    depth is its slice count and its slice step the span of its positions."""
    try:
        if path.is_dir():
            return _dicom_header_grid(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        if reader.GetDimension() != 3:
            return None
        return tuple(sorted(zip(reader.GetSize(), reader.GetSpacing(), strict=True)))
    except (RuntimeError, OSError, ValueError):
        return None  # an unreadable image is refused by name when the case loads


def _dicom_header_grid(folder: Path) -> tuple[tuple[int, float], ...] | None:
    """The grid of the largest DICOM series in ``folder`` (or below), from two slices' headers."""
    series = sitk.ImageSeriesReader()
    roots = [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]
    for root in roots:
        ids = list(series.GetGDCMSeriesIDs(str(root)) or [])
        if ids:
            files = max((series.GetGDCMSeriesFileNames(str(root), i) for i in ids), key=len)
            break
    else:
        return None
    if len(files) < 2:
        return None
    heads = []
    for name in (files[0], files[-1]):
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        reader.ReadImageInformation()
        heads.append(reader)
    first, last = (np.array([float(v) for v in h.GetMetaData("0020|0032").split("\\")]) for h in heads)
    step = float(np.linalg.norm(last - first)) / (len(files) - 1)
    size, spacing = heads[0].GetSize(), heads[0].GetSpacing()
    return tuple(sorted([(size[0], spacing[0]), (size[1], spacing[1]), (len(files), step)]))


def _same_grid(a: tuple[tuple[int, float], ...], b: tuple[tuple[int, float], ...]) -> bool:
    return all(na == nb and math.isclose(sa, sb, rel_tol=SPACING_REL_TOLERANCE)
               for (na, sa), (nb, sb) in zip(a, b, strict=True))


def link_same_scans(cases: Sequence[Case]) -> list[Case]:
    """The cases with one split group for every scan that two sources hold.

    Public data sets share scans without saying which: LiTS holds the 20 3D-IRCADb-01 scans
    (volumes 28-47, in an order not documented), Task03 is LiTS, HV Liver labels Task08. So
    cases that read one image file, and images of different sources with the same voxel grid
    from their headers (size and spacing per axis, spacing within 1 %), share a split group,
    named by joining their groups with ``+``. A grid is rarely shared by chance; when it is,
    two patients only move to one fold together, which costs balance, never a leak. Images
    within one source are distinct scans; generated sources (phantoms) are left alone.
    """
    parent: dict[str, str] = {c.split_group: c.split_group for c in cases}

    def find(group: str) -> str:
        while parent[group] != group:
            parent[group] = parent[parent[group]]
            group = parent[group]
        return group

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_image: dict[Path, list[Case]] = {}
    for case in cases:
        if case.source not in GENERATED_SOURCES:
            by_image.setdefault(case.image.resolve(), []).append(case)
    buckets: dict[tuple[int, ...], list[tuple[tuple, set[str], str]]] = {}
    for image, sharing in by_image.items():
        for other in sharing[1:]:
            union(sharing[0].split_group, other.split_group)
        grid = header_grid(image)
        if grid is not None:
            buckets.setdefault(tuple(n for n, _ in grid), []).append(
                (grid, {c.source for c in sharing}, sharing[0].split_group))
    for members in buckets.values():
        for i, (grid_a, sources_a, group_a) in enumerate(members):
            for grid_b, sources_b, group_b in members[i + 1:]:
                if sources_a.isdisjoint(sources_b) and _same_grid(grid_a, grid_b):
                    union(group_a, group_b)
    joined: dict[str, list[str]] = {}
    for group in parent:
        joined.setdefault(find(group), []).append(group)
    names = {g: "+".join(sorted(members)) for members in joined.values() if len(members) > 1 for g in members}
    if names:
        log.info("%d split group(s) join scans held by several sources: %s", len(set(names.values())),
                 ", ".join(sorted(set(names.values()))[:10]))
    return [replace(c, group=names[c.split_group]) if c.split_group in names else c for c in cases]
