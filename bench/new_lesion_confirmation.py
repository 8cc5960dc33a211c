"""Does asking the model's new lesions to be seen again bring its RECIST closer to the truth's?

RECIST 1.1 (4.3.2) counts a new lesion as progression only when it is unequivocal; an
equivocal one waits for the next study, which dates the progression back when it confirms
it. A segmentation's false lesion (a gallbladder, a vessel cut across, the faint search's
noise) is rarely drawn again at the next study, while a true new lesion stays. This bench
tracks each patient's portal studies on the truth's label maps and on a model's (saved by
``lvt evaluate-model --save-predictions``, the product's day reading), and compares the
model's RECIST category at each follow-up with the truth's, counting new lesions at once and
only once seen again (``recist_from_tracks(confirm_new_lesions=True)``). Both run in the same
process on the same label maps.

    lvt phantom var/cohorts/long7400 --patients 6 --timepoints 4 --phases 2 --size demo --seed 7400
    lvt evaluate-model lvt_core/models/lvt_default.pt --cohort var/cohorts/long7400 \
        --out runs/eval_long7400 --save-predictions
    .venv/bin/python bench/new_lesion_confirmation.py var/cohorts/long7400 runs/eval_long7400/predictions

Without arguments it reads a small cohort drawn once under ``.cache/bench/`` (two demo-size
patients, four studies of two phases, seed 8120) and the shipped model's day readings of it,
made once beside it (about 8 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
from collections import Counter, defaultdict
from pathlib import Path

import SimpleITK as sitk

from lvt_core.response import recist_from_tracks
from lvt_core.tracking import TimepointInput, track_lesions

PHASE = "portal"  # the phase the product's tracks follow


def _categories(timepoints: list[TimepointInput], min_new_mm: float, confirm: bool) -> list[str]:
    report = recist_from_tracks(track_lesions(timepoints), new_lesion_min_diameter_mm=min_new_mm,
                                confirm_new_lesions=confirm)
    return [item["response"] for item in report["recist"][1:]]


def _default_readings() -> tuple[Path, Path]:
    """The bench's own cohort and the shipped model's day readings of it (made once)."""
    from phantom_cohort import default_cohort  # bench/, beside this file

    from app.settings import SHIPPED_MODEL
    from training.evaluate_model import evaluate_checkpoint

    cohort = default_cohort("longitudinal", patients=2, timepoints=4, phases=2, seed=8120)
    out = cohort / "shipped_model_readings"
    if not (out / "metrics.json").is_file():  # written last: the readings are complete
        print(f"reading the cohort with {SHIPPED_MODEL.name} into {out} (once)", flush=True)
        evaluate_checkpoint(SHIPPED_MODEL, cohort, out, save_predictions=True)
    return cohort, out / "predictions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path, nargs="?", help="phantom cohort with manifest.csv")
    parser.add_argument("predictions", type=Path, nargs="?",
                        help="folder of <patient>_<study_index>_<phase>.nii.gz")
    parser.add_argument("--min-new-mm", type=float, default=5.0, help="smallest new lesion (the page's default)")
    args = parser.parse_args()
    if args.cohort is None:
        args.cohort, args.predictions = _default_readings()
    elif args.predictions is None:
        parser.error("give the predictions folder with the cohort")

    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    with (args.cohort / "manifest.csv").open() as f:
        for row in csv.DictReader(f):
            if row["phase"] == PHASE:
                rows[row["patient_id"]].append(row)
    tally: dict[str, Counter[str]] = {"at once": Counter(), "seen again": Counter()}
    print(f"{'patient':10s} {'follow-up':>9s} {'truth':>6s} {'at once':>8s} {'seen again':>11s}")
    for patient, studies in sorted(rows.items()):
        studies.sort(key=lambda r: int(r["study_index"]))
        truth, model = [], []
        for row in studies:
            date = dt.date.fromisoformat(row["study_date"])
            truth.append(TimepointInput.from_labels(sitk.ReadImage(str(args.cohort / row["labels"])), None, date))
            predicted = args.predictions / f"{patient}_{row['study_index']}_{PHASE}.nii.gz"
            model.append(TimepointInput.from_labels(sitk.ReadImage(str(predicted)), None, date))
        reference = _categories(truth, args.min_new_mm, confirm=False)
        runs = {"at once": _categories(model, args.min_new_mm, confirm=False),
                "seen again": _categories(model, args.min_new_mm, confirm=True)}
        for t, expected in enumerate(reference, start=1):
            print(f"{patient:10s} {t:9d} {expected:>6s} {runs['at once'][t - 1]:>8s} {runs['seen again'][t - 1]:>11s}")
            where = "last" if t == len(reference) else "earlier"  # the last study has no next one yet
            for name, categories in runs.items():
                got = categories[t - 1]
                tally[name][f"{where} follow-ups"] += 1
                tally[name][f"{where} agree"] += got == expected
                tally[name][f"{where} false PD"] += got == "PD" and expected != "PD"
                tally[name][f"{where} missed PD"] += got != "PD" and expected == "PD"
    print()
    for name, counts in tally.items():
        for where in ("earlier", "last"):
            print(f"new lesions counted {name:10s}, {where:7s} follow-ups: {counts[f'{where} agree']}/"
                  f"{counts[f'{where} follow-ups']} categories agree with the truth's, "
                  f"{counts[f'{where} false PD']} false PD, {counts[f'{where} missed PD']} missed PD")


if __name__ == "__main__":
    main()
