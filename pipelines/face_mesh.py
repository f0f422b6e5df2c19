"""The `mediapipe` landmark backend: MediaPipe's BlazeFace detector and 468-point face mesh on LiteRT, offline, CPU.

The model files are the `.tflite` files bundled in the mediapipe 0.10.21 wheel (Apache-2.0), taken through the
asset registry as members of that wheel (`cest.assets`, "mediapipe/*"); the mediapipe package itself is not
installed (it pins numpy<2 and protobuf<5). They run on `ai-edge-litert`'s interpreter. The pre- and
post-processing follows MediaPipe's graphs (mediapipe/modules/face_detection and face_landmark, 0.10.21):
- detection: the image letterboxed to the model's 128 x 128 input in [-1, 1]; SSD anchors decoded into boxes
  (the model's 6 keypoints are not used); scores from 0.5; weighted non-maximum suppression (IoU 0.3);
- landmarks: a square region 1.5 x the face box, turned so that the eyes are level, resized to 192 x 192
  in [0, 1]; the mesh's 468 (x, y) are mapped back to the image. The first pass uses the box upright; the
  second re-crops from the first pass's mesh (eye line, centre and size), as MediaPipe's tracking does.

The 468 mesh vertices are reduced to iBUG's 68 points by MESH_TO_IBUG68: every point is a fixed vertex of
the mesh, so at profile the far jaw line lies where that part of the face is in 3D (hidden behind the face),
like AFLW2000-3D's pt3d_68 and the face model's fixed jaw vertices (cest.morphable), not on the visible
silhouette that 300-W's 2D annotations (and dlib's model, trained on them) follow.
"""

from __future__ import annotations

import cv2
import numpy as np

from cest import assets
from pipelines.landmarks import FaceLandmarker, _largest_first

DETECTOR_MODEL = "mediapipe/face_detection_short_range.tflite"
MESH_MODEL = "mediapipe/face_landmark.tflite"
MODEL_FILES = (DETECTOR_MODEL, MESH_MODEL)  # registered assets (cest.assets)

# iBUG 68 (0-based order) -> face mesh vertex: the vertex of that name (eye corners 33/133 and 362/263, mouth
# corners 61/291, inner mouth corners 78/308, nose tip 4, chin 152), with
# - jaw 1-17 on the mesh's face oval from 234 (17: 454, below the outer eye corners, where 300-W puts point 1)
#   over the chin, 9 of its 11 vertices a side; the face model's rule (cest.morphable: point 1 at the eye
#   corners' height, 127, then equal arc-length steps) measured worse against 300-W's and AFLW2000-3D's
#   jaw points (docs/preprocess.md, Profiles);
# - brows 18-27 on the mesh's lower brow line (46 53 52 65 55 and their mirror vertices): on the three frontal
#   photos with 300-W annotations (landmarks68/*.pts) its vertices are the nearest to the brow points
#   (0.06-0.13 of the eye distance on average; the upper line 70 63 105 66 107: 0.08-0.14).
MESH_TO_IBUG68 = np.array([
    234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454,
    46, 53, 52, 65, 55, 285, 295, 282, 283, 276,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
])

MESH_RIGHT_EYE_OUTER, MESH_LEFT_EYE_OUTER = 33, 263  # the subject's eye corners: the region's rotation
DETECTION_INPUT = 128  # face_detection_short_range.tflite: 128 x 128 RGB
MESH_INPUT = 192  # face_landmark.tflite: 192 x 192 RGB
REGION_SCALE = 1.5  # the landmark region's side over the face's size (MediaPipe's RectTransformation)


def _ssd_anchors(input_size: int, strides: list[int], anchors_per_stride: list[int]) -> np.ndarray:
    """(N, 2) anchor centres (x, y) in [0, 1] of MediaPipe's SsdAnchorsCalculator with fixed_anchor_size,
    offset 0.5: per stride a grid of cells, anchors_per_stride anchors at each cell's centre."""
    centres = []
    for stride, count in zip(strides, anchors_per_stride):
        cells = int(np.ceil(input_size / stride))
        y, x = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(x.ravel() + 0.5) / cells, (y.ravel() + 0.5) / cells], axis=1)
        centres.append(np.repeat(grid, count, axis=0))
    return np.concatenate(centres).astype(np.float32)


# face_detection_short_range.pbtxt: 4 layers at strides 8, 16, 16, 16 with 2 anchors each, the last three
# sharing one 8 x 8 grid (6 anchors per cell): 16 x 16 x 2 + 8 x 8 x 6 = 896.
SHORT_RANGE_ANCHORS = _ssd_anchors(DETECTION_INPUT, [8, 16], [2, 6])
DETECTION_MIN_SCORE = 0.5  # MediaPipe's min_score_thresh for the short-range model
DETECTION_NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold


