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
and only where the arterial CT shows them brighter than the liver. With ``--washout`` the portal
lesions are left as liver too (missed in both phases, probability 0): nothing can be carried,
and only the washout pattern (bright where the arterial scan drew vessel, darker in the portal
CT) brings them back; the last column counts them in each phase. The last rule adds the
filling-vein test (0.28.0), which must leave every true lesion drawn: a lesion is never darker
in the arterial CT and brighter in the portal one, so "lesions ≥ 10 mm left drawn" must equal
the lesions each scan's labels drew before it.

    python bench/cross_phase.py [var/cohorts/val_clinical] [--days 2] [--as-vessel | --washout]

Without a cohort it reads a small one drawn once under ``.cache/bench/`` (one demo-size
patient, two days of a portal and an arterial scan, seed 8101: ``phantom_cohort.two_phase_days``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from phantom_cohort import two_phase_days  # noqa: E402  # bench/, beside this file

from lvt_core.cross_phase import CrossPhaseRule, PhaseScan, confirm_across_phases  # noqa: E402
from lvt_core.labels import LIVER, TUMOR, VESSEL  # noqa: E402
from training.datasets import cases_by_day, load_cases  # noqa: E402
from training.evaluate_model import large_lesion_ids  # noqa: E402

CONFIRMING = CrossPhaseRule(min_peak=0.8, max_distance_mm=5.0, min_volume_ml=0.3)  # 0.23.0
BOTH = CrossPhaseRule(0.8, 5.0, 0.3, carry_min_volume_ml=0.3, carry_min_contrast_hu=3.0, carry_max_brighter_hu=0.0)
ONTO_VESSELS = CrossPhaseRule(0.8, 5.0, 0.3, carry_min_volume_ml=0.3, carry_min_contrast_hu=3.0,
                              carry_max_brighter_hu=0.0, carry_vessel_min_brighter_hu=30.0)
WASHOUT = CrossPhaseRule(0.8, 5.0, 0.3, carry_min_volume_ml=0.3, carry_min_contrast_hu=3.0, carry_max_brighter_hu=0.0,
                         carry_vessel_min_brighter_hu=30.0, washout_min_brighter_hu=30.0, washout_min_darker_hu=5.0,
                         washout_min_volume_ml=0.3)
VEINS = replace(WASHOUT, vein_min_darker_hu=10.0, vein_min_brighter_hu=30.0)


def day_scans(day: list, erased_as: int = LIVER, erase_portal: bool = False) -> tuple[list[PhaseScan], list[np.ndarray]]:
    """The day's scans, arterial lesions erased from the labels (drawn as ``erased_as``; the
    portal ones too, as liver, with ``erase_portal``), and each scan's truth."""
    scans, truths = [], []
    for case in day:
        image, reference = case.load()
        labels = sitk.GetArrayFromImage(reference)
        truths.append(labels.copy())
        probability = np.where(labels == TUMOR, 0.99, 0.0).astype(np.float16)
        if case.phase == "arterial" or erase_portal:
            labels[labels == TUMOR] = erased_as if case.phase == "arterial" else LIVER
            probability[:] = 0
        scans.append(PhaseScan(image, labels, probability, tumor_threshold=0.2, phase=case.phase))
    return scans, truths


def large_found(truth: np.ndarray, labels: np.ndarray, spacing: tuple[float, ...]) -> tuple[int, int]:
    """How many of the lesions ≥ 10 mm of ``truth`` ``labels`` draws, and how many there are."""
    components = cc3d.connected_components(truth == TUMOR, connectivity=26)
    large = large_lesion_ids(components, spacing)
    drawn = labels == TUMOR
    return sum(bool(drawn[components == i].any()) for i in large), len(large)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path, nargs="?",
                        help="phantom cohort with portal and arterial phases (default: a small one drawn once)")
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--as-vessel", action="store_true", help="draw the arterial lesions as vessel, not liver")
    parser.add_argument("--washout", action="store_true",
                        help="draw the arterial lesions as vessel and leave the portal ones as liver")
    args = parser.parse_args()
    if args.cohort is None:
        args.cohort = two_phase_days()
    days = [d for d in cases_by_day(load_cases("synthetic", args.cohort))
            if {c.phase for c in d} >= {"portal", "arterial"}][: args.days]
    if not days:
        raise SystemExit(f"{args.cohort}: no day with both a portal and an arterial scan")
    print("day | voxels per scan | confirming only (s) | + carrying (s) | + onto vessels (s) | + washout (s) | "
          "+ filling veins (s) | arterial lesions ≥ 10 mm back (carrying, onto vessels, washout) | "
          "portal lesions ≥ 10 mm drawn (washout rule) | lesions ≥ 10 mm left drawn by the vein rule (of those drawn)")
    for day in days:
        scans, truths = day_scans(day, VESSEL if args.as_vessel or args.washout else LIVER, args.washout)
        arterial = next(i for i, c in enumerate(day) if c.phase == "arterial")
        portal = next(i for i, c in enumerate(day) if c.phase == "portal")
        seconds, found = [], []
        for rule in (CONFIRMING, BOTH, ONTO_VESSELS, WASHOUT, VEINS):
            start = time.perf_counter()
            result = confirm_across_phases(scans, rule)
            seconds.append(time.perf_counter() - start)
            found.append([large_found(truths[i], result[i].labels, scans[i].image.GetSpacing()) for i in (arterial, portal)])
        total = found[0][0][1]
        print(f"{day[0].case_id.rsplit('_', 1)[0]} | {truths[arterial].size:,} | "
              + " | ".join(f"{s:.2f}" for s in seconds)
              + f" | {found[1][0][0]}, {found[2][0][0]} and {found[3][0][0]} of {total} | "
              f"{found[3][1][0]} of {found[3][1][1]} | "
              f"{found[4][0][0] + found[4][1][0]} of {found[3][0][0] + found[3][1][0]}")


if __name__ == "__main__":
    main()
