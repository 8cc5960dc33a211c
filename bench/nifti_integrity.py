"""What the NIfTI integrity check costs against the read it protects, on a clinical-size scan.

Every NIfTI LVT reads is streamed once by :mod:`lvt_core.nifti_integrity` before SimpleITK
reads it (ITK reads a truncated file's missing slices as zeros). This writes one phantom scan
at clinical size (512², 0.7–0.8 mm, 150–300 slices) and prints, in the same run, the seconds
of the check, of SimpleITK's read alone, and of ``read_image`` (both).

    .venv/bin/python bench/nifti_integrity.py [--repeats 3] [--seed 9000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

from lvt_core.imageio import read_image, write_image
from lvt_core.nifti_integrity import nifti_problem
from lvt_core.phantom import phantom_scan


def best_of(repeats: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=9000)
    args = parser.parse_args()
    scan = phantom_scan(args.seed, size="clinical", phase="portal")
    with tempfile.TemporaryDirectory() as folder:
        path = write_image(scan.image, Path(folder) / "ct.nii.gz")
        size_mb = path.stat().st_size / 1e6
        voxels = scan.image.GetNumberOfPixels()
        check = best_of(args.repeats, lambda: nifti_problem(path))
        itk = best_of(args.repeats, lambda: sitk.ReadImage(str(path)))
        both = best_of(args.repeats, lambda: read_image(path))
    print(f"scan {list(scan.image.GetSize())} ({voxels / 1e6:.0f} M voxels, {size_mb:.0f} MB .nii.gz)")
    print(f"integrity check   {check:6.2f} s")
    print(f"SimpleITK read    {itk:6.2f} s")
    print(f"read_image (both) {both:6.2f} s  (+{100 * (both - itk) / itk:.0f} % over ITK alone)")


if __name__ == "__main__":
    main()
