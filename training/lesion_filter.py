"""Fit the false-lesion filter (:mod:`lvt_core.lesion_filter`) of a checkpoint on phantoms.

The network runs once per scan; each tumor threshold given draws its candidate components
(before the peak, volume and score rules), and each candidate is labelled a true lesion when
it touches a reference tumor, the way ``false_lesions`` counts them. A standardised logistic
regression (scikit-learn, balanced classes) is fitted on all of them, and its
patient-grouped cross-validated ROC AUC is reported, so a filter that only memorised its
phantoms shows. The fitted numbers go into ``meta["inference"]["lesion_filter"]`` of a copy;
``lvt calibrate`` then chooses ``min_lesion_score`` on the validation cohorts.

Use phantoms that neither training, calibration nor the test uses: the network's false
lesions on its own training scans are fewer and different.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from lvt_core.faint_lesions import FaintLesionSearch
from lvt_core.labels import CHANNELS, TUMOR
from lvt_core.lesion_edges import LesionEdgeRule
from lvt_core.lesion_filter import FEATURES, LesionFilter, TumorCandidates, candidate_features

if TYPE_CHECKING:
    from lvt_core.inference import Predictor, ScanProbabilities

CV_FOLDS = 5


def decoded_candidates(
    predictor: Predictor, probabilities: ScanProbabilities, image: sitk.Image, thresholds: list[float],
) -> tuple[TumorCandidates, tuple[slice, ...], np.ndarray] | None:
    """The tumor components ``thresholds`` draw as the predictor decodes them (air and the
    liver's largest component applied) before any component rule (and without the faint-lesion
    search or the edge rule, which act on what the rules keep), measured, with the region
    of the scan they lie in and the labels there; None when the fine pass missed the scan."""
    region = probabilities.region
    if region is None:
        return None
    labels = sitk.GetArrayFromImage(predictor.labels_from(probabilities, image, thresholds, 0.0, 0.0, 0.0,
                                                          faint_search=FaintLesionSearch(),
                                                          lesion_edges=LesionEdgeRule(),
                                                          min_tumor_roundness=0.0, max_tumor_outside=1.0))
    candidates = candidate_features(labels[region], probabilities.values[predictor.tumor_channel],
                                    sitk.GetArrayViewFromImage(image)[region], image.GetSpacing())
    return candidates, region, labels[region]


@dataclass
class CandidateSet:
    """Features, labels (1: touches a reference tumor) and patient groups of all candidates."""

    features: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, candidates: TumorCandidates, touches: np.ndarray, group: str, info: dict[str, Any]) -> None:
        self.features.append(candidates.features)
        self.labels.append(touches.astype(int))
        self.groups.extend([group] * candidates.count)
        self.rows.extend({**info, **dict(zip(FEATURES, map(float, row), strict=True)), "true_lesion": bool(t)}
                         for row, t in zip(candidates.features, touches, strict=True))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.concatenate(self.features) if self.features else np.zeros((0, len(FEATURES)))
        y = np.concatenate(self.labels) if self.labels else np.zeros(0, int)
        return x, y, np.asarray(self.groups)


def collect_candidates(
    predictor: Predictor, cohorts: Sequence[Path], thresholds: Sequence[float],
    on_case: Callable[[str], None] | None = None,
) -> CandidateSet:
    """Candidates of every scan of ``cohorts`` at every tumor threshold in ``thresholds``."""
    from training.datasets import load_cases

    found = CandidateSet()
    tumor_index = CHANNELS.index("tumor")
    for folder in cohorts:
        for case in load_cases("synthetic", folder):
            image, ref_image = case.load()
            ref_tumor = sitk.GetArrayViewFromImage(ref_image) == TUMOR
            probabilities = predictor.predict_probabilities(image)
            for value in thresholds:
                decision = list(predictor.thresholds)
                decision[tumor_index] = value
                decoded = decoded_candidates(predictor, probabilities, image, decision)
                if decoded is None:
                    continue
                candidates, region, _ = decoded
                hit = np.unique(candidates.components[ref_tumor[region] & (candidates.components > 0)])
                touches = np.isin(np.arange(1, candidates.count + 1), hit)
                found.add(candidates, touches, f"{folder}/{case.split_group}",
                          {"cohort": str(folder), "case": case.case_id, "tumor_threshold": value})
            if on_case:
                on_case(case.case_id)
    return found


def fit_filter(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[LesionFilter, dict[str, Any]]:
    """A balanced logistic regression on standardised features, and its grouped CV ROC AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if positives < 2 or negatives < 2:
        raise ValueError(f"fitting a lesion filter needs at least 2 true and 2 false candidates, "
                         f"got {positives} true and {negatives} false: use more or larger cohorts")
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", C=1.0, max_iter=2000))
    folds = min(CV_FOLDS, len(set(groups)))
    cv_auc = None
    splits = list(GroupKFold(folds).split(x, y, groups)) if folds >= 2 else []
    if splits and all(len(set(y[train])) == 2 for train, _ in splits):  # else no fold can be fitted
        predicted = cross_val_predict(model, x, y, cv=splits, method="predict_proba")[:, 1]
        cv_auc = round(float(roc_auc_score(y, predicted)), 4)
    model.fit(x, y)
    scaler, regression = model[0], model[1]
    lesion_filter = LesionFilter(FEATURES, tuple(map(float, scaler.mean_)), tuple(map(float, scaler.scale_)),
                                 tuple(map(float, regression.coef_[0])), float(regression.intercept_[0]))
    report = {"candidates": len(y), "true_candidates": positives, "false_candidates": negatives,
              "cv_folds": folds, "cv_roc_auc": cv_auc,
              "train_roc_auc": round(float(roc_auc_score(y, model.predict_proba(x)[:, 1])), 4),
              "weights": dict(zip(FEATURES, (round(c, 4) for c in lesion_filter.coef), strict=True))}
    return lesion_filter, report


