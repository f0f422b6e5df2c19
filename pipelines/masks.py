"""Stage 4: a face mask per crop.

The paper uses a face-parsing network trained on CelebAMask-HQ; its weights cannot be downloaded here.
The default masker intersects the landmark face region (jaw line, brows raised towards the forehead)
with a skin-colour model fitted per frame on the cheeks and nose (chroma, plus a luminance floor: dark
hair and frames share skin's chroma), so hair, glasses frames, hands and background drop out; the eyes
and the mouth are kept. Within a segment the region's upper boundary and each pixel's skin distance are
averaged over the frames so far (steadier foreheads, docs/preprocess.md). A parsing-network backend only has to provide
the same call: mask = masker(crop (H, W, 3) uint8 RGB, landmarks (68, 2) crop pixels) -> (H, W) uint8 {0, 1}.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from pipelines.config import PreprocessConfig

JAW = list(range(0, 17))
BROWS = list(range(17, 27))
EYES = (list(range(36, 42)), list(range(42, 48)))
MOUTH = list(range(48, 60))
DARK_SPREAD_FLOOR = 4.0  # luminance levels
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


def raised_brows(landmarks: np.ndarray, forehead: float = 0.35) -> np.ndarray:
    """(10, 2) region's upper boundary: the brows (right to left) raised by `forehead` x the
    chin-to-nose-bridge vector, from (68, 2) landmarks."""
    return landmarks[BROWS][::-1] + forehead * (landmarks[27] - landmarks[8])


def face_region(landmarks: np.ndarray, shape, top: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint8 {0, 1}: hull of the jaw line and `top` (default: this frame's raised brows)."""
    top = raised_brows(landmarks) if top is None else top
    return _fill(shape, [cv2.convexHull(np.concatenate([landmarks[JAW], top]).astype(np.float32))[:, 0]])


