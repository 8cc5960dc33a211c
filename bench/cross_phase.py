"""Benchmark: seconds to read the phases of a day together, confirming candidates only (0.23.0)
against also carrying whole lesions (0.25.0) and carrying them onto regions drawn as vessel too,
on clinical-size phantom days.

No network runs: each day's truth stands in for the decoded labels, except that in the
arterial phase every lesion is left as liver (the network missed it there). The tumor
probability is 0.99 on the portal lesions and 0 elsewhere, so the confirmation rule has no
candidate and only carrying can bring the arterial lesions back. It prints, per day, the
seconds of each rule and how many arterial lesions (of those 10 mm or more) carrying found.
With ``--as-vessel`` the arterial lesions are drawn as vessel instead, as the network draws
some arterially enhancing ones; only carrying onto vessel-drawn regions can bring those back,
and only where the arterial CT shows them brighter than the liver.

    python bench/cross_phase.py var/cohorts/val_clinical --days 2 [--as-vessel]
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

from lvt_core.cross_phase import CrossPhaseRule, PhaseScan, confirm_across_phases  # noqa: E402
from lvt_core.labels import LIVER, TUMOR, VESSEL  # noqa: E402
from training.datasets import cases_by_day, load_cases  # noqa: E402
from training.evaluate_model import large_lesion_ids  # noqa: E402

CONFIRMING = CrossPhaseRule(min_peak=0.8, max_distance_mm=5.0, min_volume_ml=0.3)  # 0.23.0
BOTH = CrossPhaseRule(0.8, 5.0, 0.3, carry_min_volume_ml=0.3, carry_min_contrast_hu=3.0, carry_max_brighter_hu=0.0)
ONTO_VESSELS = CrossPhaseRule(0.8, 5.0, 0.3, carry_min_volume_ml=0.3, carry_min_contrast_hu=3.0,
                              carry_max_brighter_hu=0.0, carry_vessel_min_brighter_hu=30.0)


def day_scans(day: list, erased_as: int = LIVER) -> tuple[list[PhaseScan], np.ndarray]:
    """The day's scans, arterial lesions erased from the labels (drawn as ``erased_as``), and
    the arterial truth."""
    scans, arterial_truth = [], None
    for case in day:
        image, reference = case.load()
        labels = sitk.GetArrayFromImage(reference)
        probability = np.where(labels == TUMOR, 0.99, 0.0).astype(np.float16)
        if case.phase == "arterial":
            arterial_truth = labels.copy()
            labels[labels == TUMOR] = erased_as
            probability[:] = 0
        scans.append(PhaseScan(image, labels, probability, tumor_threshold=0.2, phase=case.phase))
    return scans, arterial_truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path, help="phantom cohort with portal and arterial phases")
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--as-vessel", action="store_true", help="draw the arterial lesions as vessel, not liver")
    args = parser.parse_args()
    days = [d for d in cases_by_day(load_cases("synthetic", args.cohort))
            if {c.phase for c in d} >= {"portal", "arterial"}][: args.days]
    if not days:
        raise SystemExit(f"{args.cohort}: no day with both a portal and an arterial scan")
    print("day | voxels per scan | confirming only (s) | + carrying (s) | + onto vessels (s) | "
          "arterial lesions ≥ 10 mm carried (without, with onto vessels)")
    for day in days:
        scans, truth = day_scans(day, VESSEL if args.as_vessel else LIVER)
        arterial = next(i for i, c in enumerate(day) if c.phase == "arterial")
        components = cc3d.connected_components(truth == TUMOR, connectivity=26)
        large = large_lesion_ids(components, scans[arterial].image.GetSpacing())
        seconds, found = [], []
        for rule in (CONFIRMING, BOTH, ONTO_VESSELS):
            start = time.perf_counter()
            result = confirm_across_phases(scans, rule)
            seconds.append(time.perf_counter() - start)
            carried = result[arterial][0] == TUMOR
            found.append(sum(bool(carried[components == i].any()) for i in large))
        print(f"{day[0].case_id.rsplit('_', 1)[0]} | {truth.size:,} | {seconds[0]:.2f} | {seconds[1]:.2f} | "
              f"{seconds[2]:.2f} | {found[1]} and {found[2]} of {len(large)}")


if __name__ == "__main__":
    main()
