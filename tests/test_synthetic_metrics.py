import math

import pytest
import torch

from cest.render.camera import rotation_matrix
from cest.synthetic import euler_to_rotvec
from cest.eval.synthetic_metrics import (
    landmark_nme,
    normal_angle_error_deg,
    photometric_mae,
    reflectance_error,
    rotation_error_deg,
    sh_error,
    shading_std_ratio,
    similarity_align,
    summarise,
    vertex_error_mm,
)


def test_vertex_error_ignores_a_similarity_and_measures_the_rest():
    torch.manual_seed(0)
    truth = torch.randn(2, 50, 3)
    rotation = rotation_matrix(torch.tensor([[0.3, -0.2, 0.5]]))
    moved = 1.7 * truth @ rotation.transpose(1, 2) + torch.tensor([0.5, -1.0, 2.0])
    assert vertex_error_mm(moved, truth, 70.0).max() < 1e-4
    assert torch.allclose(similarity_align(moved, truth), truth, atol=1e-5)
    # A rectangle against a square: the best similarity is the scale 8 / 8.32 (R = I by symmetry), which
    # leaves each corner (1.2 s - 1, 0.8 s - 1) away: 0.27735 units.
    square = torch.tensor([[[1.0, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]]])
    rectangle = square * torch.tensor([1.2, 0.8, 1.0])
    assert vertex_error_mm(rectangle, square, 10.0).item() == pytest.approx(2.7735, rel=1e-4)


def test_landmark_nme_uses_the_ground_truth_box():
    truth = torch.zeros(1, 68, 2)
    truth[0, :, 0] = torch.linspace(10, 50, 68)  # box 40 wide
    truth[0, :, 1] = torch.linspace(20, 110, 68)  # and 90 high: sqrt(w h) = 60
    assert landmark_nme(truth, truth).item() == 0
    assert landmark_nme(truth + torch.tensor([3.0, 4.0]), truth).item() == pytest.approx(5 / 60)


def test_rotation_error_is_the_angle_between_poses():
    rad = lambda d: torch.tensor([math.radians(d)], dtype=torch.float64)  # noqa: E731
    zero = rad(0)
    truth = euler_to_rotvec(rad(30), rad(10), zero)
    assert rotation_error_deg(truth, truth).item() == pytest.approx(0, abs=1e-3)
    assert rotation_error_deg(euler_to_rotvec(rad(40), rad(10), zero), truth).item() == pytest.approx(10, abs=1e-3)


def test_normal_angle_error_on_the_masked_pixels():
    normals = torch.nn.functional.normalize(torch.randn(2, 8, 8, 3), dim=-1)
    # Each normal turned by 10 degrees toward a perpendicular direction.
    perpendicular = torch.nn.functional.normalize(torch.cross(normals, torch.randn(3).expand_as(normals), -1), dim=-1)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1
    rotated = math.cos(math.radians(10)) * normals + math.sin(math.radians(10)) * perpendicular
    rotated[:, :2] = -normals[:, :2]  # wrong by 180 degrees outside the mask: not counted
    assert normal_angle_error_deg(normals, normals, mask).max() < 0.05  # acos near 1 in float32
    assert normal_angle_error_deg(rotated, normals, mask).tolist() == pytest.approx([10, 10], abs=0.05)


def test_reflectance_error_after_the_best_gain_and_sh_error_after_the_same_gain():
    truth = torch.full((1, 3, 4, 4), 0.2)
    truth[..., 2:, :] = 0.4
    valid = torch.ones(4, 4, dtype=torch.bool)
    half = truth * torch.tensor([0.5, 1.0, 2.0])[:, None, None]
    error, gain = reflectance_error(half, truth, valid)
    assert error.item() == pytest.approx(0, abs=1e-6)
    assert gain[0].tolist() == pytest.approx([2.0, 1.0, 0.5])
    # A flat prediction: the gain is the mean 0.3, the error 0.1 on every texel.
    error, gain = reflectance_error(torch.ones_like(truth), truth, valid)
    assert error.item() == pytest.approx(0.1) and gain[0].tolist() == pytest.approx([0.3] * 3)
    # Outside `valid` errors do not count.
    valid[2:] = False
    assert reflectance_error(torch.ones_like(truth), truth, valid)[0].item() == pytest.approx(0, abs=1e-6)

    sh = torch.tensor([[3.5, 0.3, 0.8, -0.2, 0.05, 0.0, -0.1, 0.02, 0.1]])
    # Half the reflectance (gain 2) and twice the light give the same image: no error.
    assert sh_error(2 * sh, sh, torch.full((1, 3), 2.0)).item() == pytest.approx(0, abs=1e-6)
    assert sh_error(1.1 * sh, sh, torch.ones(1, 3)).item() == pytest.approx(0.1, rel=1e-5)


def test_photometric_mae_is_in_0_255_inside_the_mask():
    image = torch.rand(2, 3, 6, 6)
    mask = torch.zeros(2, 1, 6, 6)
    mask[..., :3, :] = 1
    shifted = image.clone()
    shifted[..., :3, :] += 10 / 255
    shifted[..., 3:, :] += 0.5  # outside
    assert photometric_mae(image, image, mask).tolist() == [0, 0]
    assert photometric_mae(image, shifted, mask).tolist() == pytest.approx([10, 10], rel=1e-4)


def test_summary_statistics_and_yaw_bins():
    values = torch.tensor([1.0, 2.0, 3.0, 10.0])
    yaws = torch.tensor([5.0, -45.0, 80.0, -90.0])
    summary = summarise(values, yaws, ced_points=10)
    assert summary["mean"] == 4 and summary["median"] == 2 and summary["count"] == 4
    assert summary["per_yaw_bin"] == {"0-30": 1.0, "30-60": 2.0, "60-90": 6.5}
    assert summary["ced"][0] == [1.0, 0.25] and summary["ced"][-1] == [10.0, 1.0]


def test_shading_std_ratio_compares_the_light_variation_over_each_face():
    true_mask = torch.zeros(1, 1, 4, 4)
    true_mask[..., :2] = 1
    truth = torch.tensor([0.2, 0.6, 0.0, 0.0]).expand(1, 1, 4, 4).clone()  # left half: std 0.2 over its face
    predicted_mask = torch.ones(1, 1, 4, 4)
    predicted = torch.tensor([0.5, 0.6, 0.7, 0.8]).expand(1, 1, 4, 4).clone()  # std sqrt(0.0125) over all
    ratio = shading_std_ratio(predicted, predicted_mask, truth, true_mask)
    assert ratio.item() == pytest.approx(0.0125 ** 0.5 / 0.2)
    assert shading_std_ratio(torch.full((1, 1, 4, 4), 0.7), predicted_mask, truth, true_mask).item() < 1e-5
