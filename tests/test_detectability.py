"""Lesion detectability: contrast against the noise of a liver region of the lesion's volume."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from lvt_core.detectability import ROSE_THRESHOLD, LiverNoise


def noisy_liver(sd: float, smooth: float = 0.0, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, (72, 72, 72)).astype(np.float32)
    if smooth:
        noise = gaussian_filter(noise, smooth)
    noise *= sd / noise.std()
    liver = np.zeros(noise.shape, bool)
    liver[6:66, 6:66, 6:66] = True
    return (100.0 + noise).astype(np.float32), liver


def test_white_noise_spread_falls_with_the_square_root_of_the_volume() -> None:
    hu, liver = noisy_liver(20.0)
    noise = LiverNoise(hu, liver)
    assert noise.median == pytest.approx(100.0, abs=0.5)
    assert noise.spread(1) == pytest.approx(20.0, rel=0.1)
    assert noise.spread(125) == pytest.approx(20.0 / np.sqrt(125), rel=0.15)
    assert noise.detectability(-10.0, 125) == pytest.approx(10.0 / (20.0 / np.sqrt(125)), rel=0.15)


def test_correlated_noise_hides_a_lesion_that_white_noise_of_the_same_sd_would_not() -> None:
    white = LiverNoise(*noisy_liver(20.0))
    blotchy = LiverNoise(*noisy_liver(20.0, smooth=1.5))
    assert blotchy.spread(343) > 3 * white.spread(343)
    assert white.detectability(8.0, 343) > ROSE_THRESHOLD > blotchy.detectability(8.0, 343)


def test_no_liver_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no liver"):
        LiverNoise(np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), bool))


def test_lesion_findings_report_detectability() -> None:
    from training.evaluate_model import lesion_findings, visible_large_lesions

    hu, liver = noisy_liver(20.0)
    ref = liver.astype(np.uint8)
    zz, yy, xx = np.mgrid[:72, :72, :72]
    faint = (zz - 24) ** 2 + (yy - 24) ** 2 + (xx - 24) ** 2 <= 36  # 12 mm at 1 mm, -3 HU
    clear = (zz - 48) ** 2 + (yy - 48) ** 2 + (xx - 48) ** 2 <= 36  # 12 mm, -30 HU
    ref[faint | clear] = 3
    hu[faint] -= 3.0
    hu[clear] -= 30.0
    rows = lesion_findings(ref, ref, hu, (1.0, 1.0, 1.0))
    by_contrast = sorted(rows, key=lambda r: r["contrast_hu"])
    assert by_contrast[0]["detectability"] > 20 > ROSE_THRESHOLD > by_contrast[1]["detectability"]
    assert [r["contrast_hu"] for r in visible_large_lesions(rows)] == [by_contrast[0]["contrast_hu"]]
