"""Ground-truth metrics of the synthetic benchmark (issue 10): one number per image, then summaries.

Per image (B,):
- `vertex_error_mm`: mean per-vertex 3D distance in millimetres after the similarity (scale, rotation,
  translation) that best aligns the prediction to the ground truth with known correspondence (Umeyama);
  the shape, not its pose or size, is scored.
- `landmark_nme`: mean 2D distance of the 68 landmarks over sqrt(w * h) of the ground-truth landmarks' box.
- `rotation_error_deg`: geodesic angle between predicted and true head rotations.
- `normal_angle_error_deg`: mean angle between predicted and true camera-space normals over the pixels
  both faces cover.
- `reflectance_error`: mean absolute error (reflectance units, [0, 1]) over the UV layout after the best
  per-channel gain (least squares), since reflectance and light share a scale; returns the gain too.
- `sh_error`: relative error of the irradiance coefficients (SH times the Lambertian factors) after dividing
  the prediction by the same gain (mean over channels: the light is grey).
- `shading_std_ratio`: the standard deviation of the estimated shading over the face over the true one's
  (1: as much light variation as the truth, 0: the flat light of the degenerate solution).
- `photometric_mae`: mean absolute RGB difference (0-255) between image and rendering inside a mask.
`summarise` turns per-image values into mean, median, CED and means per yaw bin.
"""

import torch

from cest.render.camera import rotation_matrix
from cest.render.lighting import LAMBERTIAN_FACTORS

YAW_BINS = ((0, 30), (30, 60), (60, 90.01))  # |yaw| degrees; the last bin includes 90


def similarity_align(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """source (B, N, 3) moved by the least-squares similarity onto target (B, N, 3) (Umeyama 1991)."""
    mu_s, mu_t = source.mean(1, keepdim=True), target.mean(1, keepdim=True)
    s, t = source - mu_s, target - mu_t
    covariance = t.transpose(1, 2) @ s / source.shape[1]
    u, sigma, vh = torch.linalg.svd(covariance)
    sign = torch.ones_like(sigma)
    sign[:, -1] = torch.sign(torch.linalg.det(u @ vh))
    rotation = u @ torch.diag_embed(sign) @ vh
    scale = (sigma * sign).sum(-1) / s.square().sum((1, 2)) * source.shape[1]
    return scale[:, None, None] * s @ rotation.transpose(1, 2) + mu_t


def vertex_error_mm(predicted: torch.Tensor, truth: torch.Tensor, unit_mm: float) -> torch.Tensor:
    aligned = similarity_align(predicted.double(), truth.double())
    return ((aligned - truth.double()).norm(dim=-1).mean(-1) * unit_mm).float()


def landmark_nme(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    size = truth.amax(1) - truth.amin(1)
    return (predicted - truth).norm(dim=-1).mean(-1) / (size[:, 0] * size[:, 1]).sqrt()


def rotation_error_deg(predicted_rotvec: torch.Tensor, true_rotvec: torch.Tensor) -> torch.Tensor:
    relative = rotation_matrix(predicted_rotvec.double()) @ rotation_matrix(true_rotvec.double()).transpose(1, 2)
    cosine = ((relative.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cosine)).float()


def normal_angle_error_deg(predicted: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit normals (B, H, W, 3) pair and mask (B, 1, H, W) -> mean angle (B,) (0 where the mask is empty)."""
    cosine = (predicted * truth).sum(-1).clamp(-1, 1)
    angle = torch.rad2deg(torch.acos(cosine)) * mask[:, 0]
    return angle.sum((1, 2)) / mask[:, 0].sum((1, 2)).clamp(min=1)


def reflectance_error(predicted: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """UV maps (B, 3, U, U), valid (U, U) or (B, 1, U, U) -> (MAE (B,), per-channel gain (B, 3))."""
    valid = valid.expand(predicted.shape[0], 1, *predicted.shape[-2:]).to(predicted.dtype)
    gain = (predicted * truth * valid).sum((2, 3)) / (predicted.square() * valid).sum((2, 3)).clamp(min=1e-12)
    error = ((gain[..., None, None] * predicted - truth).abs() * valid).sum((1, 2, 3))
    return error / (3 * valid.sum((1, 2, 3))).clamp(min=1), gain


def sh_error(predicted: torch.Tensor, truth: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """SH (B, 9) pair and reflectance gain (B, 3) -> relative irradiance-coefficient error (B,)."""
    factors = predicted.new_tensor(LAMBERTIAN_FACTORS)
    difference = (predicted / gain.mean(1, keepdim=True) - truth) * factors
    return difference.norm(dim=-1) / (truth * factors).norm(dim=-1)


def shading_std_ratio(predicted: torch.Tensor, predicted_mask: torch.Tensor, truth: torch.Tensor,
                      true_mask: torch.Tensor) -> torch.Tensor:
    """Shadings (B, 1 or 3, H, W) of white faces and their masks -> std over the predicted face / std over the
    true face (B,): 1 when the estimated light varies over the face as much as the true light, 0 for the flat
    (isotropic) light of the degenerate solution (Sec. 3.3)."""
    def std(shading, mask):
        weight = mask[:, 0]
        count = weight.sum((1, 2)).clamp(min=1)
        values = shading[:, 0]
        mean = (values * weight).sum((1, 2)) / count
        return (((values - mean[:, None, None]) ** 2 * weight).sum((1, 2)) / count).sqrt()

    return std(predicted, predicted_mask) / std(truth, true_mask).clamp(min=1e-6)


def photometric_mae(image: torch.Tensor, rendered: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1], mask (B, 1, H, W) -> mean absolute difference in 0-255 units (B,)."""
    per_pixel = (image - rendered).abs().mean(1, keepdim=True) * mask
    return per_pixel.sum((1, 2, 3)) / mask.sum((1, 2, 3)).clamp(min=1) * 255


def summarise(values: torch.Tensor, yaw_deg: torch.Tensor, ced_points: int = 20) -> dict:
    """Per-image values (N,) and true yaws (N,) -> mean, median, CED (threshold, fraction <=) and yaw-bin means."""
    values = values.double()
    top = float(values.max()) if values.numel() else 0.0
    thresholds = torch.linspace(0, top, ced_points + 1)[1:].double()
    ced = [[float(t), float((values <= t).double().mean())] for t in thresholds]
    bins = {}
    for low, high in YAW_BINS:
        inside = (yaw_deg.abs() >= low) & (yaw_deg.abs() < high)
        bins[f"{low}-{min(high, 90):g}"] = float(values[inside].mean()) if inside.any() else None
    return {"mean": float(values.mean()), "median": float(values.median()), "count": int(values.numel()),
            "ced": ced, "per_yaw_bin": bins}
