"""Real test frames: a few frames per clip of the VoxCeleb-layout sample, cropped around dlib's 68 landmarks.

Stand-in for the preprocessing pipeline (pipelines/) until it lands: decode evenly spaced frames with OpenCV,
detect the face and its iBUG 68 landmarks with dlib (the shape predictor is read by file path from the
installed face_recognition_models package), crop a square around the landmarks, resize, and make the face
mask from the landmarks' convex hull. `sample_frames` is a session fixture that caches the result.
"""

import importlib.util
import os
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest
import torch

from cest.train_local import FrameSet, load_frames, save_frames

# The asset mirror (CEST_ASSETS_MIRROR, as the Makefile sets it), by default ../shared/assets next to the repo.
ASSETS = Path(os.environ.get("CEST_ASSETS_MIRROR", Path(__file__).resolve().parents[1].parent / "shared" / "assets"))
SAMPLE_DIR = ASSETS / "voxceleb_sample"
# Crop side = CROP_FACTOR x the larger side of the landmark box: the face (jaw width) then fills about 3/4 of
# the crop, the framing that ModelConfig.init_scale and camera.canonical_crop assume.
CROP_FACTOR = 1.4
# Clips used by the tests: one per speaker, mixing the 224 px VoxCeleb crops with larger, harder videos.
CLIPS = (
    "id10001/pcavs00015",
    "id10002/pcavs00086",
    "id10003/pcavs00373",
    "id10007/pcavs00010",
    "id10008/pcavs00098",
    "id10009/pcavs00473",
    "id10014/vretalk1",
    "id10019/lpd0",
)


def _shape_predictor() -> dlib.shape_predictor:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the face_recognition_models package (dlib's 68-landmark model) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    return dlib.shape_predictor(str(path))


def _read_frames(video: Path, count: int) -> list[np.ndarray]:
    """`count` evenly spaced frames (RGB uint8) from the first 4 seconds; more candidates than needed."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise RuntimeError(f"cannot open {video}")
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    last = min(total, int(4 * capture.get(cv2.CAP_PROP_FPS))) - 1
    wanted = set(np.linspace(0, last, count).round().astype(int).tolist())
    frames = []
    for index in range(last + 1):
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def _landmarks(frame: np.ndarray, detector, predictor) -> np.ndarray | None:
    """(68, 2) landmarks in pixel-centre +0.5 coordinates of the largest detected face, or None."""
    faces = detector(frame, 0)
    if len(faces) == 0:
        return None
    face = max(faces, key=lambda r: r.width() * r.height())
    shape = predictor(frame, face)
    # dlib puts pixel centres at integers; the project's convention puts them at +0.5.
    return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], dtype=np.float64)


def crop_face(frame: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Square crop around the landmarks resized to `size`: image (size, size, 3), landmarks, mask (size, size)."""
    low, high = landmarks.min(0), landmarks.max(0)
    side = CROP_FACTOR * float((high - low).max())
    corner = (low + high) / 2 - side / 2
    # Crop at about native resolution (a pure translation), then INTER_AREA resize: no aliasing.
    native = max(int(round(side)), size)
    k = native / side
    # OpenCV's pixel centres are at integers: x_cv' + 0.5 = k (x_cv + 0.5 - corner).
    affine = np.array([[k, 0, k * (0.5 - corner[0]) - 0.5], [0, k, k * (0.5 - corner[1]) - 0.5]])
    crop = cv2.warpAffine(frame, affine, (native, native), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    image = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    cropped = (landmarks - corner) * (size / side)
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(((cropped - 0.5) * 16).round().astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return image, cropped, mask


def decode_sample(clips: tuple[str, ...], frames_per_clip: int, size: int) -> FrameSet:
    detector = dlib.get_frontal_face_detector()
    predictor = _shape_predictor()
    images, masks, landmarks, clip_ids = [], [], [], []
    for clip_id, clip in enumerate(clips):
        video = SAMPLE_DIR / clip / "00001.mp4"
        kept = 0
        for frame in _read_frames(video, 2 * frames_per_clip):
            points = _landmarks(frame, detector, predictor)
            if points is None:
                continue
            image, cropped, mask = crop_face(frame, points, size)
            images.append(image)
            masks.append(mask)
            landmarks.append(cropped)
            clip_ids.append(clip_id)
            kept += 1
            if kept == frames_per_clip:
                break
        if kept < frames_per_clip:
            raise RuntimeError(f"{video}: a face was found in only {kept} of the decoded frames")
    return FrameSet(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255,
        masks=torch.from_numpy(np.stack(masks)).float()[:, None],
        landmarks=torch.from_numpy(np.stack(landmarks)).float(),
        clip_ids=torch.tensor(clip_ids, dtype=torch.int64),
    )


def cached_sample(cache_dir: Path, clips=CLIPS, frames_per_clip: int = 4, size: int = 64) -> FrameSet:
    path = cache_dir / f"voxceleb_sample_{len(clips)}x{frames_per_clip}_{size}.npz"
    if not path.exists():
        if not SAMPLE_DIR.is_dir():
            raise FileNotFoundError(f"the VoxCeleb sample is not at {SAMPLE_DIR}")
        save_frames(decode_sample(clips, frames_per_clip, size), path)
    return load_frames(path)


@pytest.fixture(scope="session")
def sample_frames(tmp_path_factory) -> FrameSet:
    """8 clips x 4 frames at 64 x 64 (uint8-rounded, as the .npz stores them)."""
    return cached_sample(tmp_path_factory.getbasetemp())
