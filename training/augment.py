"""Domain randomisation of intensities and noise (SynthSeg spirit) on HU patches.

Phantoms have clean, known intensities; real contrast CT varies by scanner, phase and
patient. Before Random windowing, these random changes make the network lean on shape and
relative contrast: a global HU gain and offset, per-structure offsets on the annotated
structures, Gaussian noise and blur. Each draws from the step's own generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter

from lvt_core.labels import CLASS_VALUES


def randomize_intensity(
    hu: np.ndarray, labels: np.ndarray, annotated: Sequence[str], rng: np.random.Generator,
    strength: float = 1.0,
) -> np.ndarray:
    """A float32 copy of ``hu`` with random gain/offset, structure offsets, noise and blur."""
    out = np.asarray(hu, dtype=np.float32).copy()
    if strength <= 0:
        return out
    if rng.random() < 0.5:
        out = out * np.float32(rng.uniform(1 - 0.1 * strength, 1 + 0.1 * strength))
        out += np.float32(rng.uniform(-20, 20) * strength)
    if rng.random() < 0.3:
        for name in annotated:
            region = labels == CLASS_VALUES[name]
            if region.any():
                out[region] += np.float32(rng.uniform(-15, 15) * strength)
    if rng.random() < 0.2:
        out = gaussian_filter(out, sigma=float(rng.uniform(0.3, 1.0)))
    if rng.random() < 0.3:
        out += rng.normal(0.0, rng.uniform(0, 20) * strength, out.shape).astype(np.float32)
    return out


CONTRAST_RANGE_HU = (10.0, 80.0)
"""Magnitude of the contrast to the liver that :func:`randomize_relative_contrast` draws."""

ContrastSampling = Literal["uniform", "log_uniform"]


def draw_contrast(rng: np.random.Generator, contrast_range_hu: tuple[float, float],
                  sampling: ContrastSampling = "uniform") -> float:
    """A signed contrast to the liver (HU): darker or brighter, its magnitude from the range.

    ``uniform`` spends as many draws on 60–80 HU as on 3–23 HU, yet the visible lesions models
    miss are the faint ones (median −8 HU on the test). ``log_uniform`` draws the magnitude
    uniformly in log(HU), so 3–12 HU gets as many draws as 20–80 HU. A low bound of 0 falls
    back to 1 HU there, because log(0) has no place on that scale.
    """
    low, high = contrast_range_hu
    if sampling == "log_uniform":
        low = max(low, 1.0)
        magnitude = float(np.exp(rng.uniform(np.log(low), np.log(max(high, low)))))
    else:
        magnitude = float(rng.uniform(low, high))
    return float(rng.choice([-1.0, 1.0])) * magnitude


def randomize_relative_contrast(
    hu: np.ndarray, labels: np.ndarray, annotated: Sequence[str], rng: np.random.Generator,
    probability: float, structures: Sequence[str] = ("vessel", "tumor"),
    contrast_range_hu: tuple[float, float] = CONTRAST_RANGE_HU,
    contrast_sampling: ContrastSampling = "uniform",
) -> np.ndarray:
    """Re-draw each structure's contrast to the liver, darker or brighter, with ``probability``.

    Tumors are hypodense in some phases and hyperenhancing in others (HCC in the arterial
    phase), and hepatic veins are dark before they fill; a model that saw mostly dark tumors
    learns "darker than liver" instead of "a round lesion", and misses bright ones. Moving
    the structure's median to ``±U(lo, hi)`` HU (``contrast_range_hu``, default 10–80) from the
    liver's median (with a one-voxel
    ramp outside the label, so the edge keeps a partial-volume transition) makes shape the cue.
    """
    out = np.asarray(hu, dtype=np.float32)
    if probability <= 0 or "liver" not in annotated:
        return out
    liver = labels == CLASS_VALUES["liver"]
    if liver.sum() < 50:
        return out
    liver_hu = float(np.median(out[liver]))
    for name in structures:
        if name not in annotated or rng.random() >= probability:
            continue
        region = labels == CLASS_VALUES[name]
        if region.sum() < 10:
            continue
        target = draw_contrast(rng, contrast_range_hu, contrast_sampling)
        shift = target - (float(np.median(out[region])) - liver_hu)
        # full shift inside the label, a one-voxel partial-volume ramp just outside it
        weight = np.maximum(gaussian_filter(region.astype(np.float32), sigma=0.7), region)
        out = out + np.float32(shift) * weight
    return out


SYNTHETIC_DIAMETER_MM = (4.0, 16.0)
"""Diameters of the lesions :func:`insert_synthetic_lesions` draws: the small ones models miss."""


MIN_PLAIN_LIVER = 0.85
"""Smallest share of an inserted lesion's voxels that must be plain liver (the rest vessel)."""


