"""The parameter-free renderer: reflectance (UV map) times SH shading on the rasterized, projected face.

`Renderer.rasterize` does the geometry once per frame (projection, z-buffer, per-pixel UV and normals,
visibility); `shade` then turns any reflectance map and light into an image, so the extra reconstruction
terms of the objective (flipped and partner reflectance) cost a shading pass each, not a rasterization.
"""

import functools
from dataclasses import dataclass, fields, is_dataclass

import torch
import torch.nn.functional as F

from cest.render.camera import project, rotation_matrix, split_viewpoint
from cest.render.geometry import vertex_normals, vertex_visibility
from cest.render.lighting import shade
from cest.render.raster import Fragments, interpolate, rasterize
from cest.render.uv import UVMapper, uv_to_grid

# Depth slack of the visibility tests, as a fraction of the image size (see geometry.unoccluded): small
# against the depth gap between a cheek and the nose in front of it (~0.1 of the image at 224 px), large
# enough for the error of extrapolating a steep neighbouring triangle's plane across a pixel. Against a
# 512 px reference unwrap of the mean face, 0.01 lost 80 (frontal) / 45 (yaw 45) of the texels that should
# be seen at 64 px, 0.03 loses 10 / 6, and no texel hidden at 512 px becomes valid (tests/test_uv.py).
VISIBILITY_DEPTH_TOLERANCE = 0.03


def _to_fp32(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    if is_dataclass(value):
        return type(value)(**{f.name: _to_fp32(getattr(value, f.name)) for f in fields(value)})
    return value


def full_precision(method):
    """Run a renderer method in float32 under any autocast: the z-buffer, barycentrics and UV sampling
    need it (a bf16 pixel position is off by up to half a pixel at 224), and the renderer has no weights
    that mixed precision would speed up."""

    @functools.wraps(method)
    def wrapper(self, *args):
        device_type = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device_type, enabled=False):
            return method(self, *(_to_fp32(a) for a in args))

    return wrapper


@dataclass
class RasterizedFaces:
    pixels: torch.Tensor  # (B, N, 3) projected vertices
    fragments: Fragments
    pixel_uv_grid: torch.Tensor  # (B, H, W, 2) where each pixel samples the UV map (grid_sample units)
    pixel_normals: torch.Tensor  # (B, H, W, 3) unit normals in camera space
    face_mask: torch.Tensor  # (B, 1, H, W)
    vertex_visible: torch.Tensor  # (B, N) bool


class Renderer(torch.nn.Module):
    """Renders model-space faces (B, N, 3) under a weak perspective viewpoint (B, 7) to (B, 3, H, W)."""

    def __init__(
        self, uv: torch.Tensor, triangles: torch.Tensor, image_size: int, uv_size: int, raster_backend: str = "auto"
    ):
        super().__init__()
        self.image_size = image_size
        self.raster_backend = raster_backend
        self.uv_mapper = UVMapper(uv, triangles, uv_size)

    @classmethod
    def for_model(cls, model, image_size: int, uv_size: int, raster_backend: str = "auto") -> "Renderer":
        return cls(model.uv, model.triangles, image_size, uv_size, raster_backend)

    @property
    def triangles(self) -> torch.Tensor:
        return self.uv_mapper.triangles

    @full_precision
    def rasterize(self, vertices: torch.Tensor, viewpoint: torch.Tensor) -> RasterizedFaces:
        pixels = project(vertices, viewpoint, self.image_size)
        fragments = rasterize(pixels, self.triangles, (self.image_size, self.image_size), self.raster_backend)
        # Normals rotate with the face; the (positive) scale and the translation do not change them.
        rotation = rotation_matrix(split_viewpoint(viewpoint)[1])
        normals = vertex_normals(vertices, self.triangles) @ rotation.transpose(-1, -2)
        uv = self.uv_mapper.uv[None].expand(vertices.shape[0], -1, -1).to(vertices.dtype)
        pixel_uv, pixel_normals = interpolate(torch.cat([uv, normals], -1), fragments, self.triangles).split([2, 3], -1)
        pixel_normals = F.normalize(pixel_normals, dim=-1, eps=1e-12)
        face_mask = (fragments.triangle_id >= 0)[:, None].to(vertices.dtype)
        visible = vertex_visibility(pixels, fragments.triangle_id, self.triangles, normals[..., 2] > 0,
                                    VISIBILITY_DEPTH_TOLERANCE * self.image_size)
        return RasterizedFaces(pixels, fragments, uv_to_grid(pixel_uv), pixel_normals, face_mask, visible)

    @full_precision
    def shade(self, faces: RasterizedFaces, reflectance_uv: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W): reflectance sampled at each pixel's UV times Lambertian SH shading; 0 off-face."""
        albedo = F.grid_sample(reflectance_uv, faces.pixel_uv_grid, mode="bilinear", padding_mode="border",
                               align_corners=False)
        shading = shade(faces.pixel_normals, sh).permute(0, 3, 1, 2)
        return albedo * shading * faces.face_mask

    @full_precision
    def unwrap(self, image: torch.Tensor, faces: RasterizedFaces) -> tuple[torch.Tensor, torch.Tensor]:
        """The illuminated texture of images (B, 3, H, W) under these faces: (texture, valid) in UV space."""
        return self.uv_mapper.unwrap(image, faces.pixels, faces.fragments, faces.vertex_visible,
                                     VISIBILITY_DEPTH_TOLERANCE * self.image_size)

    def render(
        self, vertices: torch.Tensor, viewpoint: torch.Tensor, reflectance_uv: torch.Tensor, sh: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image (B, 3, H, W), face_mask (B, 1, H, W))."""
        faces = self.rasterize(vertices, viewpoint)
        return self.shade(faces, reflectance_uv, sh), faces.face_mask
