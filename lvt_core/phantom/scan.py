"""Rendering one phantom scan: a patient's anatomy sampled onto a scan grid in one phase.

The grid is axial (identity direction, LPS) with its own spacing and field of view; the
patient lies in it with a pose (rotation and shift). Visceral organs move with breathing
per phase, and the liver (with its vessels and tumors) gets a mild smooth deformation per
study. Thick slices are rendered as three sub-slices and averaged (partial volume along
z); the HU volume is then blurred slightly in-plane and gets spatially correlated noise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.phantom import tables as T
from lvt_core.phantom.anatomy import Anatomy, make_anatomy
from lvt_core.phantom.lesions import (
    MAX_TIMEPOINTS,
    LesionMix,
    LesionTrack,
    lesion_stats,
    make_tracks,
)
from lvt_core.phantom.shapes import Capsule, Ellipsoid, Waves, rotation

SIZES: tuple[str, ...] = ("tiny", "demo", "clinical")
"""Scan sizes: tiny ~96×96×48 at ~3.6 mm (tests); demo 192–256 px, ≤100 slices;
clinical 512×512 at 0.7–0.8 mm, 150–300 slices."""

_STREAM = {"anatomy": 1, "tracks": 2, "dates": 3, "pose": 10, "geometry": 11, "contrast": 12,
           "breath": 13, "noise": 14, "deform": 15, "reader": 20}
_SIZE_CODE = {"tiny": 0, "demo": 1, "clinical": 2}


def stream(seed: int, name: str, *keys: int) -> np.random.Generator:
    """An independent random stream per purpose, so adding scans never changes others."""
    return np.random.default_rng([int(seed), _STREAM[name], *[int(k) for k in keys]])


def patient_id(patient_index: int) -> str:
    """``LVT-0001`` for patient index 0."""
    return f"LVT-{patient_index + 1:04d}"


@dataclass(frozen=True)
class Patient:
    """A synthetic patient: anatomy, lesion tracks and study dates."""

    seed: int
    index: int
    anatomy: Anatomy
    tracks: list[LesionTrack]
    dates: tuple[dt.date, ...]

    @property
    def id(self) -> str:
        return patient_id(self.index)


@lru_cache(maxsize=4)
def make_patient(seed: int, patient_index: int, mix: LesionMix = LesionMix()) -> Patient:
    """The patient ``patient_index`` of cohort ``seed`` (cached: anatomy takes ~1 s)."""
    anatomy = make_anatomy(stream(seed, "anatomy", patient_index))
    tracks = make_tracks(anatomy, stream(seed, "tracks", patient_index), mix)
    rng = stream(seed, "dates", patient_index)
    # every follow-up (12 at most, 60-180 days apart) ends before this code was written, so a
    # phantom's dates pass the store's check that a study is not in the future
    day = dt.date(2010, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6 * 365)))
    dates = [day]
    for gap in rng.integers(60, 181, MAX_TIMEPOINTS - 1):
        dates.append(dates[-1] + dt.timedelta(days=int(gap)))
    return Patient(seed, patient_index, anatomy, tracks, tuple(dates))


@dataclass(frozen=True)
class Study:
    """One timepoint of a patient at one scan size: grid, pose, deformation, contrast, noise."""

    timepoint: int
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    rot: np.ndarray  # body -> physical
    shift: np.ndarray
    deform: tuple[Waves, Waves, Waves]
    hu: dict[str, dict[str, float]]
    noise_sigma: float
    noise_corr: float


def make_study(seed: int, patient_index: int, timepoint: int, size: str) -> Study:
    """Draw the grid, pose, liver deformation and contrast of one study."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    if not 0 <= timepoint < MAX_TIMEPOINTS:
        raise ValueError(f"timepoint must be in 0..{MAX_TIMEPOINTS - 1}, got {timepoint}")
    keys = (patient_index, timepoint)
    pose = stream(seed, "pose", *keys)
    rot = rotation(pose, (2.0, 2.0, 5.0))
    shift = pose.uniform(-20, 20, 3)
    deform_rng = stream(seed, "deform", *keys)
    deform = tuple(Waves.random(deform_rng, 3, 1.0, (80, 200)) for _ in range(3))
    geo = stream(seed, "geometry", *keys, _SIZE_CODE[size])
    if size == "tiny":
        n_xy, sxy, sz, nz = 96, geo.uniform(3.4, 3.8), 4.0, 48
    elif size == "demo":
        n_xy = int(geo.choice([192, 208, 224, 240, 256]))
        sxy = geo.uniform(350, 420) / n_xy
        sz = float(geo.choice([2.5, 3.0, 4.0, 5.0]))
        nz = min(100, round(geo.uniform(260, 330) / sz))
    else:
        n_xy, sxy = 512, geo.uniform(0.7, 0.8)
        sz = float(geo.choice([1.0, 1.25, 1.5, 2.0]))
        nz = int(np.clip(round(geo.uniform(260, 360) / sz), 150, 300))
    top = shift[2] + geo.uniform(15, 35)
    origin = (-(n_xy - 1) * sxy / 2 + geo.uniform(-10, 10),
              -(n_xy - 1) * sxy / 2 + geo.uniform(-10, 10) + 10, top - (nz - 1) * sz)
    contrast = stream(seed, "contrast", *keys)
    hu = T.sample_tissue_hu(contrast, contrast.uniform(0.75, 1.25),
                            stream(seed, "contrast", patient_index).uniform(-25, 10))
    return Study(timepoint, (n_xy, n_xy, nz), (float(sxy), float(sxy), sz),
                 tuple(float(v) for v in origin), rot, shift, deform, hu,
                 float(contrast.uniform(8, 25)), float(contrast.uniform(0.6, 1.1)))


