"""Tracking on an analytic longitudinal cohort with known truth.

Three studies of one patient, each with its own spacing and patient position. Lesion A grows
then shrinks, B grows then splits, C1 and C2 merge, D disappears, E appears. Every lesion
ellipsoid carries a name; a true link joins components that share a name.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import SimpleITK as sitk

from lvt_core.lesions import lesion_component_map
from lvt_core.registration import (
    RegistrationConfig,
    _checked,
    register_followup_checked,
    shrink_mask_to,
    transform_points,
)
from lvt_core.tracking import (
    TimepointInput,
    TrackingConfig,
    TrackOverrides,
    track_lesions,
)

try:  # the analytic scan builder lives in test_lesions.py
    from test_lesions import Anatomy, Ellipsoid, Pose, render_scan
except ModuleNotFoundError:  # tests/ imported as a package
    from tests.test_lesions import Anatomy, Ellipsoid, Pose, render_scan

STUDIES = [
    (
        {
            "A": [Ellipsoid((-25.0, -15.0, -5.0), (8.0, 6.0, 6.0))],
            "B": [Ellipsoid((15.0, -10.0, 10.0), (6.0, 5.0, 5.0))],
            "C1": [Ellipsoid((40.0, -27.0, 8.0), (5.0, 5.0, 5.0))],
            "C2": [Ellipsoid((40.0, -11.0, 8.0), (5.0, 5.0, 5.0))],
            "D": [Ellipsoid((-40.0, 10.0, 0.0), (5.0, 5.0, 5.0))],
        },
        (2.0, 2.0, 3.0),
        Pose(),
    ),
    (
        {
            "A": [Ellipsoid((-25.0, -15.0, -5.0), (10.0, 7.0, 7.0), 20.0)],
            "B": [Ellipsoid((15.0, -10.0, 10.0), (9.0, 6.0, 6.0))],
            "C1": [Ellipsoid((40.0, -26.0, 8.0), (7.0, 7.0, 6.0))],
            "C2": [Ellipsoid((40.0, -12.0, 8.0), (7.0, 7.0, 6.0))],
            "E": [Ellipsoid((-10.0, 25.0, -20.0), (5.0, 5.0, 5.0))],
        },
        (1.5, 1.5, 2.5),
        Pose(angle_deg=6.0, translation=(8.0, -6.0, 5.0)),
    ),
    (
        {
            "A": [Ellipsoid((-25.0, -15.0, -5.0), (6.0, 5.0, 5.0))],
            "B": [
                Ellipsoid((9.0, -10.0, 10.0), (4.0, 4.0, 4.0)),
                Ellipsoid((22.0, -10.0, 10.0), (4.0, 4.0, 4.0)),
            ],
            "C1": [Ellipsoid((40.0, -19.0, 8.0), (10.0, 9.0, 7.0))],
            "E": [Ellipsoid((-10.0, 25.0, -20.0), (6.0, 6.0, 6.0))],
        },
        (2.5, 2.5, 2.0),
        Pose(angle_deg=-4.0, tilt_deg=3.0, translation=(-5.0, 7.0, -3.0)),
    ),
]
DATES = [date(2020, 1, 10), date(2020, 7, 12), date(2021, 1, 8)]


def build_study(index: int) -> tuple[TimepointInput, dict[int, set[str]], Pose]:
    """Render study ``index``; return its input and the names held by each lesion id."""
    named, spacing, pose = STUDIES[index]
    names = [name for name, parts in named.items() for _ in parts]
    if "C2" not in named and index == 2:
        names = [("C2" if n == "C1" else n) for n in names]  # C is the merged C1 + C2
    ellipsoids = tuple(e for parts in named.values() for e in parts)
    labels, ct, truth = render_scan(Anatomy(lesions=ellipsoids), spacing=spacing, pose=pose)
    tp = TimepointInput.from_labels(labels, ct, DATES[index], min_voxels=5)
    cmap = sitk.GetArrayFromImage(lesion_component_map(labels, 5))
    held: dict[int, set[str]] = {}
    for lesion in tp.lesions:
        owners = np.unique(truth[cmap == lesion.id])
        held[lesion.id] = {names[o - 1] for o in owners if o > 0}
    if index == 2:  # the merged lesion carries both lineages
        for ids in held.values():
            if "C2" in ids:
                ids.add("C1")
    return tp, held, pose


@pytest.fixture(scope="module")
def cohort() -> tuple[list[TimepointInput], list[dict[int, set[str]]], list[Pose]]:
    built = [build_study(i) for i in range(len(STUDIES))]
    return [b[0] for b in built], [b[1] for b in built], [b[2] for b in built]


def test_truth_is_what_the_scenario_says(cohort) -> None:
    _, held, _ = cohort
    assert sorted(map(sorted, held[0].values())) == [["A"], ["B"], ["C1"], ["C2"], ["D"]]
    assert sorted(map(sorted, held[1].values())) == [["A"], ["B"], ["C1", "C2"], ["E"]]
    assert sorted(map(sorted, held[2].values())) == [["A"], ["B"], ["B"], ["C1", "C2"], ["E"]]


def test_every_true_link_found_and_no_false_links(cohort) -> None:
    timepoints, held, _ = cohort
    result = track_lesions(timepoints, TrackingConfig(min_overlap=0.1, max_distance_mm=12.0))
    found = {(link.source, link.target) for link in result.links}
    expected = {
        ((t - 1, i), (t, j))
        for t in range(1, len(timepoints))
        for i, a in held[t - 1].items()
        for j, b in held[t].items()
        if a & b
    }
    assert found == expected
    # Each lesion is in exactly one track.
    keys = [key for track in result.tracks for key in track.members]
    assert len(keys) == len(set(keys)) == sum(len(h) for h in held)

    def track_with(t: int, name: str):
        lid = next(i for i, names in held[t].items() if name in names)
        return next(tr for tr in result.tracks if (t, lid) in tr.members)

    assert track_with(0, "A").status == "persisting"
    assert len(track_with(0, "A").members) == 3
    assert track_with(0, "D").status == "disappeared"
    assert track_with(0, "D").history == [(0, "new"), (1, "disappeared")]
    assert track_with(1, "E").history == [(1, "new"), (2, "persisting")]
    c1, c2 = track_with(0, "C1"), track_with(0, "C2")
    survivor, absorbed = (c1, c2) if len(c1.members) == 3 else (c2, c1)
    assert absorbed.status == "merged" and absorbed.merged_into == survivor.track_id
    assert (1, "merged") in survivor.history
    b_parent = track_with(0, "B")
    b_children = [tr for tr in result.tracks if tr.split_from == b_parent.track_id]
    assert b_parent.status == "split" and len(b_children) == 1
    assert b_children[0].status == "split"
    assert sorted(t.track_id for t in result.tracks) == list(range(1, len(result.tracks) + 1))

    document = result.to_document(["t0.nii.gz", "t1.nii.gz", "t2.nii.gz"])
    assert document["timepoints"] == ["t0.nii.gz", "t1.nii.gz", "t2.nii.gz"]
    assert [len(ls) for ls in document["lesions"]] == [len(h) for h in held]
    first = document["tracks"][0]
    assert set(first) >= {"track_id", "members", "status"}
    assert set(first["members"][0]) == {"timepoint", "lesion_id"}
    assert set(document["lesions"][0][0]) >= {"id", "centroid_mm", "longest_axial_diameter_mm", "volume_ml"}


def test_registration_recovers_the_known_repositioning(cohort) -> None:
    timepoints, _, poses = cohort
    result = track_lesions(timepoints[:2])
    # A liver point seen at t0 (scanner = patient) sits at pose1(point) at t1.
    patient_points = np.array([[-25.0, -15.0, -5.0], [40.0, -20.0, 8.0], [0.0, 20.0, -10.0]])
    expected = poses[1].to_scanner(poses[0].to_scanner(patient_points))
    mapped = transform_points(result.transforms[0], poses[0].to_scanner(patient_points))
    assert np.abs(mapped - expected).max() < 2.0
    assert result.warnings == []  # a good registration passes its check
    checked = register_followup_checked(timepoints[0].labels, timepoints[1].labels)
    assert checked.warning is None and checked.dice > checked.dice_identity + 0.05


def test_without_registration_repositioning_breaks_links(cohort) -> None:
    timepoints, _held, _ = cohort
    config = TrackingConfig(max_distance_mm=3.0, min_overlap=0.5, registration=RegistrationConfig(kind="none"))
    result = track_lesions(timepoints[:2], config)
    with_reg = track_lesions(timepoints[:2], TrackingConfig(max_distance_mm=3.0, min_overlap=0.5))
    assert len(result.links) < len(with_reg.links)


def test_affine_registration_also_links(cohort) -> None:
    timepoints, held, _ = cohort
    config = TrackingConfig(registration=RegistrationConfig(kind="affine"))
    result = track_lesions(timepoints[:2], config)
    expected = {((0, i), (1, j)) for i, a in held[0].items() for j, b in held[1].items() if a & b}
    assert {(lk.source, lk.target) for lk in result.links} == expected


def test_overrides_are_respected_and_ids_stay_stable(cohort) -> None:
    timepoints, held, _ = cohort
    first = track_lesions(timepoints)
    again = track_lesions(timepoints)
    assert [(t.track_id, t.members) for t in first.tracks] == [(t.track_id, t.members) for t in again.tracks]

    d0 = next(i for i, n in held[0].items() if "D" in n)
    e1 = next(i for i, n in held[1].items() if "E" in n)
    e2 = next(i for i, n in held[2].items() if "E" in n)
    a0 = next(i for i, n in held[0].items() if "A" in n)
    # Clinician: E at t1 is D come back (relink), and A at t0 is not a lesion.
    previous = {key: 100 + tr.track_id for tr in first.tracks for key in tr.members}
    overrides = TrackOverrides(forced_links=[((0, d0), (1, e1))], excluded={(0, a0)}, previous_track_ids=previous)
    result = track_lesions(timepoints, overrides=overrides)
    d_track = next(tr for tr in result.tracks if (0, d0) in tr.members)
    assert d_track.members == [(0, d0), (1, e1), (2, e2)]
    assert result.track_of((0, a0)) is None
    assert any(lk.kind == "forced" for lk in result.links)
    # Ids come from the previous run wherever a member had one.
    a1_track = next(tr for tr in result.tracks if (1, next(i for i, n in held[1].items() if "A" in n)) in tr.members)
    assert a1_track.track_id == previous[(1, a1_track.members[0][1])]
    assert d_track.track_id == previous[(0, d0)]
    assert all(tr.track_id >= 100 for tr in result.tracks)


def test_single_timepoint_and_empty_inputs() -> None:
    labels, _, _ = render_scan(Anatomy(lesions=(Ellipsoid((0.0, 0.0, 0.0), (6.0, 6.0, 6.0)),)))
    result = track_lesions([TimepointInput.from_labels(labels)])
    assert [(t.track_id, t.status) for t in result.tracks] == [(1, "new")]
    assert track_lesions([]).tracks == []
    with pytest.raises(ValueError, match="forward in time"):
        track_lesions(
            [TimepointInput.from_labels(labels)] * 2,
            overrides=TrackOverrides(forced_links=[((1, 1), (0, 1))]),
        )


def test_tracking_across_phantom_timepoints_matches_its_identity_map() -> None:
    phantom = pytest.importorskip("lvt_core.phantom")
    scans = [
        phantom.phantom_scan(seed=3, size="tiny", phase="portal", timepoint=t, patient_index=1)
        for t in range(3)
    ]
    timepoints = [TimepointInput.from_labels(s.labels, s.image, s.study_date, min_voxels=3) for s in scans]
    identities = []
    for scan, tp in zip(scans, timepoints, strict=True):
        components = sitk.GetArrayViewFromImage(tp.component_map)
        truth = sitk.GetArrayViewFromImage(scan.lesion_ids)
        identities.append({les.id: set(np.unique(truth[components == les.id]).tolist()) - {0} for les in tp.lesions})
    assert sum(len(i) for i in identities) >= 6  # the scenario has lesions to track
    result = track_lesions(timepoints)
    expected = {
        ((t - 1, i), (t, j))
        for t in range(1, 3)
        for i, a in identities[t - 1].items()
        for j, b in identities[t].items()
        if a & b
    }
    assert {(lk.source, lk.target) for lk in result.links} == expected
    # A track's status is its latest event: born at the last study → new; ended earlier →
    # disappeared (or merged into another track).
    last = len(timepoints) - 1
    for track in result.tracks:
        seen = sorted(t for t, _ in track.members)
        if seen == [last] and last > 0:
            assert track.status == "new"
        elif seen[-1] < last:
            assert track.status in {"disappeared", "merged"}


def test_registration_refined_on_ct_images(cohort) -> None:
    timepoints, held, poses = cohort
    config = TrackingConfig(registration=RegistrationConfig(on="both"))
    result = track_lesions(timepoints[:2], config)
    expected = {((0, i), (1, j)) for i, a in held[0].items() for j, b in held[1].items() if a & b}
    assert {(lk.source, lk.target) for lk in result.links} == expected
    points = np.array([[-25.0, -15.0, -5.0], [40.0, -20.0, 8.0]])
    mapped = transform_points(result.transforms[0], poses[0].to_scanner(points))
    assert np.abs(mapped - poses[1].to_scanner(points)).max() < 3.0


def _missed_at_middle_study() -> list[TimepointInput]:
    """Lesions A (missed at the middle study, as a model may miss it) and F (only at the end,
    far from A): three studies, each patient position different."""
    a = Ellipsoid((-25.0, -15.0, -5.0), (8.0, 6.0, 6.0))
    b = Ellipsoid((15.0, -10.0, 10.0), (6.0, 5.0, 5.0))
    f = Ellipsoid((30.0, 20.0, -15.0), (5.0, 5.0, 5.0))
    studies = [((a, b), Pose()), ((b,), Pose(angle_deg=6.0, translation=(8.0, -6.0, 5.0))),
               ((a, b, f), Pose(angle_deg=-4.0, translation=(-5.0, 7.0, -3.0)))]
    timepoints = []
    for lesions, pose in studies:
        labels, ct, _ = render_scan(Anatomy(lesions=lesions), pose=pose)
        timepoints.append(TimepointInput.from_labels(labels, ct, min_voxels=5))
    return timepoints


def test_a_lesion_missed_at_one_study_keeps_its_track() -> None:
    timepoints = _missed_at_middle_study()
    result = track_lesions(timepoints)
    first, last = (sorted(tp.lesions, key=lambda les: les.volume_ml) for tp in (timepoints[0], timepoints[2]))
    a0, a2, f2 = first[-1].id, last[-1].id, last[0].id  # A is the largest, F the smallest
    tracks = {track.track_id: track for track in result.tracks}
    track_a = tracks[result.track_of((0, a0))]
    assert track_a.members == [(0, a0), (2, a2)]
    assert track_a.status == "persisting"
    assert track_a.history == [(0, "new"), (1, "disappeared"), (2, "persisting")]
    gap_links = [lk for lk in result.links if lk.source[0] == 0 and lk.target[0] == 2]
    assert [(lk.source, lk.target, lk.kind) for lk in gap_links] == [((0, a0), (2, a2), "match")]
    assert gap_links[0].distance_mm < 3.0  # measured through both registrations
    assert tracks[result.track_of((2, f2))].status == "new"  # far away: truly new
    assert len(result.tracks) == 3  # A, B, F


def test_gap_bridging_can_be_switched_off() -> None:
    timepoints = _missed_at_middle_study()
    result = track_lesions(timepoints, TrackingConfig(max_gap=0))
    assert len(result.tracks) == 4  # A at the last study starts a track of its own
    assert sorted(t.status for t in result.tracks) == ["disappeared", "new", "new", "persisting"]


LESIONS_AT_REST = (Ellipsoid((-25.0, -15.0, -5.0), (8.0, 6.0, 6.0)),
                   Ellipsoid((15.0, -10.0, 10.0), (6.0, 5.0, 5.0)))
"""Two lesions that stay where they are, in the scanner frame, between two studies."""


@pytest.mark.parametrize(
    "followup_liver",
    [(Ellipsoid((50.0, 30.0, 20.0), (3.0, 3.0, 3.0)),), ()],
    ids=["liver drawn as a 6 mm blob", "no liver, tumors only"],
)
def test_a_badly_drawn_liver_keeps_the_scanner_frame(followup_liver) -> None:
    before, _, _ = render_scan(Anatomy(lesions=LESIONS_AT_REST))
    after, _, _ = render_scan(Anatomy(lesions=LESIONS_AT_REST, liver=followup_liver, vessel=None))
    checked = register_followup_checked(before, after)
    assert checked.transform.GetName() == "TranslationTransform"
    point = np.array([[10.0, 20.0, 30.0]])
    assert transform_points(checked.transform, point).tolist() == point.tolist()
    assert "livers differ too much" in (checked.warning or "")
    timepoints = [TimepointInput.from_labels(before, date=DATES[0]), TimepointInput.from_labels(after)]
    result = track_lesions(timepoints)  # registered on the blob, it moved ~15 mm: disappeared + new
    assert sorted(t.status for t in result.tracks) == ["persisting", "persisting"]
    assert all(lk.distance_mm < 1.0 for lk in result.links)
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("registering timepoint 1 to timepoint 0 (2020-01-10): the livers")
    assert result.to_document(["a", "b"])["warnings"] == result.warnings


def test_a_registration_overlapping_worse_than_the_scanner_frame_is_refused() -> None:
    labels, _, _ = render_scan(Anatomy(lesions=LESIONS_AT_REST))
    fixed = moving = shrink_mask_to(labels, 6.0)
    shifted = sitk.TranslationTransform(3, (40.0, 0.0, 0.0))  # what a bad mask did to the registration
    refused = _checked(fixed, moving, shifted)
    assert refused.transform.GetName() == "TranslationTransform"
    assert refused.transform.GetParameters() == (0.0, 0.0, 0.0)
    assert refused.dice == refused.dice_identity == pytest.approx(1.0)
    assert "no better than in the scanner frame" in (refused.warning or "")
    small = sitk.TranslationTransform(3, (1.0, 0.0, 0.0))  # within the tolerance: kept, no warning
    kept = _checked(fixed, moving, small)
    assert kept.warning is None and kept.transform.GetParameters() == (1.0, 0.0, 0.0)


def test_a_three_slice_series_is_tracked_in_the_scanner_frame() -> None:
    """ITK's smoothing needs 4 voxels along each axis: a 3-slice series used to raise."""
    lesions = (Ellipsoid((-25.0, -15.0, 0.0), (8.0, 6.0, 9.0)),
               Ellipsoid((15.0, -10.0, 0.0), (6.0, 5.0, 9.0)))
    thin = {"spacing": (2.0, 2.0, 5.0), "extent_mm": (200.0, 180.0, 15.0), "center_mm": (10.0, -5.0, 0.0)}
    before, _, _ = render_scan(Anatomy(lesions=lesions), **thin)
    after, _, _ = render_scan(Anatomy(lesions=lesions), **thin)
    full, _, _ = render_scan(Anatomy(lesions=lesions))
    assert before.GetSize()[2] == 3
    for previous in (before, full):
        result = track_lesions([TimepointInput.from_labels(previous), TimepointInput.from_labels(after)])
        assert sorted(t.status for t in result.tracks) == ["persisting", "persisting"]
        assert len(result.warnings) == 1 and "3 slice(s), too few to register" in result.warnings[0]
        assert result.transforms[0].GetName() == "TranslationTransform"


