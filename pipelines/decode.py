"""Stage 1: decode a video (or read an image) into working-resolution RGB frames.

Two backends run in a helper process, so that a file on which a decoder hangs costs at most
`decode_timeout_s` and the helper is replaced:
- `pyav` (FFmpeg through PyAV, the default): frames in presentation order, edit lists applied; stops
  cleanly at the real end of the stream. A packet that
  fails to decode (a corrupt block, a cut tail) is skipped together with the frames that depend on it
  (up to the next key frame), so the frames before and after survive as separate runs, the same ones
  on every run and whatever the chunking.
- `decord`: random access by index. It trusts the header's frame count and, for indices past the real
  end, returns earlier frames again; so it only reads indices below the presented frame count
  (duration x fps, as PyAV reads it from the container). A file decord cannot open or seek (AV1,
  MPEG-TS) is decoded with PyAV instead of being rejected.
Both: no frame identical to an earlier frame other than the previous one is ever emitted (a replay;
checked by hash against every earlier frame); a run of identical consecutive frames (a still or black
ending) is real footage and kept. Frames come out as a player shows them: turned by the container's
display rotation (phones write portrait video as landscape pictures plus a rotation; decord applies it
itself) and stretched by the pixel aspect ratio (non-square pixels), so that faces are upright and
in proportion, and source coordinates are those of the picture as shown.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.connection
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import xxhash

from pipelines.config import PreprocessConfig
from pipelines.inputs import HEIF_SUFFIXES, is_image


class Reject(Exception):
    """An input that cannot become clip rows; becomes a row of the rejects table."""

    def __init__(self, stage: str, reason: str, detail: str = ""):
        super().__init__(f"{stage}/{reason}: {detail}")
        self.stage = stage
        self.reason = reason
        self.detail = detail


@dataclass
class DecodedVideo:
    frames: np.ndarray  # (T, h, w, 3) uint8 RGB at working resolution
    frame_indices: np.ndarray  # (T,) int32 index of each frame in the source video, increasing
    fps: float
    source_size: tuple[int, int]  # (width, height) of the source frames as shown (rotation, pixel aspect)
    reported_frames: int  # frame count the container's header claims (0: not given)
    presented_frames: int  # frames the source presents, counted to its end (0: stopped at max_frames)
    decode_errors: int = 0  # packets that failed to decode (their frames are missing from the indices)
    replays: int = 0  # frames the decoder returned a second time, dropped

    @property
    def working_scale(self) -> tuple[float, float]:
        """(sx, sy): working pixel coordinates = source pixel coordinates * (sx, sy)."""
        height, width = self.frames.shape[1:3]
        return width / self.source_size[0], height / self.source_size[1]


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def quarter_turns(rotation: float) -> int:
    """np.rot90's k that shows a decoded frame upright, from the display rotation FFmpeg reads from the
    container (degrees counter-clockwise; a phone held upright records -90: turn a quarter clockwise)."""
    return round(rotation / 90) % 4


def _pixel_aspect(stream) -> float:
    """Width over height of one pixel as shown: pixels that are not square (DV; HDV's and AVCHD's
    1440 x 1080, shown at 1920 x 1080) would otherwise squeeze every face."""
    aspect = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return float(aspect) if aspect and aspect > 0 else 1.0


def _display_width(width: int, pixel_aspect: float) -> int:
    return max(1, round(width * pixel_aspect))


def _presented_frames_and_aspect(path: str) -> tuple[int, float]:
    """(frames presented by the container's timing (duration x fps), pixel aspect), via PyAV."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        duration = stream.duration * stream.time_base if stream.duration else (container.duration or 0) / 1e6
        return int(round(float(duration) * fps)), _pixel_aspect(stream)


def _displayed_size(width: int, height: int, turns: int) -> tuple[int, int]:
    return (height, width) if turns % 2 else (width, height)


class _IntactFrames:
    """A PyAV stream's frames that decoded intact, as (index, frame), in presentation order. A frame's
    index counts the frames presented before it, and one for each packet that failed (a video packet
    holds one frame), so frames lost in a damaged block leave a gap in the indices. (Timestamps would
    not do: variable frame rate files have uneven gaps between them.) A failed packet, or a frame the
    decoder flags as patched up, drops the frames up to the next key frame: they depend on what was
    lost. Each failed packet is reported as a ('decode_error', text) message. `presented`: the frames
    the stream presents, once walked to its end (0 before)."""

    def __init__(self, container, stream, connection):
        self.container, self.stream, self.connection = container, stream, connection
        self.presented = 0

    def __iter__(self):
        import av

        index, broken = -1, False
        for packet in self.container.demux(self.stream):
            try:
                decoded = packet.decode()
            except av.FFmpegError as error:
                index, broken = index + 1, True
                self.connection.send(("decode_error", f"{type(error).__name__}: {str(error)[:200]}"))
                continue
            for frame in decoded:
                index += 1
                broken = broken or frame.is_corrupt  # patched up: its pixels are partly invented
                if broken and (frame.is_corrupt or not frame.key_frame):
                    continue
                broken = False
                yield index, frame
        self.presented = index + 1


def _pyav_frames(connection, path: str, stride: int, max_frames: int, max_side: int, chunk: int):
    import av

    with av.open(path) as container:
        if not container.streams.video:
            connection.send(("open_error", "the container holds no video stream"))
            return
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "SLICE", 1  # one CPU per task
        # A damaged packet is an error, not a frame the decoder patches up from its neighbours.
        stream.codec_context.options = {"err_detect": "explode"}
        fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        width, height = _display_width(stream.codec_context.width, _pixel_aspect(stream)), stream.codec_context.height
        size = working_size(width, height, max_side)
        # The rotation is side data of the decoded frames: the size is sent with the first frame.
        meta, turns, kept, indices, frames = ("meta", int(stream.frames or 0), fps), None, 0, [], []
        walk = _IntactFrames(container, stream, connection)
        for index, frame in walk:
            if turns is None:
                turns = quarter_turns(frame.rotation)
                connection.send((*meta, *_displayed_size(width, height, turns)))
            if index % stride:
                continue
            kept += 1
            indices.append(index)
            frames.append(np.rot90(_resize(frame.to_ndarray(format="rgb24"), size), turns))
            if len(frames) == chunk:
                connection.send(("frames", np.asarray(indices, np.int32), np.stack(frames)))
                indices, frames = [], []
            if kept == max_frames:
                break  # stopped early: the frames presented are not counted (walk.presented stays 0)
        if turns is None:  # no frame decoded
            connection.send((*meta, width, height))
        if frames:
            connection.send(("frames", np.asarray(indices, np.int32), np.stack(frames)))
        return walk.presented


def _decord_frames(connection, path: str, stride: int, max_frames: int, max_side: int, chunk: int):
    import decord

    try:
        reader = decord.VideoReader(path, num_threads=1)
        header = len(reader)
        height, width = reader[0].shape[:2] if header else (0, 0)  # decord turns frames by the display rotation
    except decord.DECORDError:  # what decord 0.6 cannot open or seek (AV1, MPEG-TS): PyAV reads it
        return _pyav_frames(connection, path, stride, max_frames, max_side, chunk)
    presented, pixel_aspect = _presented_frames_and_aspect(path)
    width = _display_width(width, pixel_aspect)
    connection.send(("meta", header, float(reader.get_avg_fps()), width, height))
    count = min(header, presented) if presented else header  # never past the real end
    indices = list(range(0, count, stride))[: max_frames or None]
    size = working_size(width, height, max_side)
    for start in range(0, len(indices), chunk):
        part = indices[start : start + chunk]
        try:
            frames = reader.get_batch(part).asnumpy()
        except Exception as error:  # decord raises bare RuntimeError/DECORDError
            connection.send(("decode_error", f"{type(error).__name__}: {str(error)[:200]}"))
            continue
        connection.send(("frames", np.asarray(part, np.int32), np.stack([_resize(frame, size) for frame in frames])))
    return count if len(indices) == len(range(0, count, stride)) else 0  # 0: stopped early at max_frames


def read_image(path: str) -> np.ndarray | None:
    """An image file as (H, W, 3) uint8 RGB, turned as a viewer shows it (EXIF orientation; HEIF's own
    rotation), or None when it cannot be read. HEIC/HEIF (iPhones' photos) through libheif (pi-heif)
    and Pillow, the rest through OpenCV."""
    import cv2

    if path.lower().endswith(HEIF_SUFFIXES):
        return _read_heif(path)
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@functools.cache
def _register_heif_opener() -> None:
    import pi_heif

    pi_heif.register_heif_opener()


def _read_heif(path: str) -> np.ndarray | None:
    from PIL import Image, ImageOps

    _register_heif_opener()
    try:
        with Image.open(path) as image:  # libheif applies the file's rotation and resets EXIF orientation
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, ValueError):  # PIL.UnidentifiedImageError is an OSError
        return None


