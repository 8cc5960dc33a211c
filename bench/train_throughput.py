"""Benchmark: training steps per second with batches built in the loop or by worker processes.

On a GPU the network step is short and the CPU work of building a batch (crop, contrast
re-draws, synthetic lesions, rotation and zoom) is what the GPU waits for; on a small CPU the
network is the bottleneck and workers only compete with it. One run prints, on the same
cohort and recipe (a shipped-model stage config, datasets replaced):

- the time to build one batch in this process, and the network's forward/backward/update
  alone on one fixed batch;
- steps per second of ``training.train.train`` with ``--workers`` worker counts, the first
  being the baseline (0: batches built in the loop), timed between steps so setup is left out.

    OMP_NUM_THREADS=2 python bench/train_throughput.py [--workers 0,1] [--steps 30] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest.mock import patch

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import training.train as train_module  # noqa: E402
from lvt_core.phantom import CohortConfig, generate_cohort  # noqa: E402
from training.config import load_config  # noqa: E402
from training.loader import prepare_all  # noqa: E402
from training.train import BatchMaker, compute_loss, gather_cases, make_loss, resolve_device, train  # noqa: E402


def bench_cohort(folder: Path, patients: int) -> Path:
    """A demo-size phantom cohort (made once, under ``var/``)."""
    if not (folder / "manifest.csv").is_file():
        generate_cohort(folder, CohortConfig(patients=patients, timepoints=1, phases=2, seed=3000,
                                             size="demo"), workers=min(patients, 2))
    return folder


@contextmanager
def _tracked_metatensors() -> Iterator[None]:
    """The baseline: the batch builder's transforms with MONAI's MetaTensor bookkeeping on."""
    with patch.object(train_module, "plain_tensors", nullcontext):
        yield


def network_step_seconds(config, maker: BatchMaker, device: torch.device, repeats: int) -> float:
    """Forward, backward and update on one batch, without building batches."""
    from lvt_core.network import build_network
    from lvt_core.precision import autocast, resolve_precision

    model = build_network({**config.network, "out_channels": config.out_channels}).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = make_loss(config.mode, config.batch_dice)
    precision = resolve_precision(config.precision, device)
    batch = {k: v.to(device) for k, v in maker.batch(0).items()}
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            outputs = model(batch["image"])
        compute_loss(loss_fn, config.mode, outputs.float(), batch).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def loop_steps_per_second(config, device: str, steps: int, workers: int, out: Path) -> float:
    stamps: list[float] = []
    run = config.model_copy(update={"data_workers": workers, "output_dir": out, "epochs": 1,
                                    "steps_per_epoch": steps, "checkpoint_every": 10 * steps,
                                    "max_val_cases": 0, "init_checkpoint": None})
    train(run, device=device, max_steps=steps, on_step=lambda *_: stamps.append(time.perf_counter()))
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "training/configs/default_model_stage11.yaml")
    parser.add_argument("--cohort", type=Path, default=REPO / "var/bench/train_throughput")
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", default="0,1", help="worker counts; the first is the baseline")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default=None, help="as lvt train --precision (default: the config's)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    cohort = bench_cohort(args.cohort, args.patients)
    config = load_config(args.config, precision=args.precision,
                         datasets=[{"source": "synthetic", "path": str(cohort)}],
                         cache_dir=str(REPO / ".cache/lvt-preprocessed"), fold=-1)
    prepared = prepare_all(gather_cases(config), tuple(config.spacing_mm), config.cache_dir, config.antialiased)
    maker = BatchMaker(config, prepared)
    for step in range(3):  # each case's lesions and class boxes are found once, then cached
        maker.batch(step)
    build = {"plain": [], "tracked": []}
    for step in range(3, 15):
        for kind in build:  # interleaved, so load on the machine hits both alike
            with (nullcontext() if kind == "plain" else _tracked_metatensors()):
                start = time.perf_counter()
                maker.batch(step)
                build[kind].append(time.perf_counter() - start)
    print(f"device {device}, precision {config.precision}, batch {config.batch_size} x "
          f"{'x'.join(map(str, config.patch_size))}, torch threads {torch.get_num_threads()}")
    plain, tracked = np.median(build["plain"]), np.median(build["tracked"])
    print(f"build one batch in the loop: {plain:.3f} s "
          f"({tracked:.3f} s with MetaTensor bookkeeping, the baseline: {tracked / plain:.2f}x)")
    print(f"network step alone:          {network_step_seconds(config, maker, device, 5):.3f} s")
    counts = [int(w) for w in args.workers.split(",")]
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in counts:
            rates[workers] = loop_steps_per_second(config, str(device), args.steps, workers,
                                                   Path(tmp) / f"w{workers}")
            print(f"train loop, {workers} data workers: {rates[workers]:.2f} steps/s "
                  f"({rates[workers] / rates[counts[0]]:.2f}x the {counts[0]}-worker baseline)")


if __name__ == "__main__":
    main()
