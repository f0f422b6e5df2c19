"""Stage 3: crop each frame to a square with a similarity transform from its landmarks, smoothed over
the clip. Transforms are 2x3 float32 matrices mapping image pixel coordinates (x right, y down, pixel
centres at +0.5) to crop pixel coordinates in the same convention."""

from __future__ import annotations

import functools

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d


def alignment_frame(landmarks: np.ndarray) -> np.ndarray:
    """(centre x, centre y, axis x, axis y) per frame, FFHQ-style from eyes and mouth corners.

    The crop is the square centred at `centre` whose half-width vector (pointing image-right for an
    upright face) is `axis`. landmarks: (T, 68, 2) -> (T, 4)."""
    eye_left = landmarks[:, 36:42].mean(axis=1)
    eye_right = landmarks[:, 42:48].mean(axis=1)
    mouth = (landmarks[:, 48] + landmarks[:, 54]) / 2
    eye_centre = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth - eye_centre
    # Direction: the eye line blended with the perpendicular of the eye-to-mouth line.
    axis = eye_to_eye + np.stack([eye_to_mouth[:, 1], -eye_to_mouth[:, 0]], axis=1)
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    half_width = np.maximum(np.linalg.norm(eye_to_eye, axis=1) * 2.0, np.linalg.norm(eye_to_mouth, axis=1) * 1.8)
    centre = eye_centre + 0.1 * eye_to_mouth
    return np.concatenate([centre, axis * half_width[:, None]], axis=1)


def smooth_frames(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over time of (T, 4) alignment frames (edges held)."""
    if sigma <= 0 or len(frames) < 2:
        return frames
    return gaussian_filter1d(frames, sigma, axis=0, mode="nearest")


def crop_matrices(frames: np.ndarray, crop_size: int, zoom: float = 1.0) -> np.ndarray:
    """(T, 2, 3) float32 image -> crop matrices: centre -> crop centre, axis -> (crop_size / 2, 0)."""
    centre, axis = frames[:, :2], frames[:, 2:] / zoom
    gain = (crop_size / 2) / (axis**2).sum(axis=1)
    a, b = gain * axis[:, 0], gain * axis[:, 1]
    linear = np.stack([np.stack([a, b], axis=1), np.stack([-b, a], axis=1)], axis=1)  # (T, 2, 2)
    translation = crop_size / 2 - np.einsum("tij,tj->ti", linear, centre)
    return np.concatenate([linear, translation[:, :, None]], axis=2).astype(np.float32)


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., N, 2) through (..., 2, 3) matrices."""
    return np.einsum("...ij,...nj->...ni", matrix[..., :2], points) + matrix[..., None, :, 2]


def scale_input(matrix: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """A matrix on working-frame coordinates as one on source coordinates (working = source * (sx, sy))."""
    result = matrix.copy()
    result[..., :, 0] *= sx
    result[..., :, 1] *= sy
    return result


def _opencv_matrix(matrix: np.ndarray) -> np.ndarray:
    """A (2, 3) matrix in the pixel-centre convention as one on OpenCV's integer pixel centres."""
    linear, translation = matrix[:, :2], matrix[:, 2]
    return np.concatenate([linear, (translation + linear.sum(axis=1) * 0.5 - 0.5)[:, None]], axis=1)


def warp(image: np.ndarray, matrix: np.ndarray, crop_size: int) -> np.ndarray:
    """The crop of `image` under `matrix` (pixel-centre convention converted to OpenCV's integer centres)."""
    return cv2.warpAffine(
        image, _opencv_matrix(matrix), (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def source_coverage(frame_shape: tuple[int, int], matrix: np.ndarray, crop_size: int) -> np.ndarray:
    """(S, S) bool: crop pixels whose every interpolation tap lies inside the source frame (the rest is
    padding). When the crop's corners map at least a pixel inside the frame, all of it does (an affine
    map keeps the square convex), and no warp is needed."""
    height, width = frame_shape
    inverse = cv2.invertAffineTransform(_opencv_matrix(matrix).astype(np.float64))
    corners = np.array([[0, 0, 1], [crop_size - 1, 0, 1], [0, crop_size - 1, 1], [crop_size - 1, crop_size - 1, 1]])
    x, y = inverse @ corners.T
    if x.min() >= 1 and y.min() >= 1 and x.max() <= width - 2 and y.max() <= height - 2:
        return np.ones((crop_size, crop_size), bool)
    return warp(_white_frame(height, width), matrix, crop_size) == 255


@functools.lru_cache(maxsize=4)
def _white_frame(height: int, width: int) -> np.ndarray:
    """A read-only all-255 frame of this size, made once (a video's crops share it)."""
    frame = np.full((height, width), 255, np.uint8)
    frame.flags.writeable = False
    return frame