def _image_frames(connection, path: str, stride: int, max_frames: int, max_side: int, chunk: int):
    """An image is a one-frame clip."""
    image = read_image(path)
    if image is None:
        connection.send(("open_error", "not a readable image"))
        return
    height, width = image.shape[:2]
    connection.send(("meta", 1, 0.0, width, height))
    frame = _resize(image, working_size(width, height, max_side))
    connection.send(("frames", np.zeros(1, np.int32), frame[None]))
    return 1


BACKENDS = {"pyav": _pyav_frames, "decord": _decord_frames, "image": _image_frames}


def _decode_in_helper(connection, path: str, backend: str, stride: int, max_frames: int, max_side: int, chunk: int):
    """Runs in the helper: send ('meta', ...), ('frames', indices, frames) and ('decode_error', text)
    messages, then ('done', frames the source presents, or 0 when decoding stopped early); ('open_error',
    text) when the file cannot be opened at all."""
    import cv2

    cv2.setNumThreads(1)
    try:
        presented = BACKENDS[backend](connection, path, stride, max_frames, max_side, chunk)
    except Exception as error:  # noqa: BLE001 - whatever the decoder raises on open: an unreadable file
        connection.send(("open_error", f"{type(error).__name__}: {str(error)[:300]}"))
        return
    connection.send(("done", presented or 0))


