"""Windowing (fixed and random), augmentations that keep image and labels aligned, resampling."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from scipy import ndimage

from lvt_core.grids import antialias_sigma_mm, resample_to_spacing
from lvt_core.transforms import (
    DEFAULT_WINDOW,
    LEVEL_RANGE_HU,
    WIDTH_RANGE_HU,
    RandWindowd,
    train_transforms,
    window_array,
)


def test_window_clips_and_scales() -> None:
    hu = np.array([-1000.0, 0.0, 50.0, 100.0, 1000.0])
    assert window_array(hu, level=50, width=100).tolist() == pytest.approx([0, 0, 0.5, 1, 1])
    assert torch.allclose(
        window_array(torch.tensor(hu), 50, 100), torch.tensor([0, 0, 0.5, 1, 1.0])
    )


def test_default_window_is_middle_of_documented_ranges() -> None:
    assert DEFAULT_WINDOW["level"] == pytest.approx(sum(LEVEL_RANGE_HU) / 2, abs=0.01)
    assert DEFAULT_WINDOW["width"] == pytest.approx(sum(WIDTH_RANGE_HU) / 2, abs=0.01)


def test_random_window_probability_and_ranges() -> None:
    t = RandWindowd(keys=["image"])
    t.set_random_state(0)
    changed, levels, widths = 0, [], []
    for _ in range(4000):
        t.randomize()
        level, width = t.window
        changed += (level, width) != t.default
        if level != t.default[0]:
            levels.append(level)
        if width != t.default[1]:
            widths.append(width)
    assert changed / 4000 == pytest.approx(0.3, abs=0.03)  # total probability
    assert LEVEL_RANGE_HU[0] <= min(levels) and max(levels) <= LEVEL_RANGE_HU[1]
    assert WIDTH_RANGE_HU[0] <= min(widths) and max(widths) <= WIDTH_RANGE_HU[1]
    out = t({"image": np.linspace(-500, 500, 11)})["image"]
    assert out.min() >= 0 and out.max() <= 1


def test_train_transforms_keep_image_and_target_aligned() -> None:
    """The target equals the thresholded image after every random spatial transform."""
    hu = np.full((1, 40, 40, 40), -100.0, np.float32)
    hu[0, 10:30, 12:28, 8:24] = 400.0
    target = (hu > 0).astype(np.float32).repeat(3, 0)
    mask = (hu > 0).astype(np.float32)
    t = train_transforms((24, 24, 24), window={"level": 150.0, "width": 100.0}, mask_key="mask")
    t.set_random_state(3)
    for _ in range(12):
        sample = t(
            {
                "image": MetaTensor(hu.copy()),
                "target": MetaTensor(target.copy()),
                "mask": MetaTensor(mask.copy()),
            }
        )
        sample = sample[0] if isinstance(sample, list) else sample
        image, tgt, msk = (np.asarray(sample[k]) for k in ("image", "target", "mask"))
        assert image.shape == (1, 24, 24, 24) and tgt.shape == (3, 24, 24, 24)
        assert image.min() >= 0.0 and image.max() <= 1.0
        bright, label = image[0] > 0.5, tgt[0] > 0.5
        # nearest-neighbour labels vs interpolated image: they may differ only on the
        # one-voxel rim of the object, never inside or far outside it
        rim = ndimage.binary_dilation(label) & ~ndimage.binary_erosion(label)
        assert not (bright != label)[~rim].any()
        assert np.array_equal(tgt[0] > 0.5, msk[0] > 0.5)
        assert set(np.unique(tgt)) <= {0.0, 1.0}


def test_resample_to_spacing_keeps_physical_extent() -> None:
    image = sitk.Image([30, 20, 10], sitk.sitkFloat32)
    image.SetSpacing((1.0, 1.5, 3.0))
    image.SetOrigin((5.0, -3.0, 10.0))
    out = resample_to_spacing(image, (2.0, 3.0, 1.0))
    assert out.GetSize() == (15, 10, 30)
    lo_in = np.array(image.GetOrigin()) - np.array(image.GetSpacing()) / 2
    lo_out = np.array(out.GetOrigin()) - np.array(out.GetSpacing()) / 2
    assert np.allclose(lo_in, lo_out)


def _noisy_fine_ct(seed: int = 0) -> sitk.Image:
    """A 0.75 mm-in-plane, 1.5 mm-slice volume: 100 HU plus white noise of 20 HU."""
    hu = 100.0 + np.random.default_rng(seed).normal(0, 20, (80, 160, 160)).astype(np.float32)
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing((0.75, 0.75, 1.5))
    return image


def test_antialiased_downsampling_averages_noise_and_keeps_the_mean() -> None:
    image = _noisy_fine_ct()
    plain = sitk.GetArrayFromImage(resample_to_spacing(image, (2.0, 2.0, 2.0)))[2:-2, 2:-2, 2:-2]
    smooth_image = resample_to_spacing(image, (2.0, 2.0, 2.0), antialiased=True)
    smooth = sitk.GetArrayFromImage(smooth_image)[2:-2, 2:-2, 2:-2]
    assert smooth_image.GetPixelID() == sitk.sitkFloat32 and smooth.shape == plain.shape
    assert smooth.std() < 0.6 * plain.std()  # linear sampling keeps most of the noise
    assert abs(float(smooth.mean()) - float(plain.mean())) < 1.0
    assert resample_to_spacing(image, (2.0, 2.0, 2.0)).GetPixelID() == sitk.sitkInt16


def test_antialias_sigma_is_half_the_spacing_increase() -> None:
    assert antialias_sigma_mm((0.75, 0.75, 2.5), (2.0, 2.0, 2.0)) == [0.625, 0.625, 0.0]
    # an axis that is refined is not blurred, and upsampling alone changes nothing
    image = _noisy_fine_ct()
    up = resample_to_spacing(image, (0.5, 0.5, 1.0), antialiased=True)
    plain = resample_to_spacing(image, (0.5, 0.5, 1.0))
    assert np.allclose(sitk.GetArrayViewFromImage(up), sitk.GetArrayViewFromImage(plain), atol=1)



@pytest.mark.parametrize(("direction", "expected"), [
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), 2),  # stored foot first, as ITK sorts a DICOM series
    ((1, 0, 0, 0, -1, 0, 0, 0, -1), 6),  # stored head first, anterior down: a LiTS-like NIfTI
    ((-1, 0, 0, 0, 0, 1, 0, 1, 0), None),  # a coronal stack: its slices are not axial
])
def test_a_stored_slice_number_is_found_on_the_viewers_axes(direction: tuple[int, ...], expected: int | None) -> None:
    """A reader's slice index counts the stored volume's slices, and the viewer shows the scan
    turned to LPS: the index is carried over to where ``DICOMOrient`` moves the slice."""
    from lvt_core.grids import lps_axial_index, reorient

    array = np.zeros((9, 5, 6), np.uint8)  # z, y, x
    array[2] = 1  # stored slice 2
    image = sitk.GetImageFromArray(array)
    image.SetDirection([float(v) for v in direction])
    assert lps_axial_index(image.GetDirection(), 9, 2) == expected
    assert lps_axial_index(image.GetDirection(), 9, 9) is None  # off the stack
    shown = sitk.GetArrayFromImage(reorient(image))
    marked = np.nonzero(shown.any(axis=(1, 2)))[0]
    assert marked.tolist() == ([expected] if expected is not None else list(range(len(shown))))
