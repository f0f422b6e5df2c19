"""Decode stage: real sample clips, bad files made from real frames, repeated-frame and time guards."""

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.config import PreprocessConfig
from pipelines.decode import Reject, _trim_repeated_tail, decode_video, mp4_truncated
from sample_assets import sample_clip

CLIP_512 = "id10019/lpd0"  # 78 frames, 512 x 512, 25 fps
CLIP_844 = "id10015/vretalk2"  # 125 frames, 844 x 844


def write_video(path: Path, frames: np.ndarray, fps: float = 25.0, color: bool = True) -> Path:
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height), color)
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if color else frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def real_frames():
    import decord

    return decord.VideoReader(str(sample_clip(CLIP_512))).get_batch(list(range(40))).asnumpy()


def test_decode_stride_maximum_and_size_bound():
    cfg = PreprocessConfig(frame_stride=3, max_frames=20, max_side=320)
    video = decode_video(str(sample_clip(CLIP_844)), cfg)
    assert video.frames.shape == (20, 320, 320, 3)
    assert video.frame_indices.tolist() == list(range(0, 60, 3))
    assert video.source_size == (844, 844)
    assert video.working_scale == pytest.approx((320 / 844, 320 / 844))
    assert video.fps == pytest.approx(25.0)


def test_decode_whole_clip_has_no_repeated_tail():
    video = decode_video(str(sample_clip(CLIP_512)), PreprocessConfig())
    assert len(video.frames) == video.reported_frames == 78
    assert not np.array_equal(video.frames[-1], video.frames[-2])


def test_repeated_tail_counts_once():
    frames = [np.full((4, 4, 3), value, np.uint8) for value in (1, 2, 3, 3, 3, 3)]
    assert _trim_repeated_tail(frames) == 3
    assert _trim_repeated_tail(frames[:3]) == 3


def test_timeout_bounds_the_time_per_video():
    import time

    started = time.monotonic()
    with pytest.raises(Reject) as rejected:
        decode_video(str(sample_clip("id10021/lpd6")), PreprocessConfig(decode_timeout_s=0.2))
    assert time.monotonic() - started < 5
    assert rejected.value.reason in ("timeout", "truncated")
    # The helper was replaced: the next video decodes normally.
    assert len(decode_video(str(sample_clip(CLIP_512)), PreprocessConfig(max_frames=5)).frames) == 5


@pytest.mark.parametrize(
    "make, reason",
    [
        ("zero_byte", "empty"),
        ("text", "unreadable"),
        ("truncated", "truncated"),
        ("tiny", "too_small"),
        ("grayscale", "grayscale"),
    ],
)
def test_bad_files_are_rejected_with_their_reason(tmp_path, real_frames, make, reason):
    path = tmp_path / f"{make}.mp4"
    if make == "zero_byte":
        path.write_bytes(b"")
    elif make == "text":
        path.write_text("this is not a video\n" * 20)
    elif make == "truncated":
        whole = write_video(tmp_path / "whole.mp4", real_frames).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        assert mp4_truncated(str(path))
    elif make == "tiny":
        write_video(path, np.stack([cv2.resize(frame, (32, 32), interpolation=cv2.INTER_AREA) for frame in real_frames]))
    elif make == "grayscale":
        gray = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in real_frames])
        write_video(path, gray, color=False)
    with pytest.raises(Reject) as rejected:
        decode_video(str(path), PreprocessConfig())
    assert (rejected.value.stage, rejected.value.reason) == ("decode", reason)


def moov_first(data: bytes) -> bytes:
    """The same mp4 with its index (moov) before the media data, as streaming-friendly files have it."""
    boxes, offset = {}, 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        boxes[kind] = data[offset : offset + size]
        offset += size
    moov = bytearray(boxes.pop(b"moov"))
    table = moov.find(b"stco")  # chunk offsets move by the size of the moov box
    for entry in range(struct.unpack(">I", moov[table + 8 : table + 12])[0]):
        position = table + 12 + 4 * entry
        struct.pack_into(">I", moov, position, struct.unpack(">I", moov[position : position + 4])[0] + len(moov))
    return boxes.pop(b"ftyp") + bytes(moov) + b"".join(boxes.values())


def test_cut_download_of_an_index_first_mp4_is_truncated(tmp_path, real_frames):
    whole = moov_first(write_video(tmp_path / "whole.mp4", real_frames).read_bytes())
    (tmp_path / "first.mp4").write_bytes(whole)
    assert len(decode_video(str(tmp_path / "first.mp4"), PreprocessConfig()).frames) == len(real_frames)
    (tmp_path / "cut.mp4").write_bytes(whole[: int(len(whole) * 0.8)])
    with pytest.raises(Reject) as rejected:
        decode_video(str(tmp_path / "cut.mp4"), PreprocessConfig())
    assert rejected.value.reason == "truncated"


def test_complete_mp4_is_not_truncated(tmp_path, real_frames):
    assert not mp4_truncated(str(write_video(tmp_path / "ok.mp4", real_frames)))
    assert not mp4_truncated(str(sample_clip(CLIP_512)))
