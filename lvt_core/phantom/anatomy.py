"""One synthetic patient's anatomy in body-frame millimetres (LPS: x left, y posterior, z up).

The body frame has its origin on the body axis at the apex of the right diaphragm dome.
Everything here depends only on the patient's random stream, never on the scan size, so
every scan of the patient (any size, phase or timepoint) images the same anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lvt_core.phantom.shapes import (
    Capsule,
    Ellipsoid,
    Waves,
    polyline,
    rotation,
    rotation_xyz,
    smooth_min,
    smooth_path,
)


@dataclass
class Anatomy:
    """Shape parameters and derived structures of one patient (see module docstring)."""

    a: float  # lateral semi-axis of the body outline
    b: float  # anterior semi-axis (the posterior one is 0.9 b)
    fat0: float  # subcutaneous fat thickness
    muscle: float  # abdominal wall muscle thickness
    outline_phase: np.ndarray
    y_vb: float  # vertebral body centre (y)
    disc_z0: float
    liver_blobs: list[Ellipsoid]
    liver_waves: Waves
    dome_right: np.ndarray
    dome_left: np.ndarray
    gallbladder: Ellipsoid
    spleen: Ellipsoid
    stomach: Ellipsoid
    kidneys: list[Ellipsoid]
    heart: Ellipsoid
    aorta: list[Capsule]
    ivc: list[Capsule]
    veins: list[Capsule]  # splenic vein, SMV, renal veins (extrahepatic, not labelled)
    portal_root: list[Capsule]  # main portal vein, confluence to hilum (visceral frame)
    portal_tree: list[Capsule] = field(default_factory=list)  # liver frame
    hepatic_tree: list[Capsule] = field(default_factory=list)  # liver frame
    ribs: list[list[Capsule]] = field(default_factory=list)
    cartilage: list[list[Capsule]] = field(default_factory=list)
    colon: list[Capsule] = field(default_factory=list)
    small_bowel: list[list[Capsule]] = field(default_factory=list)
    hilum: np.ndarray = field(default_factory=lambda: np.zeros(3))

    # ---- body wall ------------------------------------------------------------------------
    def outline_radius(self, cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
        """Radius of the body outline along the in-plane direction (cos θ, sin θ)."""
        b = np.where(sin_t > 0, np.float32(0.9 * self.b), np.float32(self.b))
        r = 1.0 / np.sqrt((cos_t / np.float32(self.a)) ** 2 + (sin_t / b) ** 2)
        # wobble: sum of 0.015 cos(mθ + φ_m), m = 2, 3, 4, by the angle-sum identities
        c2, s2 = 2 * cos_t * cos_t - 1, 2 * sin_t * cos_t
        c3, s3 = c2 * cos_t - s2 * sin_t, s2 * cos_t + c2 * sin_t
        c4, s4 = 2 * c2 * c2 - 1, 2 * s2 * c2
        wobble = np.float32(0.0)
        for (cm, sm), ph in zip(((c2, s2), (c3, s3), (c4, s4)), self.outline_phase, strict=True):
            wobble = wobble + cm * np.float32(0.015 * np.cos(ph)) - sm * np.float32(0.015 * np.sin(ph))
        return (r * (1 + wobble)).astype(np.float32)

    def fat_thickness(self, sin_t: np.ndarray) -> np.ndarray:
        """Subcutaneous fat: thicker over the belly (sin θ < 0), thinner over the back."""
        return (np.float32(self.fat0) * (1 - np.float32(0.35) * sin_t)).astype(np.float32)

    def depth(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Depth below the skin along the radial ray (mm, negative outside) and sin θ."""
        r = np.sqrt(x * x + y * y) + np.float32(1e-6)
        cos_t, sin_t = x / r, y / r
        return self.outline_radius(cos_t, sin_t) - r, sin_t

    def cavity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Implicit of the abdominal cavity inside the wall muscles (negative inside)."""
        depth, sin_t = self.depth(x, y)
        return self.fat_thickness(sin_t) + np.float32(self.muscle) - depth

    def dome(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height of the diaphragm (mm): two domes, the right one higher."""
        out = None
        for apex in (self.dome_right, self.dome_left):
            h = apex[2] - ((x - apex[0]) ** 2 + 0.8 * (y - apex[1]) ** 2) / np.float32(2 * 85.0)
            out = h if out is None else np.maximum(out, h)
        return out

    # ---- liver ----------------------------------------------------------------------------
    def liver(self, x: np.ndarray, y: np.ndarray, z: np.ndarray,
              cavity: np.ndarray | None = None) -> np.ndarray:
        """Implicit of the liver envelope in the liver frame (negative inside), before the
        IVC and the gallbladder are carved out. ``cavity`` passes :meth:`cavity` values
        already computed for these voxels (the wall does not move with the liver)."""
        f = None
        for blob in self.liver_blobs:
            g = blob(x, y, z)
            f = g if f is None else smooth_min(f, g, 18.0)
        f = f + self.liver_waves(x, y, z)
        f = np.maximum(f, z - self.dome(x, y) + np.float32(4.0))
        if cavity is None:
            cavity = self.cavity(x, y)
        return np.maximum(f, cavity + np.float32(2.0))

    def liver_bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """A box that surely holds the liver (blob extents padded for waves and blending)."""
        pad = 1.5 * self.liver_waves.max_amp + 12
        lows, highs = zip(*(blob.bbox(pad) for blob in self.liver_blobs),
                          strict=True)
        return np.min(lows, axis=0), np.max(highs, axis=0)

    def inside_liver(self, points: np.ndarray, margin: float) -> np.ndarray:
        """Which points (n, 3) lie in the liver with ``margin`` mm to spare (undeformed)."""
        points = np.atleast_2d(points).astype(np.float32)
        f = self.liver(points[:, 0], points[:, 1], points[:, 2])
        return (f < -margin) & self.clear_of_carved(points, margin)

    def clear_of_carved(self, points: np.ndarray, margin: float) -> np.ndarray:
        """Which points (n, 3) lie ``margin`` mm clear of what is carved out of the liver
        envelope: the gallbladder, the IVC, and the stomach and kidneys that indent it."""
        points = np.atleast_2d(points).astype(np.float32)
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        ivc = np.min([c.distance(x, y, z) for c in self.ivc], axis=0)
        clear = (self.gallbladder(x, y, z) > margin) & (ivc > margin)
        for organ in (self.stomach, *self.kidneys):  # they indent the liver (see rendering)
            clear &= organ(x, y, z) > margin + 2.0
        return clear


