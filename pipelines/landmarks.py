"""Stage 2a: face boxes and 68 iBUG landmarks behind one interface, with dlib, MediaPipe (pipelines.face_mesh)
and FAN backends.

Coordinates are working-frame pixels, x right, y down, pixel centres at +0.5. Boxes are (x0, y0, x1, y1).
"""

from __future__ import annotations

import importlib.util
import os

import cv2
import numpy as np

from pipelines.config import PreprocessConfig


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return float(intersection / union) if union > 0 else 0.0


class FaceLandmarker:
    """detect(image) -> boxes (N, 4), largest first; landmarks(image, boxes) -> (N, 68, 2) float32.
    detect(..., local=True) is used on small regions where the face fills about verify_face_size px."""

    name = "base"
    batches_frames = False  # landmarks_many runs many frames in one pass (the tracker then follows windows)
    verify_face_size = 100.0  # the box is rescaled to about this many pixels for the local check

    def detect(self, image: np.ndarray, local: bool = False) -> np.ndarray:
        raise NotImplementedError

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def landmarks_many(self, images: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        """One face per image: boxes (N, 4) -> (N, 68, 2). Backends that batch override this."""
        if len(images) == 0:
            return np.zeros((0, 68, 2), np.float32)
        return np.stack([self.landmarks(image, box[None])[0] for image, box in zip(images, boxes)])

    def detect_near(self, image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The detector's box for the face at `box`, found cheaply in a small rescaled region around it,
        or None when no face overlaps `box` there."""
        size = max(box[2] - box[0], box[3] - box[1])
        scale = self.verify_face_size / size
        centre = (box[:2] + box[2:]) / 2
        half = 0.9 * size
        x0, y0 = np.maximum(np.floor(centre - half), 0).astype(int)
        x1, y1 = np.minimum(np.ceil(centre + half), [image.shape[1], image.shape[0]]).astype(int)
        if x1 - x0 < 8 or y1 - y0 < 8:  # the face has left the frame
            return None
        region = cv2.resize(image[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = self.detect(region, local=True)
        expected = (box - [x0, y0, x0, y0]) * scale
        overlaps = [box_iou(candidate, expected) for candidate in found]
        if not overlaps or max(overlaps) <= 0.3:
            return None
        return (found[int(np.argmax(overlaps))] / scale + [x0, y0, x0, y0]).astype(np.float32)


def _largest_first(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.argsort(-areas, kind="stable")]


def dlib_model_path(name: str = "shape_predictor_68_face_landmarks.dat") -> str:
    """A model file inside the face_recognition_models package (not imported: it needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the PyPI package face-recognition-models is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing from face-recognition-models")
    return path


# dlib's CNN detector runs only on images at least this many pixels on each side. Smaller ones cannot hold
# a face it finds (none below 56 px on three sample faces scaled down; its smallest box is 80 px), and
# on a region a few pixels wide (a tracked face leaving the frame) it aborts the process (heap corruption).
CNN_MIN_IMAGE_SIDE = 32


class DlibLandmarker(FaceLandmarker):
    """dlib's HOG face detector and its 68-point shape predictor (runs offline, CPU). With cnn_fallback,
    dlib's CNN face detector (MMOD, in face-recognition-models) runs where HOG finds no face: it finds
    faces HOG misses (turned or tilted heads) at about 30x HOG's CPU time, so HOG stays first."""

    name = "dlib"

    def __init__(self, upsample: int = 1, cnn_fallback: bool = False, cnn_upsample: int = 0):
        import dlib

        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(dlib_model_path())
        self._upsample = upsample
        self._cnn_detector = (
            dlib.cnn_face_detection_model_v1(dlib_model_path("mmod_human_face_detector.dat")) if cnn_fallback else None
        )
        self._cnn_upsample = cnn_upsample

    def detect(self, image: np.ndarray, local: bool = False) -> np.ndarray:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        found = list(self._detector(gray, 0 if local else self._upsample))  # local regions are already scaled
        if not found and self._cnn_detector is not None and min(image.shape[:2]) >= CNN_MIN_IMAGE_SIDE:
            found = [detection.rect for detection in self._cnn_detector(image, 0 if local else self._cnn_upsample)]
        # dlib rectangles hold inclusive pixel indices: the box's far edge is right + 1.
        return _largest_first([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in found])

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        result = np.zeros((len(boxes), 68, 2), np.float32)
        for index, (x0, y0, x1, y1) in enumerate(boxes):
            rectangle = self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
            shape = self._predictor(image, rectangle)
            result[index] = [(part.x + 0.5, part.y + 0.5) for part in shape.parts()]
        return result


class FanLandmarker(FaceLandmarker):
    """face-alignment's 2D FAN (weights from the torch hub cache; downloaded there on first use)."""

    name = "fan"
    batches_frames = True

    def __init__(self, device: str = "auto", face_detector: str = "sfd", batch_size: int = 16):
        import face_alignment
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D,
            device=device,
            face_detector=face_detector,
            flip_input=False,
            compile=False,
            max_batch_size=batch_size,
        )

    def detect(self, image: np.ndarray, local: bool = False) -> np.ndarray:
        found = self._model.face_detector.detect_from_image(np.ascontiguousarray(image))
        return _largest_first([candidate[:4] for candidate in found])

    def landmarks_many(self, images: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        """FAN on many (image, box) pairs at once: face_alignment's own crop and heatmap decoding
        (as in FaceAlignment.get_landmarks_from_image), with the network run on batches of crops."""
        import torch
        from face_alignment.utils import CENTER_Y_OFFSET, crop, get_preds_fromhm

        if len(images) == 0:
            return np.zeros((0, 68, 2), np.float32)
        model = self._model
        centres, scales, crops = [], [], []
        for image, (x0, y0, x1, y1) in zip(images, np.asarray(boxes, np.float64)):
            centre = np.array([x1 - (x1 - x0) / 2.0, y1 - (y1 - y0) / 2.0 - (y1 - y0) * CENTER_Y_OFFSET])
            scale = (x1 - x0 + y1 - y0) / model.face_detector.reference_scale
            centres.append(centre)
            scales.append(scale)
            crops.append(crop(image, centre, scale).transpose((2, 0, 1)).astype(np.float32) / 255.0)
        heatmaps = []
        with torch.no_grad():
            for start in range(0, len(crops), model.max_batch_size):
                batch = torch.from_numpy(np.stack(crops[start : start + model.max_batch_size]))
                output = model.face_alignment_net(batch.to(model.device, dtype=model.dtype))
                output = output[-1] if isinstance(output, list) else output
                heatmaps.append(output.to(device="cpu", dtype=torch.float32).numpy())
        heatmaps = np.concatenate(heatmaps)
        points = [
            get_preds_fromhm(heatmaps[index : index + 1], centres[index], scales[index])[1].reshape(68, 2)
            for index in range(len(crops))
        ]
        return np.stack(points).astype(np.float32) + 0.5

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        if len(boxes) == 0:
            return np.zeros((0, 68, 2), np.float32)
        # face_alignment's crop arithmetic needs Python floats (it fails on numpy.float32 scalars).
        found = self._model.get_landmarks_from_image(image, detected_faces=[[float(v) for v in box] for box in boxes])
        # face_alignment returns pixel-index coordinates; shift to the +0.5 pixel-centre convention.
        return np.stack(found).astype(np.float32) + 0.5


def fetch_model_files(detector: str) -> None:
    """Fetch the registered model files of the backend `detector` (cest.assets; mediapipe's) before any work
    starts, so that a missing one is a single error naming it (AssetError), not a failure of every input."""
    if detector == "mediapipe":
        from cest import assets
        from pipelines.face_mesh import MODEL_FILES

        for name in MODEL_FILES:
            assets.fetch(name)


def make_landmarker(cfg: PreprocessConfig) -> FaceLandmarker:
    """The backend cfg.detector names: every place that finds faces (preprocessing, reconstruction of a user's
    photo or video, the `detected` evaluation) makes its landmarker here, so a crop is made the same way."""
    if cfg.detector == "mediapipe":
        from pipelines.face_mesh import MediaPipeLandmarker

        return MediaPipeLandmarker()
    if cfg.detector == "dlib":
        return DlibLandmarker(
            upsample=cfg.dlib_upsample, cnn_fallback=cfg.dlib_cnn_fallback, cnn_upsample=cfg.dlib_cnn_upsample
        )
    return FanLandmarker(device=cfg.device, face_detector=cfg.fan_face_detector)
