"""cest.eval.surface against slow, obviously correct references: dense sampling of triangles, every triangle
tried for every point, and transforms the test makes itself."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cest.eval.surface import (align_to_surface, apply, closest_on_triangles, closest_points, crop_sphere,
                               similarity_transform, surface_points, vertex_normals)


def grid_distance(point, corners, steps=150):
    """Distance from a point to a triangle by brute force over a barycentric grid (within the grid's spacing)."""
    i, j = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    inside = i + j <= steps
    weights = np.stack([i[inside], j[inside], steps - i[inside] - j[inside]], 1) / steps
    return np.linalg.norm(weights @ corners - point, axis=1).min()


def test_closest_point_on_a_triangle_matches_dense_sampling():
    """Random triangles and points in every Voronoi region (corners, edges, face): the closed form is never
    farther than the densest grid sample and at most the grid's spacing nearer."""
    rng = np.random.default_rng(0)
    corners = rng.normal(size=(40, 3, 3))
    points = rng.normal(scale=1.5, size=(40, 3))
    weights = closest_on_triangles(points, corners)
    assert np.all(weights >= -1e-12) and np.allclose(weights.sum(1), 1)
    exact = np.linalg.norm(np.einsum("pj,pjd->pd", weights, corners) - points, axis=1)
    sampled = np.array([grid_distance(p, c) for p, c in zip(points, corners)])
    spacing = np.array([np.linalg.norm(c[:, None] - c[None], axis=-1).max() / 150 for c in corners])
    assert np.all(exact <= sampled + 1e-12)
    assert np.all(sampled - exact <= spacing)
    # A point above the face's interior projects straight down: its distance is the height.
    flat = np.array([[[0.0, 0, 0], [4, 0, 0], [0, 4, 0]]])
    assert np.allclose(closest_on_triangles(np.array([[1.0, 1, 2.5]]), flat), [[0.5, 0.25, 0.25]])


def test_closest_points_is_the_best_over_every_triangle():
    """The k-d tree search with growing k equals trying every triangle, also for points far from the mesh
    (where the first candidates cannot be certain) and on a mesh with one long sliver triangle."""
    rng = np.random.default_rng(1)
    vertices = rng.uniform(-1, 1, size=(80, 3))
    triangles = np.stack([rng.choice(80, 3, replace=False) for _ in range(150)])
    vertices = np.vstack([vertices, [[-30, 0, 0], [30, 0.1, 0], [0, 0, 0.2]]])
    triangles = np.vstack([triangles, [[80, 81, 82]]])
    points = np.vstack([rng.uniform(-2, 2, size=(300, 3)), rng.uniform(-40, 40, size=(50, 3))])
    distances, triangle_ids, weights = closest_points(points, vertices, triangles, k=2)
    corners = vertices[triangles]
    every_weights = closest_on_triangles(points[:, None], corners[None])  # every point with every triangle
    every = np.linalg.norm(np.einsum("pfj,fjd->pfd", every_weights, corners) - points[:, None], axis=-1)
    assert np.allclose(distances, every.min(1), atol=1e-12)
    on_surface = surface_points(vertices, triangles, triangle_ids, weights)
    assert np.allclose(np.linalg.norm(on_surface - points, axis=1), distances)
    # A zero-area triangle (two equal corners) is skipped, and the indices still name the input's triangles.
    with_degenerate = np.vstack([[[0, 0, 1]], triangles])
    again, again_ids, _ = closest_points(points, vertices, with_degenerate)
    assert np.allclose(again, distances) and np.all(again_ids == triangle_ids + 1)


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(2)
    source = rng.normal(size=(50, 3))
    rotation = Rotation.from_euler("xyz", [20, -35, 60], degrees=True).as_matrix()
    target = 1.7 * source @ rotation.T + [3.0, -1.0, 2.0]
    scale, found_rotation, translation = similarity_transform(source, target)
    assert scale == pytest.approx(1.7)
    assert np.allclose(found_rotation, rotation) and np.allclose(translation, [3.0, -1.0, 2.0])
    # A mirrored target gets a rotation (det +1), never a reflection.
    _, mirrored_fit, _ = similarity_transform(source, target * [-1, 1, 1])
    assert np.linalg.det(mirrored_fit) == pytest.approx(1.0)
    assert similarity_transform(source, target, scale=False)[0] == 1.0


def sphere_mesh(subdivisions=3):
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=50.0)
    return np.asarray(sphere.vertices, np.float64), np.asarray(sphere.faces, np.int64)


def test_icp_with_scale_undoes_a_similarity_onto_an_open_surface():
    """A half-sphere cap moved, turned by 8 degrees and scaled by 1.1: ICP (scale on) brings the mesh back onto
    the points (distances ~0); rigid ICP cannot undo the scale."""
    vertices, triangles = sphere_mesh()
    cap_vertices, cap_triangles = crop_sphere(vertices, triangles, [0, 0, 50.0], 45.0)
    cap_vertices = cap_vertices * [1.0, 1.3, 0.8]  # no rotational symmetry left to slide along
    rotation = Rotation.from_euler("xyz", [8, -5, 3], degrees=True).as_matrix()
    points = 1.1 * cap_vertices @ rotation.T + [2.0, -1.5, 1.0]
    transform = align_to_surface(cap_vertices, cap_triangles, points)
    distances, _, _ = closest_points(points, apply(transform, cap_vertices), cap_triangles)
    assert distances.max() < 1e-3
    assert transform[0] == pytest.approx(1.1, abs=1e-6)
    rigid = align_to_surface(cap_vertices, cap_triangles, points, scale=False, iterations=10)
    assert closest_points(points, apply(rigid, cap_vertices), cap_triangles)[0].mean() > 0.5


def test_crop_sphere_keeps_the_vertices_inside_and_their_triangles():
    vertices, triangles = sphere_mesh(2)
    kept, kept_triangles = crop_sphere(vertices, triangles, [0, 0, 50.0], 40.0)
    inside = np.linalg.norm(vertices - [0, 0, 50.0], axis=1) <= 40.0
    assert len(kept) == inside.sum() and np.allclose(kept, vertices[inside])
    assert len(kept_triangles) == inside[triangles].all(1).sum()
    # The renumbered triangles are the same triangles in space.
    original = vertices[triangles[inside[triangles].all(1)]]
    assert np.allclose(kept[kept_triangles], original)


def test_vertex_normals_of_a_sphere_point_outward():
    vertices, triangles = sphere_mesh(2)
    normals = vertex_normals(vertices, triangles)
    assert np.allclose(normals, vertices / 50.0, atol=0.025)  # area weighting: within 1.5 degrees
