"""Predictor: checkpoint round trip, geometry round trip on an oblique anisotropic scan, errors.

A tiny network is trained here on a synthetic "liver" (a bright sphere with a tumor and a
vessel inside) so the predictor runs on a model that actually segments something.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lvt_core.checkpoint import (
    CheckpointError,
    checkpoint_checksum,
    default_meta,
    load_checkpoint,
    save_checkpoint,
)
from lvt_core.inference import InputImageError, Predictor
from lvt_core.labels import multi_hot_targets
from lvt_core.losses import DeepSupervisionLoss, bce_dice_loss
from lvt_core.network import build_network
from lvt_core.transforms import window_array

TOY_SPACING = (2.0, 2.0, 2.0)
TOY_PATCH = (32, 32, 32)
TOY_NETWORK = {"variant": "plain_in", "filters": [8, 16, 32, 64]}


def toy_scan(
    center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    size: tuple[int, int, int] = (48, 48, 40),
    spacing: tuple[float, float, float] = TOY_SPACING,
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
    radius_mm: float = 22.0,
) -> tuple[sitk.Image, sitk.Image]:
    """CT-like volume (HU) and its labels: body, liver sphere, a tumor and a vessel in it."""
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    extent = np.array(size) * np.array(spacing)
    rot = np.array(direction).reshape(3, 3)
    image.SetOrigin(tuple(np.array(center_mm) - rot @ (extent / 2 - np.array(spacing) / 2)))
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    idx = np.stack([xx, yy, zz], -1).reshape(-1, 3) * np.array(spacing)
    world = idx @ rot.T + np.array(image.GetOrigin())
    rel = (world - np.array(center_mm)).reshape(*reversed(size), 3)
    dist = np.linalg.norm(rel, axis=-1)
    hu = np.full(dist.shape, 0.0, np.float32)  # soft tissue body fills the field
    labels = np.zeros(dist.shape, np.uint8)
    liver = dist < radius_mm
    hu[liver], labels[liver] = 120.0, 1
    tumor = np.linalg.norm(rel - np.array([8.0, 0.0, 0.0]), axis=-1) < 7.0
    hu[tumor], labels[tumor] = 20.0, 3
    vessel = (np.linalg.norm(rel[..., :2] - np.array([-8.0, 0.0]), axis=-1) < 3.0) & liver
    hu[vessel], labels[vessel] = 250.0, 2
    noise = np.random.default_rng(0).normal(0, 10, hu.shape).astype(np.float32)
    ct = sitk.GetImageFromArray(hu + noise)
    ct.CopyInformation(image)
    lab = sitk.GetImageFromArray(labels)
    lab.CopyInformation(image)
    return ct, lab


def train_toy_checkpoint(path: Path, steps: int = 40, seed: int = 0) -> Path:
    """Train the tiny network on toy scans for ``steps`` and save a checkpoint."""
    torch.manual_seed(seed)
    meta = default_meta(
        name="toy",
        version="0.0.1-test",
        spacing_mm=list(TOY_SPACING),
        patch_size=list(TOY_PATCH),
        network={**TOY_NETWORK},
        training_data=["tests/toy"],
    )
    net = build_network(meta["network"])
    net.train()
    rng = np.random.default_rng(seed)
    scans = [toy_scan(center_mm=(dx, 0.0, 0.0)) for dx in (-8.0, 0.0, 8.0)]
    inputs, targets = [], []
    for ct, lab in scans:
        arr = window_array(sitk.GetArrayFromImage(ct), **meta["window"])
        inputs.append(arr)
        targets.append(multi_hot_targets(sitk.GetArrayFromImage(lab), ["liver", "vessel", "tumor"]))
    loss_fn = DeepSupervisionLoss(bce_dice_loss, spatial_weight=False)
    optim = torch.optim.Adam(net.parameters(), lr=1e-2)
    weights = torch.ones(2, 3)
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(2):
            k = int(rng.integers(len(scans)))
            z, y, x = (int(rng.integers(0, s - 31)) for s in inputs[k].shape)
            xs.append(inputs[k][None, z : z + 32, y : y + 32, x : x + 32])
            ys.append(targets[k][:, z : z + 32, y : y + 32, x : x + 32])
        loss = loss_fn(net(torch.from_numpy(np.stack(xs))), torch.from_numpy(np.stack(ys)), weights)
        optim.zero_grad()
        loss.backward()
        optim.step()
    return save_checkpoint(path, net.state_dict(), meta)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return train_toy_checkpoint(tmp_path_factory.mktemp("model") / "toy.pt")


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    net = build_network(TOY_NETWORK)
    meta = default_meta(name="rt", network=TOY_NETWORK)
    path = save_checkpoint(tmp_path / "m.pt", net.state_dict(), meta, fp16=True)
    state, loaded = load_checkpoint(path)
    assert loaded["name"] == "rt" and loaded["window"] == meta["window"]
    assert all(v.dtype != torch.float16 for v in state.values())
    build_network(loaded["network"]).load_state_dict(state)
    assert len(checkpoint_checksum(path)) == 64


def test_missing_checkpoint_names_path_and_training(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nowhere\.pt.*lvt train"):
        load_checkpoint(tmp_path / "nowhere.pt")


def test_damaged_checkpoints_say_what_is_wrong(toy_model: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.pt").write_text("hello")
    (tmp_path / "cut.pt").write_bytes(toy_model.read_bytes()[: toy_model.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"empty\.pt: the checkpoint file is empty"):
        load_checkpoint(tmp_path / "empty.pt")
    for name in ("notes.pt", "cut.pt"):
        with pytest.raises(CheckpointError, match=rf"{name}: not a readable LVT checkpoint, not a PyTorch "
                                                  r"file or a damaged one \(\w+(: .+)?\)$"):
            load_checkpoint(tmp_path / name)


def test_predictor_geometry_round_trip_oblique(toy_model: Path) -> None:
    """Labels land on the anatomy in world space for an oblique, anisotropic input grid."""
    angle = np.deg2rad(25.0)
    c, s = np.cos(angle), np.sin(angle)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    center = (30.0, -12.0, 50.0)
    ct, truth = toy_scan(
        center_mm=center, size=(60, 56, 28), spacing=(1.6, 1.7, 3.0), direction=direction
    )
    predictor = Predictor(toy_model, device="cpu")
    assert predictor.tta is False and predictor.name == "toy"
    labels = predictor.predict(ct)
    assert labels.GetSize() == ct.GetSize()
    assert np.allclose(labels.GetDirection(), ct.GetDirection())
    assert np.allclose(labels.GetOrigin(), ct.GetOrigin())
    assert np.allclose(labels.GetSpacing(), ct.GetSpacing())
    assert labels.GetPixelID() == sitk.sitkUInt8
    pred = sitk.GetArrayFromImage(labels) > 0
    ref = sitk.GetArrayFromImage(truth) > 0
    assert 2 * (pred & ref).sum() / (pred.sum() + ref.sum()) > 0.8
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(labels > 0, sitk.sitkUInt8))
    assert np.linalg.norm(np.array(stats.GetCentroid(1)) - np.array(center)) < 4.0
    assert set(predictor.last_timings) >= {"crop_s", "coarse_s", "fine_s", "total_s"}
    assert predictor.last_info["liver_roi_found"]


def test_coarse_pass_limits_fine_pass_to_liver_box(toy_model: Path) -> None:
    """In a field much larger than the liver, the fine pass runs on the liver's box only."""
    ct, truth = toy_scan(size=(80, 80, 60))
    predictor = Predictor(toy_model, device="cpu")
    labels = predictor.predict(ct)
    info = predictor.last_info
    assert info["liver_roi_found"]
    assert np.prod(info["roi_extent_mm"]) < 0.6 * np.prod(info["body_extent_mm"])
    pred, ref = sitk.GetArrayFromImage(labels) > 0, sitk.GetArrayFromImage(truth) > 0
    assert 2 * (pred & ref).sum() / (pred.sum() + ref.sum()) > 0.8


