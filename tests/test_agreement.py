"""Radiologist link, Bland–Altman agreement and earlier detection on plain records."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from lvt_core.agreement import (
    ModelLesion,
    RadiologistMeasurement,
    agreement_report,
    agreement_stats,
    earlier_detection,
    link_measurements,
)


def lesion(study, day, track, lid, d, centroid, z=(10, 20), patient="p1"):
    return ModelLesion(patient, study, date(2009, day, 1), track, lid, d, centroid, z)


LESIONS = [
    lesion("s1", 3, 1, 1, 8.0, (10.0, 0.0, 0.0), (12, 14)),  # the model sees track 1 early
    lesion("s2", 9, 1, 1, 40.0, (11.0, 1.0, 0.0), (5, 30)),
    lesion("s2", 9, 2, 2, 15.0, (80.0, 40.0, 10.0), (40, 45)),
    lesion("s2", 9, 3, 3, 38.0, (-60.0, 0.0, 0.0), (31, 50)),
]


def test_link_by_location_then_slice_then_size() -> None:
    measurements = [
        RadiologistMeasurement("p1", "s2", date(2009, 9, 1), 41.0, location_mm=(12.0, 0.0, 0.0)),
        RadiologistMeasurement("p1", "s2", date(2009, 9, 1), 14.0, slice_index=46),
        RadiologistMeasurement("p1", "s2", date(2009, 9, 1), 37.0),  # size: closest is track 3
        RadiologistMeasurement("p1", "s2", date(2009, 9, 1), 90.0),  # nothing that size
        RadiologistMeasurement("p1", "s9", date(2010, 1, 1), 20.0),  # study without lesions
    ]
    links = link_measurements(measurements, LESIONS)
    assert [(lk.track_id, lk.method) for lk in links] == [
        (1, "location"), (2, "slice"), (3, "size"), (None, None), (None, None),
    ]


def test_a_model_lesion_is_linked_to_one_measurement_of_a_reader() -> None:
    """Two lesions the radiologist placed 45 mm apart both went to one model lesion (one by
    location, the other by its slice), counting that lesion twice in Bland–Altman."""
    day = date(2009, 9, 1)
    lesions = [lesion("s2", 9, 1, 1, 20.0, (0.0, 0.0, 0.0), (10, 20)),
               lesion("s2", 9, 2, 2, 30.0, (0.0, 45.0, 0.0), (10, 20))]
    measurements = [
        RadiologistMeasurement("p1", "s2", day, 20.0, location_mm=(2.0, 0.0, 0.0), lesion="L1"),
        RadiologistMeasurement("p1", "s2", day, 21.0, location_mm=(0.0, 40.0, 0.0), lesion="L4"),
        RadiologistMeasurement("p1", "s2", day, 19.0, slice_index=12, lesion="L5"),  # lesion 1's slice
        RadiologistMeasurement("p1", "s2", day, 19.5, location_mm=(1.0, 0.0, 0.0), reader="dr_b"),
        RadiologistMeasurement("p1", "s2", day, 25.0, location_mm=(300.0, 0.0, 0.0)),  # nothing there
    ]
    links = link_measurements(measurements, lesions)
    assert [(lk.track_id, lk.method) for lk in links] == [
        (1, "location"), (2, "location"),
        (None, None),  # both lesions are taken: not a second link to lesion 1
        (1, "location"),  # another reader measures the same lesion
        (None, None),  # its location says where it is: the model missed it, no slice or size guess
    ]


def test_agreement_statistics_match_their_definitions() -> None:
    model = np.array([21.0, 30.0, 42.0, 18.0, 55.0])
    radiologist = np.array([20.0, 32.0, 40.0, 19.0, 50.0])
    stats = agreement_stats(model, radiologist)
    diff = model - radiologist
    assert stats.n == 5
    assert stats.mean_abs_diff_mm == pytest.approx(np.abs(diff).mean())
    assert stats.bias_mm == pytest.approx(diff.mean())
    sd = np.sqrt(((diff - diff.mean()) ** 2).sum() / 4)
    assert stats.loa_low_mm == pytest.approx(diff.mean() - 1.96 * sd)
    assert stats.loa_high_mm == pytest.approx(diff.mean() + 1.96 * sd)
    mx, my = model - model.mean(), radiologist - radiologist.mean()
    assert stats.pearson_r == pytest.approx((mx * my).sum() / np.sqrt((mx**2).sum() * (my**2).sum()))
    one = agreement_stats([10.0], [12.0])
    assert one.bias_mm == -2.0 and one.loa_low_mm is None and one.pearson_r is None
    assert agreement_stats([], []).n == 0


def test_report_per_patient_and_cohort() -> None:
    lesions = [*LESIONS, lesion("q1", 5, 7, 1, 25.0, (0.0, 0.0, 0.0), patient="p2")]
    measurements = [
        RadiologistMeasurement("p1", "s2", None, 41.0, location_mm=(12.0, 0.0, 0.0)),
        RadiologistMeasurement("p1", "s2", None, 14.0, slice_index=42),
        RadiologistMeasurement("p2", "q1", None, 27.0),
        RadiologistMeasurement("p2", "q1", None, 200.0),
    ]
    report = agreement_report(link_measurements(measurements, lesions))
    assert report["cohort"]["n"] == 3
    assert report["cohort"]["bias_mm"] == pytest.approx(((40 - 41) + (15 - 14) + (25 - 27)) / 3)
    assert report["patients"]["p1"]["n"] == 2 and report["patients"]["p2"]["n"] == 1
    assert report["unlinked_measurements"] == 1


def test_earlier_detection_lists_lead_time_in_months() -> None:
    measurements = [  # the reader reported s1 (a lesion the model missed) but not track 1
        RadiologistMeasurement("p1", "s1", date(2009, 3, 1), 30.0, location_mm=(300.0, 0.0, 0.0)),
        RadiologistMeasurement("p1", "s2", date(2009, 9, 1), 41.0, location_mm=(12.0, 0.0, 0.0)),
        RadiologistMeasurement("p1", "s2", date(2009, 9, 1), 37.0),
    ]
    found = earlier_detection(LESIONS, link_measurements(measurements, LESIONS))
    assert [(e.track_id, e.model_first_study) for e in found] == [(1, "s1")]
    expected_days = (date(2009, 9, 1) - date(2009, 3, 1)).days
    assert found[0].lead_days == expected_days
    assert found[0].lead_months == pytest.approx(expected_days / (365.25 / 12))
    assert 5.5 < found[0].lead_months < 6.5
    assert found[0].to_dict()["model_first_date"] == "2009-03-01"


def _day(month: int) -> date:
    return date(2009, month, 1)


def test_size_links_keep_each_label_on_one_track() -> None:
    """QA patient P2: L1 was too small at s1 to link, L2 went to track 2; at s2 both lesions
    were of like size and the per-study assignment swapped the labels (L1 → track 2)."""
    lesions = [lesion("s1", 1, 1, 1, 13.5, (0.0, 0.0, 0.0)), lesion("s1", 1, 2, 2, 24.6, (60.0, 0.0, 0.0)),
               lesion("s2", 4, 1, 3, 24.6, (0.0, 0.0, 0.0)), lesion("s2", 4, 2, 4, 24.0, (60.0, 0.0, 0.0))]
    measurements = [RadiologistMeasurement("p1", "s1", _day(1), 8.0, lesion="L1"),
                    RadiologistMeasurement("p1", "s1", _day(1), 25.0, lesion="L2"),
                    RadiologistMeasurement("p1", "s2", _day(4), 24.0, lesion="L1"),
                    RadiologistMeasurement("p1", "s2", _day(4), 25.0, lesion="L2")]
    links = link_measurements(measurements, lesions)
    assert [lk.track_id for lk in links] == [None, 2, 1, 2]


def test_a_label_placed_by_location_keeps_its_track_where_only_size_links() -> None:
    lesions = [lesion("s1", 1, 1, 1, 20.0, (0.0, 0.0, 0.0)), lesion("s1", 1, 2, 2, 30.0, (60.0, 0.0, 0.0)),
               lesion("s2", 4, 1, 3, 22.0, (0.0, 0.0, 0.0)), lesion("s2", 4, 2, 4, 30.0, (60.0, 0.0, 0.0))]
    measurements = [RadiologistMeasurement("p1", "s1", _day(1), 20.0, location_mm=(1.0, 0.0, 0.0), lesion="L1"),
                    RadiologistMeasurement("p1", "s2", _day(4), 29.0, lesion="L1"),  # track 2's size
                    RadiologistMeasurement("p1", "s2", _day(4), 22.5, lesion="L7")]  # track 1's size
    assert [lk.track_id for lk in link_measurements(measurements, lesions)] == [1, 1, 2]


def test_links_do_not_depend_on_the_order_of_rows() -> None:
    """The follow-up page reads measurements by label, the store by row id: with two lesions
    of one size, each order linked a label to another track."""
    lesions = [lesion("s1", 1, 1, 1, 20.0, (0.0, 0.0, 0.0)), lesion("s1", 1, 2, 2, 20.0, (60.0, 0.0, 0.0))]
    measurements = [RadiologistMeasurement("p1", "s1", _day(1), 20.0, lesion="L2"),
                    RadiologistMeasurement("p1", "s1", _day(1), 20.0, lesion="L1")]
    forward = {lk.measurement.lesion: lk.track_id for lk in link_measurements(measurements, lesions)}
    backward = {lk.measurement.lesion: lk.track_id for lk in link_measurements(measurements[::-1], lesions)}
    shuffled = {lk.measurement.lesion: lk.track_id for lk in link_measurements(measurements, lesions[::-1])}
    assert forward == backward == shuffled


def test_earlier_detection_dates_a_lesion_by_the_first_measurement_of_its_label() -> None:
    """L1 at s1 differs too much from the model's size to link; it is linked at s2 by its
    slice. The radiologist measured that lesion at s1, with the model: no lead."""
    lesions = [lesion("s1", 1, 1, 1, 13.5, (0.0, 0.0, 0.0), (10, 14)),
               lesion("s2", 4, 1, 2, 24.0, (0.0, 0.0, 0.0), (8, 16))]
    measurements = [RadiologistMeasurement("p1", "s1", _day(1), 8.0, lesion="L1"),
                    RadiologistMeasurement("p1", "s2", _day(4), 24.0, slice_index=12, lesion="L1")]
    links = link_measurements(measurements, lesions)
    assert [(lk.track_id, lk.method) for lk in links] == [(None, None), (1, "slice")]
    assert earlier_detection(lesions, links) == []


def test_a_track_linked_by_size_alone_gets_no_badge() -> None:
    """QA patient P3: a portocaval lymph node of a liver lesion's size was linked to it by size,
    and became 'seen by the model 3 months before the radiologist'."""
    lesions = [lesion("s1", 1, 1, 1, 15.0, (0.0, 0.0, 0.0)), lesion("s1", 1, 2, 2, 30.0, (60.0, 0.0, 0.0)),
               lesion("s2", 4, 1, 3, 15.0, (0.0, 0.0, 0.0)), lesion("s2", 4, 2, 4, 30.0, (60.0, 0.0, 0.0))]
    measurements = [RadiologistMeasurement("p1", "s1", _day(1), 30.0, lesion="L1"),
                    RadiologistMeasurement("p1", "s2", _day(4), 30.0, lesion="L1"),
                    RadiologistMeasurement("p1", "s2", _day(4), 16.0, lesion="N1")]
    links = link_measurements(measurements, lesions)
    assert [(lk.track_id, lk.method) for lk in links] == [(2, "size"), (2, "size"), (1, "size")]
    assert earlier_detection(lesions, links) == []


def test_a_study_the_reader_did_not_report_is_not_a_miss() -> None:
    """The model saw track 1 at s1, s2 and s3; the reader reported nothing at s1, other
    lesions at s2, and track 1 at s3: the lead runs from s2, not s1."""
    lesions = [lesion(s, month, 1, month, 12.0, (0.0, 0.0, 0.0)) for s, month in (("s1", 1), ("s2", 4), ("s3", 7))]
    lesions.append(lesion("s2", 4, 2, 9, 30.0, (60.0, 0.0, 0.0)))
    measurements = [RadiologistMeasurement("p1", "s2", _day(4), 30.0, location_mm=(60.0, 0.0, 0.0), lesion="L1"),
                    RadiologistMeasurement("p1", "s3", _day(7), 12.0, location_mm=(0.0, 0.0, 0.0), lesion="L2")]
    found = earlier_detection(lesions, link_measurements(measurements, lesions))
    assert [(e.track_id, e.model_first_study, e.lead_days) for e in found] == [
        (1, "s2", (_day(7) - _day(4)).days)]
    unreported = link_measurements(measurements[1:], lesions)  # s3 is the reader's only report
    assert earlier_detection(lesions, unreported) == []
