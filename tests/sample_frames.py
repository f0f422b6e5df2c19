"""Real test frames: 8 clips of the VoxCeleb-layout sample through the preprocessing pipeline, 4 frames each.

`sample_clips` (tests/sample_clips.py) runs each clip through `pipelines.stages.process_input` in this process
(decord decode, dlib landmarks with tracking, aligned 224 crop, skin mask; the code the Ray Data job runs);
`sample_frames` turns the first segment of each into an in-memory frame set at 64 x 64 (`jobs.frames`).
"""

import pytest

from cest.train_local import FrameSet
from jobs.frames import frames_from_rows
from pipelines.config import PreprocessConfig
from pipelines.schema import decode_clip_row

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
# Every 4th frame of the first 64: a couple of seconds of each clip, enough for tracking and a segment.
PIPELINE = PreprocessConfig(frame_stride=4, max_frames=16, min_segment_frames=4, detector="dlib")


@pytest.fixture(scope="session")
def sample_frames(sample_clips) -> FrameSet:
    """4 evenly spaced frames of the first segment of each of the 8 clips at 64 x 64, with pipeline landmarks
    and masks."""
    _, rows = sample_clips
    first_segments = [decode_clip_row(row) for row in rows if row["segment_index"] == 0]
    assert len(first_segments) == len(CLIPS)
    return frames_from_rows(first_segments, size=64, frames_per_clip=4)
