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
    measurements = [
        RadiologistMeasurement("p1", "s2", date(2009, 9, 1), 41.0, location_mm=(12.0, 0.0, 0.0)),
        RadiologistMeasurement("p1", "s2", date(2009, 9, 1), 37.0),
    ]
    found = earlier_detection(LESIONS, link_measurements(measurements, LESIONS))
    assert [(e.track_id, e.model_first_study) for e in found] == [(1, "s1")]
    expected_days = (date(2009, 9, 1) - date(2009, 3, 1)).days
    assert found[0].lead_months == pytest.approx(expected_days / (365.25 / 12))
    assert 5.5 < found[0].lead_months < 6.5
    assert found[0].to_dict()["model_first_date"] == "2009-03-01"
