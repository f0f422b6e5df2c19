"""Pictures of an estimate: the panels the paper shows (Fig. 4, 8) as image rows for logs and reports.

`estimate_panels` turns a batch of estimates into named (B, 3, H, W) images in [0, 1]:
  input        the image
  overlay      the rendered face over the image (the image where no face is rendered)
  reflectance  the UV reflectance map R, resized to the image size
  texture      the UV illuminated texture T unwrapped from the image (unseen texels black)
  shading      the face rendered with white reflectance: the light alone on the geometry
  normals      camera-space normals as colours, (n + 1) / 2, black off the face
`panel_grid` lays panels out as one uint8 (rows*H, cols*W, 3) picture: a row per frame, a column per panel.
"""

import torch
import torch.nn.functional as F

from cest.model import CESTModel, Estimate

PANELS = ("input", "overlay", "reflectance", "texture", "shading", "normals")


def _to_image_size(uv_map: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(uv_map, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def estimate_panels(model: CESTModel, estimate: Estimate, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named (B, 3, H, W) panels in [0, 1] (see the module doc) for images (B, 3, H, W) and their estimate."""
    size = images.shape[-1]
    face = estimate.faces.face_mask
    rendered = model.render(estimate)
    shading = model.render(estimate, torch.ones_like(estimate.reflectance))
    normals = (estimate.faces.pixel_normals.permute(0, 3, 1, 2) + 1) / 2 * face
    panels = {
        "input": images,
        "overlay": rendered * face + images * (1 - face),
        "reflectance": _to_image_size(estimate.reflectance, size),
        "texture": _to_image_size(estimate.texture * estimate.texture_valid, size),
        "shading": shading,
        "normals": normals,
    }
    return {name: panel.float().clamp(0, 1) for name, panel in panels.items()}


def panel_grid(panels: dict[str, torch.Tensor], order: tuple[str, ...] = PANELS):
    """uint8 numpy (rows * H, len(order) * W, 3): frame b's panels side by side on row b."""
    columns = torch.cat([panels[name] for name in order], dim=3)  # (B, 3, H, cols * W)
    picture = torch.cat(list(columns), dim=1)  # (3, B * H, cols * W)
    return (picture.permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