def fit_lesion_filter(
    checkpoint: str | Path, cohorts: Sequence[str | Path], out: str | Path,
    thresholds: Sequence[float] = (0.3, 0.2), version: str | None = None, device: str = "auto",
    on_case: Callable[[str], None] | None = None, candidates_csv: str | Path | None = None,
) -> dict[str, Any]:
    """Fit the filter on ``cohorts`` and write a copy of ``checkpoint`` carrying it at ``out``.

    The copy keeps every decision of the original and sets ``min_lesion_score`` to 0 (the
    filter keeps every candidate) until ``lvt calibrate`` chooses it.
    """
    from lvt_core.checkpoint import copy_with_meta, load_checkpoint
    from lvt_core.inference import Predictor
    from training.experiment import write_rows

    if not thresholds or not all(0.0 < t < 1.0 for t in thresholds):
        raise ValueError(f"tumor thresholds must be strictly between 0 and 1, got {list(thresholds)}")
    folders = [Path(c) for c in cohorts]
    predictor = Predictor(checkpoint, device=device)
    found = collect_candidates(predictor, folders, thresholds, on_case)
    x, y, groups = found.arrays()
    lesion_filter, report = fit_filter(x, y, groups)
    if candidates_csv:
        write_rows(Path(candidates_csv), found.rows)
    _, meta = load_checkpoint(checkpoint)
    inference = {**dict(meta.get("inference", {})), "lesion_filter": lesion_filter.to_meta(),
                 "min_lesion_score": 0.0}
    fitted_on = {"cohorts": [str(f) for f in folders], "tumor_thresholds": list(thresholds), **report}
    meta = {**meta, "inference": inference, "version": version or meta["version"], "lesion_filter": fitted_on}
    written = copy_with_meta(checkpoint, out, meta)
    return {"checkpoint": str(checkpoint), "out": str(written), **fitted_on}
