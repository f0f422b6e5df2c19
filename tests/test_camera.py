import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cest.render.camera import canonical_crop, canonical_to_image_affine, project, rotation_matrix


def test_rotation_matrix_matches_scipy():
    rotvecs = torch.randn(64, 3, dtype=torch.float64) * 2
    rotvecs[0] = 0
    rotvecs[1] = torch.tensor([1e-5, -2e-5, 3e-6])
    expected = Rotation.from_rotvec(rotvecs.numpy()).as_matrix()
    assert np.allclose(rotation_matrix(rotvecs).numpy(), expected, atol=1e-12)


def test_rotation_matrix_gradient_is_finite_and_exact_at_zero():
    zero = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_matrix, (zero,))
    rotation_matrix(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()
    # dR/dr at zero is the cross-product generator: d(R)/d(r_z) has -1 at (0, 1) and 1 at (1, 0).
    jac = torch.autograd.functional.jacobian(rotation_matrix, torch.zeros(1, 3, dtype=torch.float64))
    assert jac[0, 0, 1, 0, 2] == -1 and jac[0, 1, 0, 0, 2] == 1


def test_rotation_gradcheck_at_generic_angles():
    rotvecs = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_matrix, (rotvecs,))


def test_project_hand_computed():
    vertices = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.5]]])
    # Scale 0.5, no rotation, shifted right by 0.2 of the half-width: origin lands at x = (0.2+1)*50 = 60.
    viewpoint = torch.tensor([[0.5, 0, 0, 0, 0.2, 0, 0]])
    pixels = project(vertices, viewpoint, image_size=100)
    expected = torch.tensor([[[60.0, 50.0, 0.0], [85.0, 50.0, 0.0], [60.0, 25.0, -12.5]]])
    assert torch.allclose(pixels, expected)


def test_project_rotation_about_vertical_axis():
    # Yaw by +90 degrees about y: model +x goes to -z (away from the camera, larger pixel depth).
    vertices = torch.tensor([[[1.0, 0.0, 0.0]]])
    viewpoint = torch.tensor([[1.0, 0, np.pi / 2, 0, 0, 0, 0]])
    pixels = project(vertices, viewpoint, image_size=10)
    assert torch.allclose(pixels, torch.tensor([[[5.0, 5.0, 5.0]]]), atol=1e-6)


