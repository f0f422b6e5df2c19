"""REALY (Chai et al., ECCV 2022) submission files for a morphable model's fixed topology: the 85-keypoint
barycentric file REALY's evaluation reads for a new template (github.com/czh-98/REALY, read, not copied).

REALY's format (data/<TEMPLATE>.txt): JSON, 85 rows [triangle index (0-based, the template .obj's face order),
w0, w1]; keypoint = w0 v[f0] + w1 v[f1] + (1 - w0 - w1) v[f2]. Rows 0-67 are the iBUG 68 points (REALY's
regions and seven_keypoints index them as iBUG), rows 68-84 further points of REALY's own set.

`transfer_keypoints` writes a model's file from a template REALY ships (e.g. REALY/data/HIFI3D.obj + .txt,
or BFM09): rows 0-67 are the model's own 68 landmark vertices (what it places on image landmarks); rows 68-84
are REALY's points carried over: the template's 85 keypoints are moved onto the model's mean shape by the
similarity that best maps their first 68 onto the model's landmarks, and each is replaced by its closest point
on the model's surface. The carried points are as exact as the two templates' shapes agree; REALY's authors
offer to make the file from a template mesh, which is the check for a leaderboard submission.

Shapes: vertices (N, 3), triangles (F, 3), rows (85, 3) [triangle, w0, w1], keypoints (85, 3).
"""

import json
from pathlib import Path

import numpy as np

from cest.eval.surface import apply, closest_points, similarity_transform

KEYPOINTS = 85
IBUG = 68


def read_barycentric(path: Path) -> np.ndarray:
    rows = np.asarray(json.loads(Path(path).read_text()), np.float64)
    if rows.shape != (KEYPOINTS, 3):
        raise ValueError(f"{path}: expected {KEYPOINTS} rows [triangle, w0, w1], got shape {rows.shape}")
    return rows


def write_barycentric(path: Path, rows: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([[int(t), float(w0), float(w1)] for t, w0, w1 in rows]))
    return path


def keypoints_from_barycentric(vertices: np.ndarray, triangles: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """REALY's keypoints (85, 3) of a mesh from its barycentric rows."""
    corners = np.asarray(vertices, np.float64)[np.asarray(triangles)[rows[:, 0].astype(np.int64)]]
    weights = np.stack([rows[:, 1], rows[:, 2], 1.0 - rows[:, 1] - rows[:, 2]], axis=1)
    return np.einsum("kj,kjd->kd", weights, corners)


def vertex_rows(triangles: np.ndarray, vertex_indices: np.ndarray) -> np.ndarray:
    """Rows placing each keypoint exactly on a vertex: a triangle that has it as a corner, weight 1 there."""
    triangles = np.asarray(triangles)
    rows = []
    for vertex in vertex_indices:
        triangle, corner = (int(i) for i in np.argwhere(triangles == vertex)[0])
        rows.append([triangle, float(corner == 0), float(corner == 1)])
    return np.asarray(rows, np.float64)


def transfer_keypoints(vertices: np.ndarray, triangles: np.ndarray, landmark_indices: np.ndarray,
                       template_vertices: np.ndarray, template_triangles: np.ndarray,
                       template_rows: np.ndarray) -> np.ndarray:
    """The model's 85 barycentric rows (module docstring): its 68 landmarks, then REALY's 17 carried over."""
    template_points = keypoints_from_barycentric(template_vertices, template_triangles, template_rows)
    landmarks = np.asarray(vertices, np.float64)[np.asarray(landmark_indices)]
    moved = apply(similarity_transform(template_points[:IBUG], landmarks), template_points[IBUG:])
    _, triangle_ids, weights = closest_points(moved, vertices, triangles)
    carried = np.concatenate([triangle_ids[:, None], weights[:, :2]], axis=1)
    return np.concatenate([vertex_rows(triangles, landmark_indices), carried])
