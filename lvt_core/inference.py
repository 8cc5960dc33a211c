"""The predictor: one loaded checkpoint, reused over many scans (nnU-Net's ``nnUNetPredictor``).

Pipeline for one scan (all geometry in physical space, so oblique and anisotropic inputs
come back exactly on their own grid):

1. reorient to the model's canonical orientation (axis permutation only) and crop to the body;
2. coarse pass: the same network at a coarser spacing finds the liver's bounding box;
3. fine pass on that box at the model spacing: sliding windows with 50 % overlap, Gaussian
   weighting, batched windows, a scan thinner than a patch padded by repeating its edge
   slices, optional mirroring TTA (default on for GPU, off for CPU) and
   optional extra HU windows (window TTA: the network, trained with Random windowing, sees
   the scan at more than one contrast and its probabilities are averaged);
4. sigmoid (or softmax) probabilities resampled linearly onto the input's own grid over that
   box (nnU-Net's export), then exclusive decoding there: smooth boundaries at the scan's
   resolution instead of model-spacing staircases;
5. air (below ``BODY_THRESHOLD_HU``) becomes background; keep the liver's largest component
   with the vessels and tumors in or touching it; tumor components whose probability never
   reaches the calibrated ``min_tumor_peak`` (unless they hold ``large_tumor_ml``), or smaller
   than ``min_tumor_volume_ml``, or less round than ``min_tumor_roundness`` (tubes, unless
   they hold ``large_tumor_ml``), become liver, as do those the checkpoint's lesion filter
   (:mod:`lvt_core.lesion_filter`) scores below ``min_lesion_score``; those with more than
   ``max_tumor_outside`` of the shell around them outside the organ become background; each remaining lesion's edge is moved to half way between it
   and the liver in the CT when the checkpoint enables it (:mod:`lvt_core.lesion_edges`);
   then, when the checkpoint enables it, round regions drawn as vessel but darker than the
   liver become tumor (:mod:`lvt_core.dark_vessels`); last, when the checkpoint enables it, a
   matched-filter search (:mod:`lvt_core.faint_lesions`) adds faint lesions the network left
   as liver.

Memory stays bounded: probabilities exist only over the liver box, at model spacing in
float32 while the windows are blended, float16 after; full-resolution maps are uint8.
``fast=True`` stops after the coarse pass (lower resolution, several times faster).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference

from lvt_core.checkpoint import checkpoint_checksum, is_antialiased, load_member_states
from lvt_core.cross_phase import CrossPhaseRule, PhaseScan, confirm_across_phases
from lvt_core.dark_vessels import DarkVesselRule, relabel_dark_vessels
from lvt_core.faint_lesions import FaintLesionSearch, kept_faint_lesions, paint_candidates
from lvt_core.grids import reorient, resample_to_spacing
from lvt_core.labels import (
    BACKGROUND,
    CHANNELS,
    LIVER,
    TUMOR,
    channel_thresholds,
    decode_exclusive,
    decode_multiclass,
)
from lvt_core.lesion_edges import LesionEdgeRule, trim_lesion_edges
from lvt_core.lesion_filter import LesionFilter, remove_extrahepatic_tumors, remove_unlikely_lesions
from lvt_core.network import build_network, patch_divisor
from lvt_core.postprocess import (
    bounding_box,
    keep_liver_component,
    min_tumor_voxels,
    remove_small_tumors,
    remove_tubular_tumors,
    remove_unconfident_tumors,
)
from lvt_core.precision import autocast, resolve_inference_precision
from lvt_core.transforms import window_array

BODY_THRESHOLD_HU = -500.0
ROI_MARGIN_MM = 20.0
BODY_MARGIN_MM = 5.0
WHOLE_VOLUME_FACTOR = 4.0
# A scan thinner than a patch (a 40 mm slab, three slices) is padded to one. Constant padding
# at the window's floor, which is how air looks to the network, showed it a few centimetres of
# body floating in air, which no training patch held: on real slabs the liver spilled into the
# spleen and the body wall. Repeating the edge slices shows the anatomy going on, as it does in
# the patient.
SHORT_SCAN_PADDING = "replicate"


@dataclass
class ScanProbabilities:
    """Fine-pass probabilities ``(C, z, y, x)`` in float16 on a scan's own grid, over ``box``
    (array-order ``(start, stop)`` per axis); ``box`` is None when the pass missed the scan."""

    values: np.ndarray
    box: tuple[tuple[int, int], ...] | None

    @property
    def region(self) -> tuple[slice, ...] | None:
        """``box`` as array slices of the scan (None when the pass missed it)."""
        return None if self.box is None else tuple(slice(lo, hi) for lo, hi in self.box)


class InputImageError(ValueError):
    """An image the predictor cannot segment (not 3D, not scalar, non-finite values)."""


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda")
    return torch.device(device)


def check_input(image: sitk.Image, name: str = "input image") -> None:
    """Raise :class:`InputImageError` naming ``name`` when the image cannot be segmented."""
    if image.GetDimension() != 3:
        raise InputImageError(f"{name}: expected a 3D volume, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputImageError(f"{name}: expected a scalar image, got a multi-component one")
    if min(image.GetSize()) < 2:
        raise InputImageError(f"{name}: a single slice is not a 3D volume ({image.GetSize()})")
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputImageError(f"{name}: {int((~np.isfinite(array)).sum())} voxels are NaN or inf")


def _crop(
    image: sitk.Image, box: tuple[tuple[int, int], ...] | None, margin_mm: float
) -> sitk.Image:
    """Crop ``image`` to an array-order (z, y, x) box grown by ``margin_mm``; keeps geometry."""
    if box is None:
        return image
    size = image.GetSize()
    spacing = image.GetSpacing()
    index, extent = [], []
    for axis_xyz in range(3):
        start, stop = box[2 - axis_xyz]
        grow = int(np.ceil(margin_mm / spacing[axis_xyz]))
        lo, hi = max(0, start - grow), min(size[axis_xyz], stop + grow)
        index.append(lo)
        extent.append(max(2, hi - lo) if size[axis_xyz] >= 2 else hi - lo)
        if index[-1] + extent[-1] > size[axis_xyz]:
            index[-1] = size[axis_xyz] - extent[-1]
    return sitk.RegionOfInterest(image, extent, index)


def _box_in(reference: sitk.Image, mask_image: sitk.Image) -> tuple[tuple[int, int], ...] | None:
    """The box of ``mask_image``'s foreground expressed in ``reference``'s array indices."""
    box = bounding_box(sitk.GetArrayViewFromImage(mask_image) > 0)
    if box is None:
        return None
    return _index_box(reference, mask_image, box)


def _index_box(
    reference: sitk.Image, image: sitk.Image, box: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int], ...] | None:
    """``image``'s array-order ``box`` mapped into ``reference``'s array indices (clipped)."""
    corners = []
    for z, y, x in itertools.product(*[(b[0], b[1] - 1) for b in box]):
        point = image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
        corners.append(reference.TransformPhysicalPointToContinuousIndex(point))
    corners_arr = np.array(corners)
    size = reference.GetSize()
    out = []
    for axis_xyz in (2, 1, 0):
        lo = int(np.floor(corners_arr[:, axis_xyz].min()))
        hi = int(np.ceil(corners_arr[:, axis_xyz].max())) + 1
        out.append((max(0, lo), min(size[axis_xyz], hi)))
    if any(hi - lo < 1 for lo, hi in out):
        return None
    return tuple(out)


def _sub_grid(image: sitk.Image, box: tuple[tuple[int, int], ...]) -> sitk.Image:
    """An empty image with ``image``'s spacing and direction covering its array-order ``box``.

    Only the geometry matters: it is the reference onto which probabilities are resampled.
    """
    (z0, z1), (y0, y1), (x0, x1) = box
    grid = sitk.Image([x1 - x0, y1 - y0, z1 - z0], sitk.sitkUInt8)
    grid.SetSpacing(image.GetSpacing())
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.TransformIndexToPhysicalPoint((x0, y0, z0)))
    return grid


def _extent_mm(image: sitk.Image) -> list[float]:
    return [round(n * s, 1) for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)]


def _physical_point(image: sitk.Image, zyx: tuple[int, ...], region: tuple[slice, ...]) -> list[float]:
    """The LPS point (mm) of voxel ``zyx`` of ``region`` of ``image``'s array."""
    index = [int(i + r.start) for i, r in zip(zyx, region, strict=True)]
    return [round(v, 3) for v in image.TransformIndexToPhysicalPoint(index[::-1])]


