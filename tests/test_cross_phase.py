"""Reading the phases of one day together: a lesion in one phase confirms a dropped candidate
at the same place in another, after the breathing shift between them is registered away."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from model_fixtures import save_tiny_checkpoint, tiny_phantom_cohort

from lvt_core.checkpoint import load_checkpoint
from lvt_core.cross_phase import CrossPhaseRule, PhaseScan, confirm_across_phases, lesion_centres_mm
from lvt_core.inference import Predictor, ScanProbabilities
from lvt_core.labels import BACKGROUND, LIVER, TUMOR, VESSEL
from lvt_core.lesions import extract_lesions
from training.calibrate import write_stage_decisions
from training.calibrate_cross_phase import GRID_FIELDS, calibrate_cross_phase
from training.datasets import cases_by_day, load_cases
from training.evaluate_model import evaluate_checkpoint

SPACING_XYZ = (1.5, 1.5, 2.0)
SHAPE_ZYX = (40, 80, 90)
SHIFT_MM = np.array([0.0, 9.0, 6.0])  # z, y, x: the arterial liver sits lower and to the side
RULE = CrossPhaseRule(min_peak=0.6, max_distance_mm=8.0, min_volume_ml=0.1)
CARRY = CrossPhaseRule(carry_min_volume_ml=0.5, carry_min_contrast_hu=5.0)  # carrying alone
LIVER_HU = 80


def _ball(centre_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    axes = [np.arange(n) * s for n, s in zip(SHAPE_ZYX, SPACING_XYZ[::-1], strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return (z - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2 + (x - centre_mm[2]) ** 2 <= radius_mm**2


def _liver(shift_mm: np.ndarray) -> np.ndarray:
    """An egg-shaped liver, asymmetric so a rigid registration has one answer."""
    axes = [np.arange(n) * s for n, s in zip(SHAPE_ZYX, SPACING_XYZ[::-1], strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    cz, cy, cx = np.array([40.0, 55.0, 62.0]) + shift_mm
    egg = ((z - cz) / 28) ** 2 + ((y - cy) / 38) ** 2 + ((x - cx) / (46 + 0.35 * (x - cx))) ** 2 <= 1
    return egg


def _scan(shift_mm: np.ndarray, lesion_mm: np.ndarray, lesion_label: int, lesion_peak: float,
          decoys: tuple[tuple[np.ndarray, float], ...] = ()) -> PhaseScan:
    labels = np.where(_liver(shift_mm), LIVER, BACKGROUND).astype(np.uint8)
    probability = np.zeros(SHAPE_ZYX, np.float32)
    for centre, peak in ((lesion_mm, lesion_peak), *decoys):
        ball = _ball(centre + shift_mm, 6.0)
        probability[ball] = peak
    lesion = _ball(lesion_mm + shift_mm, 6.0)
    labels[lesion] = lesion_label
    image = sitk.Image([int(n) for n in SHAPE_ZYX[::-1]], sitk.sitkInt16)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((-60.0, -40.0, 100.0))
    return PhaseScan(image, labels, probability, tumor_threshold=0.3)


def test_a_lesion_in_one_phase_confirms_the_dropped_candidate_in_the_other() -> None:
    lesion = np.array([40.0, 50.0, 70.0])
    far = np.array([40.0, 70.0, 35.0])
    portal = _scan(np.zeros(3), lesion, TUMOR, 0.99)
    # arterial: the same lesion, shifted with the liver, dropped by the peak rule (peak 0.7 <
    # 0.95); a decoy of the same peak far from any lesion; and one near it but too faint
    arterial = _scan(SHIFT_MM, lesion, LIVER, 0.7, decoys=((far, 0.7),))

    (portal_labels, portal_added, _), (arterial_labels, arterial_added, _) = confirm_across_phases(
        [portal, arterial], RULE)

    assert portal_labels is portal.labels and portal_added == []
    assert len(arterial_added) == 1
    lesion_voxels = _ball(lesion + SHIFT_MM, 6.0)
    assert (arterial_labels[lesion_voxels] == TUMOR).all()
    assert not (arterial_labels[_ball(far + SHIFT_MM, 6.0)] == TUMOR).any()  # no lesion in portal there
    assert np.count_nonzero(arterial_labels == TUMOR) == np.count_nonzero(lesion_voxels)
    # the confirmed lesion's centre is where the portal lesion is, carried by the breathing shift
    centre = np.array(arterial_added[0].centre_mm)
    expected = np.array(lesion_centres_mm(portal)[0]) + SHIFT_MM[::-1]
    assert np.linalg.norm(centre - expected) < 2.0
    assert arterial_added[0].peak == np.float32(0.7)
    # the arterial labels the caller passed in are not modified
    assert not (arterial.labels == TUMOR).any()


def test_without_the_breathing_shift_registered_the_candidate_would_be_missed() -> None:
    """Why the scans are registered: the 11 mm shift is more than the allowed distance."""
    lesion = np.array([40.0, 50.0, 70.0])
    portal = _scan(np.zeros(3), lesion, TUMOR, 0.99)
    arterial = _scan(SHIFT_MM, lesion, LIVER, 0.7)
    tight = CrossPhaseRule(min_peak=0.6, max_distance_mm=3.0)
    unregistered = np.linalg.norm(SHIFT_MM) - 6.0  # nearest candidate voxel from the old centre
    assert unregistered > tight.max_distance_mm
    (_, _, _), (labels, added, _) = confirm_across_phases([portal, arterial], tight)
    assert len(added) == 1 and added[0].distance_mm <= 3.0
    assert (labels[_ball(lesion + SHIFT_MM, 6.0)] == TUMOR).all()


def test_faint_candidates_rims_and_a_single_phase_are_left_alone() -> None:
    lesion = np.array([40.0, 50.0, 70.0])
    portal = _scan(np.zeros(3), lesion, TUMOR, 0.99)
    too_faint = _scan(SHIFT_MM, lesion, LIVER, 0.5)  # under min_peak 0.6
    (_, _, _), (labels, added, _) = confirm_across_phases([portal, too_faint], RULE)
    assert added == [] and labels is too_faint.labels

    # a rim of probability around a lesion already drawn (the lesion-edge rule trims it) is
    # part of that lesion, not a new one
    rimmed = _scan(SHIFT_MM, lesion, TUMOR, 0.99)
    shell = _ball(lesion + SHIFT_MM, 9.0) & ~_ball(lesion + SHIFT_MM, 6.0)
    rimmed.tumor_probability[shell] = 0.7
    (_, _, _), (labels, added, _) = confirm_across_phases([portal, rimmed], RULE)
    assert added == [] and labels is rimmed.labels

    only = _scan(SHIFT_MM, lesion, LIVER, 0.9)
    assert confirm_across_phases([only], RULE) == [(only.labels, [], [])]
    assert confirm_across_phases([portal, only], CrossPhaseRule())[1] == (only.labels, [], [])


def _with_ct(scan: PhaseScan, shift_mm: np.ndarray, lesion_mm: np.ndarray, lesion_hu: float,
             phase: str = "unknown") -> PhaseScan:
    """``scan`` with a CT: the liver at ``LIVER_HU`` and, whatever its labels say, the lesion at
    ``lesion_hu`` (an iso-enhancing lesion when the two are equal); a scan of ``phase``."""
    ct = np.where(_liver(shift_mm), LIVER_HU, -100).astype(np.int16)
    ct[_ball(lesion_mm + shift_mm, 6.0)] = lesion_hu
    image = sitk.GetImageFromArray(ct)
    image.CopyInformation(scan.image)
    return PhaseScan(image, scan.labels, scan.tumor_probability, scan.tumor_threshold, phase)


def test_a_lesion_the_other_phase_shows_only_in_its_ct_is_carried_whole() -> None:
    """The network left the arterial lesion as liver with no candidate at all (probability 0):
    the portal lesion's mask is carried there because the arterial CT is 10 HU darker there."""
    lesion = np.array([40.0, 50.0, 70.0])
    portal = _with_ct(_scan(np.zeros(3), lesion, TUMOR, 0.99), np.zeros(3), lesion, LIVER_HU - 40)
    arterial = _with_ct(_scan(SHIFT_MM, lesion, LIVER, 0.0), SHIFT_MM, lesion, LIVER_HU - 10)

    (portal_labels, portal_added, _), (arterial_labels, added, _) = confirm_across_phases([portal, arterial], CARRY)

    assert portal_labels is portal.labels and portal_added == []  # nothing goes back
    assert len(added) == 1 and added[0].source_volume_ml == pytest.approx(0.9, abs=0.1)
    assert added[0].contrast_hu == pytest.approx(-10.0, abs=1.0)
    truth = _ball(lesion + SHIFT_MM, 6.0)
    drawn = arterial_labels == TUMOR
    assert 2 * np.count_nonzero(drawn & truth) / (np.count_nonzero(drawn) + np.count_nonzero(truth)) > 0.85
    centre = np.array(added[0].centre_mm)
    assert np.linalg.norm(centre - (np.array(lesion_centres_mm(portal)[0]) + SHIFT_MM[::-1])) < 2.0
    assert not (arterial.labels == TUMOR).any()  # the caller's labels are not modified
    # the candidate rule alone adds nothing here: there is no candidate
    assert confirm_across_phases([portal, arterial], RULE)[1] == (arterial.labels, [], [])


