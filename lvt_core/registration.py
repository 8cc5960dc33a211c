"""Rigid or affine registration of a follow-up study to the previous one (SimpleITK).

Registration runs on liver masks shrunk to about 6 mm (block averaging, so the shrunk mask is a
smooth partial-volume map): the liver's shape is what lesions move with, and the coarse grid keeps
one registration well under a second at clinical size. Images can be used instead of, or on top
of, the masks (Mattes mutual information, so phases with different contrast still align).

Convention (ITK's): the returned transform maps points of the *previous* (fixed) study to the
*follow-up* (moving) study. Use ``transform.GetInverse()`` to bring follow-up points back.

A registration is only as good as the masks it runs on. A follow-up whose liver is drawn as a
small blob, or not at all with only its tumors drawn, has its centre of mass centimetres away,
and a registration there moves every lesion: unchanged lesions then read as "disappeared" and
"new", which RECIST calls progression. So the result is checked on the masks
(:func:`register_followup_checked`), and where the masks disagree, the series is too thin to
register, or the registered livers overlap no better than in the scanner frame, the scanner frame
(identity: same patient, same table, usually within a few centimetres) is used with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import SimpleITK as sitk

from lvt_core.labels import LIVER, TUMOR

_MIN_STEP = 1e-3  # scaled step (about mm) at which the optimiser stops
RegistrationKind = Literal["rigid", "affine", "none"]

MIN_VOXELS_PER_AXIS = 4
"""ITK's recursive Gaussian, run at every pyramid level (even at sigma 0), needs this many
voxels along each axis; a series with fewer slices cannot be registered."""
MIN_VOLUME_RATIO = 0.4
"""Livers whose volumes differ more than this (the smaller under 40 % of the larger) are not the
same organ drawn twice (a blob, tumors without their liver, a scan stopping far inside the liver):
their centres of mass are far apart, so they are not registered."""
MIN_DICE = 0.5
"""Registered livers overlapping less than this (Dice) are poorly aligned; unless the scanner frame
does even worse, it is used instead."""
DICE_TOLERANCE = 0.02
"""A registration whose overlap is this much below the scanner frame's made things worse."""


@dataclass(frozen=True)
class RegistrationConfig:
    """How to register: transform kind, what to register on, and the working resolution."""

    kind: RegistrationKind = "rigid"
    on: Literal["mask", "image", "both"] = "mask"
    resolution_mm: float = 6.0
    iterations: int = 100
    sampling: float = 0.1
    seed: int = 42  # fixed sampling seed (0 would mean wall clock): same inputs, same result


@dataclass(frozen=True)
class Registration:
    """A transform (previous to follow-up points) and, where the scanner frame was used instead of
    a registration, why; ``dice`` and ``dice_identity`` are the livers' overlap at the working
    resolution under the transform and in the scanner frame (``None`` when not measured)."""

    transform: sitk.Transform
    warning: str | None = None
    dice: float | None = None
    dice_identity: float | None = None


def liver_mask(labels: sitk.Image, inside: int = 1) -> sitk.Image:
    """Binary uint8 liver mask (labels 1, 2 and 3 together) with ``inside`` as foreground."""
    return sitk.BinaryThreshold(labels, LIVER, TUMOR, insideValue=inside, outsideValue=0)


