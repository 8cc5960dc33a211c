"""False-lesion reduction: a second look at each predicted tumor component (CAD's second stage).

The network's tumor probability alone cannot tell a faint true lesion from a noise blob in
the liver: both peak at 0.7–0.98 on thick-slice scans. What a reader uses is different
evidence about the whole candidate: how far its mean HU stands from the liver around it
*relative to that liver's noise*, whether it is round or a tube, whether it hugs a vessel
or the liver's edge, and how large it is. :func:`candidate_features` measures those per
component, and :class:`LesionFilter`, a logistic regression fitted on phantoms that neither
training, calibration nor the test uses (``training/lesion_filter.py``), turns them into a
lesion score. Components scoring below the calibrated ``min_lesion_score`` become liver.

A logistic regression is stored as plain numbers in the checkpoint's metadata: it loads
with ``weights_only=True``, needs no scikit-learn at inference, and every weight can be read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cc3d
import numpy as np
from scipy import ndimage

from lvt_core.labels import BACKGROUND, LIVER, TUMOR, VESSEL

FEATURES = (
    "log_volume_ml",
    "peak_probability",
    "mean_probability",
    "contrast_hu",
    "abs_contrast_hu",
    "log_detectability",
    "inside_noise_ratio",
    "liver_noise_hu",
    "roundness",
    "vessel_contact",
    "edge_contact",
)
SHELL_MM = 5.0
"""The liver a candidate is compared with: voxels within this distance of its surface."""


@dataclass
class TumorCandidates:
    """The tumor components of one label map and their features (one row per component)."""

    components: np.ndarray  # int32, 0 outside tumors, component k has label k
    features: np.ndarray  # float64 (n, len(FEATURES))

    @property
    def count(self) -> int:
        return len(self.features)

    def column(self, name: str) -> np.ndarray:
        return self.features[:, FEATURES.index(name)]


def roundness(mask: np.ndarray, spacing_zyx: np.ndarray) -> float:
    """sqrt(smallest / largest principal variance) of the voxels in mm: 1 for a ball, near 0
    for a tube or a sheet. Each axis gets a voxel's own variance (spacing²/12), so a one-slice
    speck on a thick-slice scan is not mistaken for a flat sheet."""
    points = np.argwhere(mask) * spacing_zyx
    covariance = np.cov(points.T) if len(points) > 1 else np.zeros((3, 3))
    covariance = covariance + np.diag(spacing_zyx**2 / 12.0)
    eigen = np.linalg.eigvalsh(covariance)
    return float(np.sqrt(max(eigen[0], 0.0) / eigen[-1]))


def _component_features(
    lesion: np.ndarray, labels: np.ndarray, probability: np.ndarray, hu: np.ndarray,
    spacing_zyx: np.ndarray,
) -> list[float]:
    """The :data:`FEATURES` of one component, all arrays cropped to a box around it."""
    distance = ndimage.distance_transform_edt(~lesion, sampling=spacing_zyx)
    shell = (distance > 0) & (distance <= max(SHELL_MM, float(spacing_zyx.max())))
    liver_shell = shell & (labels == LIVER)
    inside_hu = hu[lesion].astype(np.float64)
    n = int(lesion.sum())
    if liver_shell.sum() >= 3:
        around = hu[liver_shell].astype(np.float64)
        contrast, noise = float(inside_hu.mean() - around.mean()), max(float(around.std()), 1.0)
    else:  # no liver around it to compare with: no evidence either way
        contrast, noise = 0.0, max(float(inside_hu.std()), 1.0)
    shell_labels = labels[shell]
    inside_probability = probability[lesion].astype(np.float64)
    return [
        float(np.log10(n * float(np.prod(spacing_zyx)) / 1000.0)),
        float(inside_probability.max()),
        float(inside_probability.mean()),
        contrast,
        abs(contrast),
        float(np.log1p(abs(contrast) * np.sqrt(n) / noise)),
        float(inside_hu.std()) / noise,
        noise,
        roundness(lesion, spacing_zyx),
        float((shell_labels == VESSEL).mean()) if shell_labels.size else 0.0,
        float((shell_labels == BACKGROUND).mean()) if shell_labels.size else 0.0,
    ]


def candidate_features(
    labels: np.ndarray, tumor_probability: np.ndarray, hu: np.ndarray,
    spacing_xyz: Sequence[float],
) -> TumorCandidates:
    """Every 26-connected tumor component of the ``z, y, x`` label map ``labels``, measured on
    the same grid's ``tumor_probability`` and ``hu``."""
    spacing_zyx = np.asarray(spacing_xyz, np.float64)[::-1]
    components, count = cc3d.connected_components(labels == TUMOR, connectivity=26, return_N=True)
    margin = np.ceil((SHELL_MM + spacing_zyx) / spacing_zyx).astype(int)
    rows = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        grown = tuple(slice(max(0, s.start - m), s.stop + m) for s, m in zip(box, margin, strict=True))
        rows.append(_component_features(components[grown] == index, labels[grown],
                                        tumor_probability[grown], hu[grown], spacing_zyx))
    features = np.asarray(rows, np.float64).reshape(count, len(FEATURES))
    return TumorCandidates(components.astype(np.int32, copy=False), features)


