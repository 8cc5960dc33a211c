"""The LVT segmentation network: a 3D U-Net (MONAI DynUNet) with two deep-supervision heads.

Two variants from the paper (A.2): ``residual_bn`` (residual encoder, batch norm; the
ablations) and ``plain_in`` (plain encoder, instance norm; the nnU-Net-like final model), plus
``residual_in`` (residual encoder, instance norm) for ablations with tiny batches.
Both use LeakyReLU. The configuration travels in the checkpoint (``meta["network"]``).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import DynUNet

VARIANTS: dict[str, dict[str, Any]] = {
    "residual_bn": {"res_block": True, "norm_name": "batch"},
    "plain_in": {"res_block": False, "norm_name": ("instance", {"affine": True})},
    # The ablation's residual encoder with instance norm: batch norm over 2 patches per step
    # (all a CPU affords) gives running statistics that do not hold at inference.
    "residual_in": {"res_block": True, "norm_name": ("instance", {"affine": True})},
}

DEFAULT_NETWORK: dict[str, Any] = {
    "variant": "plain_in",
    "filters": [32, 64, 128, 256, 320],
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
    "kernel_size": [[3, 3, 3]] * 5,
    "in_channels": 1,
    "out_channels": 3,
    "deep_supervision": True,
    "deep_supr_num": 2,
    "negative_slope": 0.01,
}


def network_config(**overrides: Any) -> dict[str, Any]:
    """A complete network config: the defaults with ``overrides`` applied (for checkpoints)."""
    config = {**DEFAULT_NETWORK, **overrides}
    n = len(config["filters"])
    if len(config["strides"]) != n:
        config["strides"] = [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    if len(config["kernel_size"]) != n:
        config["kernel_size"] = [[3, 3, 3]] * n
    return config


def build_network(config: dict[str, Any]) -> torch.nn.Module:
    """Build the network described by ``config`` (missing keys take the defaults).

    In ``train()`` mode it returns ``[B, 1 + deep_supr_num, C, ...]`` (main output first,
    auxiliary heads upsampled to full size); in ``eval()`` mode only the main output.
    """
    cfg = network_config(**config)
    variant = cfg["variant"]
    if variant not in VARIANTS:
        raise ValueError(f"unknown network variant {variant!r}; expected one of {list(VARIANTS)}")
    filters = list(cfg["filters"])
    strides = [list(s) for s in cfg["strides"]]
    return DynUNet(
        spatial_dims=3,
        in_channels=int(cfg["in_channels"]),
        out_channels=int(cfg["out_channels"]),
        kernel_size=[list(k) for k in cfg["kernel_size"]],
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        act_name=("leakyrelu", {"inplace": True, "negative_slope": float(cfg["negative_slope"])}),
        deep_supervision=bool(cfg["deep_supervision"]),
        deep_supr_num=int(cfg["deep_supr_num"]),
        **VARIANTS[variant],
    )


def patch_divisor(config: dict[str, Any]) -> list[int]:
    """Per-axis factor every input size must be a multiple of (product of the strides)."""
    cfg = network_config(**config)
    divisor = [1, 1, 1]
    for stride in cfg["strides"]:
        divisor = [d * int(s) for d, s in zip(divisor, stride, strict=True)]
    return divisor
