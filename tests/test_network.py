"""Network variants: shapes, deep-supervision heads, norms, activation, config round trip."""

from __future__ import annotations

import pytest
import torch

from lvt_core.network import build_network, network_config, patch_divisor


@pytest.mark.parametrize(
    ("variant", "norm"),
    [("residual_bn", torch.nn.BatchNorm3d), ("plain_in", torch.nn.InstanceNorm3d),
     ("residual_in", torch.nn.InstanceNorm3d)],
)
def test_variants_build_with_two_auxiliary_heads(variant: str, norm: type) -> None:
    net = build_network({"variant": variant, "filters": [4, 8, 16, 32]})
    assert any(isinstance(m, norm) for m in net.modules())
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in net.modules())
    x = torch.randn(2, 1, 16, 16, 16)
    net.train()
    assert net(x).shape == (2, 3, 3, 16, 16, 16)  # main + 2 auxiliary heads
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 3, 16, 16, 16)


@pytest.mark.parametrize("variant", ["residual_bn", "residual_in"])
def test_residual_variants_have_residual_blocks(variant: str) -> None:
    res = build_network({"variant": variant, "filters": [4, 8, 16, 32]})
    plain = build_network({"variant": "plain_in", "filters": [4, 8, 16, 32]})
    assert sum(p.numel() for p in res.parameters()) > sum(p.numel() for p in plain.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in build_network(
        {"variant": "residual_in", "filters": [4, 8, 16, 32]}).modules())


def test_config_defaults_and_errors() -> None:
    cfg = network_config(filters=[8, 16, 32, 64])
    assert len(cfg["strides"]) == 4 and patch_divisor(cfg) == [8, 8, 8]
    assert patch_divisor({}) == [16, 16, 16]
    with pytest.raises(ValueError, match="unknown network variant"):
        build_network({"variant": "transformer"})
