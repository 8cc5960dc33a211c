"""The dark-vessel rule: a round region drawn as vessel but darker than the liver is a lesion."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lvt_core.dark_vessels import DarkVesselRule, relabel_dark_vessels
from lvt_core.labels import LIVER, TUMOR, VESSEL

SPACING = (1.0, 1.0, 2.0)  # x, y, z mm
RULE = DarkVesselRule(min_darker_hu=20.0, min_roundness=0.65, min_volume_ml=0.2, radius_mm=3.0)


def _scene(blob_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """A liver (110 HU) crossed by a bright 4 mm vessel (170 HU) with a 12 mm ball against it,
    drawn as vessel by the 'network', at ``blob_hu``."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:30, :80, :80]
    labels = np.zeros(z.shape, np.uint8)
    labels[2:28, 5:75, 5:75] = LIVER
    hu = np.where(labels == LIVER, 110.0, -100.0) + rng.normal(0, 5, z.shape)
    tube = ((y - 40) ** 2 + ((z - 15) * 2.0) ** 2 <= 2.0**2) & (labels == LIVER)
    labels[tube] = VESSEL
    hu[tube] = 170.0
    ball = (x - 40) ** 2 + (y - 46) ** 2 + ((z - 15) * 2.0) ** 2 <= 6.0**2
    labels[ball] = VESSEL
    hu[ball] = blob_hu
    return labels, hu


def test_a_round_dark_region_drawn_as_vessel_becomes_tumor_and_the_tube_stays() -> None:
    labels, hu = _scene(blob_hu=60.0)
    out, centres = relabel_dark_vessels(labels, hu, SPACING, RULE)
    assert len(centres) == 1 and out[centres[0]] == TUMOR
    tumor_ml = (out == TUMOR).sum() * 2.0 / 1000
    assert 0.5 < tumor_ml <= (labels == VESSEL).sum() * 2.0 / 1000  # most of the 0.9 ml ball
    assert (out[15, 40, 5:20] == VESSEL).all()  # the tube away from the ball is still vessel
    assert ((out == TUMOR) <= (labels == VESSEL)).all()  # only vessel voxels change


def test_a_bright_round_vessel_and_a_switched_off_rule_change_nothing() -> None:
    labels, hu = _scene(blob_hu=170.0)  # contrast-filled: a vessel, however round
    out, centres = relabel_dark_vessels(labels, hu, SPACING, RULE)
    assert centres == [] and np.array_equal(out, labels)
    dark_labels, dark_hu = _scene(blob_hu=60.0)
    out, centres = relabel_dark_vessels(dark_labels, dark_hu, SPACING, DarkVesselRule())
    assert centres == [] and np.array_equal(out, dark_labels)


def test_a_long_dark_tube_is_not_a_lesion() -> None:
    """Unenhanced hepatic veins are darker than the arterial-phase liver, but tubes."""
    labels, hu = _scene(blob_hu=170.0)
    z, y, _x = np.mgrid[:30, :80, :80]
    vein = ((y - 20) ** 2 + ((z - 15) * 2.0) ** 2 <= 5.0**2) & (labels == LIVER)  # 10 mm across
    labels[vein] = VESSEL
    hu[vein] = 60.0
    out, centres = relabel_dark_vessels(labels, hu, SPACING, RULE)
    assert centres == [] and np.array_equal(out, labels)


def test_rule_round_trips_through_checkpoint_metadata() -> None:
    assert DarkVesselRule.from_meta(RULE.to_meta()) == RULE
    assert not DarkVesselRule.from_meta(None).enabled


def test_predictor_reads_the_rule_from_its_checkpoint_and_skips_it_without_a_second_look(
    tmp_path: Path,
) -> None:
    from test_inference import train_toy_checkpoint

    from lvt_core.checkpoint import load_checkpoint, save_checkpoint
    from lvt_core.inference import Predictor

    state, meta = load_checkpoint(train_toy_checkpoint(tmp_path / "toy.pt"))
    inference = {**meta.get("inference", {}), "dark_vessels": RULE.to_meta()}
    ruled = save_checkpoint(tmp_path / "ruled.pt", state, {**meta, "inference": inference})
    assert Predictor(ruled, device="cpu").dark_vessels == RULE
    assert not Predictor(ruled, device="cpu", faint_search=False).dark_vessels.enabled
    assert not Predictor(tmp_path / "toy.pt", device="cpu").dark_vessels.enabled
