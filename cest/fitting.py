"""Closed-form weak perspective viewpoint from 2D landmarks (demo, initialisation and checks)."""

import numpy as np
import torch
from scipy.spatial.transform import Rotation


def fit_viewpoint(landmarks_px: np.ndarray, model_points: np.ndarray, image_size: int) -> np.ndarray:
    """Least-squares weak perspective viewpoint (7,) mapping model points (K, 3) onto landmarks (K, 2).

    Solves the affine camera x = A X + b linearly, then projects A onto the nearest scaled rotation
    (orthonormalised rows, mean row norm as the scale). Landmarks are in pixels (x right, y down).
    """
    if len(landmarks_px) != len(model_points) or len(landmarks_px) < 4:
        raise ValueError("need at least 4 corresponding landmarks and model points")
    ndc = np.stack([landmarks_px[:, 0] * 2 / image_size - 1, 1 - landmarks_px[:, 1] * 2 / image_size], -1)
    design = np.hstack([model_points, np.ones((len(model_points), 1))])
    solution, *_ = np.linalg.lstsq(design, ndc, rcond=None)  # (4, 2)
    row_x, row_y = solution[:3, 0], solution[:3, 1]
    scale = (np.linalg.norm(row_x) + np.linalg.norm(row_y)) / 2
    approx = np.stack([row_x, row_y, np.cross(row_x, row_y)]) / np.array([[scale], [scale], [scale**2]])
    u, _, vt = np.linalg.svd(approx)
    rotation = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    rotvec = Rotation.from_matrix(rotation).as_rotvec()
    return np.concatenate([[scale], rotvec, [solution[3, 0], solution[3, 1], 0.0]]).astype(np.float32)


def fit_viewpoints(landmarks_px: torch.Tensor, model_points: torch.Tensor, image_size: int) -> torch.Tensor:
    """Batched `fit_viewpoint`: (B, K, 2) landmarks -> (B, 7) viewpoints."""
    points = model_points.detach().cpu().numpy()
    fitted = [fit_viewpoint(lm, points, image_size) for lm in landmarks_px.detach().cpu().numpy()]
    return torch.from_numpy(np.stack(fitted)).to(landmarks_px.device)
