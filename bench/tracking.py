"""Tracking time per timepoint pair at clinical size (goal: <= 2 s per pair).

Builds two synthetic studies of about 512 x 512 x 200 voxels at 0.75 mm (the second one
repositioned by a known rotation and shift, with its own spacing), extracts their lesions, then
times ``track_lesions`` on the pair (registration + matching) and checks every link is true.

    OMP_NUM_THREADS=1 .venv/bin/python bench/tracking.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import SimpleITK as sitk

from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.tracking import TimepointInput, track_lesions

LIVER_PARTS = [((0.0, 0.0, 0.0), (95.0, 75.0, 65.0)), ((60.0, -35.0, 20.0), (50.0, 40.0, 40.0))]
LESIONS = [
    ((-40.0, -20.0, -10.0), (15.0, 11.0, 10.0)),
    ((20.0, 30.0, 5.0), (8.0, 8.0, 7.0)),
    ((65.0, -40.0, 20.0), (20.0, 16.0, 14.0)),
    ((-60.0, 25.0, 15.0), (6.0, 6.0, 6.0)),
    ((0.0, -45.0, -25.0), (10.0, 7.0, 7.0)),
    ((40.0, 10.0, -30.0), (5.0, 5.0, 5.0)),
    ((-20.0, 50.0, -5.0), (12.0, 9.0, 9.0)),
    ((75.0, -10.0, 35.0), (7.0, 7.0, 6.0)),
]


def scan(size: tuple[int, int, int], spacing: tuple[float, float, float], angle_deg: float,
         shift: tuple[float, float, float], growth: float) -> tuple[sitk.Image, np.ndarray]:
    """Label map sampled slice by slice (bounded memory); returns it and the lesion truth map."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    origin = -(np.array(size) - 1) * np.array(spacing) / 2
    yy, xx = np.meshgrid(np.arange(size[1]), np.arange(size[0]), indexing="ij")
    labels = np.zeros(size[::-1], dtype=np.uint8)
    truth = np.zeros(size[::-1], dtype=np.uint8)
    for z in range(size[2]):
        scanner = np.stack([xx * spacing[0], yy * spacing[1], np.full(xx.shape, z * spacing[2])], -1)
        patient = ((scanner + origin - np.array(shift)) @ rot).astype(np.float32)
        liver = np.zeros(xx.shape, dtype=bool)
        for centre, radii in LIVER_PARTS:
            liver |= (((patient - centre) / radii) ** 2).sum(-1) <= 1
        labels[z][liver] = LIVER
        vessel = (patient[..., 1] - 5.0) ** 2 + (patient[..., 2] + 5.0) ** 2 <= 16.0
        labels[z][liver & vessel] = VESSEL
        for index, (centre, radii) in enumerate(LESIONS):
            inside = (((patient - centre) / (np.array(radii) * growth)) ** 2).sum(-1) <= 1
            labels[z][inside] = TUMOR
            truth[z][inside] = index + 1
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(spacing)
    image.SetOrigin(tuple(origin))
    return image, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="SimpleITK threads")
    parser.add_argument("--slices", type=int, default=200)
    args = parser.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    t = time.perf_counter()
    first, truth0 = scan((512, 512, args.slices), (0.75, 0.75, 0.75), 0.0, (0.0, 0.0, 0.0), 1.0)
    second, truth1 = scan((512, 512, args.slices), (0.78, 0.78, 0.8), 4.0, (9.0, -7.0, 4.0), 1.15)
    print(f"synthetic studies: {time.perf_counter() - t:.1f} s, size {first.GetSize()} / {second.GetSize()}")

    extract = []
    timepoints = []
    for image in (first, second):
        t = time.perf_counter()
        timepoints.append(TimepointInput.from_labels(image))
        extract.append(time.perf_counter() - t)
    print(f"lesion extraction per study: {', '.join(f'{e:.2f} s' for e in extract)} "
          f"({len(timepoints[0].lesions)} and {len(timepoints[1].lesions)} lesions)")

    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        result = track_lesions(timepoints)
        times.append(time.perf_counter() - t)
    print(f"tracking per pair: median {statistics.median(times):.2f} s, "
          f"min {min(times):.2f} s over {args.repeats} runs (goal <= 2 s)")

    maps = [sitk.GetArrayViewFromImage(tp.component_map) for tp in timepoints]
    owner = [{les.id: int(np.bincount(truth[m == les.id]).argmax()) for les in tp.lesions}
             for tp, m, truth in zip(timepoints, maps, (truth0, truth1), strict=True)]
    links = {(owner[0][lk.source[1]], owner[1][lk.target[1]]) for lk in result.links}
    correct = all(a == b for a, b in links) and len(links) == len(LESIONS)
    print(f"links: {len(links)} of {len(LESIONS)} expected, all true: {correct}")


if __name__ == "__main__":
    main()
