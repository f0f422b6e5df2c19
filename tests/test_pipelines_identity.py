"""One primary face per clip: tracks of another person are dropped, a broken track of the same person is kept."""

import numpy as np
import pytest

from pipelines.config import PreprocessConfig
from pipelines.decode import decode_video
from pipelines.identity import FaceIdentity, keep_primary_face
from pipelines.landmarks import DlibLandmarker
from pipelines.tracking import FaceTracker
from sample_assets import sample_clip


@pytest.fixture(scope="module")
def models():
    return DlibLandmarker(), FaceIdentity()


def frames_of(relative: str, count: int) -> np.ndarray:
    return decode_video(str(sample_clip(relative)), PreprocessConfig(max_frames=count)).frames


def tracks_across_a_cut(first: np.ndarray, second: np.ndarray, landmarker):
    frames = np.concatenate([first, np.zeros((4,) + first.shape[1:], np.uint8), second])
    tracks, _ = FaceTracker(landmarker, PreprocessConfig()).track(frames)
    return frames, tracks


def test_another_persons_track_is_dropped(models):
    landmarker, identity = models
    frames, tracks = tracks_across_a_cut(frames_of("id10002/pcavs00086", 12), frames_of("id10003/pcavs00373", 16), landmarker)
    assert [len(positions) for positions, _ in tracks] == [12, 16]
    kept = keep_primary_face(tracks, frames, identity)  # measured descriptor distance: 0.89
    assert [positions.tolist() for positions, _ in kept] == [list(range(16, 32))]


def test_the_same_person_after_a_break_is_kept(models):
    landmarker, identity = models
    clip = frames_of("id10002/pcavs00086", 40)
    frames, tracks = tracks_across_a_cut(clip[:12], clip[20:40], landmarker)
    assert len(keep_primary_face(tracks, frames, identity)) == 2  # measured distance: 0.35
