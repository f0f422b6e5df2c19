"""Decode stage: real sample clips, bad files made from real frames, odd files written with PyAV (edit
lists, damaged blocks, still endings), repeated-frame and time guards; both decoder backends."""

import shutil
import struct
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.config import PreprocessConfig
from pipelines.inputs import MEDIA_SUFFIXES, discover_inputs, make_input
from pipelines.landmarks import DlibLandmarker
from pipelines.masks import SkinRegionMasker
from pipelines.stages import process_input
from sample_assets import sample_clip
from pipelines.decode import Reject, ReplayFilter, decode_video, mp4_truncated, quarter_turns
from video_files import corrupt, distinct_frames, encode, encode_as, exif_oriented_jpeg, match_source, trim_edit_list

BACKENDS = ["pyav", "decord"]
SMALL = dict(min_side=32)  # the synthetic files are 96 px
CLIP_512 = sample_clip("id10019/lpd0")  # 78 frames, 512 x 512, 25 fps
CLIP_844 = sample_clip("id10015/vretalk2")  # 125 frames, 844 x 844
CLIP_VFR = sample_clip("id10014/vretalk1")  # variable frame rate: uneven timestamp gaps


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

    return decord.VideoReader(str(CLIP_512)).get_batch(list(range(40))).asnumpy()


@pytest.mark.parametrize("decoder", BACKENDS)
def test_decode_stride_maximum_and_size_bound(decoder):
    cfg = PreprocessConfig(frame_stride=3, max_frames=20, max_side=320, decoder=decoder)
    video = decode_video(str(CLIP_844), cfg)
    assert video.frames.shape == (20, 320, 320, 3)
    assert video.frame_indices.tolist() == list(range(0, 60, 3))
    assert video.source_size == (844, 844)
    assert video.working_scale == pytest.approx((320 / 844, 320 / 844))
    assert video.fps == pytest.approx(25.0)


@pytest.mark.parametrize("clip, count", [(CLIP_512, 78), (CLIP_VFR, 135)])
def test_both_backends_decode_the_same_pixels(clip, count):
    pyav = decode_video(str(clip), PreprocessConfig(decoder="pyav"))
    decord = decode_video(str(clip), PreprocessConfig(decoder="decord"))
    assert len(pyav.frames) == pyav.reported_frames == count
    assert pyav.frame_indices.tolist() == list(range(count))
    assert np.array_equal(pyav.frame_indices, decord.frame_indices)
    assert np.array_equal(pyav.frames, decord.frames)


@pytest.mark.parametrize("decoder", BACKENDS)
@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_a_rotated_phone_video_decodes_upright(tmp_path, real_frames, decoder, rotation):
    # A phone stores the picture as its sensor saw it (landscape) and the turn a player applies.
    upright = real_frames[:12, :, 96:416]  # 320 wide, 512 tall: a portrait picture
    turns = quarter_turns(rotation)
    path = encode(tmp_path / "phone.mp4", np.rot90(upright, -turns, axes=(1, 2)), b_frames=0, display_rotation=rotation)
    video = decode_video(str(path), PreprocessConfig(decoder=decoder))
    assert video.source_size == (320, 512) and video.frames.shape == (12, 512, 320, 3)
    difference = np.abs(video.frames.astype(np.int16) - upright).mean()
    assert difference < 3, difference  # codec loss only; the sideways frames before the fix: 46
    assert video.frame_indices.tolist() == list(range(12))


@pytest.mark.parametrize("decoder", BACKENDS)
def test_pixels_that_are_not_square_are_shown_at_their_width(tmp_path, real_frames, decoder):
    upright = real_frames[:6, :, 96:416]  # 320 x 512
    squeezed = np.stack([cv2.resize(frame, (240, 512), interpolation=cv2.INTER_AREA) for frame in upright])
    path = encode(tmp_path / "hdv.mp4", squeezed, b_frames=0, pixel_aspect=Fraction(4, 3))  # as 1440 -> 1920
    video = decode_video(str(path), PreprocessConfig(decoder=decoder))
    assert video.source_size == (320, 512) and video.frames.shape == (6, 512, 320, 3)
    difference = np.abs(video.frames.astype(np.int16) - upright).mean()
    assert difference < 4, difference  # the codec's and the squeeze's loss


