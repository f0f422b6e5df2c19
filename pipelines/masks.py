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
        luma, cr, cb = cv2.split(cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb))
        luma_sample, cr_sample, cb_sample = _masked_values(sample, luma, cr, cb)
        distance = self._distance(cr, cb, cr_sample, cb_sample)
        if self.dark_tolerance:
            distance[luma < self._darkness_limit(luma_sample)] = 2 * self.threshold
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

    def _distance(self, cr: np.ndarray, cb: np.ndarray, cr_sample: np.ndarray, cb_sample: np.ndarray) -> np.ndarray:
        """(H, W) squared Mahalanobis distances of the crop's chroma planes (H, W) to the skin model
        fitted on the sample's chroma values, (N,) each (all 0, i.e. skin, when the sample is too small)."""
        if len(cr_sample) < 10:
            return np.zeros(cr.shape, np.float32)
        values = np.stack([cr_sample, cb_sample], axis=1).astype(np.float32)
        # Robust start (median, MAD) so that an occluder covering part of the cheeks cannot pull the
        # model, then Gaussian refits on the inliers.
        mean = np.median(values, axis=0)
        spread = 1.4826 * np.median(np.abs(values - mean), axis=0) + 1.0
        inverse = np.diag(1.0 / spread**2)
        for _ in range(2):
            inliers = values[_mahalanobis2(values[:, 0], values[:, 1], mean, inverse) < self.threshold]
            if len(inliers) < 10:
                break
            mean = inliers.mean(axis=0)
            inverse = np.linalg.inv(_covariance(inliers[:, 0], inliers[:, 1]) + np.eye(2) * 2.0)
        if self.memory and self._previous is not None:
            mean = (1 - self.memory) * mean + self.memory * self._previous[0]
            inverse = (1 - self.memory) * inverse + self.memory * self._previous[1]
        self._previous = (mean, inverse)
        return _mahalanobis2(cr.astype(np.float32), cb.astype(np.float32), mean, inverse)

    def _darkness_limit(self, sample: np.ndarray) -> float:
        """Luminance below which a pixel is not skin: the sample's (N,) median less `dark_tolerance`
        robust deviations (1.4826 MAD, at least DARK_SPREAD_FLOOR levels so a flat-lit face keeps its
        shading); -1 (no pixel is darker) when the sample is too small."""
        if len(sample) < 10:
            return -1.0
        values = sample.astype(np.float32)
        median = float(np.median(values))
        spread = max(1.4826 * float(np.median(np.abs(values - median))), DARK_SPREAD_FLOOR)
        return median - self.dark_tolerance * spread

    def _pixel_average(self, distance: np.ndarray) -> np.ndarray:
        """(H, W) skin distance exponentially averaged per crop pixel over the segment's frames so far.
        Clipped at twice the threshold first, so that a pixel far from skin (hair, background) in one
        frame weighs no more than one clearly skin-coloured frame."""
        distance = np.minimum(distance, 2 * self.threshold)
        if self._distances is not None:
            distance = self.pixel_memory * self._distances + (1 - self.pixel_memory) * distance
        self._distances = distance
        return distance


def _mahalanobis2(u: np.ndarray, v: np.ndarray, mean: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distances of points (u, v), two arrays of one shape, to `mean` (2,) under the
    (2, 2) inverse covariance (written out: einsum is several times slower here)."""
    u = u - mean[0]
    v = v - mean[1]
    return inverse[0, 0] * u * u + (inverse[0, 1] + inverse[1, 0]) * u * v + inverse[1, 1] * v * v


def _masked_values(mask: np.ndarray, *planes: np.ndarray) -> list[np.ndarray]:
    """plane[mask] for each (H, W) plane, in row-major order, read from the mask's bounding box (on a
    crop's small cheek sample this is several times cheaper than indexing the whole crop)."""
    x, y, w, h = cv2.boundingRect(mask)
    inside = mask[y : y + h, x : x + w].astype(bool)
    return [plane[y : y + h, x : x + w][inside] for plane in planes]


def _covariance(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(2, 2) sample covariance of points (u, v), (N,) each: np.cov's arithmetic without its overhead."""
    points = np.array([u, v], np.float64)
    points -= points.mean(axis=1, keepdims=True)
    covariance = np.dot(points, points.T)
    covariance *= 1.0 / (len(u) - 1)
    return covariance


def _forehead_seeds(landmarks: np.ndarray, top: np.ndarray) -> np.ndarray:
    """(2, 2) points on the forehead: above the inner brow ends, halfway up to the upper boundary."""
    inner = landmarks[[21, 22]]
    return inner + 0.5 * (top[[5, 4]] - inner)  # top runs right to left: 21 and 22 are its 5th and 4th


def _main_components(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(H, W) uint8: the largest 4-connected component of `mask`, and those holding a seed (N, 2)."""
    count, labels = cv2.connectedComponents(mask, connectivity=4)
    if count <= 2:
        return mask
    keep = {1 + int(np.argmax(np.bincount(labels.ravel(), minlength=count)[1:]))}
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
