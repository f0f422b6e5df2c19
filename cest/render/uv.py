"""UV space: the layout's own rasterization, unwrapping an image into an illuminated texture, wrapping.

A UV map (B, C, S, S) has u along columns and v along rows (v down), texel (row i, column j) centred at
((j + 0.5) / S, (i + 0.5) / S). Each texel lies in one triangle of the UV layout with fixed barycentrics;
they are computed once per model and size, so unwrapping is a weighted gather plus bilinear sampling.
"""

import torch
import torch.nn.functional as F

from cest.render.geometry import triangle_visibility, unoccluded
from cest.render.raster import Fragments, rasterize


def uv_to_grid(uv: torch.Tensor) -> torch.Tensor:
    """UV in [0, 1] -> grid_sample coordinates in [-1, 1] (align_corners=False)."""
    return uv * 2 - 1


def pixels_to_grid(pixels_xy: torch.Tensor, image_size: int) -> torch.Tensor:
    """Pixel coordinates (x right, y down, centres at +0.5) -> grid_sample coordinates."""
    return pixels_xy * (2 / image_size) - 1


def flip_uv(uv_map: torch.Tensor) -> torch.Tensor:
    """Mirror the face in a mirror-symmetric layout (u -> 1 - u): the horizontal flip of the UV map."""
    return uv_map.flip(-1)


class UVMapper(torch.nn.Module):
    """Maps between images, UV maps and vertices for one morphable model at one UV resolution."""

    def __init__(self, uv: torch.Tensor, triangles: torch.Tensor, uv_size: int):
        super().__init__()
        self.uv_size = uv_size
        uv_pixels = torch.cat([uv * uv_size, torch.zeros_like(uv[:, :1])], -1)
        fragments = rasterize(uv_pixels[None].double(), triangles, (uv_size, uv_size))
        self.register_buffer("uv", uv.clone(), persistent=False)
        self.register_buffer("triangles", triangles.clone(), persistent=False)
        self.register_buffer("texel_triangle", fragments.triangle_id[0], persistent=False)
        self.register_buffer("texel_barycentrics", fragments.barycentrics[0].to(uv.dtype), persistent=False)
        # The three vertices of each texel's triangle (triangle 0 outside the layout, where weights are 0).
        self.register_buffer("texel_vertices", triangles[self.texel_triangle.clamp(min=0)], persistent=False)

    @property
    def covered(self) -> torch.Tensor:
        """(S, S) bool: texels inside the layout."""
        return self.texel_triangle >= 0

    def texel_positions(self, points: torch.Tensor) -> torch.Tensor:
        """Where each texel lies given per-vertex positions (B, N, D) -> (B, S, S, D); 0 outside the layout."""
        corners = points.index_select(1, self.texel_vertices.reshape(-1)).view(
            points.shape[0], *self.texel_vertices.shape, points.shape[-1])  # (B, S, S, 3, D)
        weights = self.texel_barycentrics * self.covered[..., None]
        return (corners * weights[None, ..., None]).sum(-2)

    def unwrap(
        self, image: torch.Tensor, pixels: torch.Tensor, fragments: Fragments, vertex_visible: torch.Tensor,
        depth_tolerance: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unwrap images (B, C, H, W) into UV maps (B, C, S, S) through the projected mesh (B, N, 3).

        Each texel samples the image bilinearly where its triangle projects (`fragments` is the same mesh
        rasterized in the image). A texel is valid when it lies in the layout, on a triangle whose three
        vertices the camera sees (the paper's rule for self-occlusion), all of its bilinear taps fall on the
        face (no background mixed in at the silhouette), and nothing lies in front of it by more than
        `depth_tolerance` (a triangle partly hidden, e.g. a cheek behind the nose). Invalid texels are 0.
        Differentiable with respect to the image and the projected vertices.
        """
        if image.shape[-1] != image.shape[-2]:
            raise ValueError(f"unwrap expects square images, got {tuple(image.shape[-2:])}")
        texel_points = self.texel_positions(pixels)
        grid = pixels_to_grid(texel_points[..., :2], image.shape[-1])
        texture = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        valid = self._texel_validity(grid.detach(), texel_points.detach(), pixels.detach(), fragments, vertex_visible,
                                     depth_tolerance)
        valid = valid[:, None].to(image.dtype)
        return texture * valid, valid

    def _texel_validity(self, grid, texel_points, pixels, fragments, vertex_visible, depth_tolerance):
        visible = triangle_visibility(self.triangles, vertex_visible)
        valid = visible.index_select(1, self.texel_triangle.clamp(min=0).reshape(-1)).view_as(
            self.texel_triangle.expand(visible.shape[0], -1, -1)) & self.covered
        coverage = (fragments.triangle_id >= 0)[:, None].to(grid.dtype)
        on_face = F.grid_sample(coverage, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Against the winning triangle's plane at the texel itself, not the z-buffer at the nearest pixel
        # centre: on slanted skin that centre's depth is off by more than the tolerance at 64 px, which left
        # scattered invalid texels across the visible face.
        front = unoccluded(texel_points.flatten(1, 2), pixels, fragments.triangle_id, self.triangles, depth_tolerance)
        return valid & (on_face[:, 0] > 1 - 1e-6) & front.view_as(valid)

    def wrap(self, uv_map: torch.Tensor) -> torch.Tensor:
        """Per-vertex values (B, N, C) sampled bilinearly from UV maps (B, C, S, S) at the vertices' UVs."""
        grid = uv_to_grid(self.uv)[None, None].expand(uv_map.shape[0], 1, -1, -1).to(uv_map.dtype)
        sampled = F.grid_sample(uv_map, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return sampled[:, :, 0].transpose(1, 2)