def test_a_lesion_is_not_carried_where_the_other_ct_shows_nothing_or_another_lesion_or_a_vessel() -> None:
    lesion = np.array([40.0, 50.0, 70.0])
    portal = _with_ct(_scan(np.zeros(3), lesion, TUMOR, 0.99), np.zeros(3), lesion, LIVER_HU - 40)
    faint = _with_ct(_scan(SHIFT_MM, lesion, LIVER, 0.0), SHIFT_MM, lesion, LIVER_HU - 3)  # under 5 HU
    assert confirm_across_phases([portal, faint], CARRY)[1] == (faint.labels, [], [])
    brighter = _with_ct(_scan(SHIFT_MM, lesion, LIVER, 0.0), SHIFT_MM, lesion, LIVER_HU + 30)
    assert len(confirm_across_phases([portal, brighter], CARRY)[1][1]) == 1  # brighter counts too
    # unless the rule takes so bright a place for a vessel's edge; a darker one still counts
    vessel_like = CrossPhaseRule(carry_min_volume_ml=0.5, carry_min_contrast_hu=5.0, carry_max_brighter_hu=15.0)
    assert confirm_across_phases([portal, brighter], vessel_like)[1] == (brighter.labels, [], [])
    darker = _with_ct(_scan(SHIFT_MM, lesion, LIVER, 0.0), SHIFT_MM, lesion, LIVER_HU - 10)
    darker_only = CrossPhaseRule(carry_min_volume_ml=0.5, carry_min_contrast_hu=5.0, carry_max_brighter_hu=0.0)
    assert len(confirm_across_phases([portal, darker], darker_only)[1][1]) == 1
    small = CrossPhaseRule(carry_min_volume_ml=1.0, carry_min_contrast_hu=5.0)  # the 0.9 ml lesion is smaller
    assert confirm_across_phases([portal, brighter], small)[1] == (brighter.labels, [], [])
    # drawn there already, or drawn as vessel there: left as the network drew it
    drawn = _with_ct(_scan(SHIFT_MM, lesion, TUMOR, 0.99), SHIFT_MM, lesion, LIVER_HU - 40)
    assert confirm_across_phases([portal, drawn], CARRY)[1] == (drawn.labels, [], [])
    vessel = _with_ct(_scan(SHIFT_MM, lesion, VESSEL, 0.0), SHIFT_MM, lesion, LIVER_HU + 60)
    assert confirm_across_phases([portal, vessel], CARRY)[1] == (vessel.labels, [], [])