def make_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient: body habitus, organs, vessels, ribs and bowel."""
    u = rng.uniform
    a, b = u(145, 172), u(108, 130)
    fat0, muscle = u(10, 30), u(8, 13)
    ca, cb = a - fat0 - muscle, b - fat0 - muscle  # cavity half-widths
    y_vb = 0.9 * b - 0.65 * fat0 - 70
    jitter = lambda s: rng.normal(0, s, 3)  # noqa: E731

    liver_blobs = [
        Ellipsoid(np.array([-0.55 * ca, 0.02 * cb, -72]) + jitter(5),
                  np.array([0.52 * ca, 0.78 * cb, 78]) * u(0.92, 1.08, 3),
                  rotation(rng, (5, 5, 10))),
        Ellipsoid(np.array([0.0, -0.5 * cb, -45]) + jitter(6),
                  np.array([0.48 * ca, 0.30 * cb, 38]) * u(0.85, 1.15, 3),
                  rotation_xyz(0, np.deg2rad(u(-8, 8)), np.deg2rad(u(5, 25)))),
        Ellipsoid(np.array([-18.0, y_vb - 42, -62]) + jitter(3), np.array([22.0, 20, 32]),
                  rotation(rng, (5, 5, 5))),
        Ellipsoid(np.array([-0.68 * ca, 0.25 * cb, -122]) + jitter(6),
                  np.array([0.28 * ca, 0.42 * cb, 42]) * u(0.8, 1.2, 3), rotation(rng, (8, 8, 8))),
    ]
    liver_waves = Waves.random(rng, 7, 5.5, (50, 140))
    dome_right = np.array([-0.45 * ca, 0.1 * cb, 0.0])
    dome_left = np.array([0.45 * ca, 0.15 * cb, u(-22, -10)])

    ivc_x, ivc_y = -25 + u(-4, 4), y_vb - 30
    ivc = polyline(smooth_path(np.array([
        [ivc_x, ivc_y, -330], [ivc_x, ivc_y - 2, -150], [ivc_x + 2, ivc_y - 8, -70],
        [ivc_x + 6, ivc_y - 14, -20], [ivc_x + 15, ivc_y - 20, 30], [ivc_x + 30, ivc_y - 30, 80],
    ]), 12), u(10, 12.5))
    ao_x, ao_y = 12 + u(-4, 4), y_vb - 30
    aorta = polyline(np.array([[ao_x + 12, ao_y + 18, 120], [ao_x + 2, ao_y + 4, 0],
                               [ao_x, ao_y, -120], [ao_x - 2, ao_y - 6, -330]]), u(10, 13))

    hilum = np.array([-0.22 * ca, y_vb - 52, -88]) + jitter(3)
    confluence = np.array([8.0, y_vb - 60, -125]) + jitter(3)
    spleen_c = np.array([0.72 * ca, 0.45 * cb, -72]) + jitter(4)
    spleen = Ellipsoid(spleen_c, np.array([22.0, 52, 48]) * u(0.85, 1.15, 3),
                       rotation_xyz(0, 0, np.deg2rad(u(30, 50))), Waves.random(rng, 3, 2.5, (50, 120)))
    splenic_hilum = spleen_c + np.array([-20, -18, -5])
    veins = polyline(smooth_path(np.array([
        confluence, [0.3 * ca, y_vb - 25, -112], splenic_hilum]), 8), u(4.5, 5.5))
    veins += polyline(np.array([confluence, confluence + np.array([2, -15, -60]),
                                confluence + np.array([-5, -25, -200])]), u(5, 6))  # SMV
    kidneys = []
    for side in (-1, 1):
        kc = np.array([side * 0.52 * ca, y_vb + 8, -150 + 14 * side]) + jitter(3)
        kidneys.append(Ellipsoid(kc, np.array([24.0, 27, 54]) * u(0.9, 1.1, 3),
                                 rotation_xyz(np.deg2rad(-10), np.deg2rad(-12 * side),
                                              np.deg2rad(-30 * side)),
                                 Waves.random(rng, 2, 1.5, (60, 120))))
        hil = kc + np.array([-side * 22, -8, 0])
        target = np.array([ivc_x + 5 * side, ivc_y, kc[2] + 8])
        veins += polyline(np.array([hil, (hil + target) / 2 + [0, -10, 0], target]), 4.5)

    stomach = Ellipsoid(np.array([0.5 * ca, -0.02 * cb, -92]) + jitter(5),
                        np.array([0.26 * ca, 0.3 * cb, 50]) * u(0.85, 1.1, 3),
                        rotation_xyz(0, np.deg2rad(u(-25, -10)), np.deg2rad(u(-10, 10))),
                        Waves.random(rng, 4, 4.0, (50, 120)))
    gallbladder = Ellipsoid(np.array([-0.32 * ca, -0.55 * cb, -120]) + jitter(5),
                            np.array([14.0, 16, 34]) * u(0.8, 1.2, 3),
                            rotation_xyz(np.deg2rad(30), np.deg2rad(-15), 0))
    heart = Ellipsoid(np.array([0.12 * ca, -0.2 * cb, 55]), np.array([0.5 * ca, 0.48 * cb, 62]),
                      rotation(rng, (5, 5, 10)))

    anatomy = Anatomy(
        a=a, b=b, fat0=fat0, muscle=muscle, outline_phase=rng.uniform(0, 2 * np.pi, 3), y_vb=y_vb,
        disc_z0=u(0, 32), liver_blobs=liver_blobs, liver_waves=liver_waves, dome_right=dome_right,
        dome_left=dome_left, gallbladder=gallbladder, spleen=spleen, stomach=stomach,
        kidneys=kidneys, heart=heart, aorta=aorta, ivc=ivc, veins=veins, portal_root=[],
        hilum=hilum,
    )
    anatomy.hilum = _into_liver(anatomy, hilum, 9.0)
    anatomy.portal_root = polyline(smooth_path(np.array(
        [confluence, (confluence + anatomy.hilum) / 2 + [-5, 0, 5], anatomy.hilum]), 8), 7.5)
    _make_ribs(anatomy, rng)
    _make_bowel(anatomy, rng, ca, cb)
    anatomy.portal_tree = grow_tree(anatomy, rng, [(anatomy.hilum, np.array([-0.8, 0.3, 0.4]), 7.0),
                                                   (anatomy.hilum, np.array([0.6, -0.6, 0.4]), 6.0)])
    drain = np.array([ivc_x + 5, ivc_y - 12, -35])  # on the IVC, below the diaphragm
    anatomy.hepatic_tree = grow_tree(anatomy, rng, [
        (drain, np.array([-0.85, 0.2, -0.45]), 6.5), (drain, np.array([-0.35, -0.8, -0.5]), 5.5),
        (drain, np.array([0.5, -0.8, -0.3]), 5.0)], root_outside=True)
    return anatomy


def _into_liver(anatomy: Anatomy, point: np.ndarray, margin: float) -> np.ndarray:
    """Move ``point`` towards the right-lobe centre until it is inside with ``margin``."""
    target = anatomy.liver_blobs[0].center
    for t in np.linspace(0, 1, 41):
        p = point + t * (target - point)
        if anatomy.inside_liver(p, margin)[0]:
            return p
    return target.copy()


def _make_ribs(anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Seven ribs per side descending from the spine around the wall, with costal cartilage."""
    for side in (-1, 1):
        for i in range(7):
            z0 = 45 - 27 * i + rng.uniform(-4, 4)
            end = 0.82 if i < 4 else (0.62 if i < 6 else 0.5)
            psi = np.linspace(0.12, end, 12) * np.pi
            theta = np.arctan2(np.cos(psi), side * np.sin(psi))
            c, s = np.cos(theta), np.sin(theta)
            r = anatomy.outline_radius(c, s) - anatomy.fat_thickness(s) - 0.55 * anatomy.muscle
            pts = np.column_stack([r * np.cos(theta), r * np.sin(theta),
                                   z0 - 120 * (psi / np.pi) ** 1.15])
            anatomy.ribs.append(polyline(pts, 4.5))
            if i < 4:
                psi = np.linspace(end, 0.93, 5) * np.pi
                theta = np.arctan2(np.cos(psi), side * np.sin(psi))
                c, s = np.cos(theta), np.sin(theta)
                r = anatomy.outline_radius(c, s) - anatomy.fat_thickness(s) - 0.55 * anatomy.muscle
                pts = np.column_stack([r * np.cos(theta), r * np.sin(theta),
                                       z0 - 120 * (psi / np.pi) ** 1.15 + 25 * (psi / np.pi - end)])
                anatomy.cartilage.append(polyline(pts, 4.0))


