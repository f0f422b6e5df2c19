"""Pictures of an estimate: the panels the paper shows (Fig. 4, Fig. 8) as image rows for logs and reports.

`face_panels(model, images, estimate)` gives named (B, 3, H, W) images in [0, 1]:
  input         the image
  overlay       the rendered face pasted over the image
  reflectance   the UV reflectance map R, resized to the image size
  texture       the UV illuminated texture T unwrapped from the image (texels it does not show black)
  shading       the face rendered with white reflectance: the estimated light alone on the geometry
  normals       camera-space normals as colours, (n + 1) / 2, black off the face
  geometry      the shape under a grey albedo and a frontal light, canonical (frontal, centred) view
  illumination  the estimated light on a grey albedo, canonical view
  relit_left, relit_right, relit_top   the estimated reflectance and view under three other lights (Fig. 8)
`panel_grid` lays some of them out as one uint8 (rows*H, cols*W, 3) picture: a row per frame, a column per
panel. TRAINING_PANELS is what the training job logs, EVALUATION_PANELS what evaluation and reconstruct show.
"""

import numpy as np
import torch
import torch.nn.functional as F

from cest.render.camera import VIEWPOINT_SIZE
from cest.render.lighting import directional_sh

GREY_ALBEDO = 0.7
# Light directions (model/camera frame: x right, y up, z toward the camera) for relighting: from the left,
# from the right, from above.
RELIGHT_DIRECTIONS = {"relit_left": (-0.8, 0.2, 0.57), "relit_right": (0.8, 0.2, 0.57), "relit_top": (0.0, 0.85, 0.53)}
TRAINING_PANELS = ("input", "overlay", "reflectance", "texture", "shading", "normals")
EVALUATION_PANELS = ("input", "overlay", "reflectance", "texture", "geometry", "illumination", *RELIGHT_DIRECTIONS)


def overlay(model, images: torch.Tensor, estimate) -> torch.Tensor:
    """The input with the re-rendered face in place of the face: (B, 3, H, W)."""
    return images * (1 - estimate.faces.face_mask) + model.render(estimate)


def canonical_viewpoint(batch_size: int, scale: float, device=None) -> torch.Tensor:
    viewpoint = torch.zeros(batch_size, VIEWPOINT_SIZE, device=device)
    viewpoint[:, 0] = scale
    return viewpoint


def _to_image_size(uv_map: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(uv_map, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def face_panels(model, images: torch.Tensor, estimate, names=EVALUATION_PANELS) -> dict[str, torch.Tensor]:
    """The panels `names` (see the module doc) as (B, 3, H, W) in [0, 1]."""
    batch, size, device = images.shape[0], images.shape[-1], images.device
    renderer = model.renderer
    grey = torch.full_like(estimate.reflectance, GREY_ALBEDO)
    canonical = None
    if {"geometry", "illumination"} & set(names):
        canonical = renderer.rasterize(estimate.vertices, canonical_viewpoint(batch, model.config.init_scale, device))

    def light(direction) -> torch.Tensor:
        return directional_sh(direction).to(device).expand(batch, -1)

    makers = {
        "input": lambda: images,
        "overlay": lambda: overlay(model, images, estimate),
        "reflectance": lambda: _to_image_size(estimate.reflectance, size),
        "texture": lambda: _to_image_size(estimate.texture * estimate.texture_valid, size),
        "shading": lambda: model.render(estimate, torch.ones_like(estimate.reflectance)),
        "normals": lambda: (estimate.faces.pixel_normals.permute(0, 3, 1, 2) + 1) / 2 * estimate.faces.face_mask,
        "geometry": lambda: renderer.shade(canonical, grey, light((0.0, 0.0, 1.0))),
        "illumination": lambda: renderer.shade(canonical, grey, estimate.sh),
        **{name: (lambda d=direction: renderer.shade(estimate.faces, estimate.reflectance, light(d)))
           for name, direction in RELIGHT_DIRECTIONS.items()},
    }
    return {name: makers[name]().float().clamp(0, 1) for name in names}


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def panel_grid(panels: dict[str, torch.Tensor], names=None) -> np.ndarray:
    """One row per image, one column per panel (all of `panels` in order, or `names`): uint8 RGB."""
    names = list(panels) if names is None else names
    rows = [np.concatenate(list(columns), axis=1) for columns in zip(*(to_uint8(panels[n]) for n in names))]
    return np.concatenate(rows, axis=0)
