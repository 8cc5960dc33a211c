"""Every tumor region a model draws on the real CT samples, measured as the lesion rules see it.

Phantom lesions cannot show everything a real one does (none lies at the liver's capsule), so
a rule chosen on phantoms is checked here before it ships: for each tumor component of each
real scan, decoded with the model's decisions except the rules named below switched off, it
prints volume, slices, contrast to the liver around it, roundness and the share of its 5 mm
shell outside the organ (``lvt_core.lesion_filter.candidate_features``), and whether the
model's own decoding keeps it. A kept-by-the-rules-off, dropped-by-the-model region is what the
rule takes away; look at its slices before trusting the rule.

    .venv/bin/python bench/real_ct_lesions.py [--model PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from real_ct import CASES, REAL  # its neighbour in bench/
from scipy import ndimage

from lvt_core.imageio import read_image
from lvt_core.inference import Predictor
from lvt_core.labels import TUMOR
from lvt_core.lesion_filter import candidate_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    if not REAL.is_dir():
        print(f"real CT samples not found at {REAL}; nothing to do")
        return
    from app.settings import get_settings

    predictor = Predictor(args.model or get_settings().model_path, device="cpu")
    print(f"model {predictor.name} {predictor.version}: tumor regions with the roundness and outside-the-organ "
          f"rules off (model: roundness {predictor.min_tumor_roundness}, outside {predictor.max_tumor_outside})")
    print(f"{'case':<18} {'ml':>6} {'slices':>8} {'HU':>5} {'contrast':>8} {'round':>6} {'outside':>7}  model keeps")
    for name, image_rel, _, _ in CASES:
        image = read_image(REAL / image_rel)
        probabilities = predictor.predict_probabilities(image)
        rules_off = sitk.GetArrayFromImage(predictor.labels_from(probabilities, image, min_tumor_roundness=0.0,
                                                                 max_tumor_outside=1.0))
        kept = sitk.GetArrayFromImage(predictor.labels_from(probabilities, image)) == TUMOR
        tumor_probability = np.zeros(rules_off.shape, np.float32)
        if probabilities.region is not None:
            tumor_probability[probabilities.region] = probabilities.values[predictor.tumor_channel]
        hu = sitk.GetArrayFromImage(image)
        candidates = candidate_features(rules_off, tumor_probability, hu, image.GetSpacing())
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        for index, box in enumerate(ndimage.find_objects(candidates.components)):
            if box is None:
                continue
            mask = candidates.components[box] == index + 1
            print(f"{name:<18} {mask.sum() * voxel_ml:6.2f} {box[0].start:>3}-{box[0].stop - 1:<4} "
                  f"{hu[box][mask].mean():5.0f} {candidates.column('contrast_hu')[index]:+8.0f} "
                  f"{candidates.column('roundness')[index]:6.2f} {candidates.column('edge_contact')[index]:7.2f}  "
                  f"{'yes' if kept[box][mask].all() else 'no'}")


if __name__ == "__main__":
    main()
