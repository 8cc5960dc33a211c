"""RECIST 1.1 and volumetric response: rules at and around their thresholds, and on tracks."""

from __future__ import annotations

from datetime import date

import pytest

from lvt_core.agreement import RadiologistMeasurement
from lvt_core.response import (
    RecistConfig,
    recist_from_measurements,
    recist_from_tracks,
    recist_response,
    select_targets,
    volumetric_response,
)
from lvt_core.tracking import TimepointInput, track_lesions

try:  # the analytic scan builder lives in test_lesions.py
    from test_lesions import Anatomy, Ellipsoid, render_scan
except ModuleNotFoundError:  # tests/ imported as a package
    from tests.test_lesions import Anatomy, Ellipsoid, render_scan

def responses(diameters, new=None) -> list[str]:
    return [a.response for a in recist_response(diameters, new)]


def test_target_selection_keeps_two_largest_measurable() -> None:
    assert select_targets({"a": 9.9, "b": 25.0, "c": 12.0, "d": 30.0}) == ["d", "b"]
    assert select_targets({"a": 9.9}) == []
    assert select_targets({"a": 11.0, "b": 15.0, "c": 20.0}, RecistConfig(max_targets=3)) == ["c", "b", "a"]


def test_categories_at_the_thresholds() -> None:
    # Baseline sum 50 mm.
    assert responses([[30, 20], [21, 14]]) == ["BL", "PR"]  # 35 mm = -30 %
    assert responses([[30, 20], [21.5, 14]]) == ["BL", "SD"]  # -29 %
    assert responses([[30, 20], [0, 0]]) == ["BL", "CR"]
    assert responses([[30, 20], [36, 24]]) == ["BL", "PD"]  # +20 % and +10 mm
    assert responses([[30, 20], [35.9, 24]]) == ["BL", "SD"]  # +19.8 %
    assert responses([[30, 20], [30, 20]], [False, True]) == ["BL", "PD"]  # new lesion


def test_progression_is_measured_from_the_nadir() -> None:
    # 50 -> 20 (PR) -> 25: +25 % over the nadir and +5 mm -> PD, although below baseline.
    result = recist_response([[30, 20], [12, 8], [15, 10]])
    assert [a.response for a in result] == ["BL", "PR", "PD"]
    assert result[2].nadir == 20.0 and result[2].change_from_nadir_pct == pytest.approx(25.0)
    # Small lesions: +50 % but only +3 mm -> not PD.
    assert responses([[12], [6], [9]]) == ["BL", "PR", "SD"]
    # No measurable disease at baseline.
    assert responses([[], []]) == ["NE", "NE"]
    assert responses([[], []], [False, True]) == ["NE", "PD"]


def test_thresholds_met_exactly_count_despite_float_noise() -> None:
    """0.1 mm values: 23.0 → 16.1 is −30.000000000000004 % and 14.3 + 14.4 is 28.700000000000003."""
    assert responses([[23.0], [16.1]]) == ["BL", "PR"]
    assert responses([[10.0, 31.0], [14.3, 14.4]]) == ["BL", "PR"]
    misses = [
        (nadir, nadir + 5.0)
        for nadir in (round(0.1 * k, 1) for k in range(100, 251))  # 10.0 … 25.0 mm: +5 mm ≥ 20 %
        if responses([[nadir], [nadir + 5.0]]) != ["BL", "PD"]
    ]
    assert misses == []


def test_a_target_that_returns_after_a_complete_response_is_progression() -> None:
    """RECIST 1.1: reappearance after CR is PD, even below the +5 mm rule."""
    assert responses([[20.0], [0.0], [4.0]]) == ["BL", "CR", "PD"]
    assert responses([[20.0], [0.0], [0.0]]) == ["BL", "CR", "CR"]


def test_fragments_of_fragments_count_toward_their_target() -> None:
    """20 mm → 8 + 8 → 8 + 4 + 4: the second split kept only one 4 mm fragment in the sum."""
    from lvt_core.lesions import Lesion
    from lvt_core.tracking import Track, TrackingResult

    def lesion(lesion_id: int, diameter: float) -> Lesion:
        return Lesion(lesion_id, 100, 1.0, diameter, diameter, (0.0, 0.0, 0.0), (0,) * 6, 0)

    lesions = [[lesion(1, 20.0)], [lesion(1, 8.0), lesion(2, 8.0)],
               [lesion(1, 8.0), lesion(2, 4.0), lesion(3, 4.0)]]
    tracks = [
        Track(1, [(0, 1), (1, 1), (2, 1)], "persisting", [(0, "new"), (1, "split"), (2, "persisting")]),
        Track(2, [(1, 2), (2, 2)], "split", [(1, "split"), (2, "split")], split_from=1),
        Track(3, [(2, 3)], "split", [(2, "split")], split_from=2),
    ]
    report = recist_from_tracks(TrackingResult(tracks, [], [], lesions, set(), [None] * 3))
    assert report["target_diameters_mm"] == [[20.0], [16.0], [16.0]]
    assert [a["response"] for a in report["recist"]] == ["BL", "SD", "SD"]
    assert report["new_lesions"] == [False, False, False]