class Predictor:
    """Liver, vessel and tumor segmentation with one checkpoint, loaded once.

    ``predict(image)`` returns a uint8 exclusive label map on the input's own grid. After
    each call ``last_timings`` holds the seconds spent per stage. Pickling keeps only the
    constructor arguments, so Dask workers rebuild (and reload) their own copy.
    """

    def __init__(
        self,
        checkpoint_path: str | Path,
        device: str = "auto",
        tta: bool | None = None,
        fast: bool = False,
        sw_batch_size: int | None = None,
        precision: str | None = None,
        faint_search: bool = True,
        extra_windows: list[tuple[float, float]] | None = None,
    ) -> None:
        self._args = (checkpoint_path, device, tta, fast, sw_batch_size, precision, faint_search,
                      extra_windows)
        self.checkpoint_path = Path(checkpoint_path)
        states, meta = load_member_states(self.checkpoint_path)
        self.meta: dict[str, Any] = meta
        self.checksum: str = checkpoint_checksum(self.checkpoint_path)
        self.name: str = str(meta["name"])
        self.version: str = str(meta["version"])
        self.device = resolve_device(device)
        self.tta: bool = (self.device.type == "cuda") if tta is None else bool(tta)
        self.fast = bool(fast)
        self.sw_batch_size = sw_batch_size or (4 if self.device.type == "cuda" else 2)
        self.label_space: str = str(meta["label_space"])
        self.spacing = [float(s) for s in meta["spacing_mm"]]
        self.patch_size = [int(p) for p in meta["patch_size"]]  # x, y, z like spacing_mm
        self.window = (float(meta["window"]["level"]), float(meta["window"]["width"]))
        self.orientation = str(meta.get("orientation", "LPS"))
        # models trained on low-passed resampling need it at inference too
        self.antialiased = is_antialiased(meta)
        inference_cfg = dict(meta.get("inference", {}))
        # fp16 on CUDA; bfloat16 on AMX / AVX-512 BF16 CPUs for checkpoints qualified for it
        self.precision = resolve_inference_precision(
            precision or "auto", self.device, inference_cfg.get("cpu_precision"))  # type: ignore[arg-type]
        self.coarse_spacing = [
            float(s) for s in inference_cfg.get("coarse_spacing_mm", [2 * s for s in self.spacing])
        ]
        self.roi_margin_mm = float(inference_cfg.get("roi_margin_mm", ROI_MARGIN_MM))
        # (level, width) windows whose fine-pass probabilities are averaged with the main
        # window's (calibrated with them; none by default); the argument overrides the checkpoint
        self.extra_windows: list[tuple[float, float]] = checked_windows(
            windows_from_meta(inference_cfg.get("extra_windows")) if extra_windows is None
            else extra_windows)
        # per-channel decision thresholds, calibrated on a validation cohort (default 0.5)
        self.thresholds = channel_thresholds(inference_cfg.get("thresholds"))
        # tumor components below this volume become liver (calibrated; 0 keeps every speck)
        self.min_tumor_volume_ml = float(inference_cfg.get("min_tumor_volume_ml", 0.0))
        # tumor components whose peak probability stays below this become liver (calibrated; 0 off)
        self.min_tumor_peak = float(inference_cfg.get("min_tumor_peak", 0.0))
        # ... except components this large, which stay whatever their peak (calibrated; 0: none)
        self.large_tumor_ml = float(inference_cfg.get("large_tumor_ml", 0.0))
        # tumor components less round than this (tubes: vessels drawn as tumor) become liver,
        # those of ``large_tumor_ml`` excepted (calibrated; 0 off)
        self.min_tumor_roundness = float(inference_cfg.get("min_tumor_roundness", 0.0))
        # tumor components with more than this share of the shell around them outside the organ
        # (a neighbour drawn as tumor, the gallbladder most often) become background (calibrated; 1 off)
        self.max_tumor_outside = float(inference_cfg.get("max_tumor_outside", 1.0))
        # second look at each tumor component (fitted on phantoms; None: every component kept)
        filter_meta = inference_cfg.get("lesion_filter")
        self.lesion_filter = LesionFilter.from_meta(filter_meta) if filter_meta else None
        self.min_lesion_score = float(inference_cfg.get("min_lesion_score", 0.0))
        # matched-filter search for faint lesions the network left as liver (calibrated; off);
        # ``faint_search=False`` keeps the network's lesions alone
        self.faint_search = (FaintLesionSearch.from_meta(inference_cfg.get("faint_lesions"))
                             if faint_search else FaintLesionSearch())
        # round regions drawn as vessel but darker than the liver become tumor (calibrated; off),
        # a second look like the search: ``faint_search=False`` skips it too
        self.dark_vessels = (DarkVesselRule.from_meta(inference_cfg.get("dark_vessels"))
                             if faint_search else DarkVesselRule())
        # each lesion's edge moved to half way between it and the liver in the CT (calibrated; off)
        self.lesion_edges = LesionEdgeRule.from_meta(inference_cfg.get("lesion_edges"))
        # a dropped candidate kept where another phase of the day has a lesion (calibrated; off)
        self.cross_phase = CrossPhaseRule.from_meta(inference_cfg.get("cross_phase"))
        # one network, or an ensemble's networks whose probabilities are averaged
        self.models: list[torch.nn.Module] = [self._network(state) for state in states]
        self.model = self.models[0]
        self.last_timings: dict[str, float] = {}
        self.last_info: dict[str, Any] = {}
        self._second_look_points: list[tuple[int, ...]] = []  # the last decoding's rule-drawn lesions, in its array

    def _network(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        model = build_network(self.meta["network"])
        model.load_state_dict(state)
        # channels-last 3D convolutions run markedly faster on CPU (oneDNN) and on GPU
        return model.to(self.device).eval().to(memory_format=torch.channels_last_3d)

    def __getstate__(self) -> dict[str, Any]:
        return {"args": self._args}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*state["args"])  # type: ignore[misc]

    # -- network passes ---------------------------------------------------------------------

    def _activation(self, logits: torch.Tensor) -> torch.Tensor:
        if self.label_space == "multiclass":
            return torch.softmax(logits.float(), dim=1)
        return torch.sigmoid(logits.float())

    def _window_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        flips: list[tuple[int, ...]] = [()]
        if self.tta:
            flips = [c for r in range(4) for c in itertools.combinations((2, 3, 4), r)]

        def run(batch: torch.Tensor) -> torch.Tensor:
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
            total = None
            for model in self.models:
                for dims in flips:
                    x = torch.flip(batch, dims) if dims else batch
                    with autocast(self.precision, self.device):
                        prob = self._activation(model(x))
                    prob = torch.flip(prob, dims) if dims else prob
                    total = prob if total is None else total + prob
            assert total is not None
            return total / (len(flips) * len(self.models))

        return run

    def _probabilities_at(
        self, image: sitk.Image, spacing: list[float], overlap: float, whole: bool = False
    ) -> tuple[np.ndarray, sitk.Image]:
        """Resample to ``spacing`` and run the sliding window: float16 ``(C, z, y, x)``
        probabilities and the grid they lie on.

        ``whole=True`` (the coarse pass) runs one window over the whole volume when it is at
        most ``WHOLE_VOLUME_FACTOR`` patches big: no overlap redundancy, several times faster.
        """
        resampled = resample_to_spacing(image, spacing, sitk.sitkLinear, default_value=-1024.0,
                                        antialiased=self.antialiased)
        hu = sitk.GetArrayViewFromImage(resampled)
        roi = list(reversed(self.patch_size))  # array order z, y, x
        if whole:
            divisor = patch_divisor(self.meta["network"])[::-1]
            padded = [
                max(r, -(-n // d) * d) for n, r, d in zip(hu.shape, roi, divisor, strict=True)
            ]
            if np.prod(padded) <= WHOLE_VOLUME_FACTOR * np.prod(roi):
                roi = padded
        # the coarse pass only finds the liver box: the main window is enough there
        windows = [self.window] if whole else [self.window, *self.extra_windows]
        total: torch.Tensor | None = None
        for level, width in windows:
            tensor = torch.from_numpy(window_array(hu, level, width))[None, None].to(self.device)
            with torch.inference_mode():
                probs = sliding_window_inference(
                    tensor,
                    roi_size=roi,
                    sw_batch_size=self.sw_batch_size,
                    predictor=self._window_fn(),
                    overlap=overlap,
                    mode="gaussian",
                    padding_mode=SHORT_SCAN_PADDING,
                )
            total = probs if total is None else total + probs
            del probs, tensor
        assert total is not None
        probs_np = (total[0] / len(windows)).to(dtype=torch.float16).cpu().numpy()
        del total
        grid = sitk.Image(resampled.GetSize(), sitk.sitkUInt8)
        grid.CopyInformation(resampled)
        return probs_np, grid

    def _decode(
        self,
        probs: np.ndarray,
        spacing_xyz: tuple[float, ...],
        thresholds: list[float] | None = None,
        min_tumor_volume_ml: float | None = None,
        min_tumor_peak: float | None = None,
        hu: np.ndarray | None = None,
        min_lesion_score: float | None = None,
        faint_search: FaintLesionSearch | None = None,
        lesion_edges: LesionEdgeRule | None = None,
        min_tumor_roundness: float | None = None,
        max_tumor_outside: float | None = None,
    ) -> np.ndarray:
        """Exclusive labels from probabilities, cleaned up anatomically and of specks.

        ``hu`` is the scan on the same grid: air (below ``BODY_THRESHOLD_HU``) is never liver,
        vessel or tumor (on out-of-domain scans the network can spill the liver past the body
        wall), the lesion filter measures each tumor candidate on it, and the faint-lesion
        search looks for lesions in it last. Without ``hu`` (the coarse pass) both are skipped.
        """
        if self.label_space == "multiclass":
            labels = decode_multiclass(probs)
        else:
            labels = decode_exclusive(probs, threshold=thresholds or self.thresholds)
        if hu is not None:
            labels[hu < BODY_THRESHOLD_HU] = BACKGROUND
        labels = keep_liver_component(labels)
        if min_lesion_score is None:
            min_lesion_score = self.min_lesion_score
        if hu is not None and self.lesion_filter is not None:
            labels = remove_unlikely_lesions(labels, probs[self.tumor_channel], hu, spacing_xyz,
                                             self.lesion_filter, min_lesion_score)
        if min_tumor_peak is None:
            min_tumor_peak = self.min_tumor_peak
        labels = remove_unconfident_tumors(labels, probs[self.tumor_channel], min_tumor_peak,
                                           min_tumor_voxels(self.large_tumor_ml, spacing_xyz))
        if min_tumor_volume_ml is None:
            min_tumor_volume_ml = self.min_tumor_volume_ml
        labels = remove_small_tumors(labels, spacing_xyz, min_tumor_volume_ml)
        if min_tumor_roundness is None:
            min_tumor_roundness = self.min_tumor_roundness
        labels = remove_tubular_tumors(labels, spacing_xyz, min_tumor_roundness,
                                       min_tumor_voxels(self.large_tumor_ml, spacing_xyz))
        if max_tumor_outside is None:
            max_tumor_outside = self.max_tumor_outside
        if hu is not None:
            labels = remove_extrahepatic_tumors(labels, probs[self.tumor_channel], hu, spacing_xyz,
                                                max_tumor_outside)
        edges = lesion_edges or self.lesion_edges
        if hu is not None and edges.enabled:
            vessel = None if self.label_space == "multiclass" else probs[CHANNELS.index("vessel")]
            labels = trim_lesion_edges(labels, probs[self.tumor_channel], hu, spacing_xyz, edges, vessel,
                                       (thresholds or self.thresholds)[CHANNELS.index("vessel")])
        self._second_look_points = []
        if hu is not None and self.dark_vessels.enabled:
            labels, centres = relabel_dark_vessels(labels, hu, spacing_xyz, self.dark_vessels)
            self.last_info["dark_vessel_lesions_added"] = len(centres)  # not the network's either
            self._second_look_points = centres
        search = faint_search or self.faint_search
        if hu is not None and search.enabled:
            kept = kept_faint_lesions(hu, labels, spacing_xyz, search)
            labels = paint_candidates(labels, kept)
            self.last_info["faint_lesions_added"] = len(kept)  # summary.json: not the network's
            self._second_look_points += [c.peak for c in kept]
        return labels

    @property
    def tumor_channel(self) -> int:
        """Index of the tumor probability (softmax models have a background channel first)."""
        return TUMOR if self.label_space == "multiclass" else CHANNELS.index("tumor")

    def _segment_at(
        self, image: sitk.Image, spacing: list[float], overlap: float, whole: bool = False
    ) -> sitk.Image:
        """Labels on the grid of ``spacing`` (the coarse pass and ``fast`` mode)."""
        probs, grid = self._probabilities_at(image, spacing, overlap, whole)
        out = sitk.GetImageFromArray(self._decode(probs, grid.GetSpacing()))
        out.CopyInformation(grid)
        return out

    def _probabilities_on(
        self, probs: np.ndarray, grid: sitk.Image, image: sitk.Image
    ) -> ScanProbabilities:
        """Fine-pass probabilities resampled linearly onto ``image``'s own grid (nnU-Net's
        export), over the box of that grid the fine pass covered.

        Thresholding after this resampling gives smooth boundaries at the scan's resolution;
        nearest-neighbour upsampling of 2 mm labels would give staircase edges that cost Dice
        on vessels and small lesions.
        """
        full_box = tuple((0, n) for n in reversed(grid.GetSize()))
        box = _index_box(image, grid, full_box)
        if box is None:
            return ScanProbabilities(np.zeros((len(probs), 0, 0, 0), np.float16), None)
        target = _sub_grid(image, box)
        on_target = np.empty((len(probs), *reversed(target.GetSize())), dtype=np.float16)
        for channel, values in enumerate(probs):
            channel_image = sitk.GetImageFromArray(values.astype(np.float32))
            channel_image.CopyInformation(grid)
            resampled = sitk.Resample(
                channel_image, target, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32
            )
            on_target[channel] = sitk.GetArrayViewFromImage(resampled)
        return ScanProbabilities(on_target, box)

    # -- public API -------------------------------------------------------------------------

    def predict(self, image: sitk.Image) -> sitk.Image:
        """Segment one CT scan (HU); returns a uint8 label map in the input geometry."""
        labels, _ = self.predict_with_timings(image)
        return labels

    def labels_from(
        self,
        probabilities: ScanProbabilities,
        image: sitk.Image,
        thresholds: list[float] | None = None,
        min_tumor_volume_ml: float | None = None,
        min_tumor_peak: float | None = None,
        min_lesion_score: float | None = None,
        faint_search: FaintLesionSearch | None = None,
        lesion_edges: LesionEdgeRule | None = None,
        min_tumor_roundness: float | None = None,
        max_tumor_outside: float | None = None,
    ) -> sitk.Image:
        """A uint8 label map on ``image``'s grid from :meth:`predict_probabilities`' output.

        ``thresholds`` (one per channel), ``min_tumor_volume_ml``, ``min_tumor_peak``,
        ``min_lesion_score``, ``faint_search``, ``lesion_edges``, ``min_tumor_roundness`` and
        ``max_tumor_outside`` override the checkpoint's,
        so a calibration decodes one network pass many ways.
        """
        out = np.zeros(tuple(reversed(image.GetSize())), dtype=np.uint8)
        region = probabilities.region
        if region is not None:
            hu = sitk.GetArrayViewFromImage(image)[region]
            out[region] = self._decode(probabilities.values, image.GetSpacing(), thresholds,
                                       min_tumor_volume_ml, min_tumor_peak, hu, min_lesion_score,
                                       faint_search, lesion_edges, min_tumor_roundness, max_tumor_outside)
            self.last_info["faint_lesion_points_mm"] = [
                _physical_point(image, peak, region) for peak in self._second_look_points
            ]
        labels = sitk.GetImageFromArray(out)
        labels.CopyInformation(image)
        return labels

    def phase_scan(self, probabilities: ScanProbabilities, image: sitk.Image, labels: sitk.Image,
                   phase: str = "unknown") -> PhaseScan:
        """One decoded scan (of contrast ``phase``) as :mod:`lvt_core.cross_phase` reads it
        beside the day's others."""
        tumor = np.zeros(tuple(reversed(image.GetSize())), np.float16)  # as the fine pass keeps it
        if probabilities.region is not None:
            tumor[probabilities.region] = probabilities.values[self.tumor_channel]
        threshold = 0.5 if self.label_space == "multiclass" else self.thresholds[CHANNELS.index("tumor")]
        return PhaseScan(image, sitk.GetArrayFromImage(labels), tumor, threshold, phase)

    def predict_day(self, images: Sequence[sitk.Image],
                    phases: Sequence[str] | None = None) -> list[tuple[sitk.Image, dict[str, Any]]]:
        """Segment the scans of one day (its contrast phases, named in ``phases`` where known)
        and read them together (:mod:`lvt_core.cross_phase`, when the checkpoint's rule is on):
        per scan its labels and what :attr:`last_info` said about it, its ``timings``,
        ``cross_phase_points_mm``, the centres of the lesions another phase confirmed in it, and
        ``fluid_places`` (read together only), the places drawn as tumor it made background as
        fluid (:meth:`~lvt_core.fluid_places.FluidPlace.summary`)."""
        if phases is not None and len(phases) != len(images):
            raise ValueError(f"{len(images)} scans but {len(phases)} phases")
        together = self.cross_phase.enabled and len(images) > 1 and not self.fast
        results = []
        for image, phase in zip(images, phases or ["unknown"] * len(images), strict=True):
            labels, timings, info, probabilities = self._predict_keeping(image)  # kept only when read together
            results.append((labels, {**info, "timings": timings, "cross_phase_points_mm": []},
                            self.phase_scan(probabilities, image, labels, phase)
                            if together and probabilities else None))
        if not together:
            return [(labels, info) for labels, info, _ in results]
        scans = [scan for *_, scan in results]
        out = []
        for (labels, info, scan), reading in zip(results, confirm_across_phases(scans, self.cross_phase), strict=True):
            if reading.labels is not scan.labels:  # lesions added, veins made vessel or fluid background
                labels = sitk.GetImageFromArray(reading.labels)
                labels.CopyInformation(scan.image)
                info["cross_phase_points_mm"] = [list(c.centre_mm) for c in reading.added]
                info["fluid_places"] = [place.summary() for place in reading.fluid]
            out.append((labels, info))
        return out

    def predict_probabilities(self, image: sitk.Image) -> ScanProbabilities:
        """The fine pass's probabilities on ``image``'s own grid, before any decision."""
        if self.fast:
            raise ValueError("fast mode decodes on the coarse grid and has no fine probabilities")
        probabilities, _ = self._run(image)
        assert isinstance(probabilities, ScanProbabilities)
        return probabilities

    def predict_with_timings(self, image: sitk.Image) -> tuple[sitk.Image, dict[str, float]]:
        """Like :meth:`predict`, also returning the seconds per stage (also in ``last_timings``)."""
        labels, timings, _, _ = self._predict_keeping(image)
        return labels, timings

    def _predict_keeping(
        self, image: sitk.Image
    ) -> tuple[sitk.Image, dict[str, float], dict[str, Any], ScanProbabilities | None]:
        """Labels, seconds per stage, :attr:`last_info` and the fine-pass probabilities (None
        in fast mode) of one scan."""
        result, timings = self._run(image)
        probabilities = result if isinstance(result, ScanProbabilities) else None
        if isinstance(result, ScanProbabilities):
            start = time.perf_counter()
            result = self.labels_from(result, image)
            timings["decode_s"] = round(time.perf_counter() - start, 3)
            timings["total_s"] = round(timings["total_s"] + timings["decode_s"], 3)
        return result, timings, dict(self.last_info), probabilities

    def _run(self, image: sitk.Image) -> tuple[sitk.Image | ScanProbabilities, dict[str, float]]:
        """Crop, coarse pass, fine pass: coarse labels in fast mode, else fine probabilities."""
        check_input(image)
        timings: dict[str, float] = {}
        self.last_info = {}
        t0 = start = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal t0
            now = time.perf_counter()
            timings[name] = round(now - t0, 3)
            t0 = now

        # crop first, cast after: no full-size float32 copy of the scan is ever made
        work = reorient(image, self.orientation)
        body_box = bounding_box(sitk.GetArrayViewFromImage(work) > BODY_THRESHOLD_HU)
        body = sitk.Cast(_crop(work, body_box, BODY_MARGIN_MM), sitk.sitkFloat32)
        del work
        lap("crop_s")

        coarse = self._segment_at(body, self.coarse_spacing, overlap=0.25, whole=True)
        lap("coarse_s")
        result: sitk.Image | ScanProbabilities
        if self.fast:
            result = sitk.Resample(
                coarse, image, sitk.Transform(), sitk.sitkNearestNeighbor, BACKGROUND, sitk.sitkUInt8
            )
        else:
            liver_box = _box_in(body, coarse)
            roi = _crop(body, liver_box, self.roi_margin_mm) if liver_box else body
            probs, grid = self._probabilities_at(roi, self.spacing, overlap=0.5)
            self.last_info["liver_roi_found"] = liver_box is not None
            self.last_info["roi_extent_mm"] = _extent_mm(roi)
            del roi
            lap("fine_s")
            result = self._probabilities_on(probs, grid, image)
            del probs
        lap("resample_s")
        timings["total_s"] = round(time.perf_counter() - start, 3)
        self.last_timings = timings
        self.last_info["body_extent_mm"] = _extent_mm(body)
        return result, timings


def checked_windows(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The windows as float pairs; a width of zero or less has no contrast and is refused."""
    pairs = [(float(level), float(width)) for level, width in windows]
    for level, width in pairs:
        if not (math.isfinite(level) and math.isfinite(width)) or width <= 0:
            raise ValueError(f"extra window level {level:g}, width {width:g}: the width must be "
                             "a positive number of HU")
    return pairs


def windows_from_meta(entries: list[dict[str, float]] | None) -> list[tuple[float, float]]:
    """``meta["inference"]["extra_windows"]`` (``[{"level": L, "width": W}, ...]``) as pairs."""
    return [(float(entry["level"]), float(entry["width"])) for entry in entries or []]


def windows_to_meta(windows: list[tuple[float, float]]) -> list[dict[str, float]]:
    """The pairs as checkpoint metadata and JSON summaries write them."""
    return [{"level": level, "width": width} for level, width in windows]


def liver_present(labels: sitk.Image) -> bool:
    """True when the label map holds any liver (labels 1, 2 or 3)."""
    return bool((sitk.GetArrayViewFromImage(labels) >= LIVER).any())