def crop_with_opencv(image: np.ndarray, viewpoint: torch.Tensor, out_size: int, canonical_scale: float):
    """The same crop as an OpenCV inverse-mapped affine warp in OpenCV's pixel convention."""
    size = image.shape[0]
    affine = canonical_to_image_affine(viewpoint[None].double(), canonical_scale)[0].numpy()
    # pixel (centre +0.5) -> NDC for the output, NDC -> pixel for the source; y flips both ways.
    out_to_ndc = np.array([[2 / out_size, 0, -1], [0, -2 / out_size, 1], [0, 0, 1]])
    ndc_to_src = np.array([[size / 2, 0, size / 2], [0, -size / 2, size / 2], [0, 0, 1]])
    to_centres = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    from_centres = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    full = from_centres @ ndc_to_src @ np.vstack([affine, [0, 0, 1]]) @ out_to_ndc @ to_centres
    return cv2.warpAffine(
        image, full[:2], (out_size, out_size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


@pytest.mark.parametrize("roll", [0.0, 0.4, -1.0])
def test_canonical_crop_matches_opencv_warp_affine(roll):
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.random((96, 96, 3)).astype(np.float32), (0, 0), 2)
    # A rotation vector with roll plus some yaw: only the in-plane part is undone.
    rotvec = torch.tensor(Rotation.from_euler("zy", [roll, 0.3]).as_rotvec(), dtype=torch.float32)
    viewpoint = torch.cat([torch.tensor([0.6]), rotvec, torch.tensor([0.1, -0.15, 0.0])])
    ours = canonical_crop(torch.from_numpy(image).permute(2, 0, 1)[None], viewpoint[None], 64, 0.75)
    ours = ours[0].permute(1, 2, 0).numpy()
    reference = crop_with_opencv(image, viewpoint, 64, 0.75)
    # Compare away from the border, where the two differ in how they treat samples straddling the edge.
    assert np.abs(ours[4:-4, 4:-4] - reference[4:-4, 4:-4]).max() < 1e-4


def test_canonical_crop_undoes_scale_translation_and_roll():
    """A point drawn where the viewpoint puts the model origin lands in the crop's centre."""
    size, out = 128, 64
    image = torch.zeros(1, 1, size, size)
    viewpoint = torch.tensor([[0.5, 0.0, 0.0, 0.6, 0.25, 0.25, 0.0]])
    centre = project(torch.zeros(1, 1, 3), viewpoint, size)[0, 0]
    col, row = int(centre[0]), int(centre[1])
    image[0, 0, row - 2 : row + 2, col - 2 : col + 2] = 1
    crop = canonical_crop(image, viewpoint, out)[0, 0]
    peak = (crop == crop.max()).nonzero().float().mean(0)
    assert torch.allclose(peak, torch.tensor([out / 2 - 0.5, out / 2 - 0.5]), atol=1.0)


def test_canonical_crop_is_differentiable_in_the_viewpoint():
    image = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    viewpoint = torch.tensor([[0.7, 0.1, 0.2, 0.3, 0.05, -0.1, 0.0]] * 2, dtype=torch.float64, requires_grad=True)
    crop = canonical_crop(image, viewpoint, 16)
    crop.sum().backward()
    assert torch.isfinite(viewpoint.grad).all() and viewpoint.grad[:, [0, 3, 4, 5]].abs().sum() > 0


def _projected_up_angle(viewpoint: torch.Tensor) -> torch.Tensor:
    """Reference: project the model's chin-to-forehead segment and measure its angle from the image's up."""
    ends = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=viewpoint.dtype).expand(viewpoint.shape[0], -1, -1)
    pixels = project(ends, viewpoint, 100)
    dx, dy = (pixels[:, 1, :2] - pixels[:, 0, :2]).unbind(-1)
    return torch.atan2(-dx, -dy)  # pixel y points down; counter-clockwise from up in NDC


def _crop_angle(viewpoint: torch.Tensor) -> torch.Tensor:
    affine = canonical_to_image_affine(viewpoint, 0.6)
    return torch.atan2(affine[:, 1, 0], affine[:, 0, 0])


@pytest.mark.parametrize("order", ["zy", "xy", "yz", "yx"])  # tilt (roll or nod) before or after the yaw
def test_crop_rotation_follows_the_projected_up_axis_at_every_yaw(order):
    # Issue 10, fix 1: the old x-axis angle gave a 63 degree crop rotation for a 10 degree nod at yaw 85.
    yaws = np.radians(np.arange(-85, 86, 5))
    tilt = np.radians(10)
    angles = [(tilt, yaw) if order[0] != "y" else (yaw, tilt) for yaw in yaws]
    rotvecs = torch.tensor(Rotation.from_euler(order, angles).as_rotvec(), dtype=torch.float64, requires_grad=True)
    viewpoint = torch.cat([torch.full((len(yaws), 1), 0.6, dtype=torch.float64), rotvecs,
                           torch.zeros(len(yaws), 3, dtype=torch.float64)], 1)
    crop_angle = _crop_angle(viewpoint)
    difference = torch.rad2deg(torch.remainder(crop_angle - _projected_up_angle(viewpoint.detach()) + np.pi,
                                               2 * np.pi) - np.pi)
    assert difference.abs().max() < 2
    assert torch.rad2deg(crop_angle).abs().max() < 10.5  # never more than the tilt itself
    (gradient,) = torch.autograd.grad(crop_angle.sum(), rotvecs)
    assert torch.isfinite(gradient).all() and gradient.norm(dim=-1).max() < 3