@dataclass
class PhantomScan:
    """One rendered scan with its ground truth."""

    image: sitk.Image  # int16 HU
    labels: sitk.Image  # uint8: 0 background, 1 liver, 2 vessel, 3 tumor
    lesion_ids: sitk.Image  # uint16: 0 none, else the lesion's identity
    lesions: list[dict]  # lesions.csv rows of this scan
    patient_id: str = ""
    study_date: dt.date | None = None
    phase: str = "portal"
    timepoint: int = 0
    lesion_details: list[dict] = field(default_factory=list)  # + short axis and slice


def phantom_scan(seed: int, size: str = "demo", phase: str = "portal", timepoint: int = 0,
                 patient_index: int = 0, mix: LesionMix = LesionMix()) -> PhantomScan:
    """Render one scan of the cohort ``seed`` in memory (identical to the cohort's file)."""
    if phase not in T.PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(T.PHASES)}")
    patient = make_patient(int(seed), int(patient_index), mix)
    study = make_study(int(seed), int(patient_index), int(timepoint), size)
    image, labels, ids = render(patient, study, phase)
    details = lesion_stats(ids)
    date = patient.dates[timepoint]
    rows = [{"patient_id": patient.id, "study_date": date.isoformat(), "phase": phase,
             **{k: d[k] for k in ("lesion_uid", "voxels", "volume_ml", "longest_axial_diameter_mm",
                                  "centroid_x_mm", "centroid_y_mm", "centroid_z_mm")}}
            for d in details]
    return PhantomScan(image, labels, ids, rows, patient.id, date, phase, timepoint, details)


