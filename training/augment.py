"""Domain randomisation of intensities and noise (SynthSeg spirit) on HU patches.

Phantoms have clean, known intensities; real contrast CT varies by scanner, phase and
patient. Before Random windowing, these random changes make the network lean on shape and
relative contrast: a global HU gain and offset, per-structure offsets on the annotated
structures, Gaussian noise and blur. Each draws from the step's own generator.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def randomize_relative_contrast(
    hu: np.ndarray, labels: np.ndarray, annotated: Sequence[str], rng: np.random.Generator,
    probability: float, structures: Sequence[str] = ("vessel", "tumor"),
) -> np.ndarray:
    """Re-draw each structure's contrast to the liver, darker or brighter, with ``probability``.

    Tumors are hypodense in some phases and hyperenhancing in others (HCC in the arterial
    phase), and hepatic veins are dark before they fill; a model that saw mostly dark tumors
    learns "darker than liver" instead of "a round lesion", and misses bright ones. Moving
    the structure's median to ``±U(10, 80)`` HU from the liver's median (with a one-voxel
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
        target = float(rng.choice([-1.0, 1.0]) * rng.uniform(*CONTRAST_RANGE_HU))
        shift = target - (float(np.median(out[region])) - liver_hu)
        # full shift inside the label, a one-voxel partial-volume ramp just outside it
        weight = np.maximum(gaussian_filter(region.astype(np.float32), sigma=0.7), region)
        out = out + np.float32(shift) * weight
    return out