def _serve(connection):
    """Helper process main loop: one decode request at a time until the parent goes away."""
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        _decode_in_helper(connection, *request)


class DecodeHelper:
    """A long-lived helper process running decord; killed and replaced when a decode overruns."""

    def __init__(self):
        self._process = None
        self._connection = None

    def _start(self):
        # A fresh interpreter (not fork: Ray workers run threads; not multiprocessing spawn: it re-runs
        # the parent's __main__, which in a Ray worker is Ray's own entry point).
        self._connection, child = multiprocessing.Pipe()
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.decode", str(child.fileno())], pass_fds=[child.fileno()], env=env
        )
        child.close()

    def stop(self):
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._connection.close()
        self._process = None

    def decode(self, path: str, cfg: PreprocessConfig, deadline: float):
        """Yield the helper's messages; raise TimeoutError (helper killed) when past the deadline."""
        if self._process is None or self._process.poll() is not None:
            self._start()
        backend = "image" if is_image(path) else cfg.decoder
        self._connection.send((path, backend, cfg.frame_stride, cfg.max_frames, cfg.max_side, cfg.decode_batch))
        finished = False
        try:
            while not finished:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._connection.poll(remaining):
                    raise TimeoutError
                try:
                    message = self._connection.recv()
                except (EOFError, OSError):  # the helper crashed (decoder segfault)
                    message = ("decode_error", "decoder process died")
                finished = message[0] in ("done", "open_error")
                yield message
        finally:
            if not finished:  # abandoned mid-stream: its remaining messages must not reach the next video
                self.stop()


_HELPER = DecodeHelper()


