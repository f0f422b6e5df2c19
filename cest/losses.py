"""The self-supervised objective (paper Sec. 3.3, Eq. 6-9).

- photometric (Eq. 6): distance between the image and its rendering, over the frame's face mask (only where
  the rendered face covers it: elsewhere the renderer has no prediction to compare).
- symmetry, consistency (Eq. 7-8): extra reconstruction terms, not regularisers: frame i is re-rendered with
  its own shape, viewpoint and light but with its horizontally flipped reflectance (symmetry) and with the
  reflectance of a random other frame of its clip (consistency, `cest.pairing`). Each is measured like the
  photometric term, on frame i's image and mask. Per frame: 1 + symmetry + consistency shading passes over
  one rasterization.
- "clip_average" consistency mode (FML-style, App. B.2): the mean reflectance of the clip replaces each
  frame's reflectance in the reconstruction (photometric and symmetry terms); there is no separate
  consistency term.
- landmark: projected model landmarks against the detected 68, mean Euclidean distance / image size.
- regulariser: mean squared shape coefficient in units of the prior's standard deviations (identity as is,
  expression weights divided by `model.expression_sd`, so one prior prices both alike).
- reflectance_smoothness (not in the paper; off by default): a Retinex prior. Between neighbouring texels
  seen in the image, the reflectance's change is penalised in proportion to how little the illuminated
  texture changes there: smooth changes of the texture are shading and belong to the light, sharp ones
  (brows, lips, spots) are reflectance.
total = photometric + symmetry + consistency + w_reflectance_smoothness * reflectance_smoothness
+ w_landmark * landmark + w_regulariser * regulariser; during the landmark warm-up (`geometry_objective`)
only the last two.
"""

import torch

from cest.config import LossConfig
from cest.model import CESTModel, Estimate, Geometry
from cest.pairing import clip_average, partner_indices
from cest.render.uv import flip_uv


def pixel_distance(target: torch.Tensor, rendered: torch.Tensor, distance: str) -> torch.Tensor:
    """(B, 3, H, W) pair -> (B, 1, H, W): "l21" Euclidean norm over RGB, "l1" mean absolute difference."""
    difference = target - rendered
    if distance == "l21":
        # sqrt has an infinite derivative at 0; the epsilon keeps gradients finite on exact matches.
        return (difference.square().sum(1, keepdim=True) + 1e-8).sqrt()
    if distance == "l1":
        return difference.abs().mean(1, keepdim=True)
    raise ValueError(f"unknown photometric distance {distance!r}")


def photometric_loss(target: torch.Tensor, rendered: torch.Tensor, mask: torch.Tensor, distance: str) -> torch.Tensor:
    """Masked mean distance per frame, averaged over the batch (a frame with an empty mask counts 0)."""
    per_pixel = pixel_distance(target, rendered, distance) * mask
    per_frame = per_pixel.sum((1, 2, 3)) / mask.sum((1, 2, 3)).clamp(min=1)
    return per_frame.mean()


def landmark_loss(predicted: torch.Tensor, detected: torch.Tensor, image_size: int) -> torch.Tensor:
    """Mean Euclidean distance between (B, 68, 2) pixel positions, as a fraction of the image size."""
    if predicted.shape != detected.shape:
        raise ValueError(f"landmarks {tuple(predicted.shape)} vs detected {tuple(detected.shape)}")
    return (predicted - detected).norm(dim=-1).mean() / image_size


def shape_regulariser(alpha_identity: torch.Tensor, alpha_expression: torch.Tensor) -> torch.Tensor:
    return torch.cat([alpha_identity, alpha_expression], 1).square().mean()


def reflectance_smoothness(reflectance: torch.Tensor, texture: torch.Tensor, valid: torch.Tensor,
                           edge_scale: float) -> torch.Tensor:
    """Reflectance and illuminated texture (B, 3, U, U), texels seen (B, 1, U, U) -> scalar: the mean over
    horizontally and vertically neighbouring seen texel pairs of |R_i - R_j| (mean over RGB) weighted by
    exp(-|T_i - T_j| / edge_scale). The weights carry no gradient: the prior shapes the reflectance, not the
    geometry that unwraps the texture."""
    texture = texture.detach()
    total, pairs = reflectance.new_zeros(()), reflectance.new_zeros(())
    for dim in (-1, -2):
        def step(x: torch.Tensor) -> torch.Tensor:
            return x.narrow(dim, 1, x.shape[dim] - 1) - x.narrow(dim, 0, x.shape[dim] - 1)

        both = valid.narrow(dim, 1, valid.shape[dim] - 1) * valid.narrow(dim, 0, valid.shape[dim] - 1)
        weight = torch.exp(-step(texture).abs().mean(1, keepdim=True) / edge_scale) * both
        total = total + (step(reflectance).abs().mean(1, keepdim=True) * weight).sum()
        pairs = pairs + both.sum()
    return total / pairs.clamp(min=1)