class SkinRegionMasker:
    def __init__(
        self,
        threshold: float = 9.21,
        memory: float = 0.0,
        boundary_memory: float = PreprocessConfig.mask_boundary_memory,
        pixel_memory: float = PreprocessConfig.mask_pixel_memory,
        forehead_component: bool = True,
        dark_tolerance: float = PreprocessConfig.mask_dark_tolerance,
    ):
        self.threshold = threshold  # squared Mahalanobis distance in (Cr, Cb)
        # Weight of the previous frames' skin model in this frame's (0: each frame on its own); a
        # segment's skin colour changes slowly, so remembering it steadies the mask's borders.
        self.memory = memory
        # Weight of the previous frames' upper boundary (raised brows) in this frame's (0: each frame
        # on its own): the crops are aligned, so frame-to-frame changes there are mostly landmark jitter.
        self.boundary_memory = boundary_memory
        # Weight of the previous frames' skin distance per crop pixel (0: each frame on its own): pixels
        # near the threshold (forehead under changing light, skin-coloured hair) flip frame to frame.
        self.pixel_memory = pixel_memory
        # Keep the forehead when the brows or a glasses rim cut it off from the largest component.
        self.forehead_component = forehead_component
        # Pixels darker than the cheeks' and nose's luminance by more than this many robust deviations
        # are not skin (0: chroma only): brown hair, beards and glasses frames share skin's chroma.
        self.dark_tolerance = dark_tolerance
        self._previous = None  # (mean, inverse covariance) of the previous frame
        self._top = None  # (10, 2) upper boundary of the previous frame
        self._distances = None  # (H, W) averaged skin distances of the previous frame

    def for_segment(self) -> "SkinRegionMasker":
        return SkinRegionMasker(
            self.threshold, self.memory, self.boundary_memory, self.pixel_memory, self.forehead_component, self.dark_tolerance
        )

    def __call__(self, crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        shape = crop.shape[:2]
        top = self._upper_boundary(landmarks)
        region = face_region(landmarks, shape, top)
        sample = _fill(shape, [cv2.convexHull(landmarks[SKIN_SAMPLE].astype(np.float32))[:, 0]]) & region
        ycrcb = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb)
        chroma = ycrcb[..., 1:].reshape(-1, 2).astype(np.float32)
        distance = self._distance(chroma, sample.reshape(-1).astype(bool)).reshape(shape)
        if self.dark_tolerance:
            distance[self._darker_than_skin(ycrcb[..., 0], sample.astype(bool))] = 2 * self.threshold
        skin = (self._pixel_average(distance) < self.threshold).astype(np.uint8)
        features = _fill(shape, [landmarks[EYES[0]], landmarks[EYES[1]], landmarks[MOUTH]])
        mask = region & (skin | features)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        seeds = _forehead_seeds(landmarks, top) if self.forehead_component else np.zeros((0, 2))
        return _main_components(mask, seeds)

    def _upper_boundary(self, landmarks: np.ndarray) -> np.ndarray:
        """(10, 2) raised brows, exponentially averaged over the segment's frames so far."""
        top = raised_brows(landmarks)
        if self._top is not None:
            top = self.boundary_memory * self._top + (1 - self.boundary_memory) * top
        self._top = top
        return top

    def _distance(self, chroma: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """(N,) squared Mahalanobis distances of (N, 2) chroma to the skin model fitted on the (N,)
        boolean sample (all 0, i.e. skin, when the sample is too small to fit one)."""
        if sample.sum() < 10:
            return np.zeros(len(chroma), np.float32)
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
        return _mahalanobis2(chroma, mean, inverse)

    def _darker_than_skin(self, luma: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """(H, W) bool: luminance below the sample's median by more than `dark_tolerance` robust
        deviations (1.4826 MAD, at least DARK_SPREAD_FLOOR levels so a flat-lit face keeps its shading)."""
        values = luma[sample].astype(np.float32)
        if len(values) < 10:
            return np.zeros(luma.shape, bool)
        median = float(np.median(values))
        spread = max(1.4826 * float(np.median(np.abs(values - median))), DARK_SPREAD_FLOOR)
        return luma < median - self.dark_tolerance * spread

    def _pixel_average(self, distance: np.ndarray) -> np.ndarray:
        """(H, W) skin distance exponentially averaged per crop pixel over the segment's frames so far.
        Clipped at twice the threshold first, so that a pixel far from skin (hair, background) in one
        frame weighs no more than one clearly skin-coloured frame."""
        distance = np.minimum(distance, 2 * self.threshold)
        if self._distances is not None:
            distance = self.pixel_memory * self._distances + (1 - self.pixel_memory) * distance
        self._distances = distance
        return distance


def _mahalanobis2(points: np.ndarray, mean: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of (N, 2) points (written out: einsum is several times slower here)."""
    u = points[:, 0] - mean[0]
    v = points[:, 1] - mean[1]
    return inverse[0, 0] * u * u + (inverse[0, 1] + inverse[1, 0]) * u * v + inverse[1, 1] * v * v


def _forehead_seeds(landmarks: np.ndarray, top: np.ndarray) -> np.ndarray:
    """(2, 2) points on the forehead: above the inner brow ends, halfway up to the upper boundary."""
    inner = landmarks[[21, 22]]
    return inner + 0.5 * (top[[5, 4]] - inner)  # top runs right to left: 21 and 22 are its 5th and 4th


def _main_components(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(H, W) uint8: the largest 4-connected component of `mask`, and those holding a seed (N, 2)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if count <= 2:
        return mask
    keep = {1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))}
    height, width = mask.shape
    for x, y in seeds:
        label = labels[min(height - 1, max(0, int(y))), min(width - 1, max(0, int(x)))]
        if label:
            keep.add(int(label))
    return np.isin(labels, list(keep)).astype(np.uint8)


def mask_options(cfg: PreprocessConfig) -> dict:
    """The configured options of make_masker's skin backend."""
    return dict(
        boundary_memory=cfg.mask_boundary_memory, pixel_memory=cfg.mask_pixel_memory, dark_tolerance=cfg.mask_dark_tolerance
    )


def make_masker(backend: str, threshold: float, **options) -> FaceMasker:
    """options: the backend's own (skin: boundary_memory, pixel_memory, dark_tolerance)."""
    if backend == "skin":
        return SkinRegionMasker(threshold, **options)
    raise ValueError(f"unknown mask backend {backend!r}")
