"""Target encodings (ML, MLx, MC), class weights, MC voxel masks and exclusive decoding."""

from __future__ import annotations

import numpy as np
import pytest

from lvt_core.labels import (
    DATASET_ANNOTATIONS,
    class_index_map,
    class_weights,
    decode_exclusive,
    mc_voxel_mask,
    multi_hot_targets,
    one_hot_exclusive_targets,
)

# one row of voxels: background, liver, vessel, tumor, liver
ROW = np.array([0, 1, 2, 3, 1], dtype=np.uint8)
ALL = ("liver", "vessel", "tumor")


def test_multi_hot_applies_the_liver_hierarchy() -> None:
    y = multi_hot_targets(ROW, ALL)
    assert y.shape == (3, 5) and y.dtype == np.uint8
    assert y[0].tolist() == [0, 1, 1, 1, 1]  # y_L ← y_L ∨ y_V ∨ y_T
    assert y[1].tolist() == [0, 0, 1, 0, 0]
    assert y[2].tolist() == [0, 0, 0, 1, 0]


def test_multi_hot_partial_source_zeroes_unannotated_channels() -> None:
    lits_like = np.array([0, 1, 1, 3, 1], dtype=np.uint8)  # liver + tumor, no vessel labels
    y = multi_hot_targets(lits_like, DATASET_ANNOTATIONS["LiTS"])
    assert y[0].tolist() == [0, 1, 1, 1, 1] and y[1].sum() == 0 and y[2].tolist() == [0, 0, 0, 1, 0]
    assert class_weights(DATASET_ANNOTATIONS["LiTS"]).tolist() == [1.0, 0.0, 1.0]


def test_one_hot_exclusive_has_no_hierarchy() -> None:
    y = one_hot_exclusive_targets(ROW, ALL)
    assert y.sum(axis=0).tolist() == [0, 1, 1, 1, 1]  # at most one class per voxel
    assert y[0].tolist() == [0, 1, 0, 0, 1]


@pytest.mark.parametrize(
    ("dataset", "weights"),
    [
        ("FS LVT", [1, 1, 1]),
        ("PS L", [1, 0, 0]),
        ("PS V", [0, 1, 0]),
        ("PS T", [0, 0, 1]),
        ("HepaticVessel", [0, 1, 1]),
        ("HV Liver", [1, 0, 0]),
        ("IRCAD", [1, 1, 1]),
    ],
)
def test_class_weights_match_table_a1(dataset: str, weights: list[int]) -> None:
    assert class_weights(DATASET_ANNOTATIONS[dataset]).tolist() == weights


def test_mc_index_map_and_voxel_mask() -> None:
    assert class_index_map(ROW, ALL).tolist() == [0, 1, 2, 3, 1]
    assert mc_voxel_mask(ROW, ALL).tolist() == [1, 1, 1, 1, 1]  # fully labelled: everywhere
    vessel_only = np.array([0, 0, 2, 0, 0], dtype=np.uint8)
    assert mc_voxel_mask(vessel_only, ["vessel"]).tolist() == [0, 0, 1, 0, 0]
    liver_tumor = np.array([0, 1, 1, 3, 0], dtype=np.uint8)
    assert mc_voxel_mask(liver_tumor, ["liver", "tumor"]).tolist() == [0, 1, 1, 1, 0]
    # a value the source does not annotate never becomes a class
    assert class_index_map(ROW, ["liver"]).tolist() == [0, 1, 0, 0, 1]


def test_unknown_class_and_bad_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown class"):
        class_weights(["spleen"])
    with pytest.raises(ValueError, match=r"0\.\.3"):
        multi_hot_targets(np.array([0, 5]), ALL)


def test_decode_priority_tumor_vessel_liver_background() -> None:
    probs = np.array(
        [  # voxels: nothing, liver, liver+vessel, liver+vessel+tumor, vessel+tumor, at threshold
            [0.1, 0.9, 0.9, 0.9, 0.2, 0.5],
            [0.1, 0.2, 0.8, 0.8, 0.7, 0.5],
            [0.1, 0.2, 0.3, 0.6, 0.9, 0.5],
        ],
        dtype=np.float16,
    )
    assert decode_exclusive(probs).tolist() == [0, 1, 2, 3, 3, 0]
    assert decode_exclusive(probs).dtype == np.uint8


def test_hierarchy_round_trip_through_decoding() -> None:
    labels = np.random.default_rng(1).integers(0, 4, size=(6, 7, 8)).astype(np.uint8)
    assert np.array_equal(
        decode_exclusive(multi_hot_targets(labels, ALL).astype(np.float32)), labels
    )


def test_decode_exclusive_takes_one_threshold_per_channel() -> None:
    # voxel: liver 0.9 / vessel 0.1 / tumor 0.35 -> liver at 0.5, tumor once tumor's is 0.3
    probs = np.array([[0.9], [0.1], [0.35]], dtype=np.float32)
    assert decode_exclusive(probs).tolist() == [1]
    assert decode_exclusive(probs, threshold=[0.5, 0.5, 0.3]).tolist() == [3]
    with pytest.raises(ValueError, match="3 thresholds"):
        decode_exclusive(probs, threshold=[0.5, 0.5])
