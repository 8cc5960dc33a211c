"""Mixed precision for training and inference: fp16 on CUDA, bfloat16 on CPUs that have it.

CPUs with AMX or AVX-512 BF16 run a training step about twice as fast in bfloat16
with channels-last memory as in float32 (``bench/precision.py``); on CPUs without native
bfloat16 it is emulated and slower, so it is never chosen there. Training asks for it
explicitly. Inference takes it by default only for a checkpoint qualified for it
(``inference.cpu_precision: bf16``, written by ``lvt qualify-bf16`` after the model scored
the same in both precisions on validation scans): its decisions were calibrated in one
arithmetic, and a barely trained model's labels can flip at a threshold in the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal, get_args

import torch

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def cpu_has_bf16() -> bool:
    """Whether oneDNN can run bfloat16 natively on this CPU (AVX-512 BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """The precision a run actually uses: ``fp16`` (CUDA AMP), ``bf16`` or ``fp32``.

    ``auto`` keeps the long-standing behaviour (AMP on CUDA, float32 on CPU); ``bf16`` on a
    CPU without native support raises, since emulated bfloat16 is slower than float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        return "fp32" if precision == "fp32" else "fp16"
    if precision == "bf16":
        if not cpu_has_bf16():
            raise ValueError("precision bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX); "
                             "use precision: fp32")
        return "bf16"
    return "fp32"


def resolve_inference_precision(precision: Precision, device: torch.device,
                                model_cpu_precision: str | None = None) -> str:
    """The precision inference uses: like :func:`resolve_precision`, except that ``auto`` on a
    CPU with native bfloat16 runs a checkpoint qualified for it (``model_cpu_precision`` is
    ``"bf16"``) in bfloat16."""
    if precision == "auto" and device.type == "cpu" and model_cpu_precision == "bf16" and cpu_has_bf16():
        return "bf16"
    return resolve_precision(precision, device)


def channels_last(precision: str, device: torch.device) -> bool:
    """Channels-last 3-D memory pays off with bfloat16 oneDNN kernels on the CPU."""
    return precision == "bf16" and device.type == "cpu"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """The forward pass's autocast region for a resolved ``precision``."""
    if precision == "fp16":
        with torch.autocast("cuda", dtype=torch.float16):
            yield
    elif precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
