"""Benchmark: tumor DSC per scan with the network's lesion edges and with the edge rule.

For each scan of ``COHORT`` (optionally only ``--cases``) the model runs once; its labels are
decoded with the checkpoint's decisions and the lesion-edge rule off, then with
``--fraction`` (:mod:`lvt_core.lesion_edges`), and both are scored against the truth, with
the slice thickness, since thin and thick slices behave differently. With ``--preview`` it
writes, per scan with a lesion, an axial PNG through the largest reference lesion: the
network's outline and the trimmed one in red, the truth in green.

    python bench/lesion_edges.py var/cohorts/val_clinical --cases LVT-0001_0_portal,LVT-0002_0_portal \
        --preview var/lesion_edges

Without a cohort it reads a small one drawn once under ``.cache/bench/`` (one demo-size
patient, three portal studies, seed 8110: ``phantom_cohort.portal_series``). Without the
model it says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from phantom_cohort import portal_series  # noqa: E402  # bench/, beside this file

from lvt_core.inference import Predictor  # noqa: E402
from lvt_core.labels import TUMOR  # noqa: E402
from lvt_core.lesion_edges import LesionEdgeRule  # noqa: E402
from lvt_core.metrics import dice  # noqa: E402
from training.datasets import load_cases  # noqa: E402


def preview(path: Path, hu: np.ndarray, truth: np.ndarray, outlines: dict[str, np.ndarray]) -> None:
    """Axial slice through the largest extent of ``truth``, each outline beside the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = int(np.argmax(truth.sum(axis=(1, 2))))
    ys, xs = np.nonzero(truth[k])
    cy, cx = int(ys.mean()), int(xs.mean())
    view = (k, slice(max(0, cy - 30), cy + 30), slice(max(0, cx - 30), cx + 30))
    fig, axes = plt.subplots(1, len(outlines), figsize=(5 * len(outlines), 5))
    for ax, (title, mask) in zip(np.atleast_1d(axes), outlines.items(), strict=True):
        ax.imshow(hu[view], cmap="gray", vmin=-40, vmax=200)
        ax.contour(truth[view], [0.5], colors="lime", linewidths=1.5)
        if mask[view].any():
            ax.contour(mask[view], [0.5], colors="red", linewidths=1.5)
        ax.set_title(f"{title} (red), truth (green)")
        ax.axis("off")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path, nargs="?", help="phantom cohort (default: a small one drawn once)")
    parser.add_argument("--model", default=str(REPO / "lvt_core" / "models" / "lvt_default.pt"))
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--cases", help="Comma-separated case ids (default: every scan).")
    parser.add_argument("--preview", type=Path, help="Folder for the outline PNGs.")
    args = parser.parse_args()
    if not Path(args.model).is_file():
        print(f"skipped: no model at {args.model} (give one with --model)")
        return
    if args.cohort is None:
        args.cohort = portal_series()
    predictor = Predictor(args.model, device="cpu")
    rules = {"network's edge": LesionEdgeRule(), f"edge at {args.fraction:g}": LesionEdgeRule(fraction=args.fraction)}
    wanted = set(args.cases.split(",")) if args.cases else None
    if args.preview:
        args.preview.mkdir(parents=True, exist_ok=True)
    print(f"{'scan':<28} {'slices':>7} " + " ".join(f"{name:>16}" for name in rules))
    for case in load_cases("synthetic", args.cohort):
        if wanted and case.case_id not in wanted:
            continue
        image, ref_image = case.load()
        truth = sitk.GetArrayFromImage(ref_image) == TUMOR
        probabilities = predictor.predict_probabilities(image)
        drawn = {name: sitk.GetArrayFromImage(predictor.labels_from(probabilities, image, lesion_edges=rule)) == TUMOR
                 for name, rule in rules.items()}
        scores = " ".join(f"{dice(mask, truth):>16.3f}" for mask in drawn.values())
        print(f"{case.case_id:<28} {image.GetSpacing()[2]:>5.1f}mm {scores}", flush=True)
        if args.preview and truth.any():
            preview(args.preview / f"{args.cohort.name}__{case.case_id}.png", sitk.GetArrayFromImage(image), truth, drawn)


if __name__ == "__main__":
    main()