def test_a_lesion_gone_where_fluid_was_left_out_is_a_warning() -> None:
    """The cross-phase reading makes a place that reads as water in every phase background;
    a metastasis turned cystic reads so too, and its track then reads as gone. Fluid left out
    where the lesion maps (here A at the middle study, the patient repositioned) is said; fluid
    elsewhere, or none, says nothing."""
    timepoints = _missed_at_middle_study()
    a_there = Pose(angle_deg=6.0, translation=(8.0, -6.0, 5.0)).to_scanner(np.array([[-25.0, -15.0, -5.0]]))[0]
    cystic = {"centre_mm": np.add(a_there, [2.0, 0.0, 0.0]).tolist(), "volume_ml": 1.6, "densest_hu": 9.0}
    far = {"centre_mm": np.add(a_there, [40.0, 0.0, 0.0]).tolist(), "volume_ml": 30.0, "densest_hu": 5.0}
    assert not [w for w in track_lesions(timepoints).warnings if "fluid" in w]

    timepoints[1].fluid_places = [far]
    assert not [w for w in track_lesions(timepoints).warnings if "fluid" in w]

    timepoints[1].fluid_places = [far, cystic]
    result = track_lesions(timepoints)
    first = sorted(timepoints[0].lesions, key=lambda les: les.volume_ml)
    track_a = result.track_of((0, first[-1].id))
    (warning,) = [w for w in result.warnings if "fluid" in w]
    assert warning.startswith(f"track {track_a}'s lesion is not drawn at timepoint 1, but fluid of 1.6 ml "
                              "(at most 9 HU in every phase) was left out ")
    assert "a lesion turned cystic is not drawn as one; review the CT" in warning
    assert int(warning.split(" mm from")[0].rsplit(" ", 1)[1]) <= 4  # mapped through the registration
