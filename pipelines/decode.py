"""Stage 1: decode a video with decord into working-resolution RGB frames.

decord runs in a helper process so that a file on which it hangs (get_batch can block forever on a
file that over-reports its frame count) costs at most `decode_timeout_s` and the helper is replaced.
decord also returns the last good frame again for indices past the real end: the trailing run of
identical frames is cut so that no repeated frame is ever emitted as a distinct frame.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import time
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

from pipelines.config import PreprocessConfig


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
    frame_indices: np.ndarray  # (T,) int32 index of each frame in the source video
    fps: float
    source_size: tuple[int, int]  # (width, height) of the source frames
    reported_frames: int  # frame count the container claims

    @property
    def working_scale(self) -> tuple[float, float]:
        """(sx, sy): working pixel coordinates = source pixel coordinates * (sx, sy)."""
        height, width = self.frames.shape[1:3]
        return width / self.source_size[0], height / self.source_size[1]


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decode_in_helper(connection, path: str, stride: int, max_frames: int, max_side: int, batch: int):
    """Runs in the helper: send ('meta', ...), then ('frames', indices, frames)..., then ('done',)."""
    import cv2
    import decord

    cv2.setNumThreads(1)
    try:
        reader = decord.VideoReader(path, num_threads=1)
        count = len(reader)
        height, width = reader[0].shape[:2] if count else (0, 0)
        fps = float(reader.get_avg_fps())
    except Exception as error:  # decord raises bare RuntimeError/DECORDError for anything unreadable
        connection.send(("open_error", f"{type(error).__name__}: {str(error)[:300]}"))
        return
    connection.send(("meta", count, fps, width, height))
    indices = list(range(0, count, stride))
    if max_frames:
        indices = indices[:max_frames]
    size = working_size(width, height, max_side)
    for start in range(0, len(indices), batch):
        chunk = indices[start : start + batch]
        try:
            frames = reader.get_batch(chunk).asnumpy()
        except Exception as error:
            connection.send(("decode_error", f"{type(error).__name__}: {str(error)[:300]}"))
            return
        if size != (width, height):
            frames = np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames])
        connection.send(("frames", np.asarray(chunk, np.int32), frames))
    connection.send(("done",))


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
        self._connection.send((path, cfg.frame_stride, cfg.max_frames, cfg.max_side, cfg.decode_batch))
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
                finished = message[0] in ("done", "open_error", "decode_error")
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


def _trim_repeated_tail(frames: list[np.ndarray]) -> int:
    """Number of frames to keep: a trailing run of identical frames counts once."""
    keep = len(frames)
    while keep > 1 and np.array_equal(frames[keep - 1], frames[keep - 2]):
        keep -= 1
    return keep


def _is_grayscale(frames: np.ndarray, tolerance: float) -> bool:
    sample = frames[:: max(1, len(frames) // 8)].astype(np.int16)
    difference = np.abs(sample[..., 0] - sample[..., 1]) + np.abs(sample[..., 1] - sample[..., 2])
    return float(difference.mean()) < tolerance


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


def decode_video(path: str, cfg: PreprocessConfig) -> DecodedVideo:
    """Decode `path` with the configured stride, maximum and size bound; raise Reject when unusable."""
    with tempfile.TemporaryDirectory(prefix="decode-") as directory:
        try:
            local = _local_copy(path, directory)
            size = os.path.getsize(local)
        except (OSError, FileNotFoundError) as error:
            raise Reject("decode", "unreadable", f"cannot read {path}: {error}") from error
        if size == 0:
            raise Reject("decode", "empty", "zero-byte file")
        return _decode_local(local, cfg)


def _decode_local(local: str, cfg: PreprocessConfig) -> DecodedVideo:
    frames, indices, meta, error = [], [], None, None
    messages = _HELPER.decode(local, cfg, time.monotonic() + cfg.decode_timeout_s)
    try:
        for message in messages:
            kind = message[0]
            if kind == "open_error":
                reason = "truncated" if mp4_truncated(local) else "unreadable"
                raise Reject("decode", reason, message[1])
            if kind == "meta":
                meta = message[1:]
                if meta[0] == 0:
                    raise Reject("decode", "empty", "the container holds no video frames")
                if min(meta[2], meta[3]) < cfg.min_side:
                    raise Reject("decode", "too_small", f"{meta[2]}x{meta[3]} < {cfg.min_side} px")
            elif kind == "frames":
                indices.extend(message[1].tolist())
                frames.extend(message[2])
            elif kind == "decode_error":
                error = message[1]
    except TimeoutError:
        if not frames:
            raise Reject("decode", "timeout", f"no frame decoded within {cfg.decode_timeout_s} s") from None
        error = f"decode stopped after {cfg.decode_timeout_s} s"
    finally:
        messages.close()
    if meta is None:  # the helper died before it could open the file
        raise Reject("decode", "unreadable", error or "no answer from the decoder")
    count, fps, width, height = meta
    expected = len(range(0, count, cfg.frame_stride)[: cfg.max_frames or None])
    keep = _trim_repeated_tail(frames) if frames else 0
    missing = 1.0 - keep / expected
    if missing > cfg.truncation_tolerance:
        detail = f"{keep} of {expected} frames decodable" + (f" ({error})" if error else "")
        raise Reject("decode", "truncated", detail)
    video = DecodedVideo(
        frames=np.stack(frames[:keep]),
        frame_indices=np.asarray(indices[:keep], np.int32),
        fps=fps,
        source_size=(width, height),
        reported_frames=count,
    )
    if _is_grayscale(video.frames, cfg.grayscale_tolerance):
        raise Reject("decode", "grayscale", "no colour: the skin model and reflectance need RGB")
    return video


if __name__ == "__main__":
    _serve(multiprocessing.connection.Connection(int(sys.argv[1])))
