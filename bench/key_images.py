"""What a report's key images cost per day at clinical size (512×512, ~220 slices).

Stores one clinical-size phantom CT and its label map in a temporary store, then times, twice,
what :func:`app.web.key_images.key_images` does for each tracked series: read the CT turned to
the viewer's axes, read the label map and number its lesions, and picture each lesion.

    .venv/bin/python bench/key_images.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    import numpy as np
    import SimpleITK as sitk

    from app.web import key_images, slices
    from db import storage
    from lvt_core.phantom import phantom_scan

    start = time.perf_counter()
    scan = phantom_scan(seed=7, size="clinical", phase="portal", timepoint=0, patient_index=0)
    root = Path(tempfile.mkdtemp(prefix="lvt-bench-key-images-"))
    ct_path, _ = storage.store_image(scan.image, root)
    label_path, _ = storage.store_image(scan.labels, root)
    print(f"clinical phantom {scan.image.GetSize()} stored in {time.perf_counter() - start:.1f} s")
    for run in (1, 2):
        start = time.perf_counter()
        image = slices.read_for_display(ct_path, root)
        read_ct = time.perf_counter() - start
        start = time.perf_counter()
        components = slices.components_for_display(slices.read_stored(label_path, root))
        read_labels = time.perf_counter() - start
        lesions = [int(i) for i in np.unique(components) if i > 0]
        ct = sitk.GetArrayViewFromImage(image)
        start = time.perf_counter()
        for index in lesions:
            assert key_images.key_picture(ct, components, index, image.GetSpacing(), 20.0, {}) is not None
        per_picture = (time.perf_counter() - start) / max(len(lesions), 1)
        print(f"run {run}: CT read {read_ct:.2f} s · label map and lesion numbering {read_labels:.2f} s · "
              f"{per_picture:.3f} s per picture ({len(lesions)} lesion(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
