"""Bounded memory: a video whose frames exceed `max_buffered_mib` is decoded twice instead of held whole,
and gives the same rows."""

import tracemalloc

import numpy as np
import pytest

from pipelines.config import PreprocessConfig
from sample_assets import sample_clip
from pipelines.inputs import make_input
from pipelines.landmarks import DlibLandmarker
from pipelines.masks import SkinRegionMasker
from pipelines.stages import input_rows

LONG = sample_clip("id10015/vretalk2")  # 844 x 844: 512 x 512 working frames


@pytest.fixture(scope="module")
def models():
    return DlibLandmarker(), SkinRegionMasker()


def rows_and_peak(models, buffered_mib: int):
    cfg = PreprocessConfig(max_frames=64, max_buffered_mib=buffered_mib, max_segment_frames=32, primary_face_only=False)
    tracemalloc.start()
    peak, rows = 0, []
    for row in input_rows(make_input(str(LONG)), cfg, *models):
        rows.append({key: value for key, value in row.items() if key not in ("settings_json",)})
        peak = max(peak, tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
    return rows, peak


def test_a_long_video_streams_through_in_bounded_memory_with_the_same_rows(models):
    held, held_peak = rows_and_peak(models, buffered_mib=512)
    streamed, streamed_peak = rows_and_peak(models, buffered_mib=12)  # 16 working frames (0.75 MiB each)
    assert [row["row_kind"] for row in held] == ["clip"] * 2 and held == streamed
    frame_bytes = 512 * 512 * 3
    print(f"peak traced memory: {held_peak / frame_bytes:.1f} frames held, {streamed_peak / frame_bytes:.1f} streamed")
    assert held_peak > 60 * frame_bytes  # all 64 working frames held
    # The 16 frames held until the video proves longer, decode chunks in flight (8 frames each) and the
    # tracker's few frames: measured 33 frames' worth (74 when all 64 are held).
    assert streamed_peak < 40 * frame_bytes
    assert np.sum([row["num_frames"] for row in streamed]) == 64
