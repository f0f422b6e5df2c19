"""Dense NME: ICP, region, normaliser on hand cases; the BFM ground truth on files the test writes."""

import numpy as np
import pytest
from scipy.io import loadmat, savemat
from scipy.spatial.transform import Rotation

from cest.assets import fetch
from cest.eval.dense import BFMGroundTruth, angle2matrix_3ddfa, dense_nme, densify, rigid_icp


def _face_patch(spacing: float = 2.0):
    """An 81 x 81 grid (spacing / 2 px) on a cap curved about as much as a face (40 px deep over 80 px), with
    keypoints 30 (centre), 36 and 45 (80 px apart)."""
    xs, ys = np.meshgrid(np.arange(-40, 41) * spacing / 2, np.arange(-40, 41) * spacing / 2)
    z = 40 - (xs**2 + ys**2) / 80
    vertices = np.stack([xs.ravel(), ys.ravel(), z.ravel()], 1)
    keypoints = np.zeros(68, np.int64)
    index = {tuple(v[:2]): i for i, v in enumerate(vertices)}
    keypoints[30], keypoints[36], keypoints[45] = index[(0.0, 0.0)], index[(-40.0, -20.0)], index[(40.0, -20.0)]
    return vertices, keypoints


def test_ground_truth_as_prediction_scores_zero():
    vertices, keypoints = _face_patch()
    assert dense_nme(vertices, vertices[keypoints], vertices, keypoints) == pytest.approx(0.0, abs=1e-12)


def test_icp_undoes_a_small_rigid_motion_and_landmarks_a_large_one():
    vertices, keypoints = _face_patch()
    keypoints[17:] = np.arange(0, 6561, 6561 // 51)[:51]  # spread inner landmarks over the patch
    small = Rotation.from_euler("xyz", [0.5, -0.5, 0.3], degrees=True).as_matrix()
    moved = vertices @ small.T + [0.3, -0.2, 0.2]
    assert np.abs(rigid_icp(moved, vertices) - vertices).max() < 1e-3
    large = Rotation.from_euler("xyz", [10, -25, 5], degrees=True).as_matrix()
    moved = vertices @ large.T + [30.0, -12.0, 80.0]
    assert dense_nme(moved, moved[keypoints], vertices, keypoints) < 1e-6


def test_known_surface_offset_gives_known_nme():
    vertices, keypoints = _face_patch()
    interocular = np.linalg.norm(vertices[keypoints[36]] - vertices[keypoints[45]])
    # Alternate grid rows pushed 0.3 px toward and away from the viewer: no rigid motion undoes it, and each
    # ground-truth vertex's nearest predicted point is its own displaced copy, 0.3 px away.
    offset = np.where((np.arange(len(vertices)) // 81) % 2 == 0, 0.3, -0.3)
    predicted = vertices + np.stack([0 * offset, 0 * offset, offset], 1)
    assert dense_nme(predicted, predicted[keypoints], vertices, keypoints) == pytest.approx(0.3 / interocular, rel=1e-3)


def test_densify_samples_each_triangle_on_a_barycentric_grid():
    triangle = np.array([[0.0, 0, 0], [4, 0, 0], [0, 4, 0]])
    points = densify(triangle, np.array([[0, 1, 2]]), steps=4)
    assert len(points) == 15
    assert {tuple(p) for p in points} == {(float(x), float(y), 0.0) for x in range(5) for y in range(5 - x)}


def test_yaw_sign_of_the_3ddfa_rotation_matches_the_images():
    # Positive Pose_Para yaw: R maps the BFM's forward axis (+z) to image x; the nose tip then lies on that
    # side of the outer eye corners' midpoint in the real annotations.
    for name in ("image00475", "image00251", "image00516"):
        mat = loadmat(str(fetch(f"aflw2000_sample/{name}.mat")))
        forward_x = (angle2matrix_3ddfa(*mat["Pose_Para"][0][:3]) @ [0.0, 0.0, 1.0])[0]
        pt = mat["pt3d_68"][:2].T
        nose_side = pt[30, 0] - (pt[36, 0] + pt[45, 0]) / 2
        assert np.sign(forward_x) == np.sign(nose_side), name


def _write_bfm(directory, n_bfm=120, keep=None, rng=np.random.default_rng(0)):
    mean = rng.normal(0, 5e4, (n_bfm, 3))
    shape_pc = np.linalg.qr(rng.normal(size=(3 * n_bfm, 6)))[0]
    kept = np.arange(n_bfm) if keep is None else keep
    w_exp = rng.normal(0, 1e3, (3 * len(kept), 3))
    mu_exp = rng.normal(0, 1e3, (3 * len(kept), 1))
    savemat(directory / "01_MorphableModel.mat", {"shapeMU": mean.reshape(-1, 1), "shapePC": shape_pc,
                                                  "shapeEV": np.ones((6, 1))})
    savemat(directory / "Model_Expression.mat", {"w_exp": w_exp, "mu_exp": mu_exp})
    if keep is not None:
        savemat(directory / "BFM_exp_idx.mat", {"trimIndex": (keep + 1).reshape(-1, 1)})  # MATLAB 1-based
    keypoints = rng.choice(len(kept), 68, replace=False)
    # 3DDFA's keypoints_sim.npy form: x, y, z indices into the flattened (3M,) shape.
    np.save(directory / "keypoints_sim.npy", (3 * keypoints[:, None] + np.arange(3)).reshape(-1))
    model = mean[kept] + mu_exp.reshape(-1, 3)
    return model, shape_pc.reshape(n_bfm, 3, 6)[kept].reshape(-1, 6), w_exp, keypoints


@pytest.mark.parametrize("trimmed", [False, True])
def test_bfm_ground_truth_reproduces_pt3d_68_written_by_the_3ddfa_formula(tmp_path, trimmed):
    keep = np.arange(5, 100) if trimmed else None
    model, shape_pc, w_exp, keypoints = _write_bfm(tmp_path, keep=keep)
    shape_para, exp_para = np.array([3e5, -1e5, 2e4, 0, 5e3, 1e4]), np.array([1.5, -0.5, 0.2])
    scale, t, height = 1.5e-3, np.array([220.0, 210.0, -100.0]), 450
    # Frontal pose (R = identity): V = s X + t; pt3d_68 x = V_x, y = H + 1 - V_y (MATLAB 1-based image rows).
    vertices = model + (shape_pc @ shape_para + w_exp @ exp_para).reshape(-1, 3)
    posed = scale * vertices + t
    pt3d = np.stack([posed[keypoints, 0], height + 1 - posed[keypoints, 1], posed[keypoints, 2]])
    mat = {"Shape_Para": shape_para[:, None], "Exp_Para": exp_para[:, None],
           "Pose_Para": np.array([[0, 0, 0, *t, scale]]), "pt3d_68": pt3d}
    truth = BFMGroundTruth.from_dir(tmp_path)
    image_vertices = truth.image_vertices(mat, height)
    assert image_vertices.shape == (len(model), 3)
    assert truth.keypoint_error(image_vertices, mat) < 1e-6
    assert image_vertices[keypoints[0], :2] == pytest.approx([pt3d[0, 0] - 0.5, pt3d[1, 0] - 0.5])
    # A wrong frame (y not flipped) fails the self-test by many pixels.
    flipped = image_vertices.copy()
    flipped[:, 1] = height - flipped[:, 1]
    assert truth.keypoint_error(flipped, mat) > 1.0


def test_missing_bfm_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_MorphableModel.mat"):
        BFMGroundTruth.from_dir(tmp_path)
