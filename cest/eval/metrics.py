"""Evaluation metrics: AFLW2000-3D sparse landmark NME (3DDFA protocol) and the photometric error (App. B.5).

AFLW2000-3D 68-point 2D NME, exactly as 3DDFA's benchmark (Zhu et al., benchmark_aflw2000.py) computes it:
  per image  NME = mean over points of ||pred - gt||_2 / sqrt(w * h), with (w, h) the extent of the box
             around the ground-truth pt3d_68 x, y of all 68 points (also for the inner-51 score);
  yaw        Pose_Para[0][1] in radians; bins |yaw| <= 30, (30, 60], > 60 degrees;
  headline   the mean of the three bin means ("balanced"); also the plain mean and the count per bin.
Reported in percent, as published tables do.

Pixel convention of pt3d_68: MATLAB's 1-based pixel coordinates (pixel (1, 1) is centred at (1, 1)): the
annotations were made by Zhu et al.'s MATLAB fitting code, and 3DDFA's Python port keeps that frame when it
maps its own predictions to the image (`y = std_size + 1 - y`). Our frame puts the centre of pixel (row i,
column j), 0-based, at (j + 0.5, i + 0.5), so ours = pt3d_68 - 0.5 (`aflw2000_landmarks`); predictions are
compared in that one frame. The measurement against the images is in docs/eval.md.

Photometric error (App. B.5): mean absolute difference on the 0-255 scale between the input crop and the
overlay (the rendered face pasted on the input), over R, G, B, inside the rendered-face mask and over the
whole crop (where pixels off the face contribute 0).

Shapes: landmarks (N, 68, 2) or (68, 2) pixels; images (B, 3, H, W) in [0, 1]; masks (B, 1, H, W).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# iBUG 68: the first 17 points are the jaw line (a silhouette that moves with pose); the inner 51 are
# brows, nose, eyes and mouth.
INNER = slice(17, 68)
YAW_BIN_EDGES_DEG = (30.0, 60.0)
YAW_BIN_NAMES = ("0_30", "30_60", "60_90")
# pt3d_68 (1-based pixel coordinates) minus this is our pixel frame (centres at +0.5, 0-based).
AFLW2000_PIXEL_OFFSET = 0.5


@dataclass
class AFLW2000Annotation:
    landmarks: np.ndarray  # (68, 2) float64, our pixel convention
    yaw: float  # radians, Pose_Para[0][1]


def aflw2000_landmarks(pt3d_68: np.ndarray) -> np.ndarray:
    """pt3d_68 (3, 68) as stored in the .mat -> (68, 2) x, y in our pixel convention."""
    return np.asarray(pt3d_68, np.float64)[:2].T - AFLW2000_PIXEL_OFFSET


def read_aflw2000_mat(path: str | Path) -> AFLW2000Annotation:
    """One AFLW2000-3D .mat file: its 68 landmarks (our convention) and yaw (radians)."""
    from scipy.io import loadmat

    mat = loadmat(str(path))
    return AFLW2000Annotation(aflw2000_landmarks(mat["pt3d_68"]), float(mat["Pose_Para"][0][1]))


def nme_normaliser(gt: np.ndarray) -> np.ndarray:
    """sqrt(w * h) of the box around all 68 ground-truth points: (..., 68, 2) -> (...)."""
    extent = gt.max(-2) - gt.min(-2)
    return np.sqrt(extent[..., 0] * extent[..., 1])


def landmark_nme(pred: np.ndarray, gt: np.ndarray, points: slice = slice(None)) -> np.ndarray:
    """Per-image NME (fraction, not percent) over `points`, normalised by the 68-point box: (N,) or ()."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-2:] != (68, 2):
        raise ValueError(f"expected matching (..., 68, 2) landmarks, got {pred.shape} and {gt.shape}")
    distances = np.linalg.norm(pred[..., points, :] - gt[..., points, :], axis=-1)
    return distances.mean(-1) / nme_normaliser(gt)


def yaw_bin(yaw_radians: np.ndarray) -> np.ndarray:
    """0 for |yaw| <= 30 degrees, 1 for (30, 60], 2 above 60."""
    degrees = np.abs(np.degrees(np.asarray(yaw_radians, np.float64)))
    return (degrees > YAW_BIN_EDGES_DEG[0]).astype(int) + (degrees > YAW_BIN_EDGES_DEG[1]).astype(int)


def aflw2000_summary(nme: np.ndarray, yaw_radians: np.ndarray, prefix: str = "nme") -> dict:
    """Per-bin means, counts, the balanced mean (mean of the bin means) and the overall mean, in percent.

    An empty bin has no mean (None); the balanced mean is then over the bins that have images, and
    `{prefix}_bins_present` says how many those were.
    """
    nme, bins = np.asarray(nme, np.float64), yaw_bin(yaw_radians)
    summary, means = {}, []
    for index, name in enumerate(YAW_BIN_NAMES):
        selected = nme[bins == index]
        summary[f"{prefix}_count_{name}"] = int(len(selected))
        summary[f"{prefix}_pct_{name}"] = float(100 * selected.mean()) if len(selected) else None
        if len(selected):
            means.append(summary[f"{prefix}_pct_{name}"])
    summary[f"{prefix}_pct_balanced"] = float(np.mean(means)) if means else None
    summary[f"{prefix}_bins_present"] = len(means)
    summary[f"{prefix}_pct_mean"] = float(100 * nme.mean()) if len(nme) else None
    return summary


def ced_curve(errors: np.ndarray, max_error: float, steps: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: thresholds (steps,) and the fraction of images at or below each."""
    thresholds = np.linspace(0.0, max_error, steps)
    errors = np.sort(np.asarray(errors, np.float64))
    return thresholds, np.searchsorted(errors, thresholds, side="right") / max(len(errors), 1)


def photometric_error(images: torch.Tensor, overlays: torch.Tensor, masks: torch.Tensor) -> dict:
    """Mean absolute error on the 0-255 scale per image: {"face": (B,), "crop": (B,)}.

    "face" averages over the mask's pixels (and R, G, B); an image whose mask is empty has NaN there.
    "crop" averages over every pixel of the crop.
    """
    if images.shape != overlays.shape or masks.shape != (images.shape[0], 1, *images.shape[2:]):
        raise ValueError(f"shapes differ: images {tuple(images.shape)}, overlays {tuple(overlays.shape)}, "
                         f"masks {tuple(masks.shape)}")
    difference = (images.double() - overlays.double()).abs() * 255
    mask = masks.double()
    face_sum = (difference * mask).sum((1, 2, 3))
    face_count = mask.sum((1, 2, 3)) * images.shape[1]
    face = torch.where(face_count > 0, face_sum / face_count.clamp(min=1), torch.full_like(face_sum, float("nan")))
    return {"face": face, "crop": difference.mean((1, 2, 3))}
