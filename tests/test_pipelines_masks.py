"""Face masks: the landmark region x skin model drops occluders inside the face region."""


import numpy as np
import pytest

from pipelines.config import PreprocessConfig
from sample_assets import sample_clip
from pipelines.inputs import make_input
from pipelines.landmarks import DlibLandmarker
from pipelines.masks import SkinRegionMasker, _mahalanobis2, face_region
from pipelines.schema import decode_clip_row
from pipelines.stages import process_input



@pytest.fixture(scope="module")
def crop_and_landmarks():
    cfg = PreprocessConfig(max_frames=8)
    item = make_input(str(sample_clip("id10024/lpd11")))
    (row,) = process_input(item, cfg, DlibLandmarker(), SkinRegionMasker())
    clip = decode_clip_row(row)
    return clip["frames"][0], clip["landmarks"][0]


def test_mahalanobis_matches_the_matrix_form():
    rng = np.random.default_rng(0)
    points, mean = rng.normal(size=(50, 2)), rng.normal(size=2)
    a = rng.normal(size=(2, 2))
    inverse = a @ a.T + np.eye(2)
    expected = [(p - mean) @ inverse @ (p - mean) for p in points]
    assert _mahalanobis2(points, mean, inverse) == pytest.approx(expected)


def test_mask_is_inside_the_face_region_and_drops_an_occluder(crop_and_landmarks):
    crop, landmarks = crop_and_landmarks
    masker = SkinRegionMasker()
    region = face_region(landmarks, crop.shape[:2])
    mask = masker(crop, landmarks)
    assert not (mask & (1 - region)).any()
    assert mask.sum() > 0.7 * region.sum()
    # A blue bar (a hand, a glasses arm) across the cheek, inside the face region.
    occluded = crop.copy()
    x0, x1 = int(landmarks[1, 0]), int(landmarks[31, 0])
    y0, y1 = int(landmarks[29, 1]) - 4, int(landmarks[29, 1]) + 4
    occluded[y0:y1, x0:x1] = (40, 60, 200)
    bar = np.zeros_like(mask)
    bar[y0:y1, x0:x1] = 1
    assert (mask & bar).sum() > 0.8 * (region & bar).sum()
    assert (masker(occluded, landmarks) & bar).sum() < 0.05 * (region & bar).sum()


def test_padding_outside_the_source_frame_is_never_in_the_mask(tmp_path):
    """A tight, low-saturation crop (as VoxCeleb's 224 px clips, under cool light): the aligned crop
    reaches past the source frame; the black padding there has neutral chroma, close to the skin model
    of a pale face. Before the fix 242 padding pixels were in the masks of this clip."""
    from pipelines.decode import decode_video
    from video_files import encode

    frames = decode_video(str(sample_clip("id10001/pcavs00015")), PreprocessConfig(max_frames=16)).frames
    tight = frames[:, 34:204, 30:196].astype(np.float32)
    gray = tight.mean(axis=3, keepdims=True)
    tight = np.clip(gray + 0.2 * (tight - gray), 0, 255).astype(np.uint8)
    path = encode(tmp_path / "tight.mp4", tight)
    rows = process_input(make_input(str(path)), PreprocessConfig(min_side=32), DlibLandmarker(), SkinRegionMasker())
    assert rows[0]["row_kind"] == "clip"
    height, width = tight.shape[1:3]
    ys, xs = np.mgrid[0:224, 0:224] + 0.5
    padding_pixels = 0
    for row in rows:
        clip = decode_clip_row(row)
        for mask, matrix in zip(clip["masks"], clip["crop_transforms"]):
            inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
            sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
            sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
            outside = (sx < 0) | (sx > width) | (sy < 0) | (sy > height)
            padding_pixels += outside.sum()
            assert not (mask.astype(bool) & outside).any()
    assert padding_pixels > 16 * 224 * 224 * 0.1  # the crops do reach past the frame