def _interpreter(name: str):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(assets.fetch(name)), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter, tensor: np.ndarray) -> list[np.ndarray]:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor[None].astype(np.float32))
    interpreter.invoke()
    return [interpreter.get_tensor(output["index"])[0] for output in interpreter.get_output_details()]


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    width = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    intersection = width * height
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return intersection / np.maximum((box[2] - box[0]) * (box[3] - box[1]) + areas - intersection, 1e-9)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """MediaPipe's WEIGHTED non-maximum suppression: the best remaining box and those overlapping it by more
    than `threshold` become one box, their score-weighted mean."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    merged = []
    remaining = np.ones(len(boxes), bool)
    while remaining.any():
        first = int(np.argmax(remaining))
        cluster = remaining & (_iou(boxes[first], boxes) > threshold)
        cluster[first] = True
        merged.append((scores[cluster, None] * boxes[cluster]).sum(axis=0) / scores[cluster].sum())
        remaining &= ~cluster
    return np.array(merged, np.float32).reshape(-1, 4)


def _region_transform(centre: np.ndarray, side: float, angle: float, size: int) -> np.ndarray:
    """2x3 affine from image pixels to a size x size region of side `side` around `centre`, turned by
    `angle` (radians; the region's x axis points along that angle in the image)."""
    cos, sin = np.cos(angle), np.sin(angle)
    scale = size / side
    rotation = scale * np.array([[cos, sin], [-sin, cos]])
    return np.hstack([rotation, (size / 2 - rotation @ centre)[:, None]])


class MediaPipeLandmarker(FaceLandmarker):
    """BlazeFace (short range) boxes and the 468-point face mesh reduced to iBUG 68; offline on a CPU.

    BlazeFace sees the whole image at 128 x 128, so a small face in a large photo (under about 50 px in 512)
    is lost: where it finds none, dlib's HOG detector (upsampled once) gives the boxes, and the mesh, which
    re-crops from its own first pass, places the landmarks as for any box."""

    name = "mediapipe"

    def __init__(self):
        self._detector = _interpreter(DETECTOR_MODEL)
        self._mesh = _interpreter(MESH_MODEL)
        self._small_face_detector = None  # dlib's, made on first need

    def detect(self, image: np.ndarray, local: bool = False) -> np.ndarray:
        """Face boxes of the detector, which sees the whole image letterboxed into its 128 x 128 input
        (`local` changes nothing: the input size is fixed)."""
        height, width = image.shape[:2]
        side = max(height, width)
        padded = np.zeros((side, side, 3), np.uint8)
        top, left = (side - height) // 2, (side - width) // 2
        padded[top : top + height, left : left + width] = image
        tensor = cv2.resize(padded, (DETECTION_INPUT, DETECTION_INPUT), interpolation=cv2.INTER_AREA)
        regressors, classificators = _run(self._detector, tensor.astype(np.float32) / 127.5 - 1.0)
        scores = 1 / (1 + np.exp(-np.clip(classificators[:, 0].astype(np.float64), -100, 100)))  # MediaPipe clips at 100
        keep = scores >= DETECTION_MIN_SCORE
        if not keep.any():
            return self._small_faces(image)
        raw = regressors[keep, :4] / DETECTION_INPUT
        centres = SHORT_RANGE_ANCHORS[keep] + raw[:, :2]
        boxes = np.concatenate([centres - raw[:, 2:] / 2, centres + raw[:, 2:] / 2], axis=1)
        boxes = weighted_nms(boxes, scores[keep], DETECTION_NMS_IOU) * side - [left, top, left, top]
        return _largest_first(boxes)

    def _small_faces(self, image: np.ndarray) -> np.ndarray:
        """dlib HOG boxes (x0, y0, x1, y1), largest first, where BlazeFace finds no face."""
        import dlib

        if self._small_face_detector is None:
            self._small_face_detector = dlib.get_frontal_face_detector()
        found = self._small_face_detector(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 1)
        boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in found], np.float32).reshape(-1, 4)
        return _largest_first(boxes)

    def _mesh_in(self, image: np.ndarray, centre: np.ndarray, side: float, angle: float) -> np.ndarray:
        """(468, 2) mesh vertices in image pixels from the region given. Both the mesh's output and our
        pixels put pixel centres at +0.5; OpenCV's warp puts them at integers, hence its shifted matrix."""
        matrix = _region_transform(centre, side, angle, MESH_INPUT)
        on_indices = matrix.copy()
        on_indices[:, 2] += matrix[:, :2] @ [0.5, 0.5] - 0.5
        region = cv2.warpAffine(
            image, on_indices, (MESH_INPUT, MESH_INPUT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        vertices = _run(self._mesh, region.astype(np.float32) / 255.0)[0].reshape(468, 3)[:, :2]
        inverse = cv2.invertAffineTransform(matrix)
        return vertices @ inverse[:, :2].T + inverse[:, 2]

    def mesh(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(468, 2) mesh of the face in `box`: a first pass on the upright region around the box, a second
        on the region the first pass's eyes and extent give (as MediaPipe re-crops from its landmarks)."""
        box = np.asarray(box, np.float64)
        first = self._mesh_in(image, (box[:2] + box[2:]) / 2, REGION_SCALE * max(box[2] - box[0], box[3] - box[1]), 0.0)
        eyes = first[MESH_LEFT_EYE_OUTER] - first[MESH_RIGHT_EYE_OUTER]
        angle = float(np.arctan2(eyes[1], eyes[0]))
        cos, sin = np.cos(angle), np.sin(angle)
        upright = first @ np.array([[cos, -sin], [sin, cos]])  # the mesh in the eye-level frame
        low, high = upright.min(axis=0), upright.max(axis=0)
        centre = np.array([[cos, -sin], [sin, cos]]) @ ((low + high) / 2)
        return self._mesh_in(image, centre, REGION_SCALE * float((high - low).max()), angle)

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        result = np.zeros((len(boxes), 68, 2), np.float32)
        for index, box in enumerate(boxes):
            result[index] = self.mesh(image, box)[MESH_TO_IBUG68]
        return result
