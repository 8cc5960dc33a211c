"""The partial-label training loop (paper Sections 3 and A.2) for the three set-ups.

- ``ML``: sigmoid, multi-hot targets with the liver hierarchy, class-masked loss (Eq. 1);
- ``MLx``: sigmoid, one-hot exclusive targets, class-masked loss (Eq. 1);
- ``MC``: softmax over K+1 classes, voxel-masked loss (Eq. 2).

Each step draws its batch from a generator seeded by ``(seed, step)``, and the training
state (weights, optimiser, scaler, step, history) is written atomically every
``checkpoint_every`` steps, so a run killed at any point resumes with ``--resume`` and ends
at the same step count with the same weights as an uninterrupted run. Each epoch validates
(Dice per annotated class) and appends to ``metrics.csv``; ``model.pt`` at the end is an
LVT checkpoint (:mod:`lvt_core.checkpoint`) that :class:`lvt_core.inference.Predictor` loads.
"""

from __future__ import annotations

import csv
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lvt_core import labels as L
from lvt_core.atomic_files import replaced_on_success
from lvt_core.checkpoint import default_meta, save_checkpoint, torch_save_atomically
from lvt_core.inference import resolve_device
from lvt_core.losses import (
    DeepSupervisionLoss,
    bce_batch_dice_loss,
    bce_dice_loss,
    ce_dice_loss,
)
from lvt_core.network import build_network, network_config, patch_divisor
from lvt_core.precision import autocast, channels_last, resolve_precision
from lvt_core.transforms import DEFAULT_WINDOW, train_transforms, window_array
from training.augment import (
    insert_synthetic_lesions,
    randomize_intensity,
    randomize_relative_contrast,
    relabel_invisible_lesions,
)
from training.config import ConfigError, TrainConfig
from training.datasets import Case, DatasetError, link_same_scans, load_cases
from training.loader import preparation_workers, prepare_all, resolve_data_workers, step_batches
from training.preprocess import Prepared
from training.sampling import (
    MixedSourceSampler,
    choose_center,
    class_boxes,
    crop_around,
    step_rng,
    tumor_lesions,
)
from training.splits import split_cases

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.csv"
PRECROP_MARGIN = 16  # voxels around the patch so rotation and zoom see real context


@dataclass
class TrainResult:
    """What a run produced."""

    output_dir: Path
    checkpoint: Path | None
    step: int
    total_steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


# -- data ------------------------------------------------------------------------------------


def gather_cases(config: TrainConfig, workers: int = 1) -> list[Case]:
    """Import every configured source (generating phantom cohorts when asked, ``workers``
    patients at a time)."""
    cases: list[Case] = []
    for spec in config.datasets:
        path = Path(spec.path)
        if spec.generate and not (path / "manifest.csv").is_file():
            from lvt_core.phantom import CohortConfig, generate_cohort

            log.info("generating phantom cohort in %s", path)
            generate_cohort(path, CohortConfig(**spec.generate), workers=workers)
        if not path.exists() and spec.optional:
            log.warning("optional dataset %s not found at %s; skipped", spec.source, path)
            continue
        key = dataset_key(spec.source, spec.path)
        cases.extend(replace(case, dataset=key) for case in load_cases(spec.source, path, **spec.options))
    if not cases:
        raise DatasetError("no training cases: every configured dataset was empty or skipped")
    return link_same_scans(cases)  # LiTS holds the IRCAD scans: keep each scan on one side of a split


def dataset_key(source: str, path: str | Path) -> str:
    """The sampling group of one ``datasets:`` entry (two cohorts of one source stay apart)."""
    return f"{source}:{path}"


def sampling_weights(config: TrainConfig) -> dict[str, float]:
    """Sampling weight per ``datasets:`` entry, plus per source name for cases that were
    handed over without an entry (experiments; there the last entry of a source wins)."""
    weights = {spec.source: spec.weight for spec in config.datasets}
    weights.update({dataset_key(spec.source, spec.path): spec.weight for spec in config.datasets})
    return weights


