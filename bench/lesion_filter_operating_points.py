"""Does the false-lesion filter beat the peak rule alone? Out-of-fold operating points.

Reads the candidate table ``lvt fit-lesion-filter --candidates-csv`` writes (one row per
predicted tumor component, its features and whether it touches a true lesion) and, with
patient-grouped folds, scores every candidate with a filter fitted on the other patients:
the shipped model family (:func:`training.lesion_filter.fit_filter`, a logistic regression)
and, for comparison only, a gradient-boosted tree ensemble. For each tumor threshold and
peak rule it prints ``true/false`` candidates kept at each minimum score, so the peak rule
alone (score 0) is the baseline in the same run. Candidates are counted, not lesions: a
lesion drawn as two components counts twice.

    lvt fit-lesion-filter lvt_core/models/lvt_default.pt --cohort var/cohorts/fp_demo \
        --out runs/filter.pt --candidates-csv runs/filter_candidates.csv
    .venv/bin/python bench/lesion_filter_operating_points.py runs/filter_candidates.csv

Without a table (as ``make bench`` runs it) it says so and exits 0: making one runs the model
over a cohort, too long for a default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

from lvt_core.lesion_filter import FEATURES
from training.lesion_filter import CV_FOLDS, fit_filter

PEAKS = (0.0, 0.7, 0.9, 0.95)
SCORES = (0.0, 0.3, 0.5, 0.7)


def patient_groups(table: pd.DataFrame) -> np.ndarray:
    """``cohort/patient``: a patient's studies and phases never straddle a fold."""
    return (table["cohort"].astype(str) + "/" + table["case"].astype(str).str.split("_").str[0]).to_numpy()


def out_of_fold_scores(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
    """Each candidate scored by a logistic filter and a tree ensemble fitted without its patient."""
    scores = {"logistic": np.zeros(len(y)), "trees": np.zeros(len(y))}
    for train, held in GroupKFold(min(CV_FOLDS, len(set(groups)))).split(x, y, groups):
        logistic, _ = fit_filter(x[train], y[train], groups[train])
        scores["logistic"][held] = logistic.scores(x[held])
        trees = HistGradientBoostingClassifier(max_depth=3, learning_rate=0.05, max_iter=200,
                                               class_weight="balanced", random_state=0)
        scores["trees"][held] = trees.fit(x[train], y[train]).predict_proba(x[held])[:, 1]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates_csv", type=Path, nargs="?",
                        help="table of lvt fit-lesion-filter --candidates-csv (without it: nothing to do)")
    args = parser.parse_args()
    if args.candidates_csv is None:
        print("skipped: no candidate table given (make one with lvt fit-lesion-filter ... --candidates-csv)")
        return
    table = pd.read_csv(args.candidates_csv)
    y = table["true_lesion"].astype(bool).to_numpy().astype(int)
    x = table[list(FEATURES)].to_numpy(np.float64)
    groups = patient_groups(table)
    scores = out_of_fold_scores(x, y, groups)
    scans = (table["cohort"].astype(str) + "/" + table["case"].astype(str)).nunique()
    print(f"{len(table)} candidates ({y.sum()} true) from {scans} scans of {len(set(groups))} patients "
          "(scans without any candidate are not in the table, so per-scan rates are upper bounds)")
    for name in ("peak_probability", "mean_probability"):
        print(f"ROC AUC {name}: {roc_auc_score(y, table[name]):.3f}")
    for name, values in scores.items():
        print(f"ROC AUC {name} filter (out of fold): {roc_auc_score(y, values):.3f}")
    for threshold, rows in table.groupby("tumor_threshold"):
        index = rows.index.to_numpy()
        truth = y[index].astype(bool)
        print(f"\ntumor threshold {threshold}: true/false candidates kept (false per scan) at min score "
              + " | ".join(f"{s:g}" for s in SCORES))
        for peak in PEAKS:
            passes_peak = rows["peak_probability"].to_numpy() >= peak
            for name, values in scores.items():
                cells = []
                for minimum in SCORES:
                    kept = passes_peak & (values[index] >= minimum)
                    cells.append(f"{int((kept & truth).sum())}/{int((kept & ~truth).sum())} "
                                 f"({(kept & ~truth).sum() / scans:.2f})")
                print(f"  peak {peak:<4g} {name:<8} " + " | ".join(cells))


if __name__ == "__main__":
    main()