ONTO_VESSELS = CrossPhaseRule(carry_min_volume_ml=0.5, carry_min_contrast_hu=5.0, carry_max_brighter_hu=0.0,
                              carry_vessel_min_brighter_hu=30.0)


def test_an_arterially_enhancing_lesion_drawn_as_vessel_becomes_tumor_when_carried() -> None:
    """HCC-like: darker than the liver in the portal phase, found there; in the arterial phase
    as bright as the vessels, and the network drew it as one."""
    lesion = np.array([40.0, 50.0, 70.0])
    portal = _with_ct(_scan(np.zeros(3), lesion, TUMOR, 0.99), np.zeros(3), lesion, LIVER_HU - 20, "portal")
    arterial = _with_ct(_scan(SHIFT_MM, lesion, VESSEL, 0.0), SHIFT_MM, lesion, LIVER_HU + 70, "arterial")

    (_, portal_added, _), (labels, added, _) = confirm_across_phases([portal, arterial], ONTO_VESSELS)

    assert portal_added == []
    assert len(added) == 1 and added[0].onto_vessel and added[0].contrast_hu == pytest.approx(70.0, abs=1.0)
    truth = _ball(lesion + SHIFT_MM, 6.0)
    drawn = labels == TUMOR
    assert 2 * np.count_nonzero(drawn & truth) / (np.count_nonzero(drawn) + np.count_nonzero(truth)) > 0.9
    assert not (labels == VESSEL).any()
    # off unless the rule says so, and not for a place too faintly brighter
    assert confirm_across_phases([portal, arterial], CARRY)[1] == (arterial.labels, [], [])
    faint = _with_ct(_scan(SHIFT_MM, lesion, VESSEL, 0.0), SHIFT_MM, lesion, LIVER_HU + 20, "arterial")
    assert confirm_across_phases([portal, faint], ONTO_VESSELS)[1] == (faint.labels, [], [])


def test_only_an_arterial_scan_is_searched_for_lesions_drawn_as_vessel() -> None:
    """In the portal and late phases a bright closed region drawn as vessel is a vessel cut
    across, and in a scan of unknown phase it may be: the same place, carried from another
    phase, stays vessel there."""
    lesion = np.array([40.0, 50.0, 70.0])
    for phase in ("portal", "late", "unknown"):
        source = _with_ct(_scan(np.zeros(3), lesion, TUMOR, 0.99), np.zeros(3), lesion, LIVER_HU + 30, "arterial")
        target = _with_ct(_scan(SHIFT_MM, lesion, VESSEL, 0.0), SHIFT_MM, lesion, LIVER_HU + 70, phase)
        assert confirm_across_phases([source, target], ONTO_VESSELS)[1] == (target.labels, [], []), phase
    # the same two scans with their phases swapped: the arterial one gains the lesion
    portal = _with_ct(_scan(np.zeros(3), lesion, TUMOR, 0.99), np.zeros(3), lesion, LIVER_HU + 30, "portal")
    arterial = _with_ct(_scan(SHIFT_MM, lesion, VESSEL, 0.0), SHIFT_MM, lesion, LIVER_HU + 70, "arterial")
    assert len(confirm_across_phases([portal, arterial], ONTO_VESSELS)[1][1]) == 1


def _arterial_with_branch(lesion: np.ndarray, offset_y_mm: float,
                          radius_mm: float = 6.0) -> tuple[PhaseScan, PhaseScan]:
    """The day of :func:`test_an_arterially_enhancing_lesion_drawn_as_vessel_becomes_tumor_when_carried`
    with a branch (as thick as the lesion unless ``radius_mm`` says) drawn as vessel along x
    in the arterial scan, ``offset_y_mm`` from the lesion's centre (0: through it)."""
    portal = _with_ct(_scan(np.zeros(3), lesion, TUMOR, 0.99), np.zeros(3), lesion, LIVER_HU - 20, "portal")
    arterial = _with_ct(_scan(SHIFT_MM, lesion, VESSEL, 0.0), SHIFT_MM, lesion, LIVER_HU + 70, "arterial")
    axes = [np.arange(n) * s for n, s in zip(SHAPE_ZYX, SPACING_XYZ[::-1], strict=True)]
    z, y, _ = np.meshgrid(*axes, indexing="ij")
    centre = lesion + SHIFT_MM
    tube = (z - centre[0]) ** 2 + (y - centre[1] - offset_y_mm) ** 2 <= radius_mm**2
    arterial.labels[tube & _liver(SHIFT_MM)] = VESSEL
    return portal, arterial