@dataclass(frozen=True)
class LesionFilter:
    """A logistic regression on standardised :data:`FEATURES`: P(component is a true lesion)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def __post_init__(self) -> None:
        unknown = [name for name in self.features if name not in FEATURES]
        sizes = {len(self.features), len(self.mean), len(self.scale), len(self.coef)}
        if unknown or len(sizes) != 1:
            raise ValueError(f"lesion filter: unknown features {unknown} or mismatched lengths {sorted(sizes)}")

    def scores(self, features: np.ndarray) -> np.ndarray:
        """One probability per row of ``features`` (columns in :data:`FEATURES` order, as
        :attr:`TumorCandidates.features` holds them; empty when there are no rows)."""
        columns = np.asarray(features, np.float64).reshape(-1, len(FEATURES))
        columns = columns[:, [FEATURES.index(name) for name in self.features]]
        z = (columns - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))

    def to_meta(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": list(self.mean), "scale": list(self.scale),
                "coef": list(self.coef), "intercept": self.intercept}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> LesionFilter:
        return cls(tuple(meta["features"]), tuple(float(v) for v in meta["mean"]),
                   tuple(float(v) for v in meta["scale"]), tuple(float(v) for v in meta["coef"]),
                   float(meta["intercept"]))


def drop_components(labels: np.ndarray, components: np.ndarray, keep: np.ndarray,
                    becomes: int = LIVER) -> np.ndarray:
    """``labels`` with the tumor components whose ``keep`` entry (component k at ``k - 1``) is
    False relabelled as ``becomes`` (liver by default: they lie inside the liver)."""
    if keep.all():
        return labels
    dropped = np.concatenate([[False], ~np.asarray(keep, bool)])
    out = labels.copy()
    out[dropped[components]] = becomes
    return out


def remove_extrahepatic_tumors(
    labels: np.ndarray, tumor_probability: np.ndarray, hu: np.ndarray,
    spacing_xyz: Sequence[float], max_outside: float,
) -> np.ndarray:
    """Relabel as background the tumor components with more than ``max_outside`` of the shell
    around them (``edge_contact``: within ``SHELL_MM``) outside the organ (1: off).

    A liver lesion is wrapped in parenchyma; a structure beside the liver that the network drew
    as tumor, and the liver with it, is not: on the demo phantoms the gallbladder (bile, 10–25
    HU, a dark round "lesion") is 11–35 ml of false tumor with 13–47 % of its shell outside the
    organ, where every true lesion has none. It was never liver, so it becomes background.
    """
    if max_outside >= 1 or not (labels == TUMOR).any():
        return labels
    candidates = candidate_features(labels, tumor_probability, hu, spacing_xyz)
    return drop_components(labels, candidates.components, candidates.column("edge_contact") <= max_outside,
                           becomes=BACKGROUND)


def remove_unlikely_lesions(
    labels: np.ndarray, tumor_probability: np.ndarray, hu: np.ndarray,
    spacing_xyz: Sequence[float], lesion_filter: LesionFilter, min_score: float,
) -> np.ndarray:
    """Relabel as liver the tumor components the filter scores below ``min_score``."""
    if min_score <= 0 or not (labels == TUMOR).any():
        return labels
    candidates = candidate_features(labels, tumor_probability, hu, spacing_xyz)
    return drop_components(labels, candidates.components, lesion_filter.scores(candidates.features) >= min_score)
