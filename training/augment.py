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