# ---------------------------------------------------------------------------------------------
class _Chunk:
    """A slab of the render grid with body-frame coordinates and the frames derived from it."""

    def __init__(self, study: Study, zpos: np.ndarray, breath: np.ndarray, liver_box,
                 cache: dict):
        nx, ny, _ = study.size
        sx, sy, _ = study.spacing
        self.study, self.zpos, self.breath, self.cache = study, zpos, breath, cache
        self.cavity = np.zeros(0, np.float32)
        px = (study.origin[0] + sx * np.arange(nx) - study.shift[0]).astype(np.float32)
        py = (study.origin[1] + sy * np.arange(ny) - study.shift[1]).astype(np.float32)
        pz = (zpos - study.shift[2]).astype(np.float32)
        r = study.rot.T.astype(np.float32)  # physical -> body
        pz_, py_, px_ = pz[:, None, None], py[None, :, None], px[None, None, :]
        self.x = r[0, 0] * px_ + r[0, 1] * py_ + r[0, 2] * pz_
        self.y = r[1, 0] * px_ + r[1, 1] * py_ + r[1, 2] * pz_
        self.z = r[2, 0] * px_ + r[2, 1] * py_ + r[2, 2] * pz_
        shape = self.x.shape
        self.tissue = np.full(shape, T.AIR, np.uint8)
        self.liver = np.zeros(shape, bool)
        self.vessel = np.zeros(shape, bool)
        self.ids = np.zeros(shape, np.uint16)
        self.liver_sl = self.box(*liver_box, "liver")
        self.liver_xyz = None
        if self.liver_sl is not None:
            xv, yv, zv = self.coords(self.liver_sl, "visc")
            d = study.deform
            self.liver_xyz = (xv + d[0](xv, yv, zv), yv + d[1](xv, yv, zv), zv + d[2](xv, yv, zv))

    def box(self, lo, hi, frame: str):
        """Slices of this chunk that hold the frame's box ``lo..hi`` (None if it misses)."""
        key = (frame, *np.round(lo, 4), *np.round(hi, 4))
        if key not in self.cache:  # the physical box is the same for every chunk
            lo, hi = np.asarray(lo, float).copy(), np.asarray(hi, float).copy()
            if frame != "body":
                lo, hi = lo + self.breath, hi + self.breath
            if frame == "liver":
                pad = sum(w.max_amp for w in self.study.deform)
                lo, hi = lo - pad, hi + pad
            corners = np.array([[lo[0] if i & 1 else hi[0], lo[1] if i & 2 else hi[1],
                                 lo[2] if i & 4 else hi[2]] for i in range(8)])
            phys = corners @ self.study.rot.T + self.study.shift
            self.cache[key] = (phys.min(0), phys.max(0))
        pmin, pmax = self.cache[key]
        out = []
        for axis in (0, 1):
            n = self.study.size[axis]
            o, s = self.study.origin[axis], self.study.spacing[axis]
            i0 = max(0, int(np.floor((pmin[axis] - o) / s)))
            i1 = min(n, int(np.ceil((pmax[axis] - o) / s)) + 1)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        k0 = int(np.searchsorted(self.zpos, pmin[2]))
        k1 = int(np.searchsorted(self.zpos, pmax[2], side="right"))
        if k1 <= k0:
            return None
        return (slice(k0, k1), out[1], out[0])

    def coords(self, sl, frame: str):
        """Coordinates of the voxels ``sl`` in ``frame`` (body, visc or liver)."""
        if frame == "liver":
            rel = tuple(slice(s.start - o.start, s.stop - o.start)
                        for s, o in zip(sl, self.liver_sl, strict=True))
            return tuple(c[rel] for c in self.liver_xyz)
        x, y, z = self.x[sl], self.y[sl], self.z[sl]
        if frame == "visc":
            b = self.breath.astype(np.float32)
            return x - b[0], y - b[1], z - b[2]
        return x, y, z

    def in_liver_box(self, sl):
        if self.liver_sl is None:
            return None
        out = tuple(slice(max(s.start, o.start), min(s.stop, o.stop))
                    for s, o in zip(sl, self.liver_sl, strict=True))
        return None if any(s.stop <= s.start for s in out) else out


def _capsules(chunk: _Chunk, capsules: list[Capsule], frame: str, code: int, inset: float = 0.0,
              where=None, vessel: bool = False) -> None:
    for cap in capsules:
        sl = chunk.box(*cap.bbox(), frame)
        if sl is not None and frame == "liver":
            sl = chunk.in_liver_box(sl)
        if sl is None:
            continue
        inside = cap.distance(*chunk.coords(sl, frame)) < -inset
        if where is not None:
            inside &= where[sl]
        chunk.tissue[sl][inside] = code
        if vessel:
            chunk.vessel[sl] |= inside & chunk.liver[sl]