def test_a_vessel_running_through_a_carried_lesion_stays_vessel() -> None:
    """The carried mask lands on a thick vessel that runs on past it: a vessel, not a lesion."""
    portal, arterial = _arterial_with_branch(np.array([40.0, 50.0, 70.0]), 0.0)

    assert confirm_across_phases([portal, arterial], ONTO_VESSELS)[1] == (arterial.labels, [], [])


def test_how_much_vessel_may_surround_a_lesion_drawn_as_vessel_is_a_decision() -> None:
    """A lesion lying against a thick branch has more of its shell drawn as vessel than one
    deep in the liver, yet less than a place the branch runs through: the rule's
    ``carry_vessel_max_shell_fraction`` draws the line."""
    lesion = np.array([40.0, 50.0, 70.0])
    against = _arterial_with_branch(lesion, 12.0)  # the branch touches the lesion's side
    through = _arterial_with_branch(lesion, 0.0)
    looser = replace(ONTO_VESSELS, carry_vessel_max_shell_fraction=0.15)

    assert confirm_across_phases(list(against), ONTO_VESSELS)[1] == (against[1].labels, [], [])
    labels, added, _ = confirm_across_phases(list(against), looser)[1]
    assert len(added) == 1 and 0.1 <= added[0].shell_vessel_fraction < 0.15
    assert (labels[_ball(lesion + SHIFT_MM, 4.0)] == TUMOR).all()
    assert confirm_across_phases(list(through), looser)[1] == (through[1].labels, [], [])
    anything = replace(ONTO_VESSELS, carry_vessel_max_shell_fraction=0.99)  # a vessel fills the shell: never
    assert len(confirm_across_phases(list(through), anything)[1][1]) == 1


def test_a_thin_vessel_running_through_is_told_from_a_branch_beside_the_lesion_by_its_sides() -> None:
    """A thin vessel running through the place fills little of its shell, less than a thick
    branch beside a lesion; but it leaves on two opposite sides, the branch lies on one."""
    lesion = np.array([40.0, 50.0, 70.0])
    thin_through = _arterial_with_branch(lesion, 0.0, radius_mm=3.0)
    against = _arterial_with_branch(lesion, 12.0)
    by_fraction = replace(ONTO_VESSELS, carry_vessel_max_shell_fraction=0.15)
    by_sides = replace(by_fraction, carry_vessel_min_one_sidedness=0.5)

    _, added, _ = confirm_across_phases(list(thin_through), by_fraction)[1]
    assert len(added) == 1 and added[0].shell_vessel_fraction < 0.1 and added[0].shell_vessel_one_sidedness < 0.1
    assert confirm_across_phases(list(thin_through), by_sides)[1] == (thin_through[1].labels, [], [])
    _, kept, _ = confirm_across_phases(list(against), by_sides)[1]
    assert len(kept) == 1 and kept[0].shell_vessel_one_sidedness > 0.8


def test_a_lesion_drawn_beside_a_place_drawn_as_vessel_stops_the_carry_unless_the_rule_says() -> None:
    """In the arterial phase the unenhanced hepatic veins are darker than the liver, and the
    network draws one beside an arterially enhancing lesion as tumor while it draws the lesion
    as vessel. By default that drawn lesion is taken for the carried one, a little out of
    register; ``carry_vessel_beside_tumor`` carries the lesion all the same. A lesion drawn on
    the place itself stops it whatever the rule, and beside a place drawn as liver too."""
    lesion = np.array([40.0, 50.0, 70.0])
    centre = lesion + SHIFT_MM
    vein = _ball(centre + np.array([0.0, 0.0, 8.5]), 3.0) & ~_ball(centre, 6.0)  # 1.5 mm from the lesion
    portal = _with_ct(_scan(np.zeros(3), lesion, TUMOR, 0.99), np.zeros(3), lesion, LIVER_HU - 20, "portal")
    arterial = _with_ct(_scan(SHIFT_MM, lesion, VESSEL, 0.0), SHIFT_MM, lesion, LIVER_HU + 70, "arterial")
    arterial.labels[vein] = TUMOR
    beside = replace(ONTO_VESSELS, carry_vessel_beside_tumor=1.0)

    assert confirm_across_phases([portal, arterial], ONTO_VESSELS)[1] == (arterial.labels, [], [])
    labels, added, _ = confirm_across_phases([portal, arterial], beside)[1]
    assert len(added) == 1 and added[0].onto_vessel and added[0].beside_tumor
    assert (labels[_ball(centre, 5.0)] == TUMOR).all() and (labels[vein] == TUMOR).all()
    arterial.labels[_ball(centre, 2.0)] = TUMOR  # the network found part of it after all
    assert confirm_across_phases([portal, arterial], beside)[1] == (arterial.labels, [], [])
    hypo = _with_ct(_scan(SHIFT_MM, lesion, LIVER, 0.0), SHIFT_MM, lesion, LIVER_HU - 20, "arterial")
    assert len(confirm_across_phases([portal, hypo], beside)[1][1]) == 1  # onto liver, alone: carried
    hypo.labels[vein] = TUMOR
    assert confirm_across_phases([portal, hypo], beside)[1] == (hypo.labels, [], [])


