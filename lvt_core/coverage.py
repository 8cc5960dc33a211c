"""Does a scan hold the whole liver? Where a segmented liver meets the scan's head or foot end,
or the side of its field of view (a narrow field cuts a large patient's right lobe).

A scan that stops inside the liver (a short arterial run, a 20-slice series, a slab) gives a
liver volume that is only a lower bound: it cannot be compared with another phase of the same
day or with another timepoint, and the model, trained on scans that hold the whole organ, sees
little of it. So every segmentation says where, if anywhere, its liver is cut off, and a
reader is warned instead of shown a volume that looks complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk

from lvt_core.labels import BACKGROUND

MIN_CUT_AREA_MM2 = 100.0
"""Liver cross-section (labels 1–3) on a scan's end slice from which the liver counts as cut
off there: 1 cm², so that a speck of partial volume on the last slice does not warn."""

MIN_LIVER_ML = 5.0
"""Less liver than this (labels 1–3) counts as none found: a scan that holds any real part of
a liver holds far more (three 1 mm slices of one hold about 70 ml), while a model outside its
domain can leave a few stray voxels, such as 0.1 ml on the CT table of a three-slice scan."""


@dataclass(frozen=True)
class LiverCoverage:
    """Where the segmented liver meets the scan's ends, and how long the scan is head to foot."""

    liver_ml: float  # labels 1–3
    cut_at: tuple[str, ...]  # "head", "foot", "side": where the scan's edge cuts the liver
    head_foot_mm: float

    @property
    def liver_found(self) -> bool:
        return self.liver_ml >= MIN_LIVER_ML

    @property
    def complete(self) -> bool:
        """True when a liver was found and the scan holds all of it."""
        return self.liver_found and not self.cut_at

    def warnings(self) -> list[str]:
        """Plain sentences for a reader; empty when the scan holds the whole liver."""
        if not self.liver_found:
            return [f"no liver was found in this scan ({self.liver_ml:.1f} ml of liver labels, "
                    f"{self.head_foot_mm:.0f} mm head to foot): it may not cover the liver, or lie "
                    "outside what the model learned"]
        if not self.cut_at:
            return []
        return [f"the liver runs into the scan's {ends_phrase(self.cut_at)} (the scan covers {self.head_foot_mm:.0f} "
                "mm head to foot): the scan does not hold the whole liver, so its volume is a "
                "lower bound and not comparable with other scans"]

    def to_dict(self) -> dict[str, object]:
        return {"liver_found": self.liver_found, "liver_ml": round(self.liver_ml, 3),
                "cut_at": list(self.cut_at), "head_foot_mm": round(self.head_foot_mm, 1)}


def ends_phrase(cut_at: Sequence[str] | str) -> str:
    """"head end", "foot end", "head and foot ends", "field-of-view side" or "head end and
    field-of-view side", from ``cut_at`` as a tuple or as stored (comma-separated), so that
    every message names the cuts alike."""
    cuts = [end for end in (cut_at.split(",") if isinstance(cut_at, str) else cut_at) if end]
    ends = [end for end in cuts if end != "side"]
    parts = [" and ".join(ends) + (" ends" if len(ends) > 1 else " end")] if ends else []
    return " and ".join([*parts, *(["field-of-view side"] if "side" in cuts else [])])


def head_foot_axis(image: sitk.Image) -> tuple[int, bool]:
    """The image (x, y, z) axis closest to the patient's head–foot direction, and whether its
    index grows toward the head (LPS: +z is superior), for any orientation, oblique included."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[2])))
    return axis, bool(direction[2, axis] > 0)


def liver_coverage(labels: sitk.Image, min_cut_area_mm2: float = MIN_CUT_AREA_MM2) -> LiverCoverage:
    """Where the liver of an exclusive label map (labels 1–3) meets the scan's head or foot end
    or the side of its field of view.

    The liver counts as cut off at an end when its cross-section on that end slice reaches
    ``min_cut_area_mm2``, and at the side when its area on one of the four side faces does;
    under ``MIN_LIVER_ML`` of it counts as no liver at all.
    """
    axis, grows_to_head = head_foot_axis(labels)
    spacing = labels.GetSpacing()
    size = labels.GetSize()
    organ = sitk.GetArrayViewFromImage(labels) > BACKGROUND  # array order (z, y, x)
    array_axis = 2 - axis
    pixel_mm2 = float(np.prod([s for i, s in enumerate(spacing) if i != axis]))
    first = int(np.take(organ, 0, axis=array_axis).sum()) * pixel_mm2
    last = int(np.take(organ, -1, axis=array_axis).sum()) * pixel_mm2
    ends = {"head": last if grows_to_head else first, "foot": first if grows_to_head else last,
            "side": _largest_side_face_mm2(organ, spacing, array_axis)}
    cover = LiverCoverage(
        liver_ml=float(organ.sum()) * float(np.prod(spacing)) / 1000.0,
        cut_at=tuple(end for end in ("head", "foot", "side") if ends[end] >= min_cut_area_mm2),
        head_foot_mm=float(size[axis] * spacing[axis]),
    )  # stray voxels on an end slice of a scan without a liver cut nothing
    return cover if cover.liver_found else replace(cover, cut_at=())


def _largest_side_face_mm2(organ: np.ndarray, spacing: Sequence[float], head_foot_array_axis: int) -> float:
    """The largest liver area on one of the four faces of the scan other than its two ends."""
    largest = 0.0
    for array_axis in (a for a in range(3) if a != head_foot_array_axis):
        face_mm2 = float(np.prod([s for i, s in enumerate(spacing) if i != 2 - array_axis]))
        for index in (0, -1):
            largest = max(largest, int(np.take(organ, index, axis=array_axis).sum()) * face_mm2)
    return largest