def test_volumetric_response() -> None:
    result = volumetric_response([10.0, 3.4, 3.5, 6.1, 0.0])
    assert [a.response for a in result] == ["BL", "PR", "PR", "PD", "CR"]
    assert result[3].change_from_nadir_pct == pytest.approx((6.1 - 3.4) / 3.4 * 100)


def test_response_on_model_tracks() -> None:
    big = Ellipsoid((-20.0, -10.0, 0.0), (10.0, 8.0, 8.0))  # 20 mm
    mid = Ellipsoid((30.0, -20.0, 10.0), (7.0, 6.0, 6.0))  # 14 mm
    small = Ellipsoid((0.0, 20.0, -10.0), (4.0, 4.0, 4.0))  # 8 mm: not a target
    studies = [
        (big, mid, small),
        (Ellipsoid(big.center, (6.0, 5.0, 5.0)), Ellipsoid(mid.center, (4.0, 4.0, 4.0)), small),
        (Ellipsoid(big.center, (9.0, 7.0, 7.0)), Ellipsoid(mid.center, (5.0, 5.0, 5.0)), small,
         Ellipsoid((-35.0, 15.0, 5.0), (4.0, 4.0, 4.0))),
    ]
    tps = []
    for lesions in studies:
        labels, _, _ = render_scan(Anatomy(lesions=lesions), spacing=(1.5, 1.5, 2.0))
        tps.append(TimepointInput.from_labels(labels, min_voxels=5))
    report = recist_from_tracks(track_lesions(tps))
    sums = [a["value"] for a in report["recist"]]
    assert sums[0] == pytest.approx(34.0, abs=3.0)
    assert len(report["targets"]) == 2
    assert [a["response"] for a in report["recist"]] == ["BL", "PR", "PD"]
    assert report["new_lesions"] == [False, False, True]
    (new_track,) = report["new_lesion_ids"][2]  # the track that made the PD, by id
    assert report["new_lesion_ids"][:2] == [[], []] and new_track not in report["targets"]
    assert [a["response"] for a in report["volumetric"]][:2] == ["BL", "PR"]


def test_response_on_radiologist_measurements() -> None:
    def m(study, day, label, d, new=False):
        return RadiologistMeasurement("p1", study, date(2020, 1, day), d, lesion=label, new_lesion=new)

    records = [
        m("s2", 20, "T1", 14.0),  # given out of order on purpose
        m("s1", 1, "T1", 22.0), m("s1", 1, "T2", 18.0), m("s1", 1, "T3", 8.0),
        m("s3", 28, "T1", 20.0), m("s3", 28, "T2", 15.0), m("s3", 28, "N1", 6.0, new=True),
    ]
    report = recist_from_measurements(records)
    assert report["studies"] == ["s1", "s2", "s3"]
    assert report["targets"] == ["T1", "T2"]
    assert report["target_diameters_mm"] == [[22.0, 18.0], [14.0, 0.0], [20.0, 15.0]]
    # T2 is not measured at s2 but is again at s3: not assessed at s2 (NE), not gone (PR)
    assert report["assessed"] == [True, False, True]
    assert report["target_assessed"] == [[True, True], [True, False], [True, True]]
    assert report["new_lesion_ids"] == [[], [], ["N1"]]
    assert [a["response"] for a in report["recist"]] == ["BL", "NE", "PD"]


def test_a_target_missed_at_one_study_is_not_assessed_there_and_sets_no_nadir() -> None:
    """Counted as 0 mm where the model missed it, a bridged target gave PR (-40 %), then PD
    against that false nadir (+84 %): one missed detection, two wrong categories."""
    from lvt_core.lesions import Lesion
    from lvt_core.tracking import Track, TrackingResult

    def lesion(i: int, d: float) -> Lesion:
        return Lesion(i, 100, 1.0, d, d / 2, (0.0, 0.0, 0.0), (0, 0, 0, 1, 1, 1), 0)

    lesions = [[lesion(1, 21.2), lesion(2, 16.8)], [lesion(1, 22.9)], [lesion(1, 25.1), lesion(2, 17.1)]]
    tracks = [Track(1, [(0, 1), (1, 1), (2, 1)], "persisting", []),
              Track(2, [(0, 2), (2, 2)], "persisting", [])]  # bridged over the miss at t1
    report = recist_from_tracks(TrackingResult(tracks, [], [], lesions, set(), [None] * 3))
    assert report["assessed"] == [True, False, True]
    assert [a["response"] for a in report["recist"]] == ["BL", "NE", "SD"]
    assert report["recist"][2]["nadir"] == pytest.approx(38.0)  # the baseline, not 22.9
    gone = [Track(1, [(0, 1), (1, 1), (2, 1)], "persisting", []), Track(2, [(0, 2)], "disappeared", [])]
    lesions[2] = [lesion(1, 25.1)]
    report = recist_from_tracks(TrackingResult(gone, [], [], lesions, set(), [None] * 3))
    assert report["assessed"] == [True, True, True]  # never seen again: gone, 0 mm
    assert report["target_assessed"][1] == [True, True]
    assert [a["response"] for a in report["recist"]] == ["BL", "PR", "PR"]


