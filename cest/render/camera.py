"""Viewpoint: rotation vectors, weak perspective projection and the canonical-view crop (Appendix A.1-A.2).

A viewpoint is 7 numbers per image: scale s, rotation vector r (axis times angle) and translation t.
Model space has x right, y up and z toward the camera. Weak perspective maps a model point X to normalised
device coordinates p = s R(r) X + t, where [-1, 1] spans the (square) image, x right and y up; pixel
coordinates then have x right, y down, pixel centres at +0.5 and smaller z closer to the camera.
"""

import torch
import torch.nn.functional as F

VIEWPOINT_SIZE = 7

# Below this squared angle the Taylor series replaces sin/cos ratios, which are 0/0 at zero.
_SMALL_ANGLE_SQ = 1e-6


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)], -2
    )


def rotation_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula R = I + a K + b K^2 with K = [r]x, a = sin(t)/t, b = (1 - cos t)/t^2.

    Both ratios use their Taylor series near t = 0, so the value and the gradient are exact and finite
    at zero angle (where sqrt would otherwise have an infinite derivative).
    """
    theta_sq = (rotvec * rotvec).sum(-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    safe_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = safe_sq.sqrt()
    a = torch.where(small, 1 - theta_sq / 6 + theta_sq**2 / 120, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta_sq / 24 + theta_sq**2 / 720, (1 - torch.cos(theta)) / safe_sq)
    k = _skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(k)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def split_viewpoint(viewpoint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 7) -> scale (B,), rotation vector (B, 3), translation (B, 3)."""
    if viewpoint.shape[-1] != VIEWPOINT_SIZE:
        raise ValueError(f"a viewpoint has {VIEWPOINT_SIZE} numbers (s, r, t), got shape {tuple(viewpoint.shape)}")
    return viewpoint[..., 0], viewpoint[..., 1:4], viewpoint[..., 4:7]


def transform_to_camera(vertices: torch.Tensor, viewpoint: torch.Tensor) -> torch.Tensor:
    """Model space (B, N, 3) -> normalised device coordinates s R X + t (B, N, 3)."""
    scale, rotvec, translation = split_viewpoint(viewpoint)
    rotated = vertices @ rotation_matrix(rotvec).transpose(-1, -2)
    return scale[:, None, None] * rotated + translation[:, None, :]


def ndc_to_pixels(points: torch.Tensor, image_size: int) -> torch.Tensor:
    """NDC (x right, y up, z toward camera) -> pixels (x right, y down, smaller z closer)."""
    half = image_size / 2
    x, y, z = points.unbind(-1)
    return torch.stack([(x + 1) * half, (1 - y) * half, -z * half], -1)


def project(vertices: torch.Tensor, viewpoint: torch.Tensor, image_size: int) -> torch.Tensor:
    """Weak perspective projection of model-space vertices (B, N, 3) to pixel coordinates (B, N, 3)."""
    return ndc_to_pixels(transform_to_camera(vertices, viewpoint), image_size)


def in_plane_angle(rotvec: torch.Tensor) -> torch.Tensor:
    """Roll: the image-plane angle of the projected model up (y) axis from the image's up, counter-clockwise.

    The up axis (chin to forehead) stays long in the image for every yaw and for pitch within +-60 degrees,
    so the angle and its gradient are stable there. The projected x axis (ear to ear), used before, shrinks
    to a point as the face turns to profile: a 10 degree nod at yaw 85 gave a 63 degree crop rotation.
    Undefined only when the face looks straight up or down (pitch +-90), where the up axis projects to 0.
    """
    rot = rotation_matrix(rotvec)
    # Column 1 of R is the rotated up axis (R01, R11, R21); its image-plane angle from vertical.
    return torch.atan2(-rot[..., 0, 1], rot[..., 1, 1])


def canonical_to_image_affine(viewpoint: torch.Tensor, canonical_scale: float) -> torch.Tensor:
    """(B, 2, 3) affine map from canonical-view NDC to image NDC.

    The canonical view shows the face upright (no roll), centred and at scale `canonical_scale`; the
    crop therefore undoes the viewpoint's in-plane rotation, scale and translation (Appendix A.1).
    """
    scale, rotvec, translation = split_viewpoint(viewpoint)
    angle = in_plane_angle(rotvec)
    ratio = scale / canonical_scale
    cos, sin = ratio * torch.cos(angle), ratio * torch.sin(angle)
    row_x = torch.stack([cos, -sin, translation[:, 0]], -1)
    row_y = torch.stack([sin, cos, translation[:, 1]], -1)
    return torch.stack([row_x, row_y], -2)


def canonical_crop(
    image: torch.Tensor, viewpoint: torch.Tensor, out_size: int, canonical_scale: float = 0.75
) -> torch.Tensor:
    """Crop (B, C, H, W) images to the canonical view, (B, C, out_size, out_size), by bilinear sampling.

    Differentiable with respect to the image and the viewpoint. Outside the image the crop is zero.
    """
    affine = canonical_to_image_affine(viewpoint, canonical_scale)
    # grid_sample's y axis points down while NDC's points up: conjugate the map with diag(1, -1).
    flip = torch.tensor([1.0, -1.0], dtype=affine.dtype, device=affine.device)
    grid_affine = affine * flip[None, :, None] * torch.cat([flip, flip.new_ones(1)])[None, None, :]
    grid = F.affine_grid(grid_affine, [image.shape[0], image.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