def test_rule_round_trips_through_checkpoint_metadata() -> None:
    assert not CrossPhaseRule().enabled and RULE.enabled and CARRY.enabled
    assert RULE.confirms_candidates and not RULE.carries_lesions
    assert CARRY.carries_lesions and not CARRY.confirms_candidates
    assert CrossPhaseRule.from_meta(RULE.to_meta()) == RULE
    assert CrossPhaseRule.from_meta(CARRY.to_meta()) == CARRY
    assert ONTO_VESSELS.carries_onto_vessels and not CARRY.carries_onto_vessels
    assert CrossPhaseRule.from_meta(ONTO_VESSELS.to_meta()) == ONTO_VESSELS
    beside = replace(ONTO_VESSELS, carry_vessel_beside_tumor=1.0)
    assert CrossPhaseRule.from_meta(beside.to_meta()) == beside
    assert CrossPhaseRule.from_meta(None) == CrossPhaseRule()
    # a checkpoint calibrated before lesions were carried keeps its rule and carries nothing
    older = {"min_peak": 0.8, "max_distance_mm": 5.0, "min_volume_ml": 0.3}
    assert CrossPhaseRule.from_meta(older) == CrossPhaseRule(0.8, 5.0, 0.3)
    assert not CrossPhaseRule.from_meta(older).carries_lesions


def _day_predictor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule: CrossPhaseRule,
                   arterial_as_vessel: bool = False,
                   lesion_contrasts_hu: tuple[float, float] = (-15.0, -15.0)) -> tuple[Predictor, list]:
    """A predictor whose fine pass returns the probabilities of two phases of one day (the
    portal lesion sure, the arterial one dropped by the peak rule, or with
    ``arterial_as_vessel`` drawn as a vessel 70 HU brighter than the liver), keyed by the image;
    the lesion's place is ``lesion_contrasts_hu`` (portal, arterial) from the liver in the CTs."""
    predictor = Predictor(save_tiny_checkpoint(tmp_path / "tiny.pt"), device="cpu")
    predictor.thresholds = [0.5, 0.5, 0.3]
    predictor.min_tumor_peak = 0.95
    predictor.cross_phase = rule
    lesion = np.array([40.0, 50.0, 70.0])
    images, probabilities = [], {}
    for index, (shift, peak) in enumerate(((np.zeros(3), 0.99), (SHIFT_MM, 0.7))):
        as_vessel = arterial_as_vessel and index == 1
        scan = _with_ct(_scan(shift, lesion, LIVER, 0.0 if as_vessel else peak), shift, lesion,
                        LIVER_HU + 70 if as_vessel else LIVER_HU + lesion_contrasts_hu[index])
        values = np.zeros((3, *SHAPE_ZYX), np.float16)
        values[0] = _liver(shift)
        values[1] = _ball(lesion + shift, 6.0) if as_vessel else 0
        values[2] = scan.tumor_probability
        image = scan.image
        image.SetMetaData("phase", str(index))
        images.append(image)
        probabilities[str(index)] = ScanProbabilities(values, tuple((0, n) for n in SHAPE_ZYX))

    def fine_pass(image: sitk.Image) -> tuple[ScanProbabilities, dict[str, float]]:
        predictor.last_info = {}
        return probabilities[image.GetMetaData("phase")], {"total_s": 0.0}

    monkeypatch.setattr(predictor, "_run", fine_pass)
    return predictor, images


def test_predict_day_reads_the_phases_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    predictor, (portal, arterial) = _day_predictor(tmp_path, monkeypatch, RULE)
    alone = sitk.GetArrayFromImage(predictor.predict(arterial))
    assert not (alone == TUMOR).any()  # alone, the arterial candidate falls under the peak rule

    (portal_labels, portal_info), (arterial_labels, arterial_info) = predictor.predict_day([portal, arterial])
    confirmed = sitk.GetArrayFromImage(arterial_labels)
    assert np.count_nonzero(confirmed == TUMOR) == np.count_nonzero(_ball(np.array([40.0, 59.0, 76.0]), 6.0))
    assert portal_info["cross_phase_points_mm"] == [] and len(arterial_info["cross_phase_points_mm"]) == 1
    assert "total_s" in arterial_info["timings"]
    assert arterial_labels.GetOrigin() == arterial.GetOrigin()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(portal_labels), sitk.GetArrayFromImage(predictor.predict(portal)))
    # the lesion table says another phase confirmed it
    lesions = extract_lesions(arterial_labels, faint_points_mm=[],
                              other_phase_points_mm=arterial_info["cross_phase_points_mm"])
    assert [lesion.found_by for lesion in lesions] == ["other_phase"]

    # carrying instead: the portal lesion's own mask lands where the arterial CT is 15 HU darker
    predictor.cross_phase = CARRY
    _, (carried_labels, carried_info) = predictor.predict_day([portal, arterial])
    assert (sitk.GetArrayFromImage(carried_labels) == TUMOR).sum() > 0.85 * np.count_nonzero(confirmed == TUMOR)
    assert len(carried_info["cross_phase_points_mm"]) == 1
    lesions = extract_lesions(carried_labels, faint_points_mm=[],
                              other_phase_points_mm=carried_info["cross_phase_points_mm"])
    assert [lesion.found_by for lesion in lesions] == ["other_phase"]

    predictor.cross_phase = CrossPhaseRule()  # off: each phase as if read alone
    _, (off_labels, off_info) = predictor.predict_day([portal, arterial])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(off_labels), alone)
    assert off_info["cross_phase_points_mm"] == []


