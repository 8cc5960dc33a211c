"""Benchmark: what the fluid rule (:mod:`lvt_core.fluid_places`) would cost true lesions, and its
seconds, on phantom days with the truth standing in for the network.

Each day's truth is its scans' labels, so every tumor component is a true lesion. The rule at
each ``--limits`` value removes those whose place reads at most that (median HU) in every CT of
the day; every one it removes is a lesion lost. It prints, per limit, the lesions removed (all,
and those 10 mm or more) of those drawn, the seconds of the rule over all days, and the lowest
"densest median HU" of any true lesion: the margin between the phantom's darkest lesions and
water. No network runs, so it says nothing of what the rule removes that is false (the
calibration does).

    python bench/fluid_truth.py [var/cohorts/val5_clinical ...] [--limits 10,15,20,25]

Without a cohort it reads a small one drawn once under ``.cache/bench/`` (one demo-size
patient, two days of a portal and an arterial scan, seed 8101: ``phantom_cohort.two_phase_days``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from phantom_cohort import two_phase_days  # noqa: E402  # bench/, beside this file

from lvt_core.cross_phase import CrossPhaseRule, PhaseScan, confirm_across_phases  # noqa: E402
from lvt_core.day_scans import pair_transforms  # noqa: E402
from lvt_core.fluid_places import fluid_places  # noqa: E402
from lvt_core.labels import TUMOR  # noqa: E402
from training.datasets import cases_by_day, load_cases  # noqa: E402
from training.evaluate_model import large_lesion_ids  # noqa: E402


def truth_day(day: list) -> list[PhaseScan]:
    """The day's scans with their truth as the decoded labels."""
    scans = []
    for case in day:
        image, reference = case.load()
        labels = sitk.GetArrayFromImage(reference)
        probability = np.where(labels == TUMOR, 0.99, 0.0).astype(np.float16)
        scans.append(PhaseScan(image, labels, probability, tumor_threshold=0.2, phase=case.phase or "unknown"))
    return scans


def lost(scan: PhaseScan, labels: np.ndarray) -> tuple[int, int, int, int]:
    """Of ``scan``'s true lesions (all, then those ≥ 10 mm): how many ``labels`` no longer draws,
    and how many there are."""
    components, count = cc3d.connected_components(scan.labels == TUMOR, connectivity=26, return_N=True)
    large = set(large_lesion_ids(components, scan.image.GetSpacing()))
    gone = [i for i in range(1, count + 1) if not (labels[components == i] == TUMOR).any()]
    return len(gone), count, len([i for i in gone if i in large]), len(large)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path, nargs="*",
                        help="phantom cohorts with two phases or more a day (default: a small one drawn once)")
    parser.add_argument("--limits", default="10,15,20,25", help="comma-separated fluid_max_hu values")
    args = parser.parse_args()
    limits = [float(v) for v in args.limits.split(",")]
    totals = {limit: np.zeros(4, int) for limit in limits}
    seconds = dict.fromkeys(limits, 0.0)
    densest: list[float] = []
    for folder in args.cohort or [two_phase_days()]:
        for day in (d for d in cases_by_day(load_cases("synthetic", folder)) if len(d) > 1):
            scans = truth_day(day)
            densest += [p.densest_hu for places in fluid_places(scans, pair_transforms(scans)) for p in places]
            for limit in limits:
                start = time.perf_counter()
                result = confirm_across_phases(scans, CrossPhaseRule(fluid_max_hu=limit))
                seconds[limit] += time.perf_counter() - start
                for scan, reading in zip(scans, result, strict=True):
                    totals[limit] += lost(scan, reading.labels)
    print(f"true lesion places measured: {len(densest)}; lowest densest median HU: {min(densest, default=float('nan')):.1f}")
    print("fluid_max_hu | lesions removed (all) | lesions ≥ 10 mm removed | seconds (all days)")
    for limit in limits:
        gone, count, gone_large, large = totals[limit]
        print(f"{limit:g} | {gone} of {count} | {gone_large} of {large} | {seconds[limit]:.1f}")


if __name__ == "__main__":
    main()
