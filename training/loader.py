"""Data in parallel: the preprocessing cache filled by a process pool, batches built ahead.

Building a batch (crop, contrast re-draws, synthetic lesions, rotation and zoom) costs CPU
time that a GPU step does not: on a GPU the network waits for the batch maker. Every batch
is a pure function of ``(seed, step)`` (:func:`training.sampling.step_rng`), so worker
processes can build future steps while the network trains on the current one, and the run
sees exactly the batches, in the same order, that it would see with no workers: results and
resume do not depend on the worker count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol

import torch

from training.datasets import Case
from training.preprocess import Prepared, cache_folder, preprocess

MAX_AUTO_WORKERS = 8


class MakesBatches(Protocol):
    def batch(self, step: int) -> dict[str, torch.Tensor]: ...


def resolve_data_workers(configured: int | None, device: torch.device) -> int:
    """Worker processes for batches: as configured, else none on a CPU (the network already
    uses every core) and up to ``MAX_AUTO_WORKERS`` beside a GPU, one core left for the loop."""
    if configured is not None:
        return configured
    if device.type != "cuda":
        return 0
    return max(0, min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) - 1))


def preparation_workers(batch_workers: int) -> int:
    """Processes for generating cohorts and filling the cache before the loop starts: the
    batch workers, or, when batches are built in the loop, every core (up to the cap), since
    nothing else runs yet."""
    return batch_workers or max(1, min(MAX_AUTO_WORKERS, os.cpu_count() or 1))


def _fill_cache(case: Case, spacing: tuple[float, ...], cache_dir: str | None, antialiased: bool) -> None:
    preprocess(case, spacing, cache_dir, antialiased)


def prepare_all(cases: Sequence[Case], spacing: tuple[float, ...], cache_dir: str | os.PathLike | None,
                antialiased: bool, workers: int = 0) -> list[Prepared]:
    """:func:`preprocess` every case; with ``workers`` > 1, cache misses are resampled side
    by side first (``preprocess`` is safe against two processes writing one entry)."""
    cache = str(cache_dir) if cache_dir else None
    missing = [c for c in cases if not (cache_folder(c, spacing, cache, antialiased) / "meta.json").is_file()]
    if workers > 1 and len(missing) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(missing))) as pool:
            n = len(missing)
            for _ in pool.map(_fill_cache, missing, [spacing] * n, [cache] * n, [antialiased] * n):
                pass
    return [preprocess(case, spacing, cache, antialiased) for case in cases]


class _StepBatches(torch.utils.data.Dataset):
    """Item ``i`` is the batch of step ``first + i``."""

    def __init__(self, maker: MakesBatches, first: int, stop: int):
        self.maker, self.first, self.stop = maker, first, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.first)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.maker.batch(self.first + index)


def _one_thread(_worker: int) -> None:
    """A worker builds one batch at a time; torch threads there would fight the main loop."""
    torch.set_num_threads(1)


def step_batches(maker: MakesBatches, first: int, stop: int, workers: int = 0,
                 pin_memory: bool = False, prefetch: int = 4) -> Iterator[dict[str, torch.Tensor]]:
    """The batches of steps ``first … stop - 1`` in order, built by ``workers`` processes
    (``prefetch`` steps ahead each) or, with 0, in this process when asked for."""
    if workers <= 0:
        yield from (maker.batch(step) for step in range(first, stop))
        return
    loader = torch.utils.data.DataLoader(
        _StepBatches(maker, first, stop), batch_size=None, shuffle=False, num_workers=workers,
        pin_memory=pin_memory, prefetch_factor=prefetch, worker_init_fn=_one_thread,
        multiprocessing_context="fork",
    )
    yield from loader