def make_targets(mode: str, labels: np.ndarray, annotated: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Target (and MC voxel mask) of one label array for the training ``mode``."""
    if mode == "ML":
        return {"target": L.multi_hot_targets(labels, annotated).astype(np.float32)}
    if mode == "MLx":
        return {"target": L.one_hot_exclusive_targets(labels, annotated).astype(np.float32)}
    return {
        "target": L.class_index_map(labels, annotated)[None].astype(np.float32),
        "mask": L.mc_voxel_mask(labels, annotated)[None].astype(np.float32),
    }


@contextmanager
def plain_tensors() -> Iterator[None]:
    """MONAI transforms on plain tensors, without MetaTensor bookkeeping: a training patch
    needs no affine or transform history, and the bookkeeping costs about a fifth of building
    a batch (the same numbers come out)."""
    from monai.data import get_track_meta, set_track_meta

    tracked = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(tracked)


class BatchMaker:
    """Build the batch of one step from the prepared cases, deterministically."""

    def __init__(self, config: TrainConfig, prepared: list[Prepared]):
        self.config = config
        self.prepared = prepared
        self.sampler = MixedSourceSampler([p.sampling_group for p in prepared], sampling_weights(config))
        self.patch_zyx = list(reversed(config.patch_size))
        self.window = dict(config.window or DEFAULT_WINDOW)
        self.transforms = train_transforms(
            self.patch_zyx, self.window, mask_key="mask" if config.mode == "MC" else None
        )
        self._lesion_cache: dict[int, list[np.ndarray]] = {}
        self._box_cache: dict[int, dict[int, tuple[slice, ...]]] = {}

    def _boxes(self, case_index: int) -> dict[int, tuple[slice, ...]]:
        """Each class's bounding box in ``prepared[case_index]`` (found once)."""
        if case_index not in self._box_cache:
            self._box_cache[case_index] = class_boxes(self.prepared[case_index].labels)
        return self._box_cache[case_index]

    def _lesions(self, case_index: int) -> list[np.ndarray] | None:
        """The tumors of ``prepared[case_index]`` for lesion-balanced sampling (found once)."""
        case = self.prepared[case_index]
        if not self.config.lesion_balanced_sampling or "tumor" not in case.annotated:
            return None
        if case_index not in self._lesion_cache:
            self._lesion_cache[case_index] = tumor_lesions(np.asarray(case.labels))
        return self._lesion_cache[case_index]

    def item(self, step: int, index: int) -> dict[str, np.ndarray]:
        rng = step_rng(self.config.seed, step, index)
        case_index = self.sampler.choose(rng)
        case = self.prepared[case_index]
        center = choose_center(case.labels, case.annotated, rng, self.config.foreground_prob,
                               self.config.foreground_class_weights, self._lesions(case_index),
                               self._boxes(case_index))
        size = [p + (PRECROP_MARGIN if self.config.augment else 0) for p in self.patch_zyx]
        hu, lab = crop_around([case.image, case.labels], center, size, fill=(-1024, 0))
        if self.config.augment:
            hu = randomize_relative_contrast(
                hu, lab, case.annotated, rng, self.config.contrast_randomization,
                contrast_range_hu=self.config.contrast_range_hu,
                contrast_sampling=self.config.contrast_sampling)
            hu, lab = insert_synthetic_lesions(
                hu, lab, case.annotated, rng, self.config.synthetic_lesions,
                spacing_zyx=list(reversed(self.config.spacing_mm)),
                diameter_mm=self.config.synthetic_lesion_diameter_mm,
                contrast_range_hu=self.config.contrast_range_hu,
                contrast_sampling=self.config.contrast_sampling,
                near_vessel=self.config.synthetic_near_vessel)
            hu = randomize_intensity(hu, lab, case.annotated, rng, self.config.domain_randomization)
            lab = relabel_invisible_lesions(hu, lab, case.annotated, self.config.min_lesion_detectability)
        sample = {"image": hu[None].astype(np.float32), **make_targets(self.config.mode, lab, case.annotated)}
        weights = L.class_weights(case.annotated)
        if self.config.augment:
            self.transforms.set_random_state(seed=int(rng.integers(2**31)))
            with plain_tensors():
                out = self.transforms(sample)
            sample = out[0] if isinstance(out, list) else out
            sample = {k: np.asarray(v) for k, v in sample.items()}
        else:
            start = [(s - p) // 2 for s, p in zip(lab.shape, self.patch_zyx, strict=True)]
            box = tuple(slice(a, a + p) for a, p in zip(start, self.patch_zyx, strict=True))
            sample = {k: v[(slice(None), *box)] for k, v in sample.items()}
            sample["image"] = window_array(sample["image"], self.window["level"], self.window["width"])
        sample["weights"] = weights
        return sample

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        items = [self.item(step, i) for i in range(self.config.batch_size)]
        return {k: torch.from_numpy(np.stack([np.asarray(it[k]) for it in items])).float() for k in items[0]}


# -- optimisation ----------------------------------------------------------------------------


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> tuple[
    torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR
]:
    """AdamW + warm-up/cosine (ablation) or SGD Nesterov + poly (final recipe)."""
    spec, total = config.optimizer, config.total_steps
    if spec.name == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay
        )

        def factor(step: int) -> float:
            if step < spec.warmup_steps:
                return (step + 1) / spec.warmup_steps
            progress = (step - spec.warmup_steps) / max(1, total - spec.warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=spec.lr, momentum=spec.momentum, nesterov=True,
            weight_decay=spec.weight_decay,
        )

        def factor(step: int) -> float:
            warm = (step + 1) / spec.warmup_steps if step < spec.warmup_steps else 1.0
            return warm * (1.0 - min(step, total - 1) / total) ** spec.poly_exponent

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_loss(mode: str, batch_dice: bool = False) -> DeepSupervisionLoss:
    """Masked BCE + Dice per class (ML, MLx; Dice per sample or over the batch) or voxel-masked
    CE + Dice (MC)."""
    if mode == "MC":
        if batch_dice:
            raise ValueError("batch_dice is for the sigmoid modes (ML, MLx), not MC")
        return DeepSupervisionLoss(ce_dice_loss, spatial_weight=True)
    return DeepSupervisionLoss(bce_batch_dice_loss if batch_dice else bce_dice_loss,
                               spatial_weight=False)


def compute_loss(loss_fn: DeepSupervisionLoss, mode: str, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
    if mode == "MC":
        return loss_fn(outputs, batch["target"][:, 0].long(), batch["mask"][:, 0])
    return loss_fn(outputs, batch["target"], batch["weights"])


# -- validation ------------------------------------------------------------------------------


def predict_array(model: torch.nn.Module, config: TrainConfig, hu: np.ndarray, device: torch.device) -> np.ndarray:
    """Exclusive label array of one prepared volume (sliding window at training spacing)."""
    from monai.inferers import sliding_window_inference

    from lvt_core.inference import SHORT_SCAN_PADDING

    window = dict(config.window or DEFAULT_WINDOW)
    x = torch.from_numpy(window_array(np.asarray(hu), window["level"], window["width"]))[None, None]
    model.eval()
    with torch.inference_mode():
        logits = sliding_window_inference(
            x.to(device), list(reversed(config.patch_size)), 2, model,
            overlap=config.val_overlap, mode="gaussian", padding_mode=SHORT_SCAN_PADDING,
        )  # validated as the product segments
    model.train()
    if config.mode == "MC":
        return L.decode_multiclass(logits[0].float().cpu().numpy())
    return L.decode_exclusive(torch.sigmoid(logits[0].float()).cpu().numpy())


def dice_by_class(pred: np.ndarray, ref: np.ndarray, annotated: tuple[str, ...]) -> dict[str, float]:
    """DSC of the annotated classes (liver = labels 1–3, the whole organ)."""
    from lvt_core.metrics import CLASS_MASKS, dice

    return {name: dice(np.isin(pred, CLASS_MASKS[name]), np.isin(ref, CLASS_MASKS[name]))
            for name in annotated}


def validate(model: torch.nn.Module, config: TrainConfig, cases: list[Prepared], device: torch.device) -> dict[str, float]:
    """Mean DSC per class over the validation cases that annotate it."""
    scores: dict[str, list[float]] = {}
    for case in cases[: config.max_val_cases]:
        pred = predict_array(model, config, case.image, device)
        for name, value in dice_by_class(pred, np.asarray(case.labels), case.annotated).items():
            scores.setdefault(name, []).append(value)
    out = {f"val_dice_{k}": float(np.mean(v)) for k, v in scores.items()}
    if out:
        out["val_dice_mean"] = float(np.mean(list(out.values())))
    return out


# -- checkpoints -----------------------------------------------------------------------------


def checkpoint_meta(config: TrainConfig, cases: list[Case], metrics: dict[str, Any]) -> dict[str, Any]:
    """Full LVT checkpoint metadata for this run."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.source] = counts.get(case.source, 0) + 1
    return default_meta(
        name=config.name,
        version=config.version,
        label_space=config.label_space,
        spacing_mm=[float(s) for s in config.spacing_mm],
        window=dict(config.window or DEFAULT_WINDOW),
        patch_size=[int(p) for p in config.patch_size],
        network=network_config(**{**config.network, "out_channels": config.out_channels}),
        training_data=[{"source": s, "cases": n} for s, n in counts.items()],
        preprocessing={"antialiased": bool(config.antialiased)},
        metrics=metrics,
        mode=config.mode,
        training={"optimizer": config.optimizer.model_dump(), "steps": config.total_steps,
                  "batch_size": config.batch_size, "seed": config.seed},
    )


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the per-epoch CSV from the history (idempotent across resumes)."""
    if not history:
        return
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    with replaced_on_success(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


# -- the loop --------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    resume: bool = False,
    device: str = "auto",
    max_steps: int | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    cases: list[Case] | None = None,
    val_cases: list[Case] | None = None,
    max_minutes: float | None = None,
) -> TrainResult:
    """Train (or resume) the run described by ``config``; returns where the model went.

    ``max_steps`` stops after that many steps *in total* (a smoke run, or a deliberate
    interruption); ``max_minutes`` stops once the loop has run that long (a job with a wall
    clock: a lent GPU, a cluster slot). Either way the state is saved, so ``resume=True``
    continues it later, and ``best.pt`` holds the best epoch so far. ``cases`` and
    ``val_cases`` replace the configured datasets and fold split (used by experiments).
    """
    started = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    dev = resolve_device(device)
    workers = resolve_data_workers(config.data_workers, dev)
    preparing = preparation_workers(workers)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    state = _resumable_state(state_path, config, dev) if resume and state_path.is_file() else None
    (out / "config.yaml").write_text(_yaml(config))  # after the check: a refused resume keeps the old one

    if cases is None:
        train_cases, val_list = split_cases(gather_cases(config, preparing), config.fold,
                                            config.n_folds, config.seed)
    else:
        train_cases, val_list = list(cases), list(val_cases or [])
    divisor = patch_divisor(config.network)
    if any(p % d for p, d in zip(config.patch_size, divisor, strict=True)):
        raise ValueError(f"patch_size {config.patch_size} must be a multiple of {divisor} per axis")
    spacing = tuple(float(s) for s in config.spacing_mm)
    prepared = prepare_all(train_cases, spacing, config.cache_dir, config.antialiased, preparing)
    prepared_val = prepare_all(val_list, spacing, config.cache_dir, config.antialiased, preparing)

    torch.manual_seed(config.seed)
    model = build_network({**config.network, "out_channels": config.out_channels}).to(dev)
    precision = resolve_precision(config.precision, dev)
    memory_format = torch.channels_last_3d if channels_last(precision, dev) else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer, scheduler = make_optimizer(config, model)
    use_amp = precision == "fp16"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = make_loss(config.mode, config.batch_dice)
    step, history, best = 0, [], float("-inf")  # any first score is the best so far, validated or not
    running: list[float] = []  # this epoch's losses so far
    trained_before_s = 0.0  # training time of the runs this one resumes
    if config.init_checkpoint and state is None:
        from lvt_core.checkpoint import load_checkpoint

        init_state, _ = load_checkpoint(config.init_checkpoint)
        model.load_state_dict({k: v.float() for k, v in init_state.items()})
        log.info("initialised weights from %s", config.init_checkpoint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, history, best = state["step"], state["history"], state["best"]
        # an epoch cut by a stop goes on with its losses, so its mean (and best.pt) spans all of it
        running, trained_before_s = list(state.get("running", [])), float(state.get("elapsed_s", 0.0))
        log.info("resumed %s at step %d", out, step)
    elif resume:
        log.warning("nothing to resume in %s; starting from step 0", out)

    def save_state() -> None:
        torch_save_atomically(state_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                           "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                           "step": step, "history": history, "best": best,
                                           "running": running, "elapsed_s": elapsed_s(),
                                           "recipe": _recipe(config)})

    def elapsed_s() -> float:
        return round(trained_before_s + time.perf_counter() - started, 1)

    maker = BatchMaker(config, prepared)
    writer = _tensorboard(out) if config.tensorboard else None
    total = config.total_steps
    stop = min(total, max_steps) if max_steps is not None else total
    model.train()
    log.info("batches built by %s", f"{workers} worker processes" if workers else "the training loop")
    loop_started = time.perf_counter()
    out_of_time = False
    batches = step_batches(maker, step, stop, workers, pin_memory=dev.type == "cuda")
    for cpu_batch in batches:
        if max_minutes is not None and time.perf_counter() - loop_started >= 60 * max_minutes:
            out_of_time = True
            break
        batch = {k: v.to(dev, non_blocking=True) for k, v in cpu_batch.items()}
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, dev):
            outputs = model(batch["image"].to(memory_format=memory_format))
        loss = compute_loss(loss_fn, config.mode, outputs.float(), batch)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        running.append(float(loss.detach()))
        if on_step:
            on_step(step, total, running[-1])
        if writer:
            writer.add_scalar("loss/train", running[-1], step)
        if step % config.steps_per_epoch == 0:
            row = {"epoch": step // config.steps_per_epoch, "step": step,
                   "train_loss": float(np.mean(running)), "lr": scheduler.get_last_lr()[0],
                   **validate(model, config, prepared_val, dev),
                   "elapsed_s": elapsed_s()}
            running = []
            history.append(row)
            write_history(out / METRICS_FILE, history)
            score = row.get("val_dice_mean", -row["train_loss"])
            if score > best:
                best = score
                save_checkpoint(out / "best.pt", model.state_dict(),
                                checkpoint_meta(config, train_cases, _metrics(row)), config.fp16_checkpoint)
            if writer:
                for key, value in row.items():
                    writer.add_scalar(key, value, step)
        if step % config.checkpoint_every == 0 or step == stop:
            save_state()
    batches.close()  # ends the worker processes when the loop stopped early
    if out_of_time:
        log.info("stopped at step %d after %.1f min (max_minutes)", step, max_minutes)
        save_state()
    checkpoint = None
    if step >= total:
        last = history[-1] if history else {}
        checkpoint = save_checkpoint(out / MODEL_FILE, model.state_dict(),
                                     checkpoint_meta(config, train_cases, _metrics(last)),
                                     config.fp16_checkpoint)
    return TrainResult(out, checkpoint, step, total, history, time.perf_counter() - started)


def _metrics(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k.startswith("val_") or k in ("epoch", "step")}


def _recipe(config: TrainConfig) -> dict[str, Any]:
    """What a resumed state must share with the config: the network, its targets, the
    optimizer's kind and the voxel size the model learns at."""
    return {"mode": config.mode, "network": config.network, "optimizer": config.optimizer.name,
            "spacing_mm": [float(s) for s in config.spacing_mm]}


def _resumable_state(path: Path, config: TrainConfig, dev: torch.device) -> dict[str, Any]:
    """The saved training state at ``path``, refused with the file named when it is damaged or
    was written for another recipe (a size mismatch deep in torch, or a silent change of voxel
    size, otherwise)."""
    try:
        state = torch.load(path, map_location=dev, weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ConfigError(f"{path}: cannot resume from this training state, it is damaged "
                          f"({type(exc).__name__}: {exc}); move it away to start again") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(f"{path}: not an LVT training state; move it away to start again")
    saved, wanted = state.get("recipe"), _recipe(config)
    if saved is not None and saved != wanted:
        changed = ", ".join(f"{k} {saved.get(k)!r} → {wanted[k]!r}" for k in wanted if saved.get(k) != wanted[k])
        raise ConfigError(f"{path}: this state was trained with another recipe ({changed}); resume with "
                          "the config it was started with, or train into a new output_dir")
    return state


def _yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed; logging to metrics.csv only")
        return None
    return SummaryWriter(str(out / "tensorboard"))
