"""Train inside a fixed wall-clock slot (a lent GPU, a cluster job): prepare, size, train.

``lvt train --max-minutes`` stops a run when the clock runs out, but a schedule (cosine,
poly) sized for more steps is then cut mid-way, at a high learning rate. Here the slot is
known up front, so the run is sized to end on time instead:

1. generate the config's phantom cohorts with every core (patients of all cohorts at once),
   and fill the preprocessing cache;
2. time a few batches in this process, and a step of the network on the device, to
   estimate how many steps fit in what is left of the slot (beside a GPU, the batch
   builders, not a small network, set the pace; on a CPU, the network does);
3. train that many steps, with ``max_minutes`` as a backstop, and write ``model.pt`` even
   if the backstop fired (from the saved state), so the slot always yields a checkpoint.

Run it as ``python -m training.timed_run CONFIG --minutes 8.5``: it needs the training
stack (torch, MONAI, SimpleITK, cc3d, pydantic) but not the app.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from lvt_core.inference import resolve_device
from training.config import TrainConfig, load_config
from training.train import (
    MODEL_FILE,
    STATE_FILE,
    BatchMaker,
    checkpoint_meta,
    gather_cases,
    train,
)

log = logging.getLogger("lvt.timed_run")
SAFETY = 0.8  # share of the estimated step rate to plan on (workers share cores with the loop)


def generate_all(config: TrainConfig, workers: int) -> None:
    """Render every configured phantom cohort that is missing, all at once on ``workers``."""
    from lvt_core.phantom import CohortConfig, generate_cohorts

    todo = [spec for spec in config.datasets
            if spec.generate and not (Path(spec.path) / "manifest.csv").is_file()]
    if not todo:
        return
    generate_cohorts([(Path(spec.path), CohortConfig(**spec.generate)) for spec in todo], workers)


def planned_steps(config: TrainConfig, end: float, workers: int, device: torch.device,
                  probe_batches: int = 3) -> int:
    """Steps that fit between the preprocessing cache being filled and ``end`` (a
    ``time.monotonic`` instant): the slower of the batch builders (``workers`` of them, each
    timed here on one core) and the network's step on ``device`` (timed after a warm-up)."""
    from training.loader import prepare_all
    from training.splits import split_cases

    cases, _ = split_cases(gather_cases(config, workers), config.fold, config.n_folds, config.seed)
    prepared = prepare_all(cases, tuple(config.spacing_mm), config.cache_dir, config.antialiased, workers)
    maker = BatchMaker(config, prepared)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    batches = [maker.batch(step) for step in range(probe_batches)]
    per_batch = (time.perf_counter() - started) / probe_batches
    torch.set_num_threads(threads)
    per_step = network_step_seconds(config, batches[0], device)
    seconds = max(0.0, end - time.monotonic())
    rate = SAFETY / (max(per_batch / workers, per_step) if workers else per_batch + per_step)
    log.info("a batch of %d: %.2f s to build on one core, %.3f s through the network on %s; "
             "planning %.2f steps/s with %d workers for %.0f s", config.batch_size, per_batch,
             per_step, device, rate, workers, seconds)
    return max(config.steps_per_epoch, int(rate * seconds))


def network_step_seconds(config: TrainConfig, batch: dict[str, torch.Tensor], device: torch.device) -> float:
    """One forward and backward pass of the configured network on ``batch`` (the second of
    two, so start-up costs are not counted)."""
    from lvt_core.network import build_network
    from lvt_core.precision import autocast, resolve_precision

    model = build_network({**config.network, "out_channels": config.out_channels}).to(device)
    precision = resolve_precision(config.precision, device)
    image = batch["image"].to(device)
    for _ in range(2):
        started = time.perf_counter()
        with autocast(precision, device):
            output = model(image)
        output.float().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return seconds


def finish_from_state(config: TrainConfig) -> Path:
    """``model.pt`` from the saved state of a run the backstop stopped (lr not yet annealed)."""
    from lvt_core.checkpoint import save_checkpoint

    out = Path(config.output_dir)
    state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=False)
    meta = checkpoint_meta(config, [], {"step": state["step"], "stopped_early": True})
    return save_checkpoint(out / MODEL_FILE, state["model"], meta, config.fp16_checkpoint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--minutes", type=float, required=True, help="The whole slot, preparation included.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 2) - 1)
    parser.add_argument("--summary", type=Path, help="Write a JSON summary here too.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.monotonic()
    deadline = started + 60 * args.minutes
    config = load_config(args.config, data_workers=args.workers)

    generate_all(config, max(args.workers, os.cpu_count() or 1))  # before any batch worker exists
    prepared_at = time.monotonic()
    margin = min(45.0, 6.0 * args.minutes)  # start-up of the workers, the last save
    steps = planned_steps(config, deadline - margin, args.workers, resolve_device(args.device))
    epochs = max(1, math.floor(steps / config.steps_per_epoch))
    config = replace_epochs(config, epochs)
    log.info("cohorts in %.0f s, cache and probes in %.0f s; planning %d steps (%d epochs)",
             prepared_at - started, time.monotonic() - prepared_at, config.total_steps, epochs)
    backstop = max(0.1, (deadline - time.monotonic() - margin / 2) / 60)
    result = train(config, device=args.device, max_minutes=backstop)
    checkpoint = result.checkpoint or finish_from_state(config)
    summary = {"checkpoint": str(checkpoint), "step": result.step, "planned_steps": config.total_steps,
               "finished": result.step >= config.total_steps, "seconds": round(result.seconds, 1),
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    log.info("%s", summary)
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=2))
    return 0


def replace_epochs(config: TrainConfig, epochs: int) -> TrainConfig:
    """The config with ``epochs`` (validated again, so the schedule sees the new total)."""
    return TrainConfig.model_validate({**config.model_dump(), "epochs": epochs})


if __name__ == "__main__":
    raise SystemExit(main())
