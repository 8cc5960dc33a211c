"""Preview PNGs of a scan: an axial and a coronal slice, plain and with the labels overlaid.

Soft-tissue window (W 400, L 40); colours follow ARCHITECTURE.md: liver brown/red, vessel
blue, tumor yellow-green.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

LABEL_COLOURS = {1: (0.72, 0.25, 0.15), 2: (0.15, 0.35, 1.0), 3: (0.75, 1.0, 0.1)}


def _overlay(ct: np.ndarray, labels: np.ndarray) -> np.ndarray:
    grey = np.clip((ct.astype(np.float32) - (40 - 200)) / 400, 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for value, colour in LABEL_COLOURS.items():
        mask = labels == value
        rgb[mask] = 0.55 * rgb[mask] + 0.45 * np.array(colour)
    return rgb


def write_previews(image: sitk.Image, labels: sitk.Image, out_dir: Path) -> list[Path]:
    """Write ``preview_axial.png`` and ``preview_coronal.png`` through the liver into ``out_dir``.

    The axial slice is the one with the most tumor (else liver) voxels; the coronal one
    passes through the liver centre. Pixels are drawn at their physical aspect ratio.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ct = sitk.GetArrayViewFromImage(image)
    lab = sitk.GetArrayViewFromImage(labels)
    sx, sy, sz = image.GetSpacing()
    per_slice_tumor = (lab == 3).sum(axis=(1, 2))
    per_slice_liver = (lab > 0).sum(axis=(1, 2))
    k = int(per_slice_tumor.argmax() if per_slice_tumor.max() > 0 else per_slice_liver.argmax())
    liver_rows = np.nonzero((lab > 0).any(axis=(0, 2)))[0]
    j = int(liver_rows.mean()) if liver_rows.size else ct.shape[1] // 2
    views = {
        "axial": (ct[k], lab[k], sy / sx, f"axial slice {k}"),
        "coronal": (ct[::-1, j, :], lab[::-1, j, :], sz / sx, f"coronal row {j}"),
    }
    paths = []
    for name, (img, seg, aspect, title) in views.items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 5.4 * min(2.0, img.shape[0] * aspect
                                                               / img.shape[1])), dpi=100)
        for ax, data in zip(axes, (_overlay(img, np.zeros_like(seg)), _overlay(img, seg)),
                            strict=True):
            ax.imshow(data, aspect=aspect, interpolation="nearest")
            ax.set_axis_off()
        axes[0].set_title(f"{title} (W400 L40)", fontsize=9)
        axes[1].set_title("liver / vessel / tumor", fontsize=9)
        fig.tight_layout()
        path = Path(out_dir) / f"preview_{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, metadata={"Software": None})
        plt.close(fig)
        paths.append(path)
    return paths