def test_a_speck_first_seen_at_follow_up_is_new_only_from_the_size_asked() -> None:
    from lvt_core.lesions import Lesion
    from lvt_core.tracking import Track, TrackingResult

    lesions = [[Lesion(1, 900, 5.0, 24.7, 20.0, (0.0, 0.0, 0.0), (0, 0, 0, 1, 1, 1), 0)],
               [Lesion(1, 900, 5.0, 24.7, 20.0, (0.0, 0.0, 0.0), (0, 0, 0, 1, 1, 1), 0),
                Lesion(2, 39, 0.04, 4.3, 3.0, (30.0, 0.0, 0.0), (0, 0, 0, 1, 1, 1), 0)]]
    tracks = [Track(1, [(0, 1), (1, 1)], "persisting", []), Track(2, [(1, 2)], "new", [])]
    result = TrackingResult(tracks, [], [], lesions, set(), [None, None])
    assert [a["response"] for a in recist_from_tracks(result)["recist"]] == ["BL", "PD"]
    shown = recist_from_tracks(result, new_lesion_min_diameter_mm=5.0)
    assert [a["response"] for a in shown["recist"]] == ["BL", "SD"]
    assert [a["response"] for a in shown["volumetric"]] == ["BL", "SD"]


def test_a_new_lesion_the_model_draws_counts_once_a_later_study_shows_it_again() -> None:
    """RECIST 1.1 (4.3.2): an equivocal new lesion is not progression until confirmed, and then
    the progression dates from its first appearance. A segmentation's false lesion is rarely
    drawn twice; counted at once, each gave a false PD."""
    from lvt_core.lesions import Lesion
    from lvt_core.response import describe_new_lesions, new_lesion_statuses
    from lvt_core.tracking import Track, TrackingResult

    def lesion(i: int, d: float) -> Lesion:
        return Lesion(i, 100, 1.0, d, d / 2, (0.0, 0.0, 0.0), (0, 0, 0, 1, 1, 1), 0)

    lesions = [[lesion(1, 20.0)], [lesion(1, 20.0), lesion(2, 8.0), lesion(3, 9.0)],
               [lesion(1, 20.0), lesion(2, 9.0), lesion(4, 7.0)]]
    tracks = [Track(1, [(0, 1), (1, 1), (2, 1)], "persisting", []),
              Track(2, [(1, 2), (2, 2)], "new", []),  # seen again: counts from t1
              Track(3, [(1, 3)], "new", []),  # drawn once: equivocal
              Track(4, [(2, 4)], "new", [])]  # first drawn at the last study: waits
    result = TrackingResult(tracks, [], [], lesions, set(), [None] * 3)
    at_once = recist_from_tracks(result, new_lesion_min_diameter_mm=5.0)
    assert at_once["new_lesion_ids"] == [[], [2, 3], [4]]
    assert [a["response"] for a in at_once["recist"]] == ["BL", "PD", "PD"]
    confirmed = recist_from_tracks(result, new_lesion_min_diameter_mm=5.0, confirm_new_lesions=True)
    assert confirmed["new_lesion_ids"] == [[], [2], []]
    assert confirmed["not_seen_again_ids"] == [[], [3], []]
    assert confirmed["awaiting_confirmation_ids"] == [[], [], [4]]
    assert [a["response"] for a in confirmed["recist"]] == ["BL", "PD", "SD"]
    assert new_lesion_statuses(confirmed, 1) == [(2, "counted"), (3, "not seen again")]
    described = describe_new_lesions([{"lesion": f"track {i}", "status": s} for i, s in new_lesion_statuses(confirmed, 1)])
    assert described == "track 2; not seen again, not counted: track 3"
    assert describe_new_lesions([{"lesion": "track 4", "status": "awaits confirmation"},
                                 {"lesion": "track 6", "status": "not seen again"},
                                 {"lesion": "track 7", "status": "not seen again"}]) == (
        "awaits confirmation: track 4; not seen again, not counted: track 6, track 7")
    assert describe_new_lesions([]) == "no"
    merged = [*tracks[:2], Track(3, [(1, 3)], "merged", [], merged_into=1), tracks[3]]
    joined = recist_from_tracks(TrackingResult(merged, [], [], lesions, set(), [None] * 3), confirm_new_lesions=True)
    assert joined["new_lesion_ids"][1] == [2, 3]  # it grew into another lesion: still there
