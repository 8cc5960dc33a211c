"""Liver volumetry across the same-day phases of one study (paper section 5.4, Figure 5).

The liver should not change size between the arterial, venous and late phases of one day, so
the relative residual of each series' volume from the study mean measures how stable the
segmentation is. Both volumes are reported, and always named:

- **total** liver volume: labels 1, 2 and 3 (parenchyma, vessels and tumors inside the liver);
- **functional** liver volume: labels 1 and 2 (tumors left out).

Slice thickness alone biases a volume (partial volume at the liver's top and bottom), so a
warning is raised when the series' slice spacings differ. A series whose scan stops inside the
liver (:mod:`lvt_core.coverage`) warns too: its volume is only a lower bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from lvt_core.coverage import MIN_LIVER_ML, ends_phrase, head_foot_axis, liver_coverage
from lvt_core.labels import LIVER, TUMOR, VESSEL

FLAG_THRESHOLD_PCT = 2.0
"""A phase whose total liver volume strays further than this from its study's mean is flagged."""
ROUNDING_PCT = 1e-9
"""Float noise in a residual: 9800 / 10200 ml gave −1.99999… and +2.00000…1 %."""


def beyond_threshold(deviation_pct: float, threshold_pct: float) -> bool:
    """Whether a residual lies outside ±threshold, alike on both sides (exactly 2 % is inside)."""
    return abs(deviation_pct) > threshold_pct + ROUNDING_PCT


@dataclass
class VolumetryResult:
    """Volumes per series, their residuals from the study mean in %, flags and warnings."""

    names: list[str]
    volumes_ml: list[float]
    functional_volumes_ml: list[float]
    slice_thickness_mm: list[float]
    threshold_pct: float
    warnings: list[str] = field(default_factory=list)
    liver_cut_at: list[list[str]] = field(default_factory=list)  # per series: "head", "foot", "side"

    @property
    def mean_ml(self) -> float:
        return float(np.mean(self.volumes_ml))

    @property
    def functional_mean_ml(self) -> float:
        return float(np.mean(self.functional_volumes_ml))

    @property
    def deviation_pct(self) -> list[float]:
        return residuals_pct(self.volumes_ml)

    @property
    def functional_deviation_pct(self) -> list[float]:
        return residuals_pct(self.functional_volumes_ml)

    @property
    def max_abs_deviation_pct(self) -> float:
        return float(max(abs(d) for d in self.deviation_pct))

    @property
    def flags(self) -> list[bool]:
        """Per series: is the total-volume residual beyond the threshold?"""
        return [beyond_threshold(d, self.threshold_pct) for d in self.deviation_pct]

    @property
    def flag(self) -> bool:
        return any(self.flags)

    def to_document(self) -> dict[str, Any]:
        """The ``lvt volumetry`` JSON document (ARCHITECTURE.md) plus functional volume details."""
        functional_dev = self.functional_deviation_pct
        return {
            "series": list(self.names),
            "volume_kind": "total liver volume (labels 1+2+3)",
            "volumes_ml": list(self.volumes_ml),
            "functional_volumes_ml": list(self.functional_volumes_ml),
            "mean_ml": self.mean_ml,
            "deviation_pct": self.deviation_pct,
            "max_abs_deviation_pct": self.max_abs_deviation_pct,
            "threshold_pct": self.threshold_pct,
            "flag": self.flag,
            "flags": self.flags,
            "functional_mean_ml": self.functional_mean_ml,
            "functional_deviation_pct": functional_dev,
            "functional_max_abs_deviation_pct": float(max(abs(d) for d in functional_dev)),
            "functional_flag": any(beyond_threshold(d, self.threshold_pct) for d in functional_dev),
            "slice_thickness_mm": list(self.slice_thickness_mm),
            "warnings": list(self.warnings),
            "liver_cut_at": [list(ends) for ends in self.liver_cut_at],
        }


def residuals_pct(values: Sequence[float]) -> list[float]:
    """Each value's relative residual from their mean, in % (0 for all when the mean is 0)."""
    mean = float(np.mean(values))
    if mean == 0.0:
        return [0.0 for _ in values]
    return [float((v - mean) / mean * 100.0) for v in values]


def liver_volumes_ml(labels: sitk.Image) -> tuple[float, float]:
    """(total, functional) liver volume of one label map, in ml."""
    array = sitk.GetArrayViewFromImage(labels)
    counts = np.bincount(np.asarray(array, dtype=np.int64).ravel(), minlength=TUMOR + 1)
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    functional = int(counts[LIVER] + counts[VESSEL])
    return (functional + int(counts[TUMOR])) * voxel_ml, functional * voxel_ml


def head_foot_spacing_mm(image: sitk.Image) -> float:
    """The voxel spacing along the patient's head–foot axis (the slice spacing of an axial scan,
    whatever the axis order it is stored in)."""
    return float(image.GetSpacing()[head_foot_axis(image)[0]])


def volumetry(
    labelmaps: Sequence[sitk.Image],
    threshold_pct: float = FLAG_THRESHOLD_PCT,
    names: Sequence[str] | None = None,
    slice_thickness_mm: Sequence[float] | None = None,
    thickness_tolerance_mm: float = 0.01,
) -> VolumetryResult:
    """Compare the liver volumes of two or more same-day phases.

    ``slice_thickness_mm`` overrides the z spacing (e.g. DICOM SliceThickness when slices
    overlap); series whose thicknesses differ by more than ``thickness_tolerance_mm`` warn.
    """
    if len(labelmaps) < 2:
        raise ValueError(f"volumetry compares two or more phases, got {len(labelmaps)}")
    names = [str(n) for n in names] if names is not None else [f"series {i}" for i in range(len(labelmaps))]
    if len(names) != len(labelmaps):
        raise ValueError("names and label maps differ in number")
    volumes = [liver_volumes_ml(labels) for labels in labelmaps]
    if any(total < MIN_LIVER_ML for total, _ in volumes):  # stray voxels are no liver to compare
        empty = [f"{n} ({total:.2f} ml)" for n, (total, _) in zip(names, volumes, strict=True)
                 if total < MIN_LIVER_ML]
        raise ValueError(f"no liver found (under {MIN_LIVER_ML:g} ml of labels 1-3) in: {', '.join(empty)}")
    thickness = (
        [float(t) for t in slice_thickness_mm]
        if slice_thickness_mm is not None
        else [head_foot_spacing_mm(labels) for labels in labelmaps]
    )
    warnings: list[str] = []
    coverage = [liver_coverage(labels) for labels in labelmaps]
    for name, cover in zip(names, coverage, strict=True):
        if cover.cut_at:
            warnings.append(f"{name}: the liver runs into the scan's {ends_phrase(cover.cut_at)}, "
                            "so its volume is a lower bound")
    if max(thickness) - min(thickness) > thickness_tolerance_mm:
        detail = ", ".join(f"{n}: {t:g} mm" for n, t in zip(names, thickness, strict=True))
        warnings.append(
            f"slice thicknesses differ ({detail}); thickness alone biases liver volume"
        )
    return VolumetryResult(
        names=names,
        volumes_ml=[v[0] for v in volumes],
        functional_volumes_ml=[v[1] for v in volumes],
        slice_thickness_mm=thickness,
        threshold_pct=float(threshold_pct),
        warnings=warnings,
        liver_cut_at=[list(cover.cut_at) for cover in coverage],
    )