def _bowel(chunk: _Chunk, capsules: list[Capsule], colon: bool) -> None:
    """A gut tube: wall first for every piece, then the lumen (gas floats anteriorly in the
    colon, over stool; small bowel holds fluid), so joints never show a wall across."""
    lumens = []
    for cap in capsules:
        sl = chunk.box(*cap.bbox(), "visc")
        if sl is None:
            continue
        x, y, z = chunk.coords(sl, "visc")
        d = cap.distance(x, y, z)
        chunk.tissue[sl][d < 0] = T.GUT_WALL
        lumens.append((sl, d, y, (cap.a[1] + cap.b[1]) / 2))
    for sl, d, y, mid_y in lumens:
        lumen = d < -3.0 if colon else d < -2.5
        if colon:
            chunk.tissue[sl][lumen & (y < mid_y + 2)] = T.GAS
            chunk.tissue[sl][lumen & (y >= mid_y + 2)] = T.STOOL
        else:
            chunk.tissue[sl][lumen] = T.FLUID


def _ellipsoid(chunk: _Chunk, shape: Ellipsoid, frame: str, pad: float = 0.0):
    sl = chunk.box(*shape.bbox(pad), frame)
    if sl is None:
        return None, None
    return sl, shape(*chunk.coords(sl, frame))


