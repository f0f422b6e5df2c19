"""Stage 4: a face mask per crop.

The paper uses a face-parsing network trained on CelebAMask-HQ; its weights cannot be downloaded here.
The default masker intersects the landmark face region (jaw line, brows raised towards the forehead)
with a skin-colour model fitted per frame on the cheeks and nose, so hair, glasses frames, hands and
background drop out; the eyes and the mouth are kept. A parsing-network backend only has to provide
the same call: mask = masker(crop (H, W, 3) uint8 RGB, landmarks (68, 2) crop pixels) -> (H, W) uint8 {0, 1}.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

JAW = list(range(0, 17))
BROWS = list(range(17, 27))
EYES = (list(range(36, 42)), list(range(42, 48)))
MOUTH = list(range(48, 60))
SKIN_SAMPLE = [1, 2, 3, 31, 33, 35, 13, 14, 15, 29]  # cheeks and nose: rarely hair or glasses


class FaceMasker(Protocol):
    def __call__(self, crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray: ...

    def for_segment(self) -> "FaceMasker":
        """A masker for the frames of one segment, in time order (it may carry state between them)."""
        ...


def _fill(shape, polygons) -> np.ndarray:
    """Rasterise polygons given in +0.5 pixel-centre coordinates (1/16-pixel precision)."""
    mask = np.zeros(shape, np.uint8)
    points = [np.round((np.asarray(p) - 0.5) * 16).astype(np.int32) for p in polygons]
    cv2.fillPoly(mask, points, 1, lineType=cv2.LINE_8, shift=4)
    return mask


def face_region(landmarks: np.ndarray, shape, forehead: float = 0.35) -> np.ndarray:
    """Jaw line plus the brows raised by `forehead` x the chin-to-nose-bridge distance."""
    up = landmarks[27] - landmarks[8]
    raised = landmarks[BROWS][::-1] + forehead * up
    return _fill(shape, [cv2.convexHull(np.concatenate([landmarks[JAW], raised]).astype(np.float32))[:, 0]])


class SkinRegionMasker:
    def __init__(self, threshold: float = 9.21, memory: float = 0.0):
        self.threshold = threshold  # squared Mahalanobis distance in (Cr, Cb)
        # Weight of the previous frames' skin model in this frame's (0: each frame on its own); a
        # segment's skin colour changes slowly, so remembering it steadies the mask's borders.
        self.memory = memory
        self._previous = None  # (mean, inverse covariance) of the previous frame

    def for_segment(self) -> "SkinRegionMasker":
        return SkinRegionMasker(self.threshold, self.memory)

    def __call__(self, crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        shape = crop.shape[:2]
        region = face_region(landmarks, shape)
        sample = _fill(shape, [cv2.convexHull(landmarks[SKIN_SAMPLE].astype(np.float32))[:, 0]]) & region
        chroma = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb)[..., 1:].reshape(-1, 2).astype(np.float32)
        skin = self._skin(chroma, sample.reshape(-1).astype(bool)).reshape(shape)
        features = _fill(shape, [landmarks[EYES[0]], landmarks[EYES[1]], landmarks[MOUTH]])
        mask = region & (skin | features)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        return _largest_component(mask)

    def _skin(self, chroma: np.ndarray, sample: np.ndarray) -> np.ndarray:
        if sample.sum() < 10:
            return np.ones(len(chroma), np.uint8)
        values = chroma[sample]
        # Robust start (median, MAD) so that an occluder covering part of the cheeks cannot pull the
        # model, then Gaussian refits on the inliers.
        mean = np.median(values, axis=0)
        spread = 1.4826 * np.median(np.abs(values - mean), axis=0) + 1.0
        inverse = np.diag(1.0 / spread**2)
        for _ in range(2):
            inliers = values[_mahalanobis2(values, mean, inverse) < self.threshold]
            if len(inliers) < 10:
                break
            mean = inliers.mean(axis=0)
            inverse = np.linalg.inv(np.cov(inliers.T) + np.eye(2) * 2.0)
        if self.memory and self._previous is not None:
            mean = (1 - self.memory) * mean + self.memory * self._previous[0]
            inverse = (1 - self.memory) * inverse + self.memory * self._previous[1]
        self._previous = (mean, inverse)
        return (_mahalanobis2(chroma, mean, inverse) < self.threshold).astype(np.uint8)


def _mahalanobis2(points: np.ndarray, mean: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of (N, 2) points (written out: einsum is several times slower here)."""
    u = points[:, 0] - mean[0]
    v = points[:, 1] - mean[1]
    return inverse[0, 0] * u * u + (inverse[0, 1] + inverse[1, 0]) * u * v + inverse[1, 1] * v * v


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if count <= 2:
        return mask
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == largest).astype(np.uint8)


def make_masker(backend: str, threshold: float) -> FaceMasker:
    if backend == "skin":
        return SkinRegionMasker(threshold)
    raise ValueError(f"unknown mask backend {backend!r}")
