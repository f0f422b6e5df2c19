import math

import torch

from cest.render.camera import project
from cest.render.geometry import cross, triangle_visibility, vertex_normals, vertex_visibility
from cest.morphable import load_sfm
from cest.render.raster import rasterize


def icosphere_like(n: int = 24):
    """A closed UV sphere (counter-clockwise from outside) with vertices at the poles."""
    lat = torch.linspace(0, math.pi, n)[1:-1]
    lon = torch.linspace(0, 2 * math.pi, 2 * n + 1)[:-1]
    grid_lat, grid_lon = torch.meshgrid(lat, lon, indexing="ij")
    ring = torch.stack([torch.sin(grid_lat) * torch.cos(grid_lon), torch.cos(grid_lat),
                        torch.sin(grid_lat) * torch.sin(grid_lon)], -1).reshape(-1, 3)
    vertices = torch.cat([torch.tensor([[0.0, 1, 0]]), ring, torch.tensor([[0.0, -1, 0]])])
    rows, cols = len(lat), len(lon)
    index = lambda r, c: 1 + r * cols + c % cols  # noqa: E731
    faces = [[0, index(0, c + 1), index(0, c)] for c in range(cols)]
    for r in range(rows - 1):
        for c in range(cols):
            faces += [[index(r, c), index(r, c + 1), index(r + 1, c)],
                      [index(r, c + 1), index(r + 1, c + 1), index(r + 1, c)]]
    last = len(vertices) - 1
    faces += [[index(rows - 1, c), index(rows - 1, c + 1), last] for c in range(cols)]
    return vertices, torch.tensor(faces)


def test_cross_product_and_its_gradient_match_torch_linalg_cross():
    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 7, 3, dtype=torch.float64, requires_grad=True).unbind(0)
    assert torch.equal(cross(torch.eye(3)[0], torch.eye(3)[1]), torch.eye(3)[2])  # x cross y = z, not -z
    ours, reference = cross(a, b), torch.linalg.cross(a, b, dim=-1)
    torch.testing.assert_close(ours, reference)
    weights = torch.randn_like(ours)
    torch.testing.assert_close(torch.autograd.grad((ours * weights).sum(), (a, b)),
                               torch.autograd.grad((reference * weights).sum(), (a, b)))


def test_sphere_vertex_normals_point_outward():
    vertices, faces = icosphere_like()
    normals = vertex_normals(vertices[None] * 3.0, faces)[0]
    # Area weighting tilts normals slightly near the poles of a coarse sphere: compare directions.
    assert (normals * vertices).sum(-1).min() > 0.99


def test_sfm_normals_face_the_camera_at_the_nose():
    model = load_sfm()
    normals = vertex_normals(model.mean_shape[None], model.triangles)[0]
    nose_tip = model.landmark_indices[30]
    assert normals[nose_tip, 2] > 0.9


def test_visibility_of_a_sphere_is_its_front_half():
    vertices, faces = icosphere_like(32)
    size = 64
    viewpoint = torch.tensor([[0.8, 0, 0, 0, 0, 0, 0]])
    pixels = project(vertices[None], viewpoint, size)
    triangle_id = rasterize(pixels, faces, (size, size)).triangle_id
    normals = vertex_normals(vertices[None], faces)
    visible = vertex_visibility(pixels, triangle_id, faces, normals[..., 2] > 0, depth_tolerance=0.01 * size)[0]
    # The front half, up to grazing vertices (within ~15 degrees of the silhouette) whose test is ambiguous.
    assert not visible[vertices[:, 2] < -0.05].any()
    assert visible[vertices[:, 2] > 0.25].all()
    assert visible[vertices[:, 2] > 0].float().mean() > 0.9
    assert triangle_visibility(faces, visible[None])[0].any()


def test_occluded_vertices_are_invisible():
    """A small square hidden behind a big one is invisible although it faces the camera."""
    front = torch.tensor([[-1.0, -1, 0.5], [1, -1, 0.5], [1, 1, 0.5], [-1, 1, 0.5]])
    back = front * torch.tensor([0.3, 0.3, -1.0])
    vertices = torch.cat([front, back])[None]
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    pixels = project(vertices, torch.tensor([[0.8, 0, 0, 0, 0, 0, 0]]), 32)
    triangle_id = rasterize(pixels, faces, (32, 32)).triangle_id
    visible = vertex_visibility(pixels, triangle_id, faces, torch.ones(1, 8, dtype=torch.bool), 0.5)[0]
    assert visible[:4].all() and not visible[4:].any()
