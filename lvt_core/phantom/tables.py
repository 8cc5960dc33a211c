"""Tissue codes and the contrast-phase HU table of the phantom, and per-study sampling of it.

Every tissue gets, per phase, a mean HU and a half-range; each study draws its own values
(one bolus factor for the study scales all enhancements, then every tissue is jittered
within its half-range), so a model trained on the cohort never sees one fixed contrast.
"""

from __future__ import annotations

import numpy as np

PHASES: tuple[str, ...] = ("noncontrast", "arterial", "portal", "late")
"""All phase names, in acquisition order."""

PHASE_ORDER: tuple[str, ...] = ("portal", "arterial", "late", "noncontrast")
"""Which phases ``--phases P`` takes: the first P of this order (P=1 is portal-venous)."""

AIR, LUNG, FAT, SKIN, MUSCLE, CORTEX, MARROW, DISC, CARTILAGE, CSF = range(10)
LIVER, PORTAL, HEPATIC, AORTA, IVC, HEART, SPLEEN, KIDNEY_CORTEX, KIDNEY_MEDULLA = range(10, 19)
GUT_WALL, FLUID, GAS, STOOL, GALLBLADDER = range(19, 24)
TUMOR_BASE = 32
"""Lesion k (0-based) paints tissue codes ``TUMOR_BASE + 2k`` (core) and ``+ 1`` (rim)."""

# tissue: {phase: (mean HU, half-range HU)}
PHASE_HU_TABLE: dict[str, dict[str, tuple[float, float]]] = {
    "air": dict.fromkeys(PHASES, (-1000.0, 0.0)),
    "lung": dict.fromkeys(PHASES, (-860.0, 30.0)),
    "fat": dict.fromkeys(PHASES, (-100.0, 12.0)),
    "skin": dict.fromkeys(PHASES, (25.0, 10.0)),
    "muscle": {"noncontrast": (50, 6), "arterial": (58, 8), "portal": (65, 8), "late": (60, 8)},
    "bone_cortex": dict.fromkeys(PHASES, (750.0, 150.0)),
    "bone_marrow": dict.fromkeys(PHASES, (220.0, 60.0)),
    "disc": dict.fromkeys(PHASES, (85.0, 10.0)),
    "cartilage": dict.fromkeys(PHASES, (120.0, 20.0)),
    "csf": dict.fromkeys(PHASES, (15.0, 5.0)),
    "liver": {"noncontrast": (55, 8), "arterial": (75, 10), "portal": (110, 15), "late": (95, 12)},
    "portal_vein": {"noncontrast": (40, 5), "arterial": (140, 30), "portal": (180, 25),
                    "late": (135, 15)},
    "hepatic_vein": {"noncontrast": (40, 5), "arterial": (50, 10), "portal": (165, 25),
                     "late": (135, 15)},
    "aorta": {"noncontrast": (42, 5), "arterial": (320, 60), "portal": (170, 25), "late": (125, 15)},
    "ivc": {"noncontrast": (40, 5), "arterial": (80, 20), "portal": (150, 25), "late": (125, 15)},
    "heart": {"noncontrast": (40, 5), "arterial": (250, 50), "portal": (150, 25), "late": (120, 15)},
    "spleen": {"noncontrast": (48, 5), "arterial": (120, 20), "portal": (120, 15), "late": (100, 10)},
    "kidney_cortex": {"noncontrast": (32, 5), "arterial": (190, 30), "portal": (170, 20),
                      "late": (140, 20)},
    "kidney_medulla": {"noncontrast": (30, 5), "arterial": (70, 15), "portal": (160, 20),
                       "late": (150, 20)},
    "gut_wall": {"noncontrast": (40, 5), "arterial": (90, 15), "portal": (110, 15), "late": (95, 10)},
    "fluid": dict.fromkeys(PHASES, (15.0, 10.0)),
    "gas": dict.fromkeys(PHASES, (-980.0, 15.0)),
    "stool": dict.fromkeys(PHASES, (-20.0, 40.0)),
    "gallbladder": dict.fromkeys(PHASES, (8.0, 6.0)),
}
"""Mean and half-range of HU per tissue and phase (the documented phase table).

Tumors are relative to the study's liver value (see :data:`TUMOR_CONTRAST`)."""

TISSUE_CODES: dict[str, int] = {
    "air": AIR, "lung": LUNG, "fat": FAT, "skin": SKIN, "muscle": MUSCLE, "bone_cortex": CORTEX,
    "bone_marrow": MARROW, "disc": DISC, "cartilage": CARTILAGE, "csf": CSF, "liver": LIVER,
    "portal_vein": PORTAL, "hepatic_vein": HEPATIC, "aorta": AORTA, "ivc": IVC, "heart": HEART,
    "spleen": SPLEEN, "kidney_cortex": KIDNEY_CORTEX, "kidney_medulla": KIDNEY_MEDULLA,
    "gut_wall": GUT_WALL, "fluid": FLUID, "gas": GAS, "stool": STOOL, "gallbladder": GALLBLADDER,
}

TUMOR_CONTRAST: dict[str, dict[str, float]] = {
    # weight of the lesion's own contrast c (HU, drawn per lesion) per phase, added to liver HU
    "hypo": {"noncontrast": -0.3, "arterial": -0.6, "portal": -1.0, "late": -0.8},
    "hyper": {"noncontrast": -0.2, "arterial": 1.2, "portal": -0.3, "late": -0.5},
    "rim_core": {"noncontrast": -0.4, "arterial": -0.8, "portal": -1.0, "late": -0.9},
    "rim": {"noncontrast": 0.0, "arterial": 0.8, "portal": 0.6, "late": 0.3},
}
"""Tumor HU = study liver HU + weight × lesion contrast (hypo: metastasis-like; hyper:
HCC-like arterial enhancement with portal washout; rim: necrotic core with enhancing rim)."""


def sample_tissue_hu(rng: np.random.Generator, bolus: float, liver_shift: float) -> dict[
        str, dict[str, float]]:
    """Draw one study's HU per tissue and phase from :data:`PHASE_HU_TABLE`.

    ``bolus`` scales every enhancement above non-contrast (contrast dose and timing);
    ``liver_shift`` moves all liver values (steatosis lowers them).
    """
    values: dict[str, dict[str, float]] = {}
    for tissue, per_phase in PHASE_HU_TABLE.items():
        base = per_phase["noncontrast"][0]
        values[tissue] = {}
        for phase in PHASES:
            mean, half = per_phase[phase]
            hu = base + (mean - base) * bolus + rng.uniform(-half, half)
            if tissue == "liver":
                hu += liver_shift
            values[tissue][phase] = float(hu)
    return values


def phase_table_markdown() -> str:
    """:data:`PHASE_HU_TABLE` as a Markdown table (``mean ± half-range`` HU), for the README."""
    lines = ["| tissue | " + " | ".join(PHASES) + " |", "|---" * (len(PHASES) + 1) + "|"]
    for tissue, per_phase in PHASE_HU_TABLE.items():
        cells = [f"{per_phase[p][0]:g} ± {per_phase[p][1]:g}" for p in PHASES]
        lines.append(f"| {tissue} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
