"""CT intensity windowing (fixed and Random windowing) and training augmentations.

Random windowing (paper A.2, refs [10, 11]). The paper prints the ranges as
``W ~ U(11.5, 152.9)`` and ``L ~ [141.2, 325.9]`` HU; read literally, a 141–326 HU *level*
would put the liver (≈ 60–150 HU after contrast) at the bottom of the window. LVT reads the
two ranges swapped, as the liver windows of contrast CT: **level** in 11.5…152.9 HU and
**width** in 141.2…325.9 HU. Both ranges are arguments, so the literal reading stays one
call away. The inference window is fixed and stored in the checkpoint (``meta["window"]``);
its default is the middle of both ranges.

Training applies window shifting (a new level) and scaling (a new width) independently, each
with ``p_each = 1 - sqrt(1 - p)`` so that *some* change happens with total probability
``p = 0.3``; then the HU values are clipped to the window and scaled to [0, 1].

Spatial augmentations (A.2) are MONAI dictionary transforms that move the image, the
target and the optional per-voxel MC mask together (per-class weights are not spatial).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapTransform,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandomizableTransform,
    RandRotated,
    RandZoomd,
)

LEVEL_RANGE_HU: tuple[float, float] = (11.5, 152.9)
WIDTH_RANGE_HU: tuple[float, float] = (141.2, 325.9)
DEFAULT_WINDOW: dict[str, float] = {
    "level": round(sum(LEVEL_RANGE_HU) / 2, 2),
    "width": round(sum(WIDTH_RANGE_HU) / 2, 2),
}
WINDOW_PROB = 0.3
FOREGROUND_PROB = 0.333
CROP_RESIZE_PROB, CROP_RESIZE_SCALE = 0.2, (0.7, 1.4)
ROTATE_PROB, ROTATE_DEG = 0.2, 30.0
FLIP_PROB = 0.5


def window_array(hu: np.ndarray | torch.Tensor, level: float, width: float):
    """Clip HU values to ``[level - width/2, level + width/2]`` and scale to [0, 1] (float32)."""
    low = level - width / 2.0
    if isinstance(hu, torch.Tensor):
        return ((hu.float() - low) / width).clamp_(0.0, 1.0)
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(width)
    return np.clip(out, 0.0, 1.0, out=out)


class Windowd(MapTransform):
    """Fixed window (validation and inference): HU → [0, 1]."""

    def __init__(self, keys: KeysCollection, level: float, width: float) -> None:
        super().__init__(keys)
        self.level, self.width = float(level), float(width)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = window_array(d[key], self.level, self.width)
        return d


class RandWindowd(RandomizableTransform, MapTransform):
    """Random windowing: independent level shift and width scaling, total probability ``prob``.

    Without augmentation the ``default`` window applies, so the output is always in [0, 1].
    """

    def __init__(
        self,
        keys: KeysCollection,
        default: Mapping[str, float] | None = None,
        level_range: tuple[float, float] = LEVEL_RANGE_HU,
        width_range: tuple[float, float] = WIDTH_RANGE_HU,
        prob: float = WINDOW_PROB,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys)
        window = dict(default or DEFAULT_WINDOW)
        self.default = (float(window["level"]), float(window["width"]))
        self.level_range, self.width_range = level_range, width_range
        self.total_prob = float(prob)
        self.each_prob = 1.0 - math.sqrt(1.0 - self.total_prob)
        self.window = self.default

    def randomize(self, data: Any = None) -> None:
        level, width = self.default
        if self.R.rand() < self.each_prob:
            level = float(self.R.uniform(*self.level_range))
        if self.R.rand() < self.each_prob:
            width = float(self.R.uniform(*self.width_range))
        self.window = (level, width)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize()
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = window_array(d[key], *self.window)
        return d


def train_transforms(
    patch_size: Sequence[int],
    window: Mapping[str, float] | None = None,
    image_key: str = "image",
    target_key: str = "target",
    mask_key: str | None = None,
    target_is_index: bool = False,
) -> Compose:
    """Patch sampling and augmentation of A.2 on channel-first dict samples (HU images).

    Foreground oversampling p = 0.333, crop-resize p = 0.2 with scale U(0.7, 1.4), rotation
    p = 0.2 within ±30°, flips p = 0.5 per axis, Random windowing p = 0.3. Images resample
    linearly, targets and masks by nearest neighbour, so they stay aligned.
    """
    spatial = [image_key, target_key] + ([mask_key] if mask_key else [])
    modes = ["bilinear"] + ["nearest"] * (len(spatial) - 1)
    zoom_modes = ["trilinear"] + ["nearest"] * (len(spatial) - 1)
    angle = math.radians(ROTATE_DEG)
    del target_is_index  # index maps and multi-hot maps are both "foreground where > 0"
    return Compose(
        [
            RandCropByPosNegLabeld(
                keys=spatial,
                label_key=target_key,
                spatial_size=list(patch_size),
                pos=FOREGROUND_PROB,
                neg=1.0 - FOREGROUND_PROB,
                num_samples=1,
                allow_smaller=True,
            ),
            RandZoomd(
                keys=spatial,
                prob=CROP_RESIZE_PROB,
                min_zoom=CROP_RESIZE_SCALE[0],
                max_zoom=CROP_RESIZE_SCALE[1],
                mode=zoom_modes,
                padding_mode="constant",
                keep_size=True,
            ),
            RandRotated(
                keys=spatial,
                range_x=angle,
                range_y=angle,
                range_z=angle,
                prob=ROTATE_PROB,
                mode=modes,
                padding_mode="border",
                keep_size=True,
            ),
            RandFlipd(keys=spatial, prob=FLIP_PROB, spatial_axis=0),
            RandFlipd(keys=spatial, prob=FLIP_PROB, spatial_axis=1),
            RandFlipd(keys=spatial, prob=FLIP_PROB, spatial_axis=2),
            RandWindowd(keys=[image_key], default=window),
        ]
    )
