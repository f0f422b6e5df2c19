"""Dense NME on AFLW2000-3D (paper Sec. 4.4), for users who hold the BFM 2009 and 3DDFA's expression basis.

Ground truth: AFLW2000-3D's fitted mesh, rebuilt from its .mat as 3DDFA's code builds it,
    X = shapeMU + mu_exp + shapePC @ Shape_Para + w_exp @ Exp_Para        (M, 3) micrometres, BFM frame
    V = s R X + t,  R = angle2matrix_3ddfa(pitch, yaw, roll) = Rx Ry Rz    Pose_Para = (pitch, yaw, roll, tx, ty, tz, s)
    image: x = V_x, y = H + 1 - V_y (MATLAB 1-based, as pt3d_68), z = V_z (toward the viewer)
then shifted to our pixel convention (-0.5, see cest.eval.metrics). `BFMGroundTruth.keypoint_error` is the
self-test: the mesh's 68 keypoints against the file's pt3d_68 (pixels; ~0 when the BFM files, the vertex
selection and the frame above are right). It is reported with every dense score.

Prediction: the model's vertices in the source image (x, y pixels through the crop's inverse transform, z in
the same pixel scale, toward the viewer), densified by sampling each triangle at the barycentric grid
points of step 1/DENSIFY (the SFM has 3,448 vertices, the BFM 53,215: nearest-vertex distances to a sparse
mesh would mostly measure its vertex spacing).
Region: the ground-truth vertices within REGION_RADIUS outer inter-ocular distances of the nose tip
(keypoint 30): the face without ears and neck.
Alignment: rigid (rotation and translation, no scale): Kabsch on the inner 51 landmarks (the model's
landmark vertices onto the mesh's keypoints), then point-to-point ICP of the prediction onto the region.
NME: mean distance from each region vertex to its nearest aligned prediction point, divided by the 3D
distance between the outer eye corners (keypoints 36 and 45) of the ground truth.
Shapes: vertices (M, 3) / (N, 3) float64 image-frame pixels.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.spatial import cKDTree

from cest.eval.metrics import AFLW2000_PIXEL_OFFSET, INNER

REGION_RADIUS = 1.0
ICP_ITERATIONS = 100  # at most; stops when a step moves the points by less than ICP_TOLERANCE px (RMS)
ICP_TOLERANCE = 1e-6
DENSIFY = 4
METHOD = (f"region: GT vertices within {REGION_RADIUS} outer inter-ocular distances of the nose tip; "
          f"alignment: rigid (Kabsch) on the inner 51 landmarks, then rigid point-to-point ICP of the prediction "
          f"onto the region (at most {ICP_ITERATIONS} iterations); prediction densified at barycentric step "
          f"1/{DENSIFY}; distance: region vertex to nearest prediction point")


def angle2matrix_3ddfa(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """3DDFA's rotation from Pose_Para angles (radians): Rx(pitch) Ry(yaw) Rz(roll), its sign conventions."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def _indices(path: Path, variable: str) -> np.ndarray:
    """0-based vertex indices: .mat (MATLAB, 1-based) or .txt/.npy (0-based). A 204-long list is 3DDFA's
    flattened x, y, z index form (keypoints_sim.npy) and is reduced to vertices."""
    if path.suffix == ".mat":
        indices = np.asarray(loadmat(str(path))[variable]).reshape(-1).astype(np.int64) - 1
    elif path.suffix == ".npy":
        indices = np.load(path).reshape(-1).astype(np.int64)
    else:
        indices = np.loadtxt(path, dtype=np.int64, comments="#").reshape(-1)
    return indices[::3] // 3 if len(indices) == 204 else indices


