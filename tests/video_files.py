"""Odd video files for the decode tests, written with PyAV (FFmpeg's libx264 and mp4 muxer), and a
phone photo's EXIF orientation."""

import itertools
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def distinct_frames(count: int, size: int = 96, seed: int = 0) -> np.ndarray:
    """(count, size, size, 3) colour frames, each clearly different from every other (a moving square
    on a colour gradient), so that a decoded frame can be matched to its source index."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 // size, y * 255 // size, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    frames = np.repeat(base[None], count, axis=0)
    for index in range(count):
        cx, cy = 8 + (index * 7) % (size - 24), 8 + (index * 3) % (size - 24)
        frames[index, cy : cy + 16, cx : cx + 16] = rng.integers(0, 255, 3)
    return frames


def encode(path: Path, frames, fps: int = 25, b_frames: int = 2, gop: int = 12, display_rotation: int = 0,
           pixel_aspect: Fraction | None = None) -> Path:
    """H.264 in mp4 from an array or any iterable of (h, w, 3) frames; with B-frames the muxer writes an
    edit list (the composition delay). `display_rotation` (degrees counter-clockwise) goes into the
    track's display matrix, as phones write portrait video; `pixel_aspect` (a pixel's width over its
    height as shown) into the stream, as DV and HDV camcorders write it."""
    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"bf": str(b_frames), "g": str(gop), "crf": "12"}
        if display_rotation:
            stream.set_display_rotation(display_rotation)
        if pixel_aspect:
            stream.codec_context.sample_aspect_ratio = pixel_aspect
        for index, frame in enumerate(itertools.chain([first], frames)):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = index
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    return path


def encode_as(path: Path, frames: np.ndarray, codec: str, container_format: str, fps: int = 25) -> Path:
    """Frames in another container and codec (3gp, flv, MPEG-PS and -TS, ASF/wmv, ...)."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = index
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    return path


def trim_edit_list(path: Path, presented_seconds: float) -> Path:
    """Shorten the presentation (the edit list's segment duration) without removing any packet: the
    container then holds more frames than it presents, as in clips trimmed on phones and editors."""
    data = bytearray(path.read_bytes())
    elst = data.find(b"elst")
    mvhd = data.find(b"mvhd")
    assert elst > 0 and mvhd > 0 and data[mvhd + 4] == 0 and data[elst + 4] == 0  # version-0 boxes
    timescale = struct.unpack(">I", data[mvhd + 16 : mvhd + 20])[0]
    struct.pack_into(">I", data, elst + 12, int(presented_seconds * timescale))
    path.write_bytes(bytes(data))
    return path


def corrupt(path: Path, start: float, end: float) -> Path:
    """Overwrite the bytes between two fractions of the file with garbage (a damaged block)."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    first, last = int(len(data) * start), int(len(data) * end)
    data[first:last] = rng.integers(0, 256, last - first, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def match_source(decoded: np.ndarray, source: np.ndarray) -> list[int]:
    """The source index each decoded frame is closest to (mean absolute difference)."""
    source = source.astype(np.int16)
    return [int(np.argmin(np.abs(source - frame.astype(np.int16)).mean(axis=(1, 2, 3)))) for frame in decoded]


def exif_oriented_jpeg(path: Path, jpeg: bytes, orientation: int) -> Path:
    """Write a JPEG with an EXIF orientation tag (6: a viewer turns it a quarter clockwise), as phone
    cameras store portrait photos: an APP1 segment holding one big-endian TIFF entry, after SOI."""
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # tag, SHORT, count, value, padding
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    assert jpeg[:2] == b"\xff\xd8"
    path.write_bytes(jpeg[:2] + segment + jpeg[2:])
    return path
