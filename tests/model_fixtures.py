"""A tiny LVT checkpoint and tiny CT volumes for plumbing tests (batch, exports, scale-out).

The network is a 3-level DynUNet with a handful of filters at 4 mm, seeded so every process
that loads the file predicts the same labels. Its output bias is nudged so the liver channel
fires in soft tissue and the tumor channel in part of it: the label maps are not anatomy,
but they hold a liver, lesions and varying volumes, which is all batch plumbing needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

TINY_NETWORK = {
    "variant": "plain_in",
    "filters": [4, 8, 16],
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "kernel_size": [[3, 3, 3]] * 3,
    "deep_supr_num": 1,
}


def save_tiny_checkpoint(path: Path, seed: int = 0, version: str = "0.0.1") -> Path:
    """Write a seeded tiny checkpoint (4 mm, 16³ patches) to ``path`` and return it."""
    import torch

    from lvt_core.checkpoint import default_meta, save_checkpoint
    from lvt_core.network import build_network

    torch.manual_seed(seed)
    net = build_network(TINY_NETWORK)
    with torch.no_grad():
        head = net.output_block.conv.conv  # the 1x1x1 output convolution
        head.bias.copy_(torch.tensor([2.0, -4.0, -0.2]))
    meta = default_meta(
        name="tiny-test",
        version=version,
        spacing_mm=[4.0, 4.0, 4.0],
        patch_size=[16, 16, 16],
        network=TINY_NETWORK,
        inference={"coarse_spacing_mm": [8.0, 8.0, 8.0], "roi_margin_mm": 8.0},
    )
    return save_checkpoint(path, net.state_dict(), meta)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny seeded checkpoint shared by the whole test session."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def tiny_ct(seed: int, size: tuple[int, int, int] = (24, 24, 16), spacing: float = 4.0) -> sitk.Image:
    """A small CT-like volume (HU): air around a soft-tissue body with a brighter 'organ'."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    c = np.array(list(reversed(size))) / 2.0
    r = np.sqrt(((z - c[0]) / c[0]) ** 2 + ((y - c[1]) / c[1]) ** 2 + ((x - c[2]) / c[2]) ** 2)
    hu = np.where(r < 0.95, 40.0, -1000.0)
    organ = np.sqrt((z - c[0]) ** 2 + (y - c[1] - 2) ** 2 + (x - c[2] + 3) ** 2) < 4 + seed % 3
    hu[organ] = 130.0
    hu += rng.normal(0, 15, size=hu.shape)
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing((spacing, spacing, spacing))
    image.SetOrigin((-size[0] * spacing / 2, -size[1] * spacing / 2, 10.0 * seed))
    return image


def write_tiny_cohort(folder: Path, patients: int = 2, timepoints: int = 2,
                      phases: tuple[str, ...] = ("portal",)) -> Path:
    """Write tiny NIfTI scans and a manifest (monthly studies, portal phase unless asked);
    return the CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["patient_id,image,study_date,phase"]
    for p in range(patients):
        for t in range(timepoints):
            for k, phase in enumerate(phases):
                name = f"p{p}_t{t}.nii.gz" if k == 0 else f"p{p}_t{t}_{phase}.nii.gz"
                sitk.WriteImage(tiny_ct(seed=10 * p + t + 100 * k), str(folder / name))
                lines.append(f"P{p:03d},{name},2024-{t + 1:02d}-15,{phase}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def tiny_phantom_cohort(tmp_path_factory: pytest.TempPathFactory, name: str, seed: int,
                        patients: int = 1, phases: int = 1) -> Path:
    """A tiny one-study phantom cohort (one phase unless asked) with ground truth, for calibration tests."""
    from lvt_core.phantom import CohortConfig, generate_cohort

    folder = tmp_path_factory.mktemp(name) / "cohort"
    generate_cohort(folder, CohortConfig(patients=patients, timepoints=1, phases=phases, size="tiny", seed=seed))
    return folder
