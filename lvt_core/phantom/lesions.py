"""Longitudinal tumor truth: lesion tracks over timepoints, and per-scan lesion statistics.

A track has a stable identity (``uid``), a place in the liver (liver frame), a shape and a
diameter per timepoint (0 while absent). Patients follow one course (progressing,
responding, stable or mixed), so lesions grow, shrink, appear and disappear coherently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lvt_core.lesions import feret_in_plane
from lvt_core.phantom.anatomy import Anatomy
from lvt_core.phantom.shapes import Ellipsoid, Waves, rotation_xyz

MAX_TIMEPOINTS = 12
"""Tracks are drawn for this many timepoints so a cohort's first T do not depend on T."""

LESION_KINDS: tuple[str, ...] = ("hypo", "hyper", "rim")
"""Lesion kinds, see :data:`lvt_core.phantom.tables.TUMOR_CONTRAST`."""


@dataclass(frozen=True)
class LesionMix:
    """How a cohort's lesions are drawn: the share placed against a vessel, the share placed
    at the liver's surface (subcapsular), and each kind's weight.

    The default is the mix every shipped model was trained, calibrated and tested on, and gives
    the same files as before the mix existed. A decision that only some lesions exercise (for
    example how much vessel may surround an arterially enhancing lesion) gets validation cases
    from a cohort that draws more of them. Changing the mix keeps each patient's anatomy,
    lesion count, sizes and course; only placement and kind follow the new weights.
    """

    near_vessel: float = 0.3
    hypo: float = 0.5
    hyper: float = 0.25
    rim: float = 0.25
    subcapsular: float = 0.0  # share placed against the liver's surface, cut flat by it
    cystic: float = 0.0  # share that turns to fluid (cystic change under treatment) at its second study

    def __post_init__(self) -> None:
        for name in ("near_vessel", "subcapsular", "cystic"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a share in 0..1, got {getattr(self, name)}")
        weights = self.kind_weights
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"lesion kind weights must be ≥ 0 and not all 0, got "
                             f"{dict(zip(LESION_KINDS, weights, strict=True))}")

    @property
    def kind_weights(self) -> tuple[float, float, float]:
        return (self.hypo, self.hyper, self.rim)

    @property
    def kind_probabilities(self) -> list[float]:
        total = sum(self.kind_weights)
        return [w / total for w in self.kind_weights]


@dataclass(frozen=True)
class LesionTrack:
    """One tumor of a patient across timepoints."""

    uid: int
    center: np.ndarray  # liver frame, mm
    axes: np.ndarray
    shape_ratio: np.ndarray  # radii relative to the largest
    waves: Waves  # lobulation, in units of the radius
    kind: str  # hypo | hyper | rim
    contrast: float  # HU, see tables.TUMOR_CONTRAST
    rim_contrast: float
    rim_mm: float
    diameters: tuple[float, ...]  # per timepoint, 0 when absent
    near_vessel: bool
    # from this timepoint on the lesion holds fluid in every phase (a metastasis turned cystic
    # under treatment: still a lesion in the truth, a radiologist still measures it); None never
    cystic_from: int | None = None

    def shape(self, timepoint: int) -> Ellipsoid | None:
        """The lesion's implicit at ``timepoint`` (None while absent)."""
        d = self.diameters[timepoint]
        if d <= 0:
            return None
        return Ellipsoid(self.center, self.shape_ratio * d / 2, self.axes,
                         _scaled(self.waves, d / 2))


def _scaled(waves: Waves, radius: float) -> Waves:
    return Waves(waves.k / radius * 20.0, waves.phase, waves.amp * radius)


def make_tracks(anatomy: Anatomy, rng: np.random.Generator,
                mix: LesionMix = LesionMix()) -> list[LesionTrack]:
    """Draw 0–6 lesions with their course over :data:`MAX_TIMEPOINTS` timepoints."""
    n = int(rng.choice(7, p=[0.1, 0.2, 0.2, 0.17, 0.13, 0.1, 0.1]))
    course = str(rng.choice(["progressing", "responding", "stable", "mixed"]))
    factors = {"progressing": (1.08, 1.4), "responding": (0.5, 0.88), "stable": (0.93, 1.07)}
    vessels = [c for c in anatomy.portal_tree + anatomy.hepatic_tree if c.rb >= 2.5]
    tracks: list[LesionTrack] = []
    placed: list[tuple[np.ndarray, float]] = []
    for k in range(n):
        onset = 0 if rng.random() < 0.7 or k == 0 else int(rng.integers(1, 4))
        size_class = rng.choice(3, p=[0.4, 0.4, 0.2])
        d0 = [rng.uniform(5, 15), rng.uniform(15, 35), rng.uniform(35, 60)][size_class]
        if onset > 0:
            d0 = rng.uniform(5, 14)
        lesion_course = course if course != "mixed" else str(rng.choice(list(factors)))
        lo, hi = factors[lesion_course]
        diameters = [0.0] * MAX_TIMEPOINTS
        d = d0
        for t in range(onset, MAX_TIMEPOINTS):
            diameters[t] = round(float(min(d, 60.0)), 3)
            d *= rng.uniform(lo, hi)
            if d < 4.0:
                break
        d_max = max(diameters)
        ratio = np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.7, 1.0)])
        near_vessel = bool(vessels) and rng.random() < mix.near_vessel
        # no draw at the default share of 0, so default cohorts keep their files byte for byte
        at_capsule = mix.subcapsular > 0 and rng.random() < mix.subcapsular
        if at_capsule:
            near_vessel = False
            center = _place_at_capsule(anatomy, rng, d_max / 2, placed)
        else:
            center = _place(anatomy, rng, d_max / 2 + 1.5, placed, vessels if near_vessel else [])
        if center is None:
            continue
        placed.append((center, d_max / 2))
        faint = d0 < 15 and rng.random() < 0.35
        kind = str(rng.choice(list(LESION_KINDS), p=mix.kind_probabilities))
        # no draw at the default share of 0, as for the capsule: default cohorts keep their files
        cystic_from = onset + 1 if mix.cystic > 0 and rng.random() < mix.cystic else None
        tracks.append(LesionTrack(
            uid=len(tracks) + 1, center=center,
            axes=rotation_xyz(*rng.uniform(-np.pi, np.pi, 3)), shape_ratio=ratio,
            waves=Waves.random(rng, 3, 0.06, (25, 50)), kind=kind,
            contrast=float(rng.uniform(10, 20) if faint else rng.uniform(25, 70)),
            rim_contrast=float(rng.uniform(15, 40)), rim_mm=float(rng.uniform(1.5, 3.5)),
            diameters=tuple(diameters), near_vessel=near_vessel, cystic_from=cystic_from))
    return tracks


