"""The small seeded phantom cohort a bench reads when it is given none.

``make bench`` runs every ``bench/*.py`` without arguments, so a bench that reads a cohort
must have one by default. It is drawn once under ``.cache/bench/`` and reused; the folder
name holds every drawing parameter, so changing them draws a new cohort rather than reusing
a stale one. ``make bench`` runs this module too, as a script: it then does nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench"


def default_cohort(name: str, *, patients: int, timepoints: int, phases: int, size: str = "demo",
                   seed: int) -> Path:
    """The cohort folder ``name`` drawn with these parameters, drawn now if its manifest.csv
    (written last, so it marks a complete cohort) is missing."""
    folder = CACHE / f"{name}_{size}_p{patients}_t{timepoints}_ph{phases}_seed{seed}"
    if not (folder / "manifest.csv").is_file():
        from lvt_core.phantom import CohortConfig, generate_cohort

        print(f"no cohort given: drawing {patients} {size} patient(s), {timepoints} timepoint(s), "
              f"{phases} phase(s), seed {seed} into {folder} (once)", file=sys.stderr, flush=True)
        generate_cohort(folder, CohortConfig(patients=patients, timepoints=timepoints, phases=phases,
                                             size=size, seed=seed))
    return folder


def two_phase_days() -> Path:
    """Two days of one patient, each with a portal and an arterial scan: for the benches that
    read the phases of a day together (cross_phase.py, fluid_truth.py). Seed 8101's patient
    has six lesions, hypo- and hyperdense, 5 to 48 mm, one appearing on the second day."""
    return default_cohort("two_phase_days", patients=1, timepoints=2, phases=2, seed=8101)


def portal_series() -> Path:
    """Three portal studies of one patient: for the benches that follow lesions over time or
    read each scan's lesions (tracking_accuracy.py, lesion_detectability.py, lesion_edges.py).
    Seed 8110's patient has six lesions, 5 to 54 mm: shrinking ones, one appearing at the
    second study and one gone by the third."""
    return default_cohort("portal_series", patients=1, timepoints=3, phases=1, seed=8110)