def test_a_phone_photo_is_turned_by_its_exif_orientation(tmp_path, real_frames):
    upright = real_frames[0, :, 96:416]  # portrait, 320 x 512
    stored = np.rot90(upright, 1)  # as the sensor saw it; orientation 6 turns it back a quarter clockwise
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(stored, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    video = decode_video(str(exif_oriented_jpeg(tmp_path / "photo.jpg", jpeg, 6)), PreprocessConfig())
    assert video.source_size == (320, 512)
    assert np.abs(video.frames[0].astype(np.int16) - upright).mean() < 3


CONTAINERS = {  # suffix -> (codec, container format) as cameras, phones and old downloads write them
    ".3gp": ("h264", "3gp"), ".flv": ("flv", "flv"), ".mpg": ("mpeg2video", "mpeg"), ".mpeg": ("mpeg1video", "mpeg"),
    ".ts": ("h264", "mpegts"), ".mts": ("h264", "mpegts"), ".m2ts": ("h264", "mpegts"), ".wmv": ("wmv2", "asf"),
    ".avi": ("mpeg4", "avi"), ".mkv": ("h264", "matroska"), ".mov": ("h264", "mov"), ".webm": ("libvpx-vp9", "webm"),
    ".m4v": ("h264", "mp4"),
}


def test_every_listed_video_container_and_image_format_decodes(tmp_path):
    frames = distinct_frames(12)
    for suffix, (codec, container_format) in CONTAINERS.items():
        encode_as(tmp_path / f"clip{suffix}", frames, codec, container_format)
    images = (".tif", ".tiff", ".bmp", ".webp", ".png", ".jpeg", ".ppm")
    for suffix in images:
        cv2.imwrite(str(tmp_path / f"photo{suffix}"), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    shutil.copy(Path(__file__).parent / "fixtures" / "turned_pattern.heic", tmp_path / "pattern.HEIF")
    listed = {Path(item.path).suffix for item in discover_inputs(str(tmp_path))}
    assert listed == set(CONTAINERS) | set(images) | {".HEIF"}  # every file written is an input
    assert set(MEDIA_SUFFIXES) - {suffix.lower() for suffix in listed} == {".mp4", ".jpg", ".heic"}  # tests above
    for item in discover_inputs(str(tmp_path)):
        if item.path.endswith(".HEIF"):  # not the frames' picture: read in the test above
            assert decode_video(item.path, PreprocessConfig(**SMALL)).frames.shape == (1, 128, 96, 3)
            continue
        video = decode_video(item.path, PreprocessConfig(**SMALL))
        expected = [0] if Path(item.path).stem == "photo" else list(range(12))
        assert video.frame_indices.tolist() == expected, item.path
        assert match_source(video.frames, frames) == expected, item.path  # each its own source frame


@pytest.mark.parametrize("suffix, codec, container_format", [(".ts", "h264", "mpegts"), (".mp4", "libsvtav1", "mp4")])
def test_what_decord_cannot_open_is_decoded_with_pyav(tmp_path, suffix, codec, container_format):
    frames = distinct_frames(12)
    path = encode_as(tmp_path / f"clip{suffix}", frames, codec, container_format)  # MPEG-TS; AV1 as YouTube serves
    video = decode_video(str(path), PreprocessConfig(decoder="decord", **SMALL))
    assert video.frame_indices.tolist() == list(range(12))
    assert match_source(video.frames, frames) == list(range(12))


def test_an_iphone_heic_photo_reads_upright():
    """HEIC, iPhones' default photo format (tests/fixtures/README.md: how the file was made)."""
    y, x = np.mgrid[0:128, 0:96]
    upright = np.stack([x * 255 // 96, y * 255 // 128, np.full_like(x, 128)], -1).astype(np.uint8)
    upright[20:50, 10:40] = (230, 40, 40)
    video = decode_video(str(Path(__file__).parent / "fixtures" / "turned_pattern.heic"), PreprocessConfig(**SMALL))
    assert video.source_size == (96, 128) and video.frame_indices.tolist() == [0]
    assert np.abs(video.frames[0].astype(np.int16) - upright).mean() < 2  # measured 0.7


def source_landmarks(row: dict) -> np.ndarray:
    """The first frame's landmarks in source pixels (the crop transform inverted)."""
    matrix = np.asarray(row["crop_transforms"][:6], float).reshape(2, 3)
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    return np.asarray(row["landmarks"][:136], float).reshape(68, 2) @ inverse[:, :2].T + inverse[:, 2]


def test_a_rotated_phone_video_becomes_the_same_clip_as_the_upright_one(tmp_path, real_frames):
    upright = real_frames[:10, :, 96:416]
    cfg, landmarker, masker = PreprocessConfig(), DlibLandmarker(), SkinRegionMasker()
    rows = {}
    for name, rotation in (("upright", 0), ("phone", -90)):
        path = encode(tmp_path / f"{name}.mp4", np.rot90(upright, -quarter_turns(rotation), axes=(1, 2)), b_frames=0,
                      display_rotation=rotation)
        (rows[name],) = process_input(make_input(str(path)), cfg, landmarker, masker)
    assert rows["phone"]["row_kind"] == "clip", rows["phone"].get("reason")
    assert (rows["phone"]["source_width"], rows["phone"]["source_height"]) == (320, 512)
    assert rows["phone"]["num_frames"] == rows["upright"]["num_frames"] == 10
    distance = np.linalg.norm(source_landmarks(rows["phone"]) - source_landmarks(rows["upright"]), axis=1)
    assert distance.mean() < 1.5, distance.mean()  # the same face, up to the codec's noise


def test_replays_of_any_earlier_frame_are_dropped_and_stills_kept():
    frames = [np.full((4, 4, 3), value, np.uint8) for value in (1, 2, 3, 3, 3, 1, 4, 2, 5)]
    replays = ReplayFilter()
    assert [replays.keep(frame) for frame in frames] == [True, True, True, True, True, False, True, False, True]
    assert replays.replays == 2


@pytest.mark.parametrize("decoder", BACKENDS)
@pytest.mark.parametrize("stride", [1, 4])
def test_header_over_counting_frames_keeps_the_real_frames(tmp_path, decoder, stride):
    """An edit list presents 25 of the 40 frames in the file: the 25 real ones come out, each once
    (decord alone returns 40, the last 15 replays of frame 24, and the job used to reject the file)."""
    source = distinct_frames(40)
    path = trim_edit_list(encode(tmp_path / "trimmed.mp4", source), presented_seconds=1.0)
    video = decode_video(str(path), PreprocessConfig(decoder=decoder, frame_stride=stride, **SMALL))
    assert (video.reported_frames, video.presented_frames) == (40, 25)  # what clip rows record
    assert video.frame_indices.tolist() == list(range(0, 25, stride))
    assert match_source(video.frames, source) == video.frame_indices.tolist()
    # Stopped early by --max-frames, the frames the source presents are not known.
    assert decode_video(str(path), PreprocessConfig(decoder=decoder, max_frames=5)).presented_frames == 0


@pytest.mark.parametrize("decoder", BACKENDS)
def test_a_still_ending_is_real_footage(tmp_path, decoder):
    source = distinct_frames(40)
    source[28:] = 0  # fades to black for the last 12 frames
    video = decode_video(str(encode(tmp_path / "still.mp4", source)), PreprocessConfig(decoder=decoder, **SMALL))
    assert video.frame_indices.tolist() == list(range(40)) and video.replays == 0


@pytest.mark.parametrize("damage", [(0.3, 0.31), (0.45, 0.5)])
def test_a_damaged_block_keeps_the_frames_before_and_after(tmp_path, damage):
    source = distinct_frames(40)
    path = corrupt(encode(tmp_path / "damaged.mp4", source), *damage)
    results = [decode_video(str(path), PreprocessConfig(decode_batch=batch, **SMALL)) for batch in (3, 32)]
    video = results[0]
    assert video.decode_errors > 0
    gaps = np.flatnonzero(np.diff(video.frame_indices) > 1)
    assert len(gaps) >= 1 and video.frame_indices[0] == 0 and video.frame_indices[-1] == 39
    # Every frame that comes out is the source frame its index names (nothing patched up or shifted).
    assert match_source(video.frames, source) == video.frame_indices.tolist()
    error = np.abs(video.frames.astype(int) - source[video.frame_indices]).mean(axis=(1, 2, 3))
    assert error.max() < 3.5  # measured 1.4-2.2: the encoder's own loss
    # The same frames whatever the chunking.
    assert np.array_equal(results[1].frame_indices, video.frame_indices)


def test_timeout_bounds_the_time_per_video():
    import time

    started = time.monotonic()
    with pytest.raises(Reject) as rejected:
        decode_video(str(sample_clip("id10021/lpd6")), PreprocessConfig(decode_timeout_s=0.2))
    assert time.monotonic() - started < 5
    assert rejected.value.reason == "timeout"
    # The helper was replaced: the next video decodes normally.
    assert len(decode_video(str(CLIP_512), PreprocessConfig(max_frames=5)).frames) == 5


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


def test_cut_download_of_an_index_first_mp4_keeps_the_frames_before_the_cut(tmp_path, real_frames):
    whole = moov_first(write_video(tmp_path / "whole.mp4", real_frames).read_bytes())
    (tmp_path / "first.mp4").write_bytes(whole)
    complete = decode_video(str(tmp_path / "first.mp4"), PreprocessConfig())
    assert len(complete.frames) == len(real_frames)
    (tmp_path / "cut.mp4").write_bytes(whole[: int(len(whole) * 0.8)])
    cut = decode_video(str(tmp_path / "cut.mp4"), PreprocessConfig())
    count = len(cut.frames)
    assert 0.5 * len(real_frames) < count < len(real_frames)
    assert cut.frame_indices.tolist() == list(range(count))
    assert np.array_equal(cut.frames, complete.frames[:count])


def test_complete_mp4_is_not_truncated(tmp_path, real_frames):
    assert not mp4_truncated(str(write_video(tmp_path / "ok.mp4", real_frames)))
    assert not mp4_truncated(str(CLIP_512))