def _place(anatomy: Anatomy, rng: np.random.Generator, radius: float,
           placed: list[tuple[np.ndarray, float]], vessels: list) -> np.ndarray | None:
    """A centre where a sphere of ``radius`` fits in the liver away from other lesions."""
    lo, hi = anatomy.liver_bbox()
    sphere = rng.normal(size=(26, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    for attempt in range(400):
        if vessels and attempt < 150:
            seg = vessels[int(rng.integers(len(vessels)))]
            t = rng.uniform(0.2, 0.8)
            axis = seg.b - seg.a
            side = np.cross(axis, rng.normal(size=3))
            side /= np.linalg.norm(side) + 1e-9
            c = seg.a + t * axis + side * (seg.ra + radius * 0.8)
        else:
            c = rng.uniform(lo, hi)
        r = radius if attempt < 300 else radius * 0.7
        if _near_placed(c, r, placed):
            continue
        if anatomy.inside_liver(np.vstack([c, c + r * sphere]), 1.0).all():
            return c
    return None


def _near_placed(center: np.ndarray, radius: float, placed: list[tuple[np.ndarray, float]]) -> bool:
    """Whether a lesion of ``radius`` at ``center`` would come within 6 mm of a placed one."""
    return any(np.linalg.norm(center - p) < radius + q + 6 for p, q in placed)


CAPSULE_DEPTH = (0.3, 0.7)
"""How deep a subcapsular lesion's centre lies under the liver's surface, in its largest radius:
the surface cuts every one flat (the phantom paints tumor inside the liver only), even along
its shortest axis (0.7 of the largest at least), from a sliver to about a third of it."""


def _place_at_capsule(anatomy: Anatomy, rng: np.random.Generator, radius: float,
                      placed: list[tuple[np.ndarray, float]]) -> np.ndarray | None:
    """A centre ``CAPSULE_DEPTH`` radii under the liver's surface, the sphere of ``radius``
    clear of the gallbladder, the IVC and the organs that indent the liver, and away from other
    lesions: where real metastases often sit, and where a lesion's surroundings are partly
    outside the organ, which no lesion placed wholly inside shows."""
    lo, hi = anatomy.liver_bbox()
    sphere = rng.normal(size=(26, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    candidates = rng.uniform(lo, hi, size=(4000, 3)).astype(np.float32)
    depth = -anatomy.liver(candidates[:, 0], candidates[:, 1], candidates[:, 2])
    shallow, deep = (radius * d for d in CAPSULE_DEPTH)
    for c in candidates[(depth >= shallow) & (depth <= deep)]:
        if _near_placed(c, radius, placed):
            continue
        if anatomy.clear_of_carved(np.vstack([c, c + radius * sphere]), 2.0).all():
            return c.astype(np.float64)
    return None


def lesion_stats(lesion_ids: sitk.Image) -> list[dict]:
    """Per identity in ``lesion_ids``: voxels, volume (ml), longest axial diameter and short
    axis (mm, largest over slices), the slice of that diameter, and the centroid (physical LPS
    mm). Diameters are measured as ``lvt lesions`` and the app measure them
    (:func:`lvt_core.lesions.feret_in_plane`: edge to edge); between voxel centres, the
    synthetic radiologist read one voxel less than a perfect segmentation, a false bias in
    Bland–Altman."""
    ids = sitk.GetArrayViewFromImage(lesion_ids)
    spacing = np.array(lesion_ids.GetSpacing())
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for uid, box in enumerate(ndimage.find_objects(ids), start=1):
        if box is None:
            continue
        mask = ids[box] == uid
        zz, yy, xx = np.nonzero(mask)
        zz, yy, xx = zz + box[0].start, yy + box[1].start, xx + box[2].start
        best = (0.0, 0.0, int(zz[0]))
        for k in np.unique(zz):
            long_axis, short = feret_in_plane(mask[k - box[0].start], (float(spacing[0]), float(spacing[1])))
            if long_axis > best[0]:
                best = (long_axis, short, int(k))
        centroid_index = [float(xx.mean()), float(yy.mean()), float(zz.mean())]
        centroid = lesion_ids.TransformContinuousIndexToPhysicalPoint(centroid_index)
        rows.append({
            "lesion_uid": uid, "voxels": int(mask.sum()), "volume_ml": round(float(mask.sum()) * voxel_ml, 6),
            "longest_axial_diameter_mm": round(best[0], 3), "short_axis_mm": round(best[1], 3),
            "slice_index": best[2], "centroid_x_mm": round(centroid[0], 3),
            "centroid_y_mm": round(centroid[1], 3), "centroid_z_mm": round(centroid[2], 3),
        })
    return rows