def _lesion_mask(shape: tuple[int, ...], center: np.ndarray, radii_vox: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """A randomly rotated, slightly lobulated ellipsoid of ``radii_vox`` around ``center``."""
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1)
    local = (grid - center.astype(np.float32)) @ q.astype(np.float32)
    radius = np.sqrt(((local / radii_vox.astype(np.float32)) ** 2).sum(-1))
    # lobulation: a low-order angular wave on the surface, up to ±12 % of the radius
    direction = local / (np.linalg.norm(local, axis=-1, keepdims=True) + 1e-6)
    wave = rng.normal(size=3).astype(np.float32)
    radius *= 1.0 + np.float32(rng.uniform(0.0, 0.12)) * np.sin(direction @ wave * 3.0)
    return radius <= 1.0


def insert_synthetic_lesions(
    hu: np.ndarray, labels: np.ndarray, annotated: Sequence[str], rng: np.random.Generator,
    probability: float, spacing_zyx: Sequence[float], max_lesions: int = 3,
    diameter_mm: tuple[float, float] = SYNTHETIC_DIAMETER_MM,
    contrast_range_hu: tuple[float, float] = CONTRAST_RANGE_HU, near_vessel: float = 0.0,
    contrast_sampling: ContrastSampling = "uniform",
) -> tuple[np.ndarray, np.ndarray]:
    """With ``probability``, add 1–``max_lesions`` small labelled lesions inside the patch's liver.

    Small lesions (under ~15 mm) are what the model misses: the phantom draws few of them,
    and a voxel-sampled patch centre rarely lands on one. Each inserted lesion is a lobulated
    ellipsoid in the liver (vessels it touches keep their label and HU), darker or brighter by ``±U(contrast_range_hu)``
    HU (a quarter of them ring-enhancing with a dark core), with a one-voxel partial-volume
    ramp; the patch's own noise stays on top. Only sources that annotate liver and tumor take
    part, so every inserted voxel is labelled. With chance ``near_vessel`` a lesion is placed
    against a vessel: 0.5.0 and 0.6.0 took such lesions for vessels or missed them.
    Returns new arrays; the inputs are untouched.
    """
    liver_value, tumor_value = CLASS_VALUES["liver"], CLASS_VALUES["tumor"]
    vessel_value = CLASS_VALUES["vessel"]
    if probability <= 0 or not {"liver", "tumor"} <= set(annotated) or rng.random() >= probability:
        return hu, labels
    liver = labels == liver_value
    coords = np.argwhere(liver)
    if len(coords) < 500:
        return hu, labels
    hu = np.asarray(hu, dtype=np.float32).copy()
    labels = labels.copy()
    spacing = np.asarray(spacing_zyx, dtype=float)
    vessel_coords = np.argwhere(labels == vessel_value) if near_vessel > 0 else np.empty((0, 3), int)
    wanted, placed = int(rng.integers(1, max_lesions + 1)), 0
    for _ in range(4 * wanted):  # a few tries each: vessels and edges reject many places
        if placed == wanted:
            break
        diameter = rng.uniform(*diameter_mm)
        radii = diameter / 2 * np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.7, 1.0)]) / spacing
        center = coords[rng.integers(len(coords))]
        if len(vessel_coords) and rng.random() < near_vessel:
            # abutting a vessel, where lesions are easiest to mistake for one
            step = rng.normal(size=3)
            offset = step / np.linalg.norm(step) * (radii.max() + rng.uniform(0.5, 1.5))
            center = np.clip(np.round(vessel_coords[rng.integers(len(vessel_coords))] + offset).astype(int),
                             0, np.array(labels.shape) - 1)
        reach = int(np.ceil(radii.max())) + 2
        lo = np.maximum(center - reach, 0)
        hi = np.minimum(center + reach + 1, labels.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        body = _lesion_mask(tuple(hi - lo), center - lo, radii, rng)
        covered = labels[box][body]
        # in the liver, apart from other tumors, clear of its edge; vessels it touches stay vessels
        if body.sum() < 4 or (labels[box] == tumor_value).any() \
                or not np.isin(covered, (liver_value, vessel_value)).all() \
                or (covered == liver_value).mean() < MIN_PLAIN_LIVER:
            continue
        inside = body & (labels[box] == liver_value)
        contrast = draw_contrast(rng, contrast_range_hu, contrast_sampling)
        ramp = np.maximum(gaussian_filter(inside.astype(np.float32), sigma=0.7, truncate=2.0), inside)
        shift = np.float32(contrast) * ramp
        if rng.random() < 0.25 and inside.sum() > 30:  # enhancing rim, necrotic core
            core = gaussian_filter(inside.astype(np.float32), sigma=1.0) > 0.9
            shift[core] = np.float32(-abs(contrast))
        hu[box] += shift
        labels[box][inside] = tumor_value
        placed += 1
    return hu, labels


def relabel_invisible_lesions(
    hu: np.ndarray, labels: np.ndarray, annotated: Sequence[str], min_detectability: float,
) -> np.ndarray:
    """Tumor components no observer could see in ``hu`` become liver; returns the labels.

    Contrast re-drawn down to a few HU, lesions inserted at 4 mm and noise added on top make
    some labelled lesions invisible: their mean differs from the liver by less than noise
    moves the mean of a liver region of the same size. Taught to find those, the network
    fires on noise blobs in the liver, worst on noisy thick-slice scans. A component stays
    tumor when ``|mean - liver median| >= min_detectability * sd`` (a Rose-style criterion)
    for the whole lesion or for its core (one voxel in: ring-enhancing lesions average out),
    where ``sd`` is the spread of the liver's mean over cubes of that volume, so the noise's
    own correlation counts. ``min_detectability`` 0 keeps every lesion.
    """
    if min_detectability <= 0 or not {"liver", "tumor"} <= set(annotated):
        return labels
    tumor_value, liver_value = CLASS_VALUES["tumor"], CLASS_VALUES["liver"]
    liver = labels == liver_value
    if not (labels == tumor_value).any() or liver.sum() < 500:
        return labels
    import cc3d
    from scipy.ndimage import binary_erosion, find_objects

    from lvt_core.detectability import LiverNoise

    noise = LiverNoise(hu, liver)

    def visible(region: np.ndarray, values: np.ndarray) -> bool:
        n = int(region.sum())
        return n > 0 and noise.detectability(float(values[region].mean()) - noise.median, n) >= min_detectability

    components = cc3d.connected_components(labels == tumor_value, connectivity=26)
    out = labels
    for index, box in enumerate(find_objects(components), start=1):
        if box is None:
            continue
        lesion = components[box] == index
        if visible(lesion, hu[box]) or visible(binary_erosion(lesion), hu[box]):
            continue
        if out is labels:
            out = labels.copy()
        out[box][lesion] = liver_value
    return out