def _make_bowel(anatomy: Anatomy, rng: np.random.Generator, ca: float, cb: float) -> None:
    """A colon frame (ascending, transverse, descending) and a few small-bowel loops."""
    j = lambda: rng.normal(0, 6, 3)  # noqa: E731
    control = np.array([
        [-0.68 * ca, 0.15 * cb, -340], [-0.7 * ca, 0.05 * cb, -250], [-0.62 * ca, -0.15 * cb, -185],
        [-0.3 * ca, -0.62 * cb, -200], [0.2 * ca, -0.6 * cb, -195], [0.66 * ca, -0.1 * cb, -150],
        [0.74 * ca, 0.25 * cb, -210], [0.7 * ca, 0.25 * cb, -340]]) + np.array([j() for _ in range(8)])
    anatomy.colon = polyline(smooth_path(control, 6), rng.uniform(16, 22))
    lo = np.array([-0.6 * ca, -0.8 * cb, -350])
    hi = np.array([0.6 * ca, 0.25 * cb, -175])
    for _ in range(int(rng.integers(7, 11))):  # small-bowel loops fill the lower abdomen
        p = rng.uniform(lo + 15, hi - 15)
        d = rng.normal(size=3)
        pts = [p]
        for _ in range(int(rng.integers(40, 80))):
            d = d / np.linalg.norm(d) + rng.normal(0, 0.45, 3)
            d /= np.linalg.norm(d)
            p = p + 7 * d
            d = np.where(p < lo, np.abs(d), np.where(p > hi, -np.abs(d), d))
            p = np.clip(p, lo, hi)
            pts.append(p)
        anatomy.small_bowel.append(polyline(np.array(pts), rng.uniform(9, 13)))