def test_calibration_chooses_a_rule_on_two_phase_days_and_stores_it(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    cohort = tiny_phantom_cohort(tmp_path_factory, "two_phase", seed=321, patients=2, phases=2)
    days = cases_by_day(load_cases("synthetic", cohort))
    assert [len(day) for day in days] == [2, 2] and {c.phase for c in days[0]} == {"portal", "arterial"}
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    result = calibrate_cross_phase(checkpoint, [cohort], tmp_path / "cross.pt", min_peaks=(0.9, 0.5),
                                   max_distances_mm=(5.0, 20.0), carry_min_volumes_ml=(0.5, 2.0),
                                   carry_min_contrasts_hu=(5.0,), carry_max_brighter_hu=(1000.0,),
                                   carry_vessel_min_brighter_hu=(30.0,), washout_min_brighter_hu=(40.0,),
                                   carry_vessel_max_shell_fractions=(0.3, 0.1), carry_vessel_min_one_sidedness=(0.0, 0.5),
                                   carry_vessel_beside_tumor=(1.0, 0.0), vein_min_darker_hu=(5.0, 10.0),
                                   vein_min_brighter_hu=(30.0,), fluid_max_hu=(15.0,), device="cpu",
                                   version="9.9.2")
    assert result["cases"] == 4 and result["days"] == 2
    grid = [tuple(row[name] for name in GRID_FIELDS) for row in result["candidates"]]
    confirming = [(0.0, 10.0, 0.1), (0.9, 5.0, 0.1), (0.9, 20.0, 0.1), (0.5, 5.0, 0.1), (0.5, 20.0, 0.1)]
    # both parts off, then strictest first: confirmation alone, then with the largest carried
    # lesions, onto liver only and then onto vessel-drawn regions too, least vessel around them
    # and most one-sided first, never beside a drawn lesion before even beside one
    onto_vessel = [(30.0, shell, sides, beside) for shell in (0.1, 0.3) for sides in (0.5, 0.0) for beside in (0.0, 1.0)]
    carrying = [(0.0, 5.0, 1000.0, 0.0, 0.1, 0.0, 0.0)] + [
        row for v in (2.0, 0.5)
        for row in [(v, 5.0, 1000.0, 0.0, 0.1, 0.0, 0.0)] + [(v, 5.0, 1000.0, *o) for o in onto_vessel]]
    washouts = ((0.0, 5.0, 0.3), (40.0, 5.0, 0.3))  # off, then each washout rule with all of the above
    veins = ((5.0, 0.0), (10.0, 30.0), (5.0, 30.0))  # off, then the darkest first, with all of the above
    fluids = (0.0, 15.0)  # off, then the fluid rule with all of the above
    assert grid == [(*c, *carry, *washout, *vein, fluid) for fluid in fluids for vein in veins for washout in washouts
                    for carry in carrying for c in confirming]
    off = result["candidates"][0]
    assert all(row["lesions_10mm"] == off["lesions_10mm"] for row in result["candidates"][:5])
    chosen = CrossPhaseRule(*(result[f"best_{name}"] for name in GRID_FIELDS))
    _, meta = load_checkpoint(result["out"])
    assert CrossPhaseRule.from_meta(meta["inference"]["cross_phase"]) == chosen
    assert meta["version"] == "9.9.2" and len(meta["cross_phase_calibration"]["candidates"]) == 1140
    assert Predictor(result["out"], device="cpu").cross_phase == chosen
    # the evaluation reads the days as the batch does and says what the rule added
    summary = evaluate_checkpoint(result["out"], cohort, device="cpu")
    assert summary["cross_phase"] == chosen.to_meta() and summary["cross_phase_lesions_added"] >= 0
    from test_cli_segment import run_lvt

    loose = write_stage_decisions(checkpoint, tmp_path / "loose.pt", "cross_phase", CrossPhaseRule(0.01, 500.0, 0.0),
                                  None, "cross_phase_calibration", {})
    code, out, _ = run_lvt(["evaluate-model", loose, "--cohort", str(cohort), "--device", "cpu"], monkeypatch, capsys)
    assert code == 0 and "phases of a day read together:" in out and "false_lesions_per_scan" in out

    with pytest.raises(ValueError, match="minimum peak"):
        calibrate_cross_phase(checkpoint, [cohort], tmp_path / "bad.pt", min_peaks=(0.0,), device="cpu")

    code, _, err = run_lvt(["calibrate-cross-phase", str(checkpoint), "--cohort", str(cohort), "--out",
                            str(tmp_path / "bad.pt"), "--device", "cpu", "--min-peaks", "1.5"], monkeypatch, capsys)
    assert code != 0 and "minimum peak" in err
    code, _, err = run_lvt(["calibrate-cross-phase", str(checkpoint), "--cohort", str(cohort), "--out",
                            str(tmp_path / "bad.pt"), "--device", "cpu", "--max-distances", "ten"], monkeypatch, capsys)
    assert code != 0 and "--max-distances" in err
    code, _, err = run_lvt(["calibrate-cross-phase", str(checkpoint), "--cohort", str(cohort), "--out",
                            str(tmp_path / "bad.pt"), "--device", "cpu", "--carry-min-volumes", "0,1"],
                           monkeypatch, capsys)
    assert code != 0 and "smallest carried lesion" in err and "above 0" in err
    assert not (tmp_path / "bad.pt").exists()


def test_the_terminal_says_what_each_calibrated_rule_does() -> None:
    from app.cli.train import _cross_phase_rule

    def said(rule: CrossPhaseRule) -> str:
        return _cross_phase_rule(rule.to_meta())

    assert said(CrossPhaseRule()) == "off"
    assert said(RULE) == "peak ≥ 0.6 within 8.0 mm of another phase's lesion, ≥ 0.1 ml"
    assert said(CARRY) == "lesions ≥ 0.5 ml carried where the CT is ≥ 5.0 HU darker or brighter"
    both = CrossPhaseRule(0.6, 8.0, 0.1, carry_min_volume_ml=1.0, carry_min_contrast_hu=3.0, carry_max_brighter_hu=15.0)
    assert said(both) == ("peak ≥ 0.6 within 8.0 mm of another phase's lesion, ≥ 0.1 ml; "
                          "lesions ≥ 1.0 ml carried where the CT is ≥ 3.0 HU darker, or brighter up to 15 HU")
    assert said(CrossPhaseRule(carry_min_volume_ml=1.0, carry_max_brighter_hu=0.0)).endswith("≥ 5.0 HU darker")
    assert said(ONTO_VESSELS) == ("lesions ≥ 0.5 ml carried where the CT is ≥ 5.0 HU darker, "
                                  "or onto a region drawn as vessel ≥ 30 HU brighter in an arterial scan, "
                                  "its shell < 10% vessel")


def test_predict_day_searches_vessel_for_a_carried_lesion_only_in_a_scan_named_arterial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    predictor, (portal, arterial) = _day_predictor(tmp_path, monkeypatch, ONTO_VESSELS, arterial_as_vessel=True)
    drawn = sitk.GetArrayFromImage(predictor.predict(arterial))
    assert (drawn == VESSEL).any() and not (drawn == TUMOR).any()

    _, (labels, info) = predictor.predict_day([portal, arterial], ["portal", "arterial"])
    assert len(info["cross_phase_points_mm"]) == 1
    assert np.count_nonzero(sitk.GetArrayFromImage(labels) == TUMOR) > 0.9 * np.count_nonzero(drawn == VESSEL)
    # phases not said (or said the other way round): the vessel stays a vessel
    for phases in (None, ["arterial", "portal"]):
        _, (labels, info) = predictor.predict_day([portal, arterial], phases)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), drawn)
        assert info["cross_phase_points_mm"] == []
    with pytest.raises(ValueError, match="2 scans but 1 phases"):
        predictor.predict_day([portal, arterial], ["portal"])