def _paint_chunk(chunk: _Chunk, patient: Patient, phase: str) -> None:
    a = patient.anatomy
    tissue = chunk.tissue
    # body wall: skin, subcutaneous fat, muscle, visceral fat
    depth, sin_t = a.depth(chunk.x, chunk.y)
    fat = a.fat_thickness(sin_t)
    tissue[depth > 0] = T.SKIN
    tissue[depth > 2.0] = T.FAT
    tissue[depth > fat] = T.MUSCLE
    chunk.cavity = fat + np.float32(a.muscle) - depth  # implicit: negative in the cavity
    cavity = chunk.cavity < 0
    tissue[cavity] = T.FAT
    del depth, sin_t, fat
    # lungs above the diaphragm and the heart
    lo = np.array([-a.a, -a.b, a.dome_left[2] - 120.0])
    sl = chunk.box(lo, [a.a, a.b, 400.0], "visc")
    if sl is not None:
        x, y, z = chunk.coords(sl, "visc")
        dome = a.dome(x, y)
        lung = cavity[sl] & (z > dome + 2) & ~((np.abs(x) < 28) & (y > a.y_vb - 50))
        tissue[sl][lung] = T.LUNG
        heart = (a.heart(x, y, z) < 0) & (z > dome + 3) & cavity[sl]
        tissue[sl][heart] = T.HEART
    # back muscles, psoas and spine (body frame, along the whole z range)
    x, y, z = chunk.x, chunk.y, chunk.z
    sl = chunk.box([-80, a.y_vb - 40, -1e4], [80, a.b, 1e4], "body")
    if sl is not None:
        x, y, z = chunk.coords(sl, "body")
        t = tissue[sl]
        for side in (-1, 1):
            t[((x - side * 36) / 26) ** 2 + ((y - a.y_vb - 52) / 24) ** 2 < 1] = T.MUSCLE
            r = np.clip((-150 - z) * 0.15 + 6, 0, 24)
            t[(r > 6) & ((x - side * (26 + r)) ** 2 + (y - a.y_vb - 2) ** 2 < r**2)] = T.MUSCLE
        rho = np.sqrt((x / 22) ** 2 + ((y - a.y_vb) / 18) ** 2)
        disc = np.mod(z - a.disc_z0, 32) < 6
        t[rho < 1] = T.CORTEX
        t[(rho < 0.86) & ~disc] = T.MARROW
        t[(rho < 1) & disc] = T.DISC
        canal = np.sqrt(x**2 + (y - a.y_vb - 30) ** 2)
        t[(canal < 15) & (canal > 9) & (y > a.y_vb + 27)] = T.CORTEX  # laminae: an arch
        t[(np.abs(x) < 5) & (y > a.y_vb + 36) & (y < a.y_vb + 62)] = T.CORTEX
        process = (np.abs(np.abs(x) - 30) < 14) & (np.abs(y - a.y_vb - 28) < 5)
        t[process & (np.mod(z - a.disc_z0, 32) > 14)] = T.CORTEX
        t[canal <= 9] = T.CSF
    for rib in a.ribs:
        _capsules(chunk, rib, "body", T.CORTEX)
        _capsules(chunk, rib, "body", T.MARROW, inset=1.5)
    for cart in a.cartilage:
        _capsules(chunk, cart, "body", T.CARTILAGE)
    _capsules(chunk, a.veins, "visc", T.PORTAL)  # behind the organs they pass
    # abdominal organs (visceral frame: they move with breathing)
    for kidney in a.kidneys:
        sl, f = _ellipsoid(chunk, kidney, "visc")
        if sl is not None:
            tissue[sl][f < 0] = T.KIDNEY_CORTEX
            tissue[sl][f < -7] = T.KIDNEY_MEDULLA
            medial = -np.sign(kidney.center[0]) * np.array([1.0, -0.4, 0])
            sinus = Ellipsoid(kidney.center + 14 * medial, kidney.radii * [0.45, 0.4, 0.55],
                              kidney.axes)
            g = sinus(*chunk.coords(sl, "visc"))
            tissue[sl][(g < 0) & (f < 0)] = T.FAT
            tissue[sl][(g < -6) & (f < 0)] = T.FLUID
    for organ, code in ((a.spleen, T.SPLEEN), (a.stomach, T.GUT_WALL)):
        sl, f = _ellipsoid(chunk, organ, "visc")
        if sl is None:
            continue
        x, y, z = chunk.coords(sl, "visc")
        f = np.maximum(f, np.maximum(z - a.dome(x, y) + 4, chunk.cavity[sl] + 2))
        tissue[sl][f < 0] = code
        if organ is a.stomach:
            tissue[sl][(f < -4) & (y < organ.center[1] - 0.3 * organ.radii[1])] = T.GAS
            tissue[sl][(f < -4) & (y >= organ.center[1] - 0.3 * organ.radii[1])] = T.FLUID
    _bowel(chunk, a.colon, colon=True)
    for loop in a.small_bowel:
        _bowel(chunk, loop, colon=False)
    _capsules(chunk, a.aorta, "body", T.AORTA)  # retroperitoneal: over any bowel loop
    _capsules(chunk, a.ivc, "visc", T.IVC)
    # liver envelope minus IVC and gallbladder, then its vessels and tumors
    if chunk.liver_sl is not None:
        sl = chunk.liver_sl
        xl, yl, zl = chunk.liver_xyz
        env = (a.liver(xl, yl, zl, chunk.cavity[sl]) < 0) & (a.gallbladder(xl, yl, zl) > 0)
        for cap in a.ivc:  # the IVC runs in a groove of the liver: not liver
            csl = chunk.box(*cap.bbox(), "visc")
            csl = chunk.in_liver_box(csl) if csl is not None else None
            if csl is not None:
                rel = tuple(slice(c.start - o.start, c.stop - o.start)
                            for c, o in zip(csl, sl, strict=True))
                env[rel] &= cap.distance(*chunk.coords(csl, "visc")) > 0
        for organ in (a.stomach, *a.kidneys):  # neighbours indent the liver, never overlap
            osl = chunk.box(*organ.bbox(2.0), "visc")
            osl = chunk.in_liver_box(osl) if osl is not None else None
            if osl is not None:
                rel = tuple(slice(c.start - o.start, c.stop - o.start)
                            for c, o in zip(osl, sl, strict=True))
                env[rel] &= organ(*chunk.coords(osl, "visc")) > 2.0
        tissue[sl][env] = T.LIVER
        chunk.liver[sl] = env
        gsl, g = _ellipsoid(chunk, a.gallbladder, "liver")
        if gsl is not None and chunk.in_liver_box(gsl) == gsl:
            tissue[gsl][g < 0] = T.GALLBLADDER
    _capsules(chunk, a.portal_root, "visc", T.PORTAL, vessel=True)
    if chunk.liver_sl is not None:
        _capsules(chunk, a.portal_tree, "liver", T.PORTAL, where=chunk.liver, vessel=True)
        _capsules(chunk, a.hepatic_tree, "liver", T.HEPATIC, where=chunk.liver, vessel=True)
        for k, track in enumerate(patient.tracks):
            shape = track.shape(chunk.study.timepoint)
            if shape is None:
                continue
            sl, f = _ellipsoid(chunk, shape, "liver")
            if sl is None:
                continue
            sl2 = chunk.in_liver_box(sl)
            if sl2 != sl:
                rel = tuple(slice(s.start - o.start, s.stop - o.start)
                            for s, o in zip(sl2, sl, strict=True)) if sl2 else None
                if rel is None:
                    continue
                f, sl = f[rel], sl2
            inside = (f < 0) & chunk.liver[sl]
            tissue[sl][inside] = T.TUMOR_BASE + 2 * k
            if track.kind == "rim":
                tissue[sl][inside & (f > -track.rim_mm)] = T.TUMOR_BASE + 2 * k + 1
            chunk.ids[sl][inside] = track.uid


