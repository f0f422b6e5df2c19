"""Qualitative panels of a reconstruction, as in the paper's Fig. 4 and Fig. 8.

For a batch of estimates, images (B, 3, H, W) in [0, 1]:
  input, overlay (the re-rendered face pasted on the input), reflectance and illuminated texture (UV maps
  resized to H), geometry (the shape under a grey albedo and a frontal light, canonical view), illumination
  (the estimated light on a grey albedo, canonical view), and the face relit under three other lights
  (the estimated reflectance, the estimated view; Fig. 8).
The canonical view is frontal and centred at the model's initial scale.
"""

import numpy as np
import torch
import torch.nn.functional as F

from cest.camera import VIEWPOINT_SIZE
from cest.demo import directional_sh

GREY_ALBEDO = 0.7
# Light directions (model/camera frame: x right, y up, z toward the camera) for relighting: from the
# left, from the right, from above.
RELIGHT_DIRECTIONS = ((-0.8, 0.2, 0.57), (0.8, 0.2, 0.57), (0.0, 0.85, 0.53))
PANELS = ("input", "overlay", "reflectance", "texture", "geometry", "illumination", "relit_left", "relit_right",
          "relit_top")


def overlay(model, images: torch.Tensor, estimate) -> torch.Tensor:
    """The input with the re-rendered face in place of the face: (B, 3, H, W)."""
    return images * (1 - estimate.faces.face_mask) + model.render(estimate)


def canonical_viewpoint(batch_size: int, scale: float, device=None) -> torch.Tensor:
    viewpoint = torch.zeros(batch_size, VIEWPOINT_SIZE, device=device)
    viewpoint[:, 0] = scale
    return viewpoint


@torch.no_grad()
def face_panels(model, images: torch.Tensor, estimate) -> dict[str, torch.Tensor]:
    """Every panel of `PANELS` as (B, 3, H, W) in [0, 1]."""
    batch, size = images.shape[0], images.shape[-1]
    renderer = model.renderer
    grey = torch.full_like(estimate.reflectance, GREY_ALBEDO)
    canonical = renderer.rasterize(estimate.vertices, canonical_viewpoint(batch, model.config.init_scale,
                                                                          images.device))
    frontal_light = directional_sh((0.0, 0.0, 1.0)).to(images.device).expand(batch, -1)
    panels = {
        "input": images,
        "overlay": overlay(model, images, estimate),
        "reflectance": F.interpolate(estimate.reflectance, size=(size, size), mode="bilinear", align_corners=False),
        "texture": F.interpolate(estimate.texture, size=(size, size), mode="bilinear", align_corners=False),
        "geometry": renderer.shade(canonical, grey, frontal_light),
        "illumination": renderer.shade(canonical, grey, estimate.sh),
    }
    for name, direction in zip(PANELS[-3:], RELIGHT_DIRECTIONS):
        light = directional_sh(direction).to(images.device).expand(batch, -1)
        panels[name] = renderer.shade(estimate.faces, estimate.reflectance, light)
    return {name: panels[name].clamp(0, 1) for name in PANELS}


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def panel_grid(panels: dict[str, torch.Tensor], names=PANELS) -> np.ndarray:
    """One row per image, one column per panel: (B * H, len(names) * W, 3) uint8 RGB."""
    rows = [np.concatenate(list(columns), axis=1) for columns in zip(*(to_uint8(panels[n]) for n in names))]
    return np.concatenate(rows, axis=0)

