"""Benchmark: which lesions of a phantom cohort an observer could see, and which a model found.

For every reference lesion of ``COHORT`` it measures the detectability that ``lvt
evaluate-model`` reports (:mod:`lvt_core.detectability`: local contrast against how much the
scan's noise moves the mean of a liver region of the lesion's volume; about 5 is where an
observer searching the liver starts to see it reliably). With ``--per-lesion`` (the
``per_lesion.csv`` of ``lvt evaluate-model --out``, older ones without the column too) it
adds which lesions the model found, and prints, for lesions >= 10 mm, found / total per
detectability band, so a sensitivity target can be read against what is visible at all.

    python bench/lesion_detectability.py [var/cohorts/test_clinical] [--per-lesion runs/eval/per_lesion.csv]

Without a cohort it reads a small one drawn once under ``.cache/bench/`` (one demo-size
patient, three portal studies, seed 8110: ``phantom_cohort.portal_series``); a
``--per-lesion`` table must come from the cohort it is given with.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from pathlib import Path

import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from phantom_cohort import portal_series  # noqa: E402  # bench/, beside this file

from lvt_core.detectability import ROSE_THRESHOLD  # noqa: E402
from training.datasets import load_cases  # noqa: E402
from training.evaluate_model import MIN_LESION_MM, lesion_findings  # noqa: E402

BANDS = (0.0, 2.0, 3.5, ROSE_THRESHOLD, 10.0, 20.0, float("inf"))


def truth_rows(cohort: Path) -> list[dict]:
    """lesion_findings of each scan against itself: size, contrast, detectability."""
    rows = []
    for case in load_cases("synthetic", cohort):
        image, ref = case.load()
        labels = sitk.GetArrayViewFromImage(ref)
        for row in lesion_findings(labels, labels, sitk.GetArrayViewFromImage(image), ref.GetSpacing()):
            rows.append({"case": case.case_id, **row})
    return rows


def attach_found(rows: list[dict], per_lesion: Path) -> None:
    """``found`` from an evaluation's table, matched by case, voxel count and diameter."""
    with per_lesion.open(newline="") as handle:
        found = {(r["case"], int(r["voxels"]), float(r["diameter_mm"])): r["found"] == "True"
                 for r in csv.DictReader(handle)}
    for row in rows:
        key = (row["case"], row["voxels"], row["diameter_mm"])
        if key not in found:
            raise SystemExit(f"{per_lesion}: no row for lesion {key}; was it evaluated on this cohort?")
        row["found"] = found[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohort", type=Path, nargs="?", help="phantom cohort (default: a small one drawn once)")
    parser.add_argument("--per-lesion", type=Path, help="per_lesion.csv of lvt evaluate-model --out")
    parser.add_argument("--csv", type=Path, help="write every lesion's row here")
    args = parser.parse_args()
    if args.cohort is None:
        if args.per_lesion:
            parser.error("--per-lesion needs the cohort it was evaluated on")
        args.cohort = portal_series()
    rows = truth_rows(args.cohort)
    if args.per_lesion:
        attach_found(rows, args.per_lesion)
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    large = [r for r in rows if r["diameter_mm"] >= MIN_LESION_MM]
    print(f"{args.cohort}: {len(rows)} lesions, {len(large)} of them >= {MIN_LESION_MM:g} mm")
    print("| detectability | lesions >= 10 mm | found | median contrast (HU) | median diameter (mm) |")
    print("|---|---|---|---|---|")
    for low, high in itertools.pairwise(BANDS):
        band = [r for r in large if low <= r["detectability"] < high]
        if not band:
            continue
        found = str(sum(r["found"] for r in band)) if args.per_lesion else "-"
        contrast = sorted(r["contrast_hu"] for r in band)[len(band) // 2]
        diameter = sorted(r["diameter_mm"] for r in band)[len(band) // 2]
        print(f"| {low:g}-{high:g} | {len(band)} | {found} | {contrast:+.1f} | {diameter:.1f} |")
    if args.per_lesion:
        missed = sorted((r for r in large if not r["found"]), key=lambda r: r["detectability"])
        print("missed lesions >= 10 mm (case, diameter mm, contrast HU, detectability):")
        for r in missed:
            print(f"  {r['case']}  {r['diameter_mm']:.1f}  {r['contrast_hu']:+.1f}  {r['detectability']:.1f}")


if __name__ == "__main__":
    main()
