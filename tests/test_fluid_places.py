"""A place drawn as tumor that holds fluid (bile in the gallbladder, a cyst), told by its water
density in every phase of the day: it becomes background, and nothing is carried from it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_cross_phase import CARRY, LIVER_HU, SHIFT_MM, _ball, _day_predictor, _scan, _with_ct

from lvt_core.cross_phase import CrossPhaseRule, confirm_across_phases
from lvt_core.fluid_places import MIN_FLUID_ML
from lvt_core.labels import BACKGROUND, LIVER, TUMOR

FLUID = CrossPhaseRule(fluid_max_hu=20.0)
PLACE = np.array([40.0, 50.0, 70.0])
BILE_HU = 8


def _day(portal_label: int, portal_hu: float, arterial_label: int, arterial_hu: float) -> tuple:
    """A portal and an arterial scan of one day with one place drawn and reading as asked."""
    portal = _with_ct(_scan(np.zeros(3), PLACE, portal_label, 0.99), np.zeros(3), PLACE, portal_hu, "portal")
    arterial = _with_ct(_scan(SHIFT_MM, PLACE, arterial_label, 0.99), SHIFT_MM, PLACE, arterial_hu, "arterial")
    return portal, arterial


def test_bile_drawn_as_tumor_becomes_background_in_the_scan_that_drew_it() -> None:
    portal, arterial = _day(TUMOR, BILE_HU, LIVER, BILE_HU)
    (portal_labels, portal_added, portal_fluid), (arterial_labels, arterial_added, arterial_fluid) = (
        confirm_across_phases([portal, arterial], FLUID))
    place = _ball(PLACE, 6.0)
    assert (portal_labels[place] == BACKGROUND).all() and not (portal_labels == TUMOR).any()
    assert portal_added == []  # nothing is added; the lesion table sees no lesion there
    assert arterial_labels is arterial.labels and arterial_added == [] and arterial_fluid == []
    # what was made background is said, with where it was and what it read
    (removed,) = portal_fluid
    assert np.allclose(removed.centre_mm, np.add(portal.image.GetOrigin(), PLACE[::-1]), atol=1.0)  # PLACE: z, y, x
    assert removed.volume_ml == pytest.approx(np.count_nonzero(place) * np.prod(portal.image.GetSpacing()) / 1000)
    assert removed.densest_hu == pytest.approx(BILE_HU, abs=1.0)
    assert (portal.labels[place] == TUMOR).all()  # the caller's labels are not modified

    # both phases drew it as tumor: it is background in both
    portal, arterial = _day(TUMOR, BILE_HU, TUMOR, 12.0)
    (portal_labels, _, _), (arterial_labels, _, _) = confirm_across_phases([portal, arterial], FLUID)
    assert not (portal_labels == TUMOR).any() and not (arterial_labels == TUMOR).any()
    assert (arterial_labels[_ball(PLACE + SHIFT_MM, 6.0)] == BACKGROUND).all()


@pytest.mark.parametrize(("portal_hu", "arterial_hu", "why"), [
    (15.0, 35.0, "a dark metastasis takes up some contrast: denser than water in the arterial phase"),
    (35.0, 12.0, "and the other way round"),
    (40.0, 140.0, "an HCC enhances in the arterial phase"),
    (25.0, 25.0, "denser than the limit in both phases"),
])
def test_a_lesion_denser_than_water_in_any_phase_is_kept(portal_hu: float, arterial_hu: float, why: str) -> None:
    portal, arterial = _day(TUMOR, portal_hu, TUMOR, arterial_hu)
    assert confirm_across_phases([portal, arterial], FLUID) == [(portal.labels, [], []), (arterial.labels, [], [])], why


def test_a_place_too_small_to_characterize_is_kept() -> None:
    """A 0.27 ml 'lesion' at water density (under MIN_FLUID_ML): on CT it is too small to call
    a cyst, and a sliver of a lesion at the capsule reads as low from the fat beside it."""
    portal, arterial = _day(TUMOR, BILE_HU, LIVER, BILE_HU)
    portal.labels[_ball(PLACE, 6.0) & ~_ball(PLACE, 4.0)] = LIVER
    assert 4 / 3 * np.pi * 4.0**3 / 1000 < MIN_FLUID_ML
    assert confirm_across_phases([portal, arterial], FLUID)[0] == (portal.labels, [], [])


def test_one_scan_cannot_tell_fluid_and_the_rule_may_be_off() -> None:
    portal, arterial = _day(TUMOR, BILE_HU, LIVER, BILE_HU)
    assert confirm_across_phases([portal], FLUID) == [(portal.labels, [], [])]  # a very dark metastasis, or bile
    assert confirm_across_phases([portal, arterial], CrossPhaseRule()) == [(s.labels, [], []) for s in (portal, arterial)]
    stricter = replace(FLUID, fluid_max_hu=5.0)
    assert confirm_across_phases([portal, arterial], stricter)[0] == (portal.labels, [], [])


def test_nothing_is_carried_from_fluid() -> None:
    """The portal scan drew bile as tumor; the arterial scan left the (dark) place as liver.
    Carrying alone copies that 'lesion' into the arterial scan; with the fluid rule it is
    background in the portal scan and nothing is carried."""
    portal, arterial = _day(TUMOR, BILE_HU, LIVER, BILE_HU)
    _, (arterial_labels, added, _) = confirm_across_phases([portal, arterial], CARRY)
    assert len(added) == 1 and (arterial_labels == TUMOR).any()
    both = replace(CARRY, fluid_max_hu=20.0)
    (portal_labels, portal_added, _), (arterial_labels, added, _) = confirm_across_phases([portal, arterial], both)
    assert added == [] and arterial_labels is arterial.labels
    assert not (portal_labels == TUMOR).any() and portal_added == []


def test_predict_day_makes_fluid_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the predictor, as the batch reads a day: the portal 'lesion' reads 8 HU in both CTs."""
    water = BILE_HU - LIVER_HU
    predictor, (portal, arterial) = _day_predictor(tmp_path, monkeypatch, FLUID, lesion_contrasts_hu=(water, water))
    assert (sitk.GetArrayFromImage(predictor.predict(portal)) == TUMOR).any()
    (portal_labels, portal_info), _ = predictor.predict_day([portal, arterial], ["portal", "arterial"])
    labels = sitk.GetArrayFromImage(portal_labels)
    assert not (labels == TUMOR).any() and (labels[_ball(PLACE, 6.0)] == BACKGROUND).all()
    assert portal_info["cross_phase_points_mm"] == []
    (place,) = portal_info["fluid_places"]  # the record of what the reading left out
    assert set(place) == {"centre_mm", "volume_ml", "densest_hu"} and place["volume_ml"] >= MIN_FLUID_ML
    assert np.allclose(place["centre_mm"], np.add(portal.GetOrigin(), PLACE[::-1]), atol=2.0)
    assert place["densest_hu"] <= FLUID.fluid_max_hu
    (alone, alone_info), = predictor.predict_day([portal], ["portal"])
    assert (sitk.GetArrayFromImage(alone) == TUMOR).any()  # one scan of the day: nothing is told
    assert "fluid_places" not in alone_info


def test_the_fluid_rule_round_trips_and_is_said() -> None:
    from app.cli.train import _cross_phase_rule

    assert FLUID.enabled and FLUID.removes_fluid and not CARRY.removes_fluid
    assert CrossPhaseRule.from_meta(FLUID.to_meta()) == FLUID
    older = CARRY.to_meta()
    del older["fluid_max_hu"]  # calibrated before the rule existed
    assert CrossPhaseRule.from_meta(older) == CARRY and not CrossPhaseRule.from_meta(older).removes_fluid
    assert _cross_phase_rule(FLUID.to_meta()) == "tumor at most 20 HU in every scan of the day made background (fluid)"
