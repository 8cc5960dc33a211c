"""A hepatic vein drawn as tumor, told by its pattern across the phases of a day: darker than
the liver in the arterial CT (not yet opacified), brighter in the portal one (filled)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_cross_phase import CARRY, LIVER_HU, SHIFT_MM, _ball, _day_predictor, _scan, _with_ct

from lvt_core.cross_phase import CrossPhaseRule, confirm_across_phases
from lvt_core.labels import LIVER, TUMOR, VESSEL

VEINS = CrossPhaseRule(vein_min_darker_hu=10.0, vein_min_brighter_hu=30.0)
PLACE = np.array([40.0, 50.0, 70.0])


def _day(arterial_label: int, arterial_contrast: float, portal_label: int,
         portal_contrast: float, arterial_phase: str = "arterial") -> tuple:
    """A portal and an arterial scan of one day with one place drawn and lit as asked."""
    portal = _with_ct(_scan(np.zeros(3), PLACE, portal_label, 0.99), np.zeros(3), PLACE,
                      LIVER_HU + portal_contrast, "portal")
    arterial = _with_ct(_scan(SHIFT_MM, PLACE, arterial_label, 0.99), SHIFT_MM, PLACE,
                        LIVER_HU + arterial_contrast, arterial_phase)
    return portal, arterial


def test_a_vein_drawn_as_tumor_dark_in_the_arterial_phase_and_bright_later_becomes_vessel() -> None:
    portal, arterial = _day(TUMOR, -20.0, VESSEL, +50.0)
    (portal_labels, portal_added, _), (arterial_labels, arterial_added, _) = confirm_across_phases([portal, arterial], VEINS)
    place = _ball(PLACE + SHIFT_MM, 6.0)
    assert (arterial_labels[place] == VESSEL).all() and not (arterial_labels == TUMOR).any()
    assert arterial_added == []  # nothing is added; the lesion table sees no lesion there
    assert portal_labels is portal.labels and portal_added == []
    assert (arterial.labels[place] == TUMOR).all()  # the caller's labels are not modified

    # both phases drew the vein as tumor: it is vessel in both
    portal, arterial = _day(TUMOR, -20.0, TUMOR, +50.0)
    (portal_labels, _, _), (arterial_labels, _, _) = confirm_across_phases([portal, arterial], VEINS)
    assert not (portal_labels == TUMOR).any() and not (arterial_labels == TUMOR).any()
    assert (portal_labels[_ball(PLACE, 6.0)] == VESSEL).all()


@pytest.mark.parametrize(("arterial_contrast", "portal_contrast", "why"), [
    (-20.0, -35.0, "a metastasis is darker in both phases"),
    (+60.0, -10.0, "an HCC enhances, then washes out"),
    (-5.0, +50.0, "not dark enough in the arterial phase"),
    (-20.0, +20.0, "not bright enough in the portal phase"),
])
def test_a_lesion_keeps_its_place_unless_both_phases_show_a_filling_vein(
        arterial_contrast: float, portal_contrast: float, why: str) -> None:
    portal, arterial = _day(TUMOR, arterial_contrast, TUMOR, portal_contrast)
    result = confirm_across_phases([portal, arterial], VEINS)
    assert result == [(portal.labels, [], []), (arterial.labels, [], [])], why


def test_only_an_arterial_and_a_later_phase_together_tell_a_vein_and_the_rule_may_be_off() -> None:
    unknown = _day(TUMOR, -20.0, VESSEL, +50.0, arterial_phase="unknown")
    assert confirm_across_phases(list(unknown), VEINS) == [(scan.labels, [], []) for scan in unknown]
    day = _day(TUMOR, -20.0, VESSEL, +50.0)
    assert confirm_across_phases(list(day), CrossPhaseRule()) == [(scan.labels, [], []) for scan in day]
    assert confirm_across_phases(list(day), replace(VEINS, vein_min_brighter_hu=60.0))[1] == (day[1].labels, [], [])


def test_nothing_is_carried_from_a_vein() -> None:
    """The portal scan drew a filling vein as tumor; the arterial scan left the (darker) place
    as liver. Carrying alone copies that 'lesion' into the arterial scan; with the vein rule it
    is vessel in the portal scan and nothing is carried."""
    portal, arterial = _day(LIVER, -20.0, TUMOR, +50.0)
    _, (arterial_labels, added, _) = confirm_across_phases([portal, arterial], CARRY)
    assert len(added) == 1 and (arterial_labels == TUMOR).any()
    both = replace(CARRY, vein_min_darker_hu=10.0, vein_min_brighter_hu=30.0)
    (portal_labels, portal_added, _), (arterial_labels, added, _) = confirm_across_phases([portal, arterial], both)
    assert added == [] and arterial_labels is arterial.labels
    assert not (portal_labels == TUMOR).any() and portal_added == []


def test_predict_day_makes_a_filling_vein_vessel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the predictor, as the batch reads a day: the portal 'lesion' is 50 HU brighter
    than the liver, its arterial place 20 HU darker."""
    predictor, (portal, arterial) = _day_predictor(tmp_path, monkeypatch, VEINS, lesion_contrasts_hu=(50.0, -20.0))
    assert (sitk.GetArrayFromImage(predictor.predict(portal)) == TUMOR).any()
    (portal_labels, portal_info), _ = predictor.predict_day([portal, arterial], ["portal", "arterial"])
    labels = sitk.GetArrayFromImage(portal_labels)
    assert not (labels == TUMOR).any() and (labels[_ball(PLACE, 6.0)] == VESSEL).all()
    assert portal_info["cross_phase_points_mm"] == []
    (unread_portal, _), _ = predictor.predict_day([portal, arterial], ["portal", "unknown"])
    assert (sitk.GetArrayFromImage(unread_portal) == TUMOR).any()  # no arterial scan: no vein is told


def test_the_vein_rule_round_trips_and_is_said() -> None:
    from app.cli.train import _cross_phase_rule

    assert VEINS.enabled and VEINS.removes_filling_veins and not CARRY.removes_filling_veins
    assert CrossPhaseRule.from_meta(VEINS.to_meta()) == VEINS
    older = CARRY.to_meta()
    del older["vein_min_darker_hu"], older["vein_min_brighter_hu"]  # calibrated before the rule existed
    assert CrossPhaseRule.from_meta(older) == CARRY and not CrossPhaseRule.from_meta(older).removes_filling_veins
    assert _cross_phase_rule(VEINS.to_meta()) == ("tumor ≥ 10 HU darker in the arterial scan and ≥ 30 HU brighter "
                                                  "later made vessel (a filling vein)")
