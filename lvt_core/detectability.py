"""How visible a lesion is in its scan: contrast against how much noise moves a region's mean.

A lesion of ``n`` voxels whose mean differs from the liver by ``c`` HU stands out when ``c``
is large against the spread of the liver's mean over regions of ``n`` voxels (the Rose
criterion: about 5 for an observer who does not know where to look). That spread is measured
on the scan itself, over cubes of the lesion's volume inside the liver, so correlated noise
(reconstruction kernels, resampling) counts as it is, not as white noise would.

Training uses it to relabel lesions no observer could see (``training.augment``), and the
model evaluation reports it per lesion, so misses can be told apart from invisible lesions.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_cdt, find_objects, uniform_filter

ROSE_THRESHOLD = 5.0
"""Detectability above which an observer searching the whole liver reliably sees a lesion."""

MIN_CORE_VOXELS = 50


def robust_spread(sample: np.ndarray) -> tuple[float, float]:
    """Median and robust sd (1.4826 × MAD) of ``sample``: a few lesions in it move neither."""
    centre = float(np.median(sample))
    return centre, 1.4826 * float(np.median(np.abs(sample - centre)))


class LiverNoise:
    """The liver's median HU and the robust spread of its mean over cubes of a given volume.

    Cubes are kept clear of the liver's edge (their centres at least half a side plus one
    voxel inside), so the spread is noise and texture, not the organ boundary.
    """

    def __init__(self, hu: np.ndarray, liver: np.ndarray):
        box = find_objects(liver.astype(np.uint8))
        if not box or box[0] is None:
            raise ValueError("no liver voxels to measure noise in")
        grown = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box[0])
        self._liver = np.pad(liver[grown], 1)
        self._hu = np.pad(np.asarray(hu[grown], dtype=np.float32), 1, mode="edge")
        self.median = float(np.median(self._hu[self._liver]))
        self._depth: np.ndarray | None = None
        self._spread_by_side: dict[int, float] = {}

    def spread(self, voxels: int) -> float:
        """Robust sd (1.4826 × MAD) of the liver's mean over cubes of about ``voxels``."""
        side = max(1, round(voxels ** (1 / 3)))
        if side not in self._spread_by_side:
            if self._depth is None:  # taxicab depth: > k is the liver eroded k times
                self._depth = distance_transform_cdt(self._liver, metric="taxicab")
            core = self._depth > side // 2 + 1
            means = uniform_filter(self._hu, size=side)[core if core.sum() >= MIN_CORE_VOXELS else self._liver]
            self._spread_by_side[side] = robust_spread(means)[1]
        return self._spread_by_side[side]

    def detectability(self, contrast_hu: float, voxels: int) -> float:
        """``|contrast|`` in units of the spread for a region of ``voxels`` (inf if noiseless)."""
        spread = self.spread(voxels)
        return abs(contrast_hu) / spread if spread > 0 else float("inf")
