"""Synthetic contrast-enhanced abdominal CT cohorts with liver, vessel and tumor truth.

Anatomy lives in patient millimetres (LPS) as implicit shapes and is sampled onto each
scan's own grid, pose and phase. See ``README.md`` in this folder for the phase HU table
and the design; :func:`generate_cohort` writes a cohort, :func:`phantom_scan` renders
one scan in memory.
"""

from lvt_core.phantom.cohort import (
    LESION_COLUMNS,
    MANIFEST_COLUMNS,
    MEASUREMENT_COLUMNS,
    CohortConfig,
    generate_cohort,
    generate_cohorts,
)
from lvt_core.phantom.lesions import LESION_KINDS, MAX_TIMEPOINTS, LesionMix, lesion_stats
from lvt_core.phantom.scan import SIZES, PhantomScan, phantom_scan
from lvt_core.phantom.tables import PHASE_HU_TABLE, PHASE_ORDER, PHASES, TUMOR_CONTRAST

__all__ = [
    "LESION_COLUMNS",
    "LESION_KINDS",
    "MANIFEST_COLUMNS",
    "MAX_TIMEPOINTS",
    "MEASUREMENT_COLUMNS",
    "PHASES",
    "PHASE_HU_TABLE",
    "PHASE_ORDER",
    "SIZES",
    "TUMOR_CONTRAST",
    "CohortConfig",
    "LesionMix",
    "PhantomScan",
    "generate_cohort",
    "generate_cohorts",
    "lesion_stats",
    "phantom_scan",
]
