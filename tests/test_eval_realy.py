"""cest.eval.realy: REALY's barycentric keypoint format and the transfer of its 85 points onto the SFM, checked
with templates whose answer is known (the SFM itself in another frame and unit, and the SFM subdivided)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cest.eval.realy import (KEYPOINTS, keypoints_from_barycentric, read_barycentric, transfer_keypoints,
                             vertex_rows, write_barycentric)
from cest.eval.surface import surface_points
from cest.morphable import load_sfm


@pytest.fixture(scope="module")
def sfm():
    morphable = load_sfm()
    return (morphable.mean_shape.double().numpy() * morphable.unit_scale_mm, morphable.triangles.numpy(),
            morphable.landmark_indices.numpy())


def reference_points(vertices, triangles, landmarks):
    """85 'REALY' points on the SFM: its 68 landmarks, then 17 random points inside triangles."""
    rng = np.random.default_rng(0)
    extra_triangles = rng.choice(len(triangles), 17, replace=False)
    weights = rng.dirichlet(np.ones(3), 17)
    rows = np.concatenate([vertex_rows(triangles, landmarks),
                           np.concatenate([extra_triangles[:, None], weights[:, :2]], 1)])
    return rows, keypoints_from_barycentric(vertices, triangles, rows)


def test_rows_reproduce_realys_formula_and_round_trip_through_the_file(tmp_path, sfm):
    vertices, triangles, landmarks = sfm
    rows, points = reference_points(vertices, triangles, landmarks)
    assert np.allclose(points[:68], vertices[landmarks])
    by_hand = [w0 * vertices[triangles[int(t), 0]] + w1 * vertices[triangles[int(t), 1]]
               + (1 - w0 - w1) * vertices[triangles[int(t), 2]] for t, w0, w1 in rows]
    assert np.allclose(points, by_hand)
    path = write_barycentric(tmp_path / "SFM.txt", rows)
    assert np.allclose(read_barycentric(path), rows) and path.read_text().startswith("[[")
    write_barycentric(tmp_path / "short.txt", rows[:80])
    with pytest.raises(ValueError, match="expected 85 rows"):
        read_barycentric(tmp_path / "short.txt")


def test_a_template_that_is_the_sfm_in_metres_and_turned_transfers_exactly(sfm):
    vertices, triangles, landmarks = sfm
    rows, points = reference_points(vertices, triangles, landmarks)
    rotation = Rotation.from_euler("xyz", [10, 30, -5], degrees=True).as_matrix()
    template = (vertices @ rotation.T + [5.0, 0, -40.0]) / 1000
    found = transfer_keypoints(vertices, triangles, landmarks, template, triangles, rows)
    assert found.shape == (KEYPOINTS, 3)
    assert np.abs(keypoints_from_barycentric(vertices, triangles, found) - points).max() < 1e-6


def test_a_template_with_another_topology_transfers_to_the_same_points(sfm):
    """The SFM with every triangle split in four (other vertices, other triangles): the 85 points land where
    they were on the SFM."""
    vertices, triangles, landmarks = sfm
    rows, points = reference_points(vertices, triangles, landmarks)
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), 1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    midpoints = len(vertices) + inverse.reshape(3, -1).T  # (F, 3): midpoint of edge 01, 12, 20
    fine_vertices = np.vstack([vertices, vertices[unique].mean(1)])
    a, b, c = triangles.T
    ab, bc, ca = midpoints.T
    fine_triangles = np.concatenate([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    fine_rows = np.zeros_like(rows)
    fine_rows[:, 0] = [np.flatnonzero((fine_triangles == landmarks[i]).any(1))[0] if i < 68 else 0 for i in range(85)]
    for i in range(85):  # place each point on the fine mesh by its own closest triangle
        from cest.eval.surface import closest_points

        _, ids, weights = closest_points(points[i:i + 1], fine_vertices, fine_triangles)
        fine_rows[i] = [ids[0], weights[0, 0], weights[0, 1]]
    assert np.abs(keypoints_from_barycentric(fine_vertices, fine_triangles, fine_rows) - points).max() < 1e-9
    found = transfer_keypoints(vertices, triangles, landmarks, fine_vertices * 0.001, fine_triangles, fine_rows)
    assert np.abs(keypoints_from_barycentric(vertices, triangles, found) - points).max() < 1e-6
    assert np.allclose(surface_points(vertices, triangles, found[:68, 0].astype(int),
                                      np.c_[found[:68, 1:], 1 - found[:68, 1:].sum(1)]), vertices[landmarks])