def reflectance_variants(
    reflectance: torch.Tensor, clip_ids: torch.Tensor, config: LossConfig, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """The reflectance each reconstruction term renders frame i with, by term name.

    "photometric": the frame's own (or, in clip_average mode, its clip's mean); "symmetry": that one flipped;
    "consistency" (pairing mode): a random other frame's of the same clip.
    """
    averaged = config.consistency and config.consistency_mode == "clip_average"
    own = clip_average(reflectance, clip_ids) if averaged else reflectance
    variants = {"photometric": own}
    if config.symmetry:
        variants["symmetry"] = flip_uv(own)
    if config.consistency and not averaged:
        variants["consistency"] = reflectance[partner_indices(clip_ids, generator)]
    return variants


def objective(
    model: CESTModel,
    estimate: Estimate,
    images: torch.Tensor,
    masks: torch.Tensor,
    landmarks: torch.Tensor,
    clip_ids: torch.Tensor,
    config: LossConfig,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Every loss term and their weighted sum "total" (scalars)."""
    mask = masks * estimate.faces.face_mask
    terms = {}
    for name, reflectance in reflectance_variants(estimate.reflectance, clip_ids.to(images.device), config,
                                                  generator).items():
        terms[name] = photometric_loss(images, model.render(estimate, reflectance), mask, config.distance)
    reconstruction = sum(terms.values())
    if config.w_reflectance_smoothness > 0:
        terms["reflectance_smoothness"] = reflectance_smoothness(estimate.reflectance, estimate.texture,
                                                                 estimate.texture_valid, config.smoothness_edge)
        reconstruction = reconstruction + config.w_reflectance_smoothness * terms["reflectance_smoothness"]
    geometry = geometry_objective(model, estimate, landmarks, images.shape[-1], config)
    return terms | geometry | {"total": reconstruction + geometry["total"]}


def geometry_objective(model: CESTModel, geometry: Geometry, landmarks: torch.Tensor, image_size: int,
                       config: LossConfig) -> dict[str, torch.Tensor]:
    """The landmark and regulariser terms and their weighted sum "total": the whole objective of the landmark
    warm-up (`LossConfig.landmark_warmup_steps`), the geometric part of `objective`."""
    terms = {"landmark": landmark_loss(geometry.landmarks, landmarks, image_size),
             "regulariser": shape_regulariser(geometry.alpha_identity, geometry.alpha_expression / model.expression_sd)}
    return terms | {"total": config.w_landmark * terms["landmark"] + config.w_regulariser * terms["regulariser"]}


@torch.no_grad()
def degeneracy_measures(model: CESTModel, estimate: Estimate, masks: torch.Tensor) -> dict[str, float]:
    """How far the estimate is from the degenerate solution of Sec. 3.3 (reflectance copies the image).

    shading_std: standard deviation of the rendered shading (white reflectance) over the masked face,
    averaged over frames; near 0 for the isotropic light of the degenerate solution.
    texture_correlation: Pearson correlation between the reflectance and the illuminated texture over the
    texels seen in the image; near 1 when the reflectance copies the image.
    """
    mask = (masks * estimate.faces.face_mask)[:, 0] > 0
    white = torch.ones_like(estimate.reflectance)
    shading = model.render(estimate, white)[:, 0]
    shading_std = torch.stack([shading[b][mask[b]].std() for b in range(shading.shape[0]) if mask[b].sum() > 1])

    correlations = []
    for b in range(estimate.reflectance.shape[0]):
        seen = estimate.texture_valid[b, 0] > 0
        if seen.sum() < 2:
            continue
        r = estimate.reflectance[b][:, seen].flatten()
        t = estimate.texture[b][:, seen].flatten()
        correlations.append(torch.corrcoef(torch.stack([r, t]))[0, 1])
    return {
        "shading_std": float(shading_std.mean()),
        "texture_correlation": float(torch.stack(correlations).mean()),
    }
