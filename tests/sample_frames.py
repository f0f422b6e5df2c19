"""Real test frames: a few frames per clip of the VoxCeleb-layout sample, through the preprocessing pipeline.

Each clip runs through `pipelines.stages.process_input` in this process (decord decode, dlib landmarks with
tracking, aligned 224 crop, skin mask; the same code the Ray Data job runs), and `jobs.frames` turns the
clip rows into a frame set at the test resolution. `sample_frames` is a session fixture that caches it.
"""

from pathlib import Path

import pytest

from cest.train_local import FrameSet, load_frames, save_frames
from jobs.frames import frames_from_rows
from pipelines.config import PreprocessConfig
from pipelines.inputs import make_input
from pipelines.landmarks import make_landmarker
from pipelines.masks import make_masker
from pipelines.schema import decode_clip_row
from pipelines.stages import process_input
from sample_assets import sample_clip

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


def clip_rows(clips: tuple[str, ...]) -> list[dict]:
    """The first segment of each clip, decoded (see pipelines.schema.decode_clip_row)."""
    landmarker = make_landmarker(PIPELINE)
    masker = make_masker(PIPELINE.mask_backend, PIPELINE.skin_threshold)
    rows = []
    for clip in clips:
        video = sample_clip(clip)
        produced = [r for r in process_input(make_input(str(video)), PIPELINE, landmarker, masker)
                    if r["row_kind"] == "clip"]
        if not produced:
            raise RuntimeError(f"{video}: the pipeline produced no clip segment")
        rows.append(decode_clip_row(produced[0]))
    return rows


def cached_sample(cache_dir: Path, clips=CLIPS, frames_per_clip: int = 4, size: int = 64) -> FrameSet:
    path = cache_dir / f"voxceleb_sample_{len(clips)}x{frames_per_clip}_{size}.npz"
    if not path.exists():
        save_frames(frames_from_rows(clip_rows(clips), size, frames_per_clip), path)
    return load_frames(path)


@pytest.fixture(scope="session")
def sample_frames(tmp_path_factory) -> FrameSet:
    """4 frames of each of 8 real clips at 64 x 64, with pipeline landmarks and masks."""
    return cached_sample(tmp_path_factory.mktemp("sample_frames"))