def _factors(image: sitk.Image, resolution_mm: float) -> list[int]:
    factors = [max(1, round(resolution_mm / s)) for s in image.GetSpacing()]
    return [min(f, max(1, size // 4)) for f, size in zip(factors, image.GetSize(), strict=True)]


def shrink_to(image: sitk.Image, resolution_mm: float) -> sitk.Image:
    """Float32 image block-averaged by integer factors to about ``resolution_mm`` per voxel."""
    return sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), _factors(image, resolution_mm))


def shrink_mask_to(labels: sitk.Image, resolution_mm: float) -> sitk.Image:
    """Liver partial-volume map (0..1, float32) at about ``resolution_mm``, without a float copy
    of the full-resolution volume (the uint8 mask holds 0/200 so block averages keep 0.5 % steps).
    """
    shrunk = sitk.BinShrink(liver_mask(labels, inside=200), _factors(labels, resolution_mm))
    return sitk.Cast(shrunk, sitk.sitkFloat32) / 200.0


def _initial(fixed: sitk.Image, moving: sitk.Image, kind: RegistrationKind) -> sitk.Transform:
    base = sitk.AffineTransform(3) if kind == "affine" else sitk.Euler3DTransform()
    try:
        return sitk.CenteredTransformInitializer(
            fixed, moving, base, sitk.CenteredTransformInitializerFilter.MOMENTS
        )
    except RuntimeError:  # empty mask: no moments
        return sitk.CenteredTransformInitializer(
            fixed, moving, base, sitk.CenteredTransformInitializerFilter.GEOMETRY
        )


def _run(
    fixed: sitk.Image,
    moving: sitk.Image,
    initial: sitk.Transform,
    metric: Literal["meansquares", "mattes"],
    config: RegistrationConfig,
) -> sitk.Transform:
    method = sitk.ImageRegistrationMethod()
    if metric == "mattes":
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(0.25, seed=config.seed)
    else:
        method.SetMetricAsMeanSquares()
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(config.sampling, seed=config.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=_MIN_STEP,
        numberOfIterations=config.iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    shrink, sigmas = _pyramid(fixed, moving)
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(sigmas)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)


def _pyramid(fixed: sitk.Image, moving: sitk.Image) -> tuple[list[int], list[float]]:
    """Shrink factors and sigmas: a coarse level only where it keeps enough voxels per axis."""
    smallest = min(*fixed.GetSize(), *moving.GetSize())
    if smallest >= 2 * MIN_VOXELS_PER_AXIS:
        return [2, 1], [1.0, 0.0]
    return [1], [0.0]


def register_followup(
    previous_labels: sitk.Image,
    followup_labels: sitk.Image,
    previous_image: sitk.Image | None = None,
    followup_image: sitk.Image | None = None,
    config: RegistrationConfig | None = None,
) -> sitk.Transform:
    """Transform mapping previous-study points to follow-up points (identity for ``none``, and
    where :func:`register_followup_checked` falls back to the scanner frame)."""
    return register_followup_checked(
        previous_labels, followup_labels, previous_image, followup_image, config
    ).transform


def register_followup_checked(
    previous_labels: sitk.Image,
    followup_labels: sitk.Image,
    previous_image: sitk.Image | None = None,
    followup_image: sitk.Image | None = None,
    config: RegistrationConfig | None = None,
) -> Registration:
    """The registration of a follow-up to the previous study, checked on the liver masks.

    Masks always give the initial alignment (centre of mass); with ``on="image"`` or ``"both"``
    and both images given, the CT images refine it. The scanner frame is used, with a warning,
    for a series too thin to register, for livers of very different volume, and where the
    registered livers overlap no better than in the scanner frame.
    """
    config = config or RegistrationConfig()
    if config.kind == "none":
        return Registration(_identity())
    fixed = shrink_mask_to(previous_labels, config.resolution_mm)
    moving = shrink_mask_to(followup_labels, config.resolution_mm)
    problem = (
        _too_thin(previous_labels, "previous")
        or _too_thin(followup_labels, "follow-up")
        or _volumes_disagree(fixed, moving)
    )
    if problem:
        return Registration(_identity(), f"{problem}: not registered, the scanner frame is used")
    transform = _register(fixed, moving, previous_image, followup_image, config)
    return _checked(fixed, moving, transform)


def _register(
    fixed: sitk.Image,
    moving: sitk.Image,
    previous_image: sitk.Image | None,
    followup_image: sitk.Image | None,
    config: RegistrationConfig,
) -> sitk.Transform:
    """The unchecked registration of two liver partial-volume maps (and images, if asked)."""
    transform: sitk.Transform = _initial(fixed, moving, "rigid")
    if config.on in ("mask", "both"):
        transform = _flatten(_run(fixed, moving, transform, "meansquares", config))
    images = (previous_image, followup_image)
    if config.on in ("image", "both") and all(i is not None and _thin_axis(i) is None for i in images):
        fixed_img = shrink_to(previous_image, config.resolution_mm)  # type: ignore[arg-type]
        moving_img = shrink_to(followup_image, config.resolution_mm)  # type: ignore[arg-type]
        transform = _flatten(_run(fixed_img, moving_img, transform, "mattes", config))
    if config.kind == "affine":
        affine = _as_affine(transform)
        transform = _flatten(_run(fixed, moving, affine, "meansquares", config))
    return _flatten(transform)


def _identity() -> sitk.Transform:
    return sitk.TranslationTransform(3)


def _thin_axis(image: sitk.Image) -> int | None:
    """The first axis with too few voxels to register on, or ``None``."""
    return next((axis for axis, size in enumerate(image.GetSize()) if size < MIN_VOXELS_PER_AXIS), None)


def _too_thin(image: sitk.Image, which: str) -> str | None:
    """Why the ``which`` series cannot be registered, or ``None``."""
    axis = _thin_axis(image)
    if axis is None:
        return None
    size = image.GetSize()[axis]
    extent = f"{size} slice(s)" if axis == 2 else f"{size} voxel(s) along {'xyz'[axis]}"
    return f"the {which} series has {extent}, too few to register ({MIN_VOXELS_PER_AXIS} needed)"


def _volume_ml(partial_volume: sitk.Image) -> float:
    voxel_ml = float(np.prod(partial_volume.GetSpacing())) / 1000.0
    return float(sitk.GetArrayViewFromImage(partial_volume).sum()) * voxel_ml


def _volumes_disagree(fixed: sitk.Image, moving: sitk.Image) -> str | None:
    """Why the two livers are not the same organ drawn twice (no liver, or very different
    volumes), or ``None``."""
    previous, followup = _volume_ml(fixed), _volume_ml(moving)
    if previous <= 0 or followup <= 0:
        return f"no liver is drawn in the {'previous' if previous <= 0 else 'follow-up'} study"
    if min(previous, followup) < MIN_VOLUME_RATIO * max(previous, followup):
        return (f"the livers differ too much to register ({previous:.0f} ml before, "
                f"{followup:.0f} ml at follow-up)")
    return None


def _dice(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
    """Fuzzy Dice of two partial-volume maps, ``moving`` mapped onto ``fixed`` by ``transform``."""
    mapped = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    f, m = sitk.GetArrayViewFromImage(fixed), sitk.GetArrayViewFromImage(mapped)
    total = float(f.sum() + m.sum())
    return 2.0 * float(np.minimum(f, m).sum()) / total if total > 0 else 0.0


def _checked(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> Registration:
    """``transform``, or the scanner frame where it overlaps the livers no better."""
    dice, identity = _dice(fixed, moving, transform), _dice(fixed, moving, _identity())
    worse = dice < identity - DICE_TOLERANCE
    poor = dice < MIN_DICE and dice <= identity
    if worse or poor:
        warning = (f"the registered livers overlap no better than in the scanner frame "
                   f"(Dice {dice:.2f}, {identity:.2f} unregistered): the scanner frame is used")
        return Registration(_identity(), warning, identity, identity)
    return Registration(transform, None, dice, identity)


def _as_affine(transform: sitk.Transform) -> sitk.AffineTransform:
    """An affine transform equal to ``transform`` (rigid), ready for affine refinement."""
    flat = _flatten(transform)
    affine = sitk.AffineTransform(3)
    euler = sitk.Euler3DTransform(flat) if flat.GetName() == "Euler3DTransform" else None
    if euler is not None:
        affine.SetMatrix(euler.GetMatrix())
        affine.SetTranslation(euler.GetTranslation())
        affine.SetCenter(euler.GetCenter())
    return affine


def _flatten(transform: sitk.Transform) -> sitk.Transform:
    """The single (possibly nested) transform inside a composite result, typed."""
    while transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        if composite.GetNumberOfTransforms() != 1:
            return transform
        transform = composite.GetNthTransform(0)
    name = transform.GetName()
    if name == "Euler3DTransform":
        return sitk.Euler3DTransform(transform)
    if name == "AffineTransform":
        return sitk.AffineTransform(transform)
    return transform


def transform_points(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    """Apply ``transform`` to (N, 3) physical points, vectorised for matrix transforms."""
    points = np.asarray(points, dtype=float).reshape(-1, 3)
    matrix, offset = matrix_offset(transform)
    if matrix is not None:
        return points @ matrix.T + offset
    return np.array([transform.TransformPoint(tuple(p)) for p in points], dtype=float)


def matrix_offset(transform: sitk.Transform) -> tuple[np.ndarray | None, np.ndarray]:
    """``(A, b)`` with ``T(p) = A p + b`` for any linear transform, else ``(None, 0)``.

    Known types are read directly; others (composites of linear transforms) are probed at a few
    points and accepted only when a further point confirms they are linear.
    """
    name = transform.GetName()
    if name == "TranslationTransform":
        return np.eye(3), np.array(sitk.TranslationTransform(transform).GetOffset(), dtype=float)
    if name in ("Euler3DTransform", "AffineTransform", "VersorRigid3DTransform"):
        typed = (
            sitk.Euler3DTransform(transform)
            if name == "Euler3DTransform"
            else sitk.AffineTransform(transform)
            if name == "AffineTransform"
            else sitk.VersorRigid3DTransform(transform)
        )
        matrix = np.array(typed.GetMatrix(), dtype=float).reshape(3, 3)
        center = np.array(typed.GetCenter(), dtype=float)
        translation = np.array(typed.GetTranslation(), dtype=float)
        return matrix, translation + center - matrix @ center
    probe = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100]], dtype=float)
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in probe])
    offset = mapped[0]
    matrix = ((mapped[1:] - offset) / 100.0).T
    check = np.array([37.0, -51.0, 23.0])
    if np.allclose(transform.TransformPoint(tuple(check)), matrix @ check + offset, atol=1e-6):
        return matrix, offset
    return None, np.zeros(3)