@dataclass
class BFMGroundTruth:
    mean: np.ndarray  # (M, 3) shapeMU (+ mu_exp) on the expression basis's vertices, micrometres
    shape_basis: np.ndarray  # (3M, 199) shapePC rows of those vertices (x, y, z interleaved)
    expression_basis: np.ndarray  # (3M, 29) w_exp
    keypoints: np.ndarray  # (68,) vertex indices

    @classmethod
    def from_dir(cls, directory: str | Path) -> "BFMGroundTruth":
        """01_MorphableModel.mat, Model_Expression.mat, keypoints (.txt/.npy/.mat) and, when the expression
        basis covers fewer vertices than the BFM, BFM_exp_idx.mat (trimIndex)."""
        directory = Path(directory)
        bfm_file, exp_file = directory / "01_MorphableModel.mat", directory / "Model_Expression.mat"
        missing = [p.name for p in (bfm_file, exp_file) if not p.is_file()]
        keypoint_files = [directory / n for n in ("keypoints.txt", "keypoints_sim.npy", "keypoints.npy",
                                                  "keypoints.mat") if (directory / n).is_file()]
        if missing or not keypoint_files:
            raise FileNotFoundError(f"{directory}: missing {', '.join(missing + ([] if keypoint_files else ['keypoints']))}")
        bfm, exp = loadmat(str(bfm_file)), loadmat(str(exp_file))
        mean = np.asarray(bfm["shapeMU"], np.float64).reshape(-1, 3)
        shape_pc = np.asarray(bfm["shapePC"], np.float64)
        w_exp = np.asarray(exp["w_exp"], np.float64)
        n_exp = w_exp.shape[0] // 3
        if n_exp != len(mean):
            keep = _indices(directory / "BFM_exp_idx.mat", "trimIndex")
            rows = (3 * keep[:, None] + np.arange(3)).reshape(-1)
            mean, shape_pc = mean[keep], shape_pc[rows]
        mean = mean + (np.asarray(exp["mu_exp"], np.float64).reshape(-1, 3) if "mu_exp" in exp else 0.0)
        return cls(mean, shape_pc, w_exp, _indices(keypoint_files[0], "keypoints"))

    def image_vertices(self, mat: dict, height: int) -> np.ndarray:
        """The fitted mesh of one AFLW2000-3D .mat (its variables) in our image frame: (M, 3)."""
        shape = np.asarray(mat["Shape_Para"], np.float64).reshape(-1)
        expression = np.asarray(mat["Exp_Para"], np.float64).reshape(-1)
        pose = np.asarray(mat["Pose_Para"], np.float64).reshape(-1)
        offsets = self.shape_basis[:, : len(shape)] @ shape + self.expression_basis[:, : len(expression)] @ expression
        model = self.mean + offsets.reshape(-1, 3)
        posed = pose[6] * model @ angle2matrix_3ddfa(*pose[:3]).T + pose[3:6]
        return np.stack([posed[:, 0] - AFLW2000_PIXEL_OFFSET, height + 1 - posed[:, 1] - AFLW2000_PIXEL_OFFSET,
                         posed[:, 2]], axis=1)

    def keypoint_error(self, vertices: np.ndarray, mat: dict) -> float:
        """Self-test: mean 2D distance (pixels) between the mesh's keypoints and the file's pt3d_68."""
        pt3d = np.asarray(mat["pt3d_68"], np.float64)[:2].T - AFLW2000_PIXEL_OFFSET
        return float(np.linalg.norm(vertices[self.keypoints, :2] - pt3d, axis=1).mean())


def densify(vertices: np.ndarray, triangles: np.ndarray, steps: int = DENSIFY) -> np.ndarray:
    """Points on every triangle at barycentric grid step 1/steps (corners included): (K, 3)."""
    grid = [(i, j, steps - i - j) for i in range(steps + 1) for j in range(steps + 1 - i)]
    weights = np.asarray(grid, np.float64) / steps  # (G, 3)
    corners = vertices[triangles]  # (F, 3, 3)
    return np.einsum("gk,fkd->fgd", weights, corners).reshape(-1, 3)


def kabsch(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and translation t minimising |R source + t - target| over paired points (K, 3)."""
    centre_s, centre_t = source.mean(0), target.mean(0)
    u, _, vt = np.linalg.svd((source - centre_s).T @ (target - centre_t))
    d = np.sign(np.linalg.det(u @ vt))
    rotation = (u @ np.diag([1.0, 1.0, d]) @ vt).T
    return rotation, centre_t - rotation @ centre_s


def rigid_icp(source: np.ndarray, target: np.ndarray, iterations: int = ICP_ITERATIONS) -> np.ndarray:
    """`source` (K, 3) moved rigidly onto `target` (M, 3): point-to-point ICP (Besl and McKay). Each target
    point is paired with its nearest source point; Kabsch on the pairs; repeated until it stops moving."""
    moved = source.copy()
    for _ in range(iterations):
        _, nearest = cKDTree(moved).query(target)
        rotation, translation = kabsch(moved[nearest], target)
        updated = moved @ rotation.T + translation
        step = np.sqrt(((updated - moved) ** 2).sum(1).mean())
        moved = updated
        if step < ICP_TOLERANCE:
            break
    return moved


def face_region(gt_vertices: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Boolean (M,): ground-truth vertices within REGION_RADIUS outer inter-ocular distances of the nose tip."""
    interocular = np.linalg.norm(gt_vertices[keypoints[36]] - gt_vertices[keypoints[45]])
    return np.linalg.norm(gt_vertices - gt_vertices[keypoints[30]], axis=1) <= REGION_RADIUS * interocular


def dense_nme(pred_points: np.ndarray, pred_landmarks: np.ndarray, gt_vertices: np.ndarray,
              keypoints: np.ndarray) -> float:
    """Mean nearest distance of the GT face region to the aligned prediction / outer inter-ocular (3D).

    pred_landmarks (68, 3): the prediction's landmark vertices, for the initial alignment."""
    region = gt_vertices[face_region(gt_vertices, keypoints)]
    rotation, translation = kabsch(pred_landmarks[INNER], gt_vertices[keypoints[INNER]])
    aligned = rigid_icp(pred_points @ rotation.T + translation, region)
    distances, _ = cKDTree(aligned).query(region)
    interocular = np.linalg.norm(gt_vertices[keypoints[36]] - gt_vertices[keypoints[45]])
    return float(distances.mean() / interocular)