def mp4_truncated(path: str) -> bool:
    """True when an ISO-BMFF (mp4/mov) file's top-level boxes claim more bytes than the file has."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[4:8] != b"ftyp":
            return False
        offset = 0
        while offset < size:
            handle.seek(offset)
            header = handle.read(16)
            if len(header) < 8:
                return True
            box_size = struct.unpack(">I", header[:4])[0]
            if box_size == 1:
                if len(header) < 16:
                    return True
                box_size = struct.unpack(">Q", header[8:16])[0]
            elif box_size == 0:  # box runs to the end of the file
                return False
            if box_size < 8:
                return True
            offset += box_size
        return offset > size


class ReplayFilter:
    """Drops frames identical to an earlier frame other than the previous one (decoder replays),
    checked by a hash of every frame seen; identical consecutive frames (a still) pass."""

    def __init__(self):
        self.seen: set[bytes] = set()
        self.previous: bytes | None = None
        self.replays = 0

    def keep(self, frame: np.ndarray) -> bool:
        # xxh3-128: 0.03 ms for a 512 x 512 frame where blake2b took 0.85 ms (a tenth of decoding's
        # cost); an accidental collision of two distinct frames is a 2^-128 chance.
        digest = xxhash.xxh3_128_digest(np.ascontiguousarray(frame))
        if digest == self.previous:
            return True
        if digest in self.seen:
            self.replays += 1
            return False
        self.seen.add(digest)
        self.previous = digest
        return True


def _colourfulness(frame: np.ndarray) -> float:
    """Mean |R-G| + |G-B| in 8-bit levels (about 0 for a grayscale frame)."""
    pixels = frame.astype(np.int16)
    return float((np.abs(pixels[..., 0] - pixels[..., 1]) + np.abs(pixels[..., 1] - pixels[..., 2])).mean())


def _local_copy(path: str, directory: str) -> str:
    """decord reads local files; remote inputs are copied to a temporary file first."""
    if "://" not in path or path.startswith("file://"):
        return path.removeprefix("file://")
    from pipelines.inputs import resolve

    fs, remote = resolve(path)
    local = os.path.join(directory, "video" + os.path.splitext(remote)[1])
    with fs.open_input_stream(remote) as source, open(local, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)
    return local


class VideoStream:
    """One input's frames, decoded in chunks so that a long video is never held whole. Every call of
    `frames()` is one decoding pass yielding (source index, frame) after the replay filter; passes give
    the same frames. After a pass: `fps`, `source_size`, `reported_frames` (the header's count),
    `presented_frames` (counted to the end; 0 when stopped at max_frames), `decode_errors`, `replays`.
    Use as a context manager (a remote input is copied to a local temporary file for the decoders)."""

    GRAYSCALE_SAMPLES = 8  # frames (of the first 8 x 8) the colour check looks at

    def __init__(self, path: str, cfg: PreprocessConfig):
        self.path, self.cfg = path, cfg
        self.fps, self.source_size, self.reported_frames, self.presented_frames = 0.0, (0, 0), 0, 0
        self.decode_errors = self.replays = 0
        self._directory = tempfile.TemporaryDirectory(prefix="decode-")
        try:
            self.local = _local_copy(path, self._directory.name)
            size = os.path.getsize(self.local)
        except FileNotFoundError as error:
            self.close()
            raise Reject("decode", "unreadable", f"cannot read {path}: {error}") from error
        except OSError as error:  # a remote read that failed (network) may work next time
            self.close()
            raise Reject("decode", "io_error" if "://" in path else "unreadable", f"cannot read {path}: {error}") from error
        if size == 0:
            self.close()
            raise Reject("decode", "empty", "zero-byte file")

    def close(self):
        self._directory.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.close()

    def frames(self):
        cfg, local = self.cfg, self.local
        replays, last_index, count, samples, errors, meta = ReplayFilter(), -1, 0, [], 0, None
        messages = _HELPER.decode(local, cfg, time.monotonic() + cfg.decode_timeout_s)
        try:
            for message in messages:
                kind = message[0]
                if kind == "open_error":
                    reason = "truncated" if mp4_truncated(local) else "unreadable"
                    raise Reject("decode", reason, message[1])
                if kind == "meta":
                    meta = message[1:]
                    self.reported_frames, self.fps, self.source_size = meta[0], meta[1], (meta[2], meta[3])
                    if min(meta[2], meta[3]) < cfg.min_side:
                        raise Reject("decode", "too_small", f"{meta[2]}x{meta[3]} < {cfg.min_side} px")
                elif kind == "frames":
                    for index, frame in zip(message[1].tolist(), message[2]):
                        if not replays.keep(frame) or index <= last_index:
                            continue
                        if count % 8 == 0 and len(samples) < self.GRAYSCALE_SAMPLES:
                            samples.append(_colourfulness(frame))  # a number: a frame would hold its chunk
                            if len(samples) == self.GRAYSCALE_SAMPLES:
                                self._check_colour(samples)
                        last_index, count = index, count + 1
                        yield index, frame
                elif kind == "decode_error":
                    errors += 1
                elif kind == "done":
                    self.presented_frames = message[1]
        except TimeoutError:
            # Never a partial result: which frames survive must not depend on the machine's speed.
            raise Reject("decode", "timeout", f"not decoded within {cfg.decode_timeout_s} s") from None
        finally:
            messages.close()
        self.decode_errors, self.replays = errors, replays.replays
        if meta is None:  # the helper died before it could open the file
            raise Reject("decode", "unreadable", "no answer from the decoder")
        if not count:
            if mp4_truncated(local):
                raise Reject("decode", "truncated", "no frame decodable and the file is shorter than its boxes claim")
            raise Reject("decode", "empty" if not errors else "unreadable", f"no frame decoded ({errors} decode errors)")
        if len(samples) < self.GRAYSCALE_SAMPLES:
            self._check_colour(samples)

    def _check_colour(self, samples):
        if float(np.mean(samples)) < self.cfg.grayscale_tolerance:
            raise Reject("decode", "grayscale", "no colour: the skin model and reflectance need RGB")


def decode_video(path: str, cfg: PreprocessConfig) -> DecodedVideo:
    """All frames of `path` at once (the stride, maximum and size bound applied); raise Reject when
    unusable. Holds the whole video: the job streams long videos through `VideoStream` instead."""
    with VideoStream(path, cfg) as stream:
        decoded = list(stream.frames())
        return DecodedVideo(
            frames=np.stack([frame for _, frame in decoded]),
            frame_indices=np.asarray([index for index, _ in decoded], np.int32),
            fps=stream.fps,
            source_size=stream.source_size,
            reported_frames=stream.reported_frames,
            presented_frames=stream.presented_frames,
            decode_errors=stream.decode_errors,
            replays=stream.replays,
        )


if __name__ == "__main__":
    _serve(multiprocessing.connection.Connection(int(sys.argv[1])))
