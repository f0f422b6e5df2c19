"""Mesh geometry: normals and visibility of a projected face."""

import torch
import torch.nn.functional as F


def triangle_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, N, 3), (F, 3) -> (B, F, 3) normals with length twice the triangle area (counter-clockwise = front)."""
    v0, v1, v2 = (vertices[:, faces[:, k]] for k in range(3))
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals (B, N, 3): area-weighted sums of the adjacent triangles' normals."""
    per_face = triangle_normals(vertices, faces)
    summed = torch.zeros_like(vertices)
    for k in range(3):
        summed = summed.index_add(1, faces[:, k], per_face)
    return F.normalize(summed, dim=-1, eps=1e-12)


def vertex_visibility(
    pixels: torch.Tensor, depth: torch.Tensor, facing: torch.Tensor, depth_tolerance: float
) -> torch.Tensor:
    """Which vertices the camera sees, (B, N) bool.

    pixels: projected vertices (B, N, 3) in pixel coordinates (smaller z closer); depth: the z-buffer
    (B, H, W) of the same mesh, +inf where empty; facing: (B, N) bool, the vertex normal points toward the
    camera. A vertex is visible when it faces the camera, projects inside the image and is not behind the
    z-buffer at its pixel by more than `depth_tolerance` (the tolerance absorbs the depth change across
    the half pixel between a vertex and the pixel centre).
    """
    batch, height, width = depth.shape
    col = pixels[..., 0].detach().floor().long()
    row = pixels[..., 1].detach().floor().long()
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    flat_index = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1))
    surface = depth.reshape(batch, -1).gather(1, flat_index)
    unoccluded = pixels[..., 2].detach() <= surface + depth_tolerance
    return facing & inside & unoccluded


def triangle_visibility(faces: torch.Tensor, vertex_visible: torch.Tensor) -> torch.Tensor:
    """A triangle is visible when its three vertices are, (B, F) bool."""
    return vertex_visible[:, faces].all(-1)
