"""Benchmark: float32 against bfloat16 (CPU autocast, channels-last) for training and inference.

In one run, on this machine's CPU:

- one training step (forward, deep-supervision loss, backward, AdamW) of the shipped
  recipe's network on a batch of 2 × 64³ patches, as ``lvt train`` runs it;
- ``Predictor.predict`` of the shipped model on a held-out demo-size phantom, with the
  agreement (DSC per class) of the bfloat16 labels with the float32 labels.

bfloat16 needs AVX-512 BF16 or AMX; without it the bench says so and times float32 only.

    OMP_NUM_THREADS=2 python bench/precision.py [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lvt_core.metrics import dice  # noqa: E402
from lvt_core.precision import autocast, channels_last, cpu_has_bf16  # noqa: E402


def time_train_steps(precision: str, steps: int) -> float:
    """Median seconds of one training step in ``precision``."""
    from lvt_core.network import build_network
    from training.train import make_loss

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    fmt = torch.channels_last_3d if channels_last(precision, cpu) else torch.contiguous_format
    net = build_network({"variant": "plain_in", "filters": [16, 32, 64, 128], "deep_supr_num": 2,
                         "out_channels": 3}).to(memory_format=fmt).train()
    optimizer = torch.optim.AdamW(net.parameters(), 1e-4)
    loss_fn = make_loss("ML")
    image = torch.randn(2, 1, 64, 64, 64).to(memory_format=fmt)
    target = (torch.rand(2, 3, 64, 64, 64) > 0.7).float()
    weights = torch.ones(2, 3)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, cpu):
            outputs = net(image)
        loss = loss_fn(outputs.float(), target, weights)
        loss.backward()
        optimizer.step()
        if step:  # the first step warms up oneDNN's kernel cache
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_inference(precision: str, image: sitk.Image) -> tuple[float, np.ndarray]:
    from app.settings import SHIPPED_MODEL
    from lvt_core.inference import Predictor

    predictor = Predictor(SHIPPED_MODEL, device="cpu", precision=precision)
    predictor.predict(image)  # warm-up
    start = time.perf_counter()
    labels = predictor.predict(image)
    return time.perf_counter() - start, sitk.GetArrayFromImage(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    if len(precisions) == 1:
        print("this CPU has no native bfloat16 (AVX-512 BF16 or AMX): timing float32 only")
    print(f"training step, batch 2 × 64³, {args.threads} threads:")
    step_times = {p: time_train_steps(p, args.steps) for p in precisions}
    for p, seconds in step_times.items():
        print(f"  {p}: {seconds:.2f} s/step ({step_times['fp32'] / seconds:.1f}× float32)")

    from lvt_core.phantom import phantom_scan

    scan = phantom_scan(seed=4242, size="demo", phase="portal")
    print(f"inference, demo-size phantom {scan.image.GetSize()}, shipped model:")
    results = {p: time_inference(p, scan.image) for p in precisions}
    fp32_labels = results["fp32"][1]
    for p, (seconds, labels) in results.items():
        agreement = ", ".join(f"{name} {dice(labels == v, fp32_labels == v):.3f}"
                              for v, name in ((1, "liver"), (2, "vessel"), (3, "tumor")))
        print(f"  {p}: {seconds:.2f} s ({results['fp32'][0] / seconds:.1f}× float32); "
              f"DSC against float32: {agreement}")


if __name__ == "__main__":
    main()
