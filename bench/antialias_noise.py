"""Liver noise at the model's 2 mm grid: plain linear resampling against anti-aliased.

Why `antialiased: true` exists: linear resampling from sub-millimetre CT keeps most of the
scanner's noise, and faint lesions drown in it. For each clinical-size phantom scan this
prints the local noise (standard deviation of HU minus its 3×3×3 mean) inside the eroded
plain liver, for both resamplings, in the same run.

    .venv/bin/python bench/antialias_noise.py [--patients 2] [--seed 5000]
"""

from __future__ import annotations

import argparse

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lvt_core.grids import reorient, resample_to_spacing
from lvt_core.labels import LIVER
from lvt_core.phantom import phantom_scan

SPACING_MM = (2.0, 2.0, 2.0)


def liver_noise_hu(image: sitk.Image, labels: sitk.Image, antialiased: bool) -> float:
    """Local HU noise inside the plain liver (3 voxels in from its edge) after resampling."""
    resampled = resample_to_spacing(image, SPACING_MM, sitk.sitkLinear, -1024.0, antialiased)
    on_grid = sitk.Resample(labels, resampled, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    liver = ndimage.binary_erosion(sitk.GetArrayViewFromImage(on_grid) == LIVER, iterations=3)
    hu = sitk.GetArrayFromImage(resampled).astype(np.float32)
    residual = hu - ndimage.uniform_filter(hu, 3)
    return float(residual[liver].std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2)
    parser.add_argument("--seed", type=int, default=5000, help="5000: the validation cohort's")
    args = parser.parse_args()
    print(f"{'scan':24} {'in-plane mm':>11} {'slice mm':>8} {'plain HU':>8} {'antialiased HU':>14}")
    for index in range(args.patients):
        scan = phantom_scan(args.seed, size="clinical", patient_index=index)
        image, labels = reorient(scan.image), reorient(scan.labels)
        plain, smooth = (liver_noise_hu(image, labels, flag) for flag in (False, True))
        sx, _, sz = image.GetSpacing()
        print(f"{scan.patient_id + ' ' + scan.phase:24} {sx:11.2f} {sz:8.2f} {plain:8.1f} {smooth:14.1f}")


if __name__ == "__main__":
    main()