def test_a_cache_folder_decodes_each_scan_once_per_checkpoint(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    from test_cli_segment import run_lvt

    cohort = tiny_phantom_cohort(tmp_path_factory, "two_phase", seed=321, patients=2, phases=2)
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    cache = tmp_path / "cache"
    grid = {"min_peaks": (0.5,), "max_distances_mm": (20.0,), "carry_min_volumes_ml": (0.5,),
            "carry_min_contrasts_hu": (5.0,), "carry_max_brighter_hu": (1000.0,), "device": "cpu"}
    uncached = calibrate_cross_phase(checkpoint, [cohort], **grid)
    first = calibrate_cross_phase(checkpoint, [cohort], cache=cache, **grid)
    assert first["decoded_from_cache"] == 0 and len(list(cache.glob("*.npz"))) == 4

    def no_network(self: Predictor, image: sitk.Image) -> None:
        raise AssertionError("the network ran although the cache holds the scan")

    with monkeypatch.context() as patched:
        patched.setattr(Predictor, "predict_probabilities", no_network)
        again = calibrate_cross_phase(checkpoint, [cohort], cache=cache, **grid)
    assert again["decoded_from_cache"] == 4
    assert again["candidates"] == first["candidates"] == uncached["candidates"]

    # a damaged entry is decoded afresh; another checkpoint (other decisions) never reads this one's
    sorted(cache.glob("*.npz"))[0].write_bytes(b"half an npz")
    assert calibrate_cross_phase(checkpoint, [cohort], cache=cache, **grid)["decoded_from_cache"] == 3
    other = write_stage_decisions(checkpoint, tmp_path / "other.pt", "cross_phase", RULE, None,
                                  "cross_phase_calibration", {})
    assert calibrate_cross_phase(other, [cohort], cache=cache, **grid)["decoded_from_cache"] == 0
    assert len(list(cache.glob("*.npz"))) == 8 and not list(cache.glob("*.part"))

    code, out, _ = run_lvt(["calibrate-cross-phase", str(checkpoint), "--cohort", str(cohort), "--out",
                            str(tmp_path / "cli.pt"), "--cache", str(cache), "--min-peaks", "0.5",
                            "--max-distances", "20", "--carry-min-volumes", "0.5", "--carry-min-contrasts", "5",
                            "--carry-max-brighter", "1000", "--device", "cpu"], monkeypatch, capsys)
    assert code == 0 and "4 scans (4 decoded from the cache)" in out


WASHOUT = CrossPhaseRule(washout_min_brighter_hu=30.0, washout_min_darker_hu=5.0, washout_min_volume_ml=0.3)


def test_arterial_enhancement_with_portal_washout_finds_a_lesion_missed_in_both_phases() -> None:
    """HCC-like: the arterial scan drew it as vessel (70 HU brighter than the liver), the
    portal scan left it as liver (20 HU darker). Neither labels a lesion, so nothing can be
    carried; the pattern of the two CTs together makes it tumor in both."""
    lesion = np.array([40.0, 50.0, 70.0])
    portal = _with_ct(_scan(np.zeros(3), lesion, LIVER, 0.0), np.zeros(3), lesion, LIVER_HU - 20, "portal")
    arterial = _with_ct(_scan(SHIFT_MM, lesion, VESSEL, 0.0), SHIFT_MM, lesion, LIVER_HU + 70, "arterial")

    (portal_labels, portal_added, _), (arterial_labels, arterial_added, _) = confirm_across_phases(
        [portal, arterial], WASHOUT)

    assert len(portal_added) == len(arterial_added) == 1
    found = arterial_added[0]
    assert found.arterial_brighter_hu == pytest.approx(70.0, abs=1.0) and found.washout_hu == pytest.approx(20.0, abs=1.0)
    for labels, shift in ((portal_labels, np.zeros(3)), (arterial_labels, SHIFT_MM)):
        truth = _ball(lesion + shift, 6.0)
        drawn = labels == TUMOR
        assert 2 * np.count_nonzero(drawn & truth) / (np.count_nonzero(drawn) + np.count_nonzero(truth)) > 0.85
    assert not (arterial_labels == VESSEL).any()
    # off by default and in a stricter rule; in any other pair of phases, the pattern means nothing
    assert confirm_across_phases([portal, arterial], CARRY)[1] == (arterial.labels, [], [])
    strict = CrossPhaseRule(washout_min_brighter_hu=80.0)
    assert confirm_across_phases([portal, arterial], strict)[1] == (arterial.labels, [], [])
    unknown = _with_ct(arterial, SHIFT_MM, lesion, LIVER_HU + 70, "unknown")
    assert confirm_across_phases([portal, unknown], WASHOUT)[1] == (unknown.labels, [], [])


def test_a_vessel_bright_in_both_phases_or_a_thin_one_is_no_washout() -> None:
    """A portal vein is bright in the arterial phase too, but the portal scan draws it as
    vessel; a place that does not darken in the portal phase has not washed out; a vessel
    thinner than the core never is a candidate."""
    lesion = np.array([40.0, 50.0, 70.0])
    arterial = _with_ct(_scan(SHIFT_MM, lesion, VESSEL, 0.0), SHIFT_MM, lesion, LIVER_HU + 70, "arterial")
    vein = _with_ct(_scan(np.zeros(3), lesion, VESSEL, 0.0), np.zeros(3), lesion, LIVER_HU + 60, "portal")
    assert confirm_across_phases([vein, arterial], WASHOUT) == [(vein.labels, [], []), (arterial.labels, [], [])]
    iso = _with_ct(_scan(np.zeros(3), lesion, LIVER, 0.0), np.zeros(3), lesion, LIVER_HU - 2, "portal")
    assert confirm_across_phases([iso, arterial], WASHOUT)[1] == (arterial.labels, [], [])

    thin = _with_ct(_scan(SHIFT_MM, lesion, LIVER, 0.0), SHIFT_MM, lesion, LIVER_HU + 70, "arterial")
    tube = _ball(lesion + SHIFT_MM, 6.0)
    axes = [np.arange(n) * s for n, s in zip(SHAPE_ZYX, SPACING_XYZ[::-1], strict=True)]
    z, y, _ = np.meshgrid(*axes, indexing="ij")
    centre = lesion + SHIFT_MM
    tube &= (z - centre[0]) ** 2 + (y - centre[1]) ** 2 <= 2.0**2  # 4 mm across, under 2 × 3 mm
    thin.labels[tube] = VESSEL
    portal = _with_ct(_scan(np.zeros(3), lesion, LIVER, 0.0), np.zeros(3), lesion, LIVER_HU - 20, "portal")
    assert confirm_across_phases([portal, thin], WASHOUT)[1] == (thin.labels, [], [])


def test_washout_round_trips_and_is_said() -> None:
    from app.cli.train import _cross_phase_rule

    assert WASHOUT.enabled and WASHOUT.finds_washout and not CARRY.finds_washout
    assert CrossPhaseRule.from_meta(WASHOUT.to_meta()) == WASHOUT
    assert _cross_phase_rule(WASHOUT.to_meta()) == ("arterial vessel-drawn regions ≥ 0.3 ml, ≥ 30 HU brighter, "
                                                    "that wash out ≥ 5 HU darker later")
