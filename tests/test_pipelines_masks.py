"""Face masks: the landmark region x skin model drops occluders inside the face region."""

import numpy as np
import pytest

from pipelines.config import PreprocessConfig
from pipelines.inputs import make_input
from pipelines.landmarks import DlibLandmarker
from pipelines.masks import SkinRegionMasker, _mahalanobis2, face_region
from pipelines.schema import decode_clip_row
from pipelines.stages import process_input
from sample_assets import sample_clip


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
