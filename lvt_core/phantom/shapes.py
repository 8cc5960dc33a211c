"""Implicit shapes in patient millimetres: smooth blobs, wavy deformations, tapered capsules.

Every function works on coordinate arrays of any shape (a voxel sub-box or a point list),
so the same shape is tested at sample points during anatomy generation and rendered on
each scan's own grid. Implicit values are approximate signed distances in mm
(negative inside).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Waves:
    """A smooth random field: a sum of a few sinusoids of long wavelength (mm)."""

    k: np.ndarray  # (n, 3) wave vectors in rad/mm
    phase: np.ndarray  # (n,)
    amp: np.ndarray  # (n,)

    @classmethod
    def random(cls, rng: np.random.Generator, n: int, amp: float, wavelength: tuple[float, float]
               ) -> Waves:
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        k = direction * (2 * np.pi / rng.uniform(*wavelength, size=(n, 1)))
        return cls(k, rng.uniform(0, 2 * np.pi, n), amp * rng.uniform(0.5, 1.0, n))

    @property
    def max_amp(self) -> float:
        return float(self.amp.sum())

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), np.float32)
        for (kx, ky, kz), ph, a in zip(self.k, self.phase, self.amp, strict=True):
            out += np.float32(a) * np.sin(np.float32(kx) * x + np.float32(ky) * y
                                          + np.float32(kz) * z + np.float32(ph))
        return out


def rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    """A random rotation matrix with angles about x, y, z up to ``max_deg`` degrees."""
    ax, ay, az = (np.deg2rad(rng.uniform(-m, m)) for m in max_deg)
    return rotation_xyz(ax, ay, az)


def rotation_xyz(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix ``Rz @ Ry @ Rx`` for angles in radians."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid (centre, axes as rotation columns, radii) with optional wavy surface."""

    center: np.ndarray
    radii: np.ndarray
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))
    waves: Waves | None = None

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        dx, dy, dz = (np.float32(-c) + v for c, v in zip(self.center, (x, y, z), strict=True))
        rho2 = np.zeros(np.shape(dx), np.float32)
        for i in range(3):
            a = self.axes[:, i]
            local = np.float32(a[0]) * dx + np.float32(a[1]) * dy + np.float32(a[2]) * dz
            rho2 += (local / np.float32(self.radii[i])) ** 2
        f = (np.sqrt(rho2) - 1) * np.float32(self.radii.mean())
        if self.waves is not None:
            f += self.waves(x, y, z)
        return f

    def bbox(self, pad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        extent = np.abs(self.axes) @ self.radii + pad + (self.waves.max_amp if self.waves else 0)
        return self.center - extent, self.center + extent


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: a union of two implicit shapes with a rounded seam of ~k mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


@dataclass(frozen=True)
class Capsule:
    """A tube segment from ``a`` to ``b`` whose radius tapers linearly from ``ra`` to ``rb``."""

    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float

    def distance(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance to the tube surface in mm (negative inside)."""
        ab = self.b - self.a
        length2 = float(ab @ ab) or 1e-6
        px, py, pz = x - np.float32(self.a[0]), y - np.float32(self.a[1]), z - np.float32(self.a[2])
        t = (px * np.float32(ab[0]) + py * np.float32(ab[1]) + pz * np.float32(ab[2]))
        t = np.clip(t / np.float32(length2), 0, 1)
        d = np.sqrt((px - t * np.float32(ab[0])) ** 2 + (py - t * np.float32(ab[1])) ** 2
                    + (pz - t * np.float32(ab[2])) ** 2)
        return d - (np.float32(self.ra) + t * np.float32(self.rb - self.ra))

    def bbox(self, pad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        r = max(self.ra, self.rb) + pad
        return np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r


def polyline(points: np.ndarray, radius: float | np.ndarray) -> list[Capsule]:
    """Capsules along a polyline; ``radius`` is one value or one per point."""
    points = np.asarray(points, float)
    radii = np.broadcast_to(np.asarray(radius, float), (len(points),))
    return [Capsule(points[i], points[i + 1], float(radii[i]), float(radii[i + 1]))
            for i in range(len(points) - 1)]


def smooth_path(control: np.ndarray, step: float) -> np.ndarray:
    """Points every ~``step`` mm along a Catmull-Rom curve through ``control`` points."""
    control = np.asarray(control, float)
    padded = np.vstack([2 * control[0] - control[1], control, 2 * control[-1] - control[-2]])
    out = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1:i + 3]
        n = max(2, int(np.linalg.norm(p2 - p1) / step))
        for t in np.linspace(0, 1, n, endpoint=False):
            out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    out.append(control[-1])
    return np.array(out)
