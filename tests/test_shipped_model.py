"""The shipped default model: size limit, metadata, and a real segmentation of a phantom."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from app.settings import SHIPPED_MODEL
from lvt_core.checkpoint import load_checkpoint
from lvt_core.inference import Predictor
from lvt_core.metrics import dice
from lvt_core.precision import cpu_has_bf16

pytestmark = pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="no shipped model checkpoint")


def test_checkpoint_is_small_and_describes_itself() -> None:
    assert SHIPPED_MODEL.stat().st_size <= 25 * 1024 * 1024
    _, meta = load_checkpoint(SHIPPED_MODEL)
    for key in ("label_space", "channels", "spacing_mm", "window", "patch_size", "network",
                "training_data", "version"):
        assert key in meta, key
    assert list(meta["channels"]) == ["liver", "vessel", "tumor"]


@pytest.fixture(scope="module")
def held_out_scan():
    from lvt_core.phantom import phantom_scan

    return phantom_scan(seed=4242, size="demo", phase="portal")  # a seed never used in training


def test_segments_the_liver_of_a_held_out_phantom(held_out_scan) -> None:
    scan = held_out_scan
    labels = Predictor(SHIPPED_MODEL, device="cpu").predict(scan.image)
    assert labels.GetSize() == scan.image.GetSize()
    assert labels.GetOrigin() == pytest.approx(scan.image.GetOrigin())
    pred = sitk.GetArrayViewFromImage(labels)
    truth = sitk.GetArrayViewFromImage(scan.labels)
    liver_dsc = dice(pred > 0, truth > 0)
    assert liver_dsc > 0.9, liver_dsc  # 0.98 with the 0.4.0 and 0.5.0 checkpoints
    assert set(np.unique(pred)) <= {0, 1, 2, 3}


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16")
def test_bf16_inference_agrees_with_float32(held_out_scan) -> None:
    fp32 = sitk.GetArrayFromImage(Predictor(SHIPPED_MODEL, device="cpu").predict(held_out_scan.image))
    predictor = Predictor(SHIPPED_MODEL, device="cpu", precision="bf16")
    assert predictor.precision == "bf16"
    bf16 = sitk.GetArrayFromImage(predictor.predict(held_out_scan.image))
    for value, least in ((1, 0.98), (2, 0.9)):  # liver, vessel
        assert dice(bf16 == value, fp32 == value) > least, value
    assert (bf16 > 0).sum() == pytest.approx((fp32 > 0).sum(), rel=0.02)


def test_unknown_precision_names_the_choices() -> None:
    with pytest.raises(ValueError, match="expected one of auto, fp32, bf16"):
        Predictor(SHIPPED_MODEL, device="cpu", precision="fp64")
