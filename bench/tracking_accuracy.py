"""Does tracking keep each true lesion in one track? Phantom truth against tracks, per patient.

Reads a phantom cohort (``lvt phantom DIR --timepoints 4``; one phase is enough), tracks the
lesions of each patient's studies in time order, and maps every tracked lesion to the true
lesion (``lesion_ids.nii.gz``) it overlaps most. A true lesion detected at several studies but
spread over more than one track is *fragmented*; a track that holds two different true lesions
is a *false merge*. Runs on the ground-truth label maps (tracking alone) and, with ``--model``,
on each ``--model``'s label maps (what users see), under each ``--max-gaps`` setting so
models and settings are compared in the same run. ``tracks`` counts every track, false
lesions included; the truth's count is what a perfect model would show.

    lvt phantom var/cohorts/track_demo --patients 4 --timepoints 4 --phases 1 --size demo --seed 7000
    .venv/bin/python bench/tracking_accuracy.py var/cohorts/track_demo --model lvt_core/models/lvt_default.pt \
        --with-network-alone

Without a cohort it reads a small one drawn once under ``.cache/bench/`` (one demo-size
patient, three portal studies, seed 8110: ``phantom_cohort.portal_series``).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from phantom_cohort import portal_series  # bench/, beside this file

from lvt_core.tracking import TimepointInput, TrackingConfig, track_lesions


@dataclass
class Study:
    """One tracked study: its timepoint input and, per tracked lesion id, the true lesion id."""

    timepoint: TimepointInput
    truth_of: dict[int, int]


def truth_mapping(timepoint: TimepointInput, lesion_ids: sitk.Image) -> dict[int, int]:
    """Tracked lesion id -> true lesion id it overlaps most (0: a false positive)."""
    assert timepoint.component_map is not None
    components = sitk.GetArrayViewFromImage(timepoint.component_map)
    truth = sitk.GetArrayViewFromImage(lesion_ids)
    mapping: dict[int, int] = {}
    for lesion in timepoint.lesions:
        hits = truth[components == lesion.id]
        hits = hits[hits > 0]
        mapping[lesion.id] = int(np.bincount(hits).argmax()) if hits.size else 0
    return mapping


def load_patient(cohort: Path, rows: list[dict[str, str]], predictor: object | None) -> list[Study]:
    studies = []
    for row in sorted(rows, key=lambda r: int(r["study_index"])):
        image = sitk.ReadImage(str(cohort / row["image"]))
        labels = (predictor.predict(image) if predictor is not None  # type: ignore[attr-defined]
                  else sitk.ReadImage(str(cohort / row["labels"])))
        timepoint = TimepointInput.from_labels(labels, image)
        studies.append(Study(timepoint, truth_mapping(timepoint, sitk.ReadImage(str(cohort / row["lesion_ids"])))))
    return studies


def score(studies: list[Study], config: TrackingConfig) -> dict[str, int]:
    """Counts of true lesions seen at 2+ studies, fragmented ones, extra tracks, false merges."""
    result = track_lesions([s.timepoint for s in studies], config)
    tracks_of: dict[int, set[int]] = defaultdict(set)
    truths_of: dict[int, set[int]] = defaultdict(set)
    seen_at: dict[int, set[int]] = defaultdict(set)
    for track in result.tracks:
        for t, lesion_id in track.members:
            truth = studies[t].truth_of.get(lesion_id, 0)
            if truth:
                tracks_of[truth].add(track.track_id)
                truths_of[track.track_id].add(truth)
                seen_at[truth].add(t)
    followed = [k for k, ts in seen_at.items() if len(ts) > 1]
    return {
        "followed": len(followed),
        "fragmented": sum(len(tracks_of[k]) > 1 for k in followed),
        "extra_tracks": sum(len(tracks_of[k]) - 1 for k in followed),
        "false_merges": sum(len(v) > 1 for v in truths_of.values()),
        "tracks": len(result.tracks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path, nargs="?", help="phantom cohort (default: a small one drawn once)")
    parser.add_argument("--model", type=Path, action="append", default=[],
                        help="also track this model's label maps (repeat to compare models)")
    parser.add_argument("--with-network-alone", action="store_true",
                        help="also track each model's label maps without its faint-lesion search")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-gaps", default="0,1,2", help="comma-separated TrackingConfig.max_gap values")
    args = parser.parse_args()
    if args.cohort is None:
        args.cohort = portal_series()
    with (args.cohort / "manifest.csv").open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["phase"] == "portal"]
    by_patient: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_patient[row["patient_id"]].append(row)
    sources: dict[str, object | None] = {"truth": None}
    if args.model:
        from lvt_core.inference import Predictor

        for path in args.model:
            predictor = Predictor(path, device=args.device)
            sources[f"{predictor.version} ({path.name})"] = predictor
            if args.with_network_alone:
                sources[f"{predictor.version} network alone"] = Predictor(path, device=args.device,
                                                                          faint_search=False)
    gaps = [int(g) for g in args.max_gaps.split(",")]
    print(f"{'labels':<28} {'max_gap':>7} {'followed':>9} {'fragmented':>11} {'extra':>6} {'merges':>7} {'tracks':>7}")
    for name, predictor in sources.items():
        patients = {pid: load_patient(args.cohort, prs, predictor) for pid, prs in sorted(by_patient.items())}
        for gap in gaps:
            config = replace(TrackingConfig(), max_gap=gap)
            totals: dict[str, int] = defaultdict(int)
            for studies in patients.values():
                for key, value in score(studies, config).items():
                    totals[key] += value
            print(f"{name:<28} {gap:>7} {totals['followed']:>9} {totals['fragmented']:>11} "
                  f"{totals['extra_tracks']:>6} {totals['false_merges']:>7} {totals['tracks']:>7}")


if __name__ == "__main__":
    main()