def test_predictor_pickles_and_fast_mode(toy_model: Path) -> None:
    ct, _ = toy_scan()
    clone = pickle.loads(pickle.dumps(Predictor(toy_model, device="cpu", fast=True)))
    assert clone.fast and clone.checksum == checkpoint_checksum(toy_model)
    labels = clone.predict(ct)
    assert "fine_s" not in clone.last_timings
    assert labels.GetSize() == ct.GetSize()


def test_predictor_rejects_nan_volume(toy_model: Path) -> None:
    image = sitk.GetImageFromArray(np.full((8, 8, 8), np.nan, np.float32))
    with pytest.raises(InputImageError, match="NaN"):
        Predictor(toy_model, device="cpu").predict(image)


def _sphere_probabilities(grid: sitk.Image, center_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """Liver-channel probabilities of a ball on ``grid``: a sigmoid of the signed distance."""
    size = grid.GetSize()
    z, y, x = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    points = np.stack([x, y, z], -1).reshape(-1, 3).astype(float)
    spacing, origin = np.array(grid.GetSpacing()), np.array(grid.GetOrigin())
    distance = np.linalg.norm(origin + points * spacing - center_mm, axis=1).reshape(z.shape)
    probs = np.zeros((3, *z.shape), np.float16)
    probs[0] = 1.0 / (1.0 + np.exp((distance - radius_mm) / 1.0))
    return probs


def test_fine_probabilities_are_decoded_at_the_scan_resolution(toy_model: Path) -> None:
    """A ball predicted on the 2 mm model grid comes back on a 0.5 mm scan with a smooth edge:
    closer to the true ball than nearest-neighbour upsampling of the 2 mm labels."""
    predictor = Predictor(toy_model, device="cpu")
    center, radius = np.array([20.3, 19.7, 20.1]), 7.3
    grid = sitk.Image([20, 20, 20], sitk.sitkUInt8)
    grid.SetSpacing((2.0, 2.0, 2.0))
    scan = sitk.Image([80, 80, 80], sitk.sitkInt16)
    scan.SetSpacing((0.5, 0.5, 0.5))
    scan.SetOrigin((-0.75, -0.75, -0.75))  # the same extent as the 2 mm grid
    probs = _sphere_probabilities(grid, center, radius)

    labels = predictor.labels_from(predictor._probabilities_on(probs, grid, scan), scan)
    truth = _sphere_probabilities(scan, center, radius)[0] > 0.5
    coarse_labels = sitk.GetImageFromArray((probs[0] > 0.5).astype(np.uint8))
    coarse_labels.CopyInformation(grid)
    nearest = sitk.GetArrayFromImage(
        sitk.Resample(coarse_labels, scan, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    ) > 0

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        return 2 * float((a & b).sum()) / float(a.sum() + b.sum())

    smooth = dice(sitk.GetArrayFromImage(labels) == 1, truth)
    assert labels.GetSize() == scan.GetSize() and labels.GetPixelID() == sitk.sitkUInt8
    assert smooth > 0.97
    assert smooth > dice(nearest, truth) + 0.02


def test_checkpoint_flag_switches_on_antialiased_resampling(toy_model: Path, tmp_path: Path) -> None:
    """A model trained on low-passed resampling gets it at inference; older checkpoints do not."""
    state, meta = load_checkpoint(toy_model)
    flagged = save_checkpoint(tmp_path / "aa.pt", state, {**meta, "preprocessing": {"antialiased": True}})
    plain, smooth = Predictor(toy_model, device="cpu"), Predictor(flagged, device="cpu")
    assert not plain.antialiased and smooth.antialiased
    ct, _ = toy_scan(spacing=(0.8, 0.8, 1.0), size=(110, 110, 80))
    a = plain.predict_probabilities(ct).values.astype(np.float32)
    b = smooth.predict_probabilities(ct).values.astype(np.float32)
    # low-passing moves the coarse pass's liver, and with it the fine box, or else the probabilities
    assert a.shape != b.shape or np.abs(a - b).max() > 0.01


def test_air_is_never_labelled_liver(tmp_path: Path) -> None:
    """A liver probability that spills past the body wall (out-of-domain scans) stops at air."""
    from lvt_core.inference import ScanProbabilities

    hu = np.full((8, 10, 12), 60, np.int16)
    hu[:, :, 8:] = -1000  # air to the right of the body
    image = sitk.GetImageFromArray(hu)
    probs = np.zeros((3, 8, 10, 12), np.float16)
    probs[0] = 0.9  # "liver" everywhere, air included
    checkpoint = save_checkpoint(tmp_path / "m.pt", build_network(TOY_NETWORK).state_dict(),
                                 default_meta(name="air", network=TOY_NETWORK))
    labels = Predictor(checkpoint, device="cpu").labels_from(
        ScanProbabilities(probs, ((0, 8), (0, 10), (0, 12))), image)
    out = sitk.GetArrayFromImage(labels)
    assert (out[:, :, :8] == 1).all() and (out[:, :, 8:] == 0).all()


def test_extra_windows_average_the_fine_pass_only(toy_model: Path, tmp_path: Path) -> None:
    """Window TTA: the fine pass is the mean of the network's output under each HU window; the
    coarse pass (the liver box) keeps the main window; the windows travel with the checkpoint."""
    ct, _ = toy_scan()
    extra = (40.0, 141.2)
    plain = Predictor(toy_model, device="cpu")
    both = Predictor(toy_model, device="cpu", extra_windows=[extra])
    spacing = plain.spacing
    main_probs, grid = plain._probabilities_at(ct, spacing, overlap=0.5)
    plain.window = extra
    extra_probs, _ = plain._probabilities_at(ct, spacing, overlap=0.5)
    fused, fused_grid = both._probabilities_at(ct, spacing, overlap=0.5)
    assert fused_grid.GetSize() == grid.GetSize()
    expected = (main_probs.astype(np.float32) + extra_probs.astype(np.float32)) / 2
    assert np.abs(main_probs.astype(np.float32) - extra_probs.astype(np.float32)).max() > 0.01
    assert np.abs(fused.astype(np.float32) - expected).max() < 2e-3  # float16 rounding only
    plain.window = both.window
    coarse_plain, _ = plain._probabilities_at(ct, both.coarse_spacing, overlap=0.25, whole=True)
    coarse_both, _ = both._probabilities_at(ct, both.coarse_spacing, overlap=0.25, whole=True)
    assert np.array_equal(coarse_plain, coarse_both)

    state, meta = load_checkpoint(toy_model)
    stored = save_checkpoint(tmp_path / "windows.pt", state, {
        **meta, "inference": {**meta.get("inference", {}), "extra_windows": [{"level": 40.0, "width": 141.2}]}})
    assert Predictor(stored, device="cpu").extra_windows == [extra]
    assert Predictor(stored, device="cpu", extra_windows=[]).extra_windows == []  # the argument wins
    assert pickle.loads(pickle.dumps(both)).extra_windows == [extra]
