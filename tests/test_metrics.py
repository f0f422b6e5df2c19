import math

import numpy as np
import pytest
import torch

from cest.assets import fetch
from cest.eval.metrics import (
    INNER, aflw2000_landmarks, aflw2000_summary, ced_curve, landmark_nme, nme_normaliser, photometric_error,
    read_aflw2000_mat, yaw_bin,
)

SAMPLE = ["image00050", "image00081", "image00251", "image00430", "image00475", "image00514", "image00516",
          "image01038"]


def _box_landmarks(width: float, height: float) -> np.ndarray:
    """68 points spread over a width x height box (corners included)."""
    rng = np.random.default_rng(0)
    points = rng.uniform([10, 20], [10 + width, 20 + height], size=(68, 2))
    points[0], points[1] = [10, 20], [10 + width, 20 + height]
    return points


def test_ground_truth_as_prediction_scores_zero_on_the_sample():
    for name in SAMPLE:
        gt = read_aflw2000_mat(fetch(f"aflw2000_sample/{name}.mat")).landmarks
        assert landmark_nme(gt, gt) == 0.0
        assert landmark_nme(gt, gt, INNER) == 0.0


def test_known_shift_gives_known_nme():
    gt = _box_landmarks(100.0, 25.0)  # normaliser sqrt(100 * 25) = 50
    assert nme_normaliser(gt) == pytest.approx(50.0)
    shifted = gt + [3.0, 4.0]  # every point 5 px off
    assert landmark_nme(shifted, gt) == pytest.approx(0.1)
    # Only the jaw moved: the inner-51 score is 0, the 68-point score 17/68 of the shift, same normaliser.
    jaw_only = gt.copy()
    jaw_only[:17] += [3.0, 4.0]
    assert landmark_nme(jaw_only, gt, INNER) == 0.0
    assert landmark_nme(jaw_only, gt) == pytest.approx(0.1 * 17 / 68)


def test_batched_nme_matches_per_image():
    gts = np.stack([_box_landmarks(80, 90), _box_landmarks(120, 60)])
    preds = gts + np.random.default_rng(1).normal(0, 2, gts.shape)
    batched = landmark_nme(preds, gts)
    assert batched == pytest.approx([landmark_nme(p, g) for p, g in zip(preds, gts)])


def test_yaw_bins_follow_the_3ddfa_edges():
    degrees = np.array([0.0, 29.9, 30.0, 30.01, -45.0, 60.0, 60.01, -89.0])
    assert yaw_bin(np.radians(degrees)).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


def test_sample_yaws_land_in_their_bins():
    # Pose_Para[0][1] of the mirror's sample, in degrees: 0.9, 17.9, -54.7, 4.7, 65.6, -5.3, -35.7, 11.1.
    bins = [yaw_bin(read_aflw2000_mat(fetch(f"aflw2000_sample/{name}.mat")).yaw) for name in SAMPLE]
    assert bins == [0, 0, 1, 0, 2, 0, 1, 0]


def test_summary_balanced_is_the_mean_of_bin_means():
    nme = np.array([0.02, 0.04, 0.06, 0.10])
    yaws = np.radians([10.0, 20.0, 45.0, 75.0])
    summary = aflw2000_summary(nme, yaws)
    assert summary["nme_count_0_30"] == 2 and summary["nme_count_30_60"] == 1 and summary["nme_count_60_90"] == 1
    assert summary["nme_pct_0_30"] == pytest.approx(3.0)
    assert summary["nme_pct_balanced"] == pytest.approx((3.0 + 6.0 + 10.0) / 3)
    assert summary["nme_pct_mean"] == pytest.approx(5.5)
    empty_bin = aflw2000_summary(nme[:2], yaws[:2])
    assert empty_bin["nme_pct_60_90"] is None and empty_bin["nme_bins_present"] == 1


def test_pt3d_68_is_read_as_one_based_pixel_coordinates():
    # MATLAB's pixel (1, 1) centre is our (0.5, 0.5): the centre of the first pixel.
    pt3d = np.zeros((3, 68))
    pt3d[:2, 0] = [1.0, 1.0]
    pt3d[:2, 1] = [450.0, 450.0]
    landmarks = aflw2000_landmarks(pt3d)
    assert landmarks[0].tolist() == [0.5, 0.5]
    assert landmarks[1].tolist() == [449.5, 449.5]  # the centre of the last pixel of a 450 px image
    mat = read_aflw2000_mat(fetch("aflw2000_sample/image00050.mat"))
    assert mat.landmarks[0] == pytest.approx([125.84849 - 0.5, 209.62408 - 0.5], abs=1e-4)
    assert math.degrees(mat.yaw) == pytest.approx(0.939, abs=1e-3)


def test_ced_curve_counts_images_at_or_below_each_threshold():
    thresholds, fraction = ced_curve(np.array([0.01, 0.02, 0.02, 0.05]), max_error=0.05, steps=6)
    assert thresholds.tolist() == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04, 0.05])
    assert fraction.tolist() == [0.0, 0.25, 0.75, 0.75, 0.75, 1.0]


def test_photometric_error_inside_the_mask_and_over_the_crop():
    images = torch.zeros(2, 3, 8, 8)
    overlays = images.clone()
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, :, :4, :4] = 1  # a quarter of the crop
    overlays[0, :, :4, :4] = 0.5  # the rendered face is 127.5 levels off everywhere on it
    overlays[0, 0, 6, 6] = 1.0  # a pixel off the face differs too (an overlay must not, but the crop score sees it)
    error = photometric_error(images, overlays, masks)
    assert error["face"][0].item() == pytest.approx(127.5)
    assert error["crop"][0].item() == pytest.approx((127.5 * 16 * 3 + 255) / (64 * 3))
    assert math.isnan(error["face"][1].item()) and error["crop"][1].item() == 0.0
    assert photometric_error(images, images, masks)["crop"].tolist() == [0.0, 0.0]