def _perturb(direction: np.ndarray, rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = np.cross(direction, rng.normal(size=3))
    axis /= np.linalg.norm(axis) + 1e-9
    angle = np.deg2rad(rng.uniform(0, max_deg))
    d = direction * np.cos(angle) + np.cross(axis, direction) * np.sin(angle)
    return d / np.linalg.norm(d)


def grow_tree(anatomy: Anatomy, rng: np.random.Generator,
              roots: list[tuple[np.ndarray, np.ndarray, float]], root_outside: bool = False,
              min_radius: float = 1.0, max_segments: int = 700) -> list[Capsule]:
    """Grow a branching vessel tree inside the liver from ``roots`` (point, direction, radius).

    Each branch runs a few radii long, then splits in two with Murray's law
    (r³ = r₁³ + r₂³) at 15–70°. Branches steer towards random points of the liver interior
    (space filling) and stop where they cannot stay inside with a margin of about their
    radius, so radii taper from the root's to about ``min_radius``.
    """
    lo, hi = anatomy.liver_bbox()
    cloud = rng.uniform(lo, hi, size=(6000, 3))
    cloud = cloud[anatomy.inside_liver(cloud, 4.0)]
    segments: list[Capsule] = []
    queue = [(np.asarray(p, float), np.asarray(d, float) / np.linalg.norm(d), r, 0)
             for p, d, r in roots]
    while queue and len(segments) < max_segments:
        p, d, r, depth = queue.pop(0)  # breadth first: every root gets its share
        length = r * rng.uniform(3.0, 5.0) + rng.uniform(3, 8)
        if depth == 0 and root_outside:
            length += 15
        placed = None
        attempts = 40 if depth == 0 else 10  # a trunk must start: search wider
        for attempt in range(attempts):
            d2 = _steer(p, _perturb(d, rng, 10 + 5 * min(attempt, 12)), cloud, length, rng)
            scale = (1.0, 1.0, 1.0, 0.7, 0.7, 0.7, 0.5, 0.5, 0.35, 0.35)[attempt % 10]
            end = p + length * scale * d2
            ts = np.linspace(0.5 if depth == 0 and root_outside else 0.2, 1.0, 5)
            pts = p + ts[:, None] * (end - p)
            if anatomy.inside_liver(pts, 0.7 * r + 1.0).all():
                placed = (end, d2)
                break
        if placed is None:
            continue
        end, d2 = placed
        r_end = r * rng.uniform(0.9, 0.97)
        segments.append(Capsule(p, end, r, r_end))
        if r_end < 1.3 * min_radius or depth > 20:
            continue
        alpha = rng.uniform(0.4, 1.0)
        r1 = r_end / (1 + alpha**3) ** (1 / 3)
        r2 = alpha * r1
        normal = np.cross(d2, rng.normal(size=3))
        normal /= np.linalg.norm(normal) + 1e-9
        for radius, angle, sign in ((r1, rng.uniform(10, 30), 1), (r2, rng.uniform(35, 70), -1)):
            if radius < min_radius:
                continue
            t = np.deg2rad(angle)
            child = d2 * np.cos(t) + sign * normal * np.sin(t)
            queue.append((end, child / np.linalg.norm(child), radius, depth + 1))
    return segments


def _steer(p: np.ndarray, d: np.ndarray, cloud: np.ndarray, length: float,
           rng: np.random.Generator) -> np.ndarray:
    """Blend direction ``d`` towards a random liver point ahead of ``p`` (within 70°)."""
    if not len(cloud):
        return d
    v = cloud - p
    dist = np.linalg.norm(v, axis=1) + 1e-9
    ok = (dist > length) & (dist < 5 * length) & ((v @ d) / dist > np.cos(np.deg2rad(70)))
    if not ok.any():
        return d
    target = v[rng.choice(np.nonzero(ok)[0])] / dist[ok].mean()
    out = d + 0.8 * target / np.linalg.norm(target)
    return out / np.linalg.norm(out)
