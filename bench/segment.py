"""Benchmark: ``lvt segment`` (the Predictor) against MONAI's plain full-volume sliding window.

One run times both on the same clinical-size scan (512×512×200 at 0.75×0.75×1.5 mm) with the
same network and checkpoint, each in a fresh child process so peak RSS is its own:

- ``lvt``: ``app.cli.segment.segment_scan`` end to end (read, body crop, coarse liver ROI,
  fine pass, post-processing, resampling back, writing labels and summary), no TTA;
- ``plain``: read, resample the whole volume to the model spacing, ``sliding_window_inference``
  (50 % overlap, Gaussian), sigmoid, decode, resample back, write.

The scan is ``lvt_core.phantom.phantom_scan(seed, size="clinical")`` when that exists, else a
simple synthetic abdomen of the same geometry. The model is ``--model`` or the shipped one;
without either, a toy checkpoint of the shipped recipe's shape (``--filters`` at ``--spacing``)
is trained for ``--toy-steps`` on bright blobs: it finds liver-like regions by intensity, so
the coarse ROI path runs as it would with a trained model (its accuracy means nothing).

    OMP_NUM_THREADS=2 python bench/segment.py [--model M] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def synthetic_scan(size: tuple[int, int, int] = (512, 512, 200), seed: int = 0) -> sitk.Image:
    """Abdomen-like volume: air, an elliptic body, a liver ellipsoid with vessels and a tumor."""
    try:
        from lvt_core.phantom import phantom_scan  # type: ignore[attr-defined]

        return phantom_scan(seed, size="clinical").image
    except (ImportError, AttributeError):
        pass
    rng = np.random.default_rng(seed)
    spacing = np.array([0.75, 0.75, 1.5])
    nx, ny, nz = size
    z, y, x = np.ogrid[:nz, :ny, :nx]
    xm, ym, zm = (x - nx / 2) * spacing[0], (y - ny / 2) * spacing[1], (z - nz / 2) * spacing[2]
    hu = np.full((nz, ny, nx), -1000, np.int16)
    body = (xm / 170) ** 2 + (ym / 125) ** 2 <= 1
    hu[np.broadcast_to(body, hu.shape)] = 40
    liver = ((xm + 60) / 95) ** 2 + ((ym + 10) / 80) ** 2 + ((zm - 20) / 85) ** 2 <= 1
    hu[liver] = 110
    vessel = ((xm + 60) ** 2 + (ym + 10) ** 2 <= 6**2) & liver
    hu[vessel] = 190
    tumor = ((xm + 30) ** 2 + (ym - 20) ** 2 + (zm - 30) ** 2) <= 15**2
    hu[tumor] = 45
    hu += rng.normal(0, 12, hu.shape).astype(np.int16)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(tuple(spacing))
    image.SetOrigin((-192.0, -192.0, -150.0))
    return image


def toy_checkpoint(path: Path, filters: list[int], spacing: float, patch: int, steps: int) -> Path:
    """A stand-in model: ``steps`` Adam steps on random bright blobs ("liver" at 90–140 HU).

    It learns little more than an intensity band, but that is enough for the coarse pass to
    find a liver-sized region, so the timing exercises the real ROI path.
    """
    import torch

    from lvt_core.checkpoint import default_meta, save_checkpoint
    from lvt_core.losses import DeepSupervisionLoss, bce_dice_loss
    from lvt_core.network import build_network
    from lvt_core.transforms import window_array

    meta = default_meta(
        name="bench-toy",
        network={"variant": "plain_in", "filters": filters},
        spacing_mm=[spacing] * 3,
        patch_size=[patch] * 3,
        training_data=[f"bench toy blobs, {steps} steps"],
    )
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = build_network(meta["network"]).train()
    optim = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = DeepSupervisionLoss(bce_dice_loss, spatial_weight=False)
    n = 32
    grid = np.stack(np.mgrid[:n, :n, :n], -1).astype(np.float32)
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(2):
            hu = rng.uniform(-120, 60) + rng.normal(0, 15, (n, n, n))
            centre, radius = rng.uniform(0, n, 3), rng.uniform(6, 20)
            liver = np.linalg.norm(grid - centre, axis=-1) < radius
            hu[liver] = rng.uniform(90, 140) + rng.normal(0, 15, int(liver.sum()))
            xs.append(window_array(hu, **meta["window"])[None])
            ys.append(np.stack([liver, np.zeros_like(liver), np.zeros_like(liver)]))
        out = net(torch.from_numpy(np.stack(xs)))
        loss = loss_fn(out, torch.from_numpy(np.stack(ys)).float(), torch.tensor([[1.0, 0, 0]] * 2))
        optim.zero_grad()
        loss.backward()
        optim.step()
    return save_checkpoint(path, net.state_dict(), meta)


def run_lvt(scan: Path, model: Path, out: Path, device: str) -> dict:
    from app.cli.segment import segment_scan

    summary = segment_scan(scan, out, model=model, device=device, tta=False)
    return {
        "timings": summary["runtime_s"],
        "regions": summary["regions"],
        "liver_ml": summary["volumes_ml"]["liver_total"],
    }


def run_plain(scan: Path, model: Path, out: Path, device: str) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    from lvt_core.checkpoint import is_antialiased, load_checkpoint
    from lvt_core.grids import resample_to_spacing
    from lvt_core.imageio import read_image, write_image
    from lvt_core.labels import decode_exclusive
    from lvt_core.network import build_network
    from lvt_core.transforms import window_array

    state, meta = load_checkpoint(model)
    net = build_network(meta["network"])
    net.load_state_dict(state)
    net = net.eval().to(device)
    image = read_image(scan)
    work = resample_to_spacing(
        sitk.Cast(image, sitk.sitkFloat32), meta["spacing_mm"], default_value=-1024,
        antialiased=is_antialiased(meta),
    )
    x = torch.from_numpy(window_array(sitk.GetArrayViewFromImage(work), **meta["window"]))[
        None, None
    ]
    with torch.inference_mode():
        probs = sliding_window_inference(
            x.to(device),
            list(reversed(meta["patch_size"])),
            2,
            lambda b: torch.sigmoid(net(b)),
            overlap=0.5,
            mode="gaussian",
        )
    labels = sitk.GetImageFromArray(decode_exclusive(probs[0].cpu().numpy()))
    labels.CopyInformation(work)
    labels = sitk.Resample(
        labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    write_image(labels, out / "labels.nii.gz")
    return {"voxels_at_model_spacing": int(np.prod(work.GetSize()))}


def child(mode: str, scan: Path, model: Path, out: Path, device: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    info = (run_lvt if mode == "lvt" else run_plain)(scan, model, out, device)
    wall = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        json.dumps(
            {"mode": mode, "wall_s": round(wall, 2), "peak_rss_gb": round(peak_gb, 2), **info}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    # without a model: the shipped recipe's shape (training/configs/default_model.yaml)
    parser.add_argument("--filters", default="16,32,64,128")
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--toy-steps", type=int, default=60)
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "SCAN", "MODEL", "OUT"))
    args = parser.parse_args()
    if args.child:
        mode, scan, model, out = args.child
        child(mode, Path(scan), Path(model), Path(out), args.device, args.threads)
        return

    from app.settings import get_settings

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        model = args.model or get_settings().model_path
        note = ""
        if not Path(model).is_file():
            filters = [int(f) for f in args.filters.split(",")]
            model = toy_checkpoint(
                tmp / "toy.pt", filters, args.spacing, args.patch, args.toy_steps
            )
            note = (
                f" (no trained model: toy blob model, {args.toy_steps} steps, filters {filters}, "
                f"{args.spacing} mm, patch {args.patch})"
            )
        image = synthetic_scan()
        scan = tmp / "scan.nii.gz"
        sitk.WriteImage(image, str(scan))
        print(
            f"scan {image.GetSize()} at {image.GetSpacing()} mm; model {model}{note}; "
            f"device {args.device}, {args.threads} threads, no TTA",
            flush=True,
        )
        results = {}
        for mode in ("lvt", "plain")[: 1 if args.skip_plain else 2]:
            cmd = [
                sys.executable,
                __file__,
                "--device",
                args.device,
                "--threads",
                str(args.threads),
                "--child",
                mode,
                str(scan),
                str(model),
                str(tmp / mode),
            ]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
            results[mode] = json.loads(line.splitlines()[-1])
            print(json.dumps(results[mode]), flush=True)
        if "plain" in results:
            ratio = results["plain"]["wall_s"] / results["lvt"]["wall_s"]
            print(f"speed-up of lvt segment over plain full-volume inference: {ratio:.1f}x")


if __name__ == "__main__":
    main()