def _lookup(patient: Patient, study: Study, phase: str) -> np.ndarray:
    """HU per tissue code for this study and phase, tumors included."""
    lut = np.zeros(256, np.float32)
    for name, code in T.TISSUE_CODES.items():
        lut[code] = study.hu[name][phase]
    liver = study.hu["liver"][phase]
    for k, track in enumerate(patient.tracks):
        if track.cystic_from is not None and study.timepoint >= track.cystic_from:
            lut[T.TUMOR_BASE + 2 * k] = lut[T.TUMOR_BASE + 2 * k + 1] = study.hu["fluid"][phase]
            continue
        core = "rim_core" if track.kind == "rim" else track.kind
        lut[T.TUMOR_BASE + 2 * k] = liver + T.TUMOR_CONTRAST[core][phase] * track.contrast
        lut[T.TUMOR_BASE + 2 * k + 1] = liver + T.TUMOR_CONTRAST["rim"][phase] * track.rim_contrast
    return lut


def render(patient: Patient, study: Study, phase: str) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """Sample the patient onto the study grid in ``phase``: image (int16), labels, lesion ids."""
    nx, ny, nz = study.size
    sz = study.spacing[2]
    n_sub = 3 if sz > 2.2 else 1  # odd: the middle sub-slice sits at the voxel centre
    phase_index = T.PHASES.index(phase)
    keys = (patient.index, study.timepoint, phase_index)
    breath_rng = stream(patient.seed, "breath", *keys)
    breath = np.array([0.0, breath_rng.uniform(-1, 1), breath_rng.uniform(-4, 4)])
    lut = _lookup(patient, study, phase)
    hu = np.empty((nz, ny, nx), np.float32)
    labels = np.zeros((nz, ny, nx), np.uint8)
    ids = np.zeros((nz, ny, nx), np.uint16)
    offsets = (np.arange(n_sub) - (n_sub - 1) / 2) * sz / n_sub
    mid = slice(n_sub // 2, None, n_sub)  # the sub-slice at the voxel centre (labels)
    per_chunk = max(1, int(3_000_000 // (nx * ny * n_sub)))
    liver_box = patient.anatomy.liver_bbox()
    cache: dict = {}
    for k0 in range(0, nz, per_chunk):
        k1 = min(nz, k0 + per_chunk)
        zc = study.origin[2] + sz * np.arange(k0, k1)
        zpos = (zc[:, None] + offsets[None, :]).ravel()
        chunk = _Chunk(study, zpos, breath, liver_box, cache)
        _paint_chunk(chunk, patient, phase)
        hu[k0:k1] = lut[chunk.tissue].reshape(k1 - k0, n_sub, ny, nx).mean(1)
        lab = np.zeros(chunk.tissue[mid].shape, np.uint8)
        lab[chunk.liver[mid]] = LIVER
        lab[chunk.vessel[mid] & chunk.liver[mid]] = VESSEL
        lab[chunk.ids[mid] > 0] = TUMOR
        labels[k0:k1] = lab
        ids[k0:k1] = chunk.ids[mid]
    hu = ndimage.gaussian_filter(hu, sigma=(0, 0.5, 0.5), truncate=3.0)  # in-plane PSF
    noise = stream(patient.seed, "noise", *keys).standard_normal((nz, ny, nx), dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=(0, study.noise_corr, study.noise_corr))
    noise *= np.float32(study.noise_sigma / max(float(noise[::3, ::3, ::3].std()), 1e-6))
    hu += noise
    del noise
    image = sitk.GetImageFromArray(np.clip(np.rint(hu), -1024, 3071).astype(np.int16))
    out = []
    for img in (image, sitk.GetImageFromArray(labels), sitk.GetImageFromArray(ids)):
        img.SetSpacing(study.spacing)
        img.SetOrigin(study.origin)
        out.append(img)
    return out[0], out[1], out[2]
