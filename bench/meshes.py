"""Mesh volume against voxel volume, and meshing time, with and without the volume-matched
iso level (``MeshingConfig.volume_tolerance``), on a phantom's true label map.

    python bench/meshes.py [LABELS.nii.gz]   # default: a fresh demo-size phantom

Prints, per structure, the label volume and each mesh's volume as a ratio of it, and the time
to mesh the whole scene both ways (the baseline, contoured at 0.5, in the same run).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.lesions import lesion_component_map
from lvt_core.scene import MeshingConfig, build_scene_meshes


def _phantom_labels(folder: Path) -> Path:
    from lvt_core.phantom.cohort import CohortConfig, generate_cohort

    generate_cohort(folder, CohortConfig(patients=1, timepoints=1, phases=1, size="clinical", seed=11))
    return next(folder.rglob("labels.nii.gz"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(sys.argv[1]) if len(sys.argv) > 1 else _phantom_labels(Path(tmp))
        labels = sitk.ReadImage(str(path))
        components = lesion_component_map(labels, 10)
        array = sitk.GetArrayFromImage(labels)
        ids = sitk.GetArrayFromImage(components)
        voxel_ml = float(np.prod(labels.GetSpacing())) / 1000
        truth = {"liver": np.isin(array, (LIVER, VESSEL, TUMOR)).sum() * voxel_ml,
                 "vessels": (array == VESSEL).sum() * voxel_ml}
        truth |= {f"tumor_{i}": (ids == i).sum() * voxel_ml for i in np.unique(ids) if i > 0}
        runs = {}
        for name, config in (("contour at 0.5", MeshingConfig(volume_tolerance=0)),
                             ("volume-matched", MeshingConfig())):
            started = time.perf_counter()
            meshes = build_scene_meshes(labels, components, None, config)
            runs[name] = (time.perf_counter() - started, dict(meshes.items()))
        print(f"{path}  spacing {labels.GetSpacing()}")
        print(f"{'structure':<12}{'voxels ml':>10}" + "".join(f"{n:>18}" for n in runs))
        for structure, ml in truth.items():
            ratios = [runs[n][1][structure].volume / 1000 / ml for n in runs]
            print(f"{structure:<12}{ml:>10.3f}" + "".join(f"{r:>18.3f}" for r in ratios))
        print(f"{'time s':<22}" + "".join(f"{runs[n][0]:>18.2f}" for n in runs))


if __name__ == "__main__":
    main()
