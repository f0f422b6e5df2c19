"""The Parquet contract between `make preprocess` and the training side.

Output directory layout:
  clips/*.parquet    one row per clip segment (CLIP_SCHEMA)
  rejects/*.parquet  one row per rejected input (REJECT_SCHEMA)
  retry/*.parquet    one row per input that failed for a transient reason (REJECT_SCHEMA); redone next run
  run_config.json    the settings the directory was written with (a resumed run must match)
  summary.json       counts after the last run

Every input appears either in clips (one or more segments, all of them) or in rejects, never both.
Image conventions (see the project's geometry conventions): landmarks in crop pixel coordinates,
x right, y down, pixel centres at +0.5, iBUG 68 order; masks {0, 1}.

Read a row with `decode_clip_row(row)`; check a table with `validate_table(table)`.
"""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pyarrow as pa

# name -> (type, description). Per-frame arrays are flattened row-major into one list per row.
CLIP_COLUMNS = {
    "segment_key": (pa.string(), "'{speaker_id}/{video_id}/{clip_id}/{segment_index:03d}', unique per output"),
    "input_id": (pa.string(), "16 hex digits, sha1 of the canonical source location (symlinks resolved); the resume key and file name"),
    "source_path": (pa.string(), "the video's canonical path (absolute, symlinks resolved) or normalised URI"),
    "speaker_id": (pa.string(), "from the VoxCeleb layout {speaker_id}/{video_id}/{clip}.mp4 or the manifest"),
    "video_id": (pa.string(), "as speaker_id"),
    "clip_id": (pa.string(), "as speaker_id (file name without .mp4; other suffixes kept: 00001.avi)"),
    "segment_index": (pa.int32(), "0-based index of this segment among the input's segments, in time order"),
    "num_segments": (pa.int32(), "number of segments the input produced; all are present in a complete output"),
    "num_frames": (pa.int32(), "T, frames in this segment"),
    "fps": (pa.float32(), "source frame rate (frames per second of the source video)"),
    "header_frames": (
        pa.int32(),
        "frame count the source's container header claims (0: none); above presented_frames when the header "
        "over-counts (edit lists of trimmed clips)",
    ),
    "presented_frames": (
        pa.int32(),
        "frames the source presents, counted by decoding to its end (0: decoding stopped early at max_frames)",
    ),
    "frame_indices": (pa.list_(pa.int32()), "(T,) index of each frame in the source video, increasing"),
    "source_width": (pa.int32(), "source frame width in pixels, as displayed (the container's rotation and pixel aspect applied)"),
    "source_height": (pa.int32(), "source frame height in pixels, as displayed"),
    "crop_size": (pa.int32(), "S, crops are S x S (224)"),
    "frames_jpeg": (pa.list_(pa.binary()), "(T,) JPEG bytes of S x S RGB crops"),
    "masks_png": (pa.list_(pa.binary()), "(T,) PNG bytes of S x S 8-bit masks, 0 background / 255 face"),
    "landmarks": (pa.list_(pa.float32()), "(T, 68, 2) flattened: iBUG 68 landmarks in crop pixels"),
    "crop_transforms": (
        pa.list_(pa.float32()),
        "(T, 2, 3) flattened: affine matrices, source pixel coordinates -> crop pixel coordinates",
    ),
    "landmark_backend": (pa.string(), "dlib | fan"),
    "pipeline_version": (pa.string(), "pipelines.PIPELINE_VERSION that wrote the row"),
    "settings_json": (pa.string(), "JSON of every PreprocessConfig setting used"),
}

REJECT_COLUMNS = {
    "input_id": (pa.string(), "as in clips"),
    "source_path": (pa.string(), "as in clips"),
    "speaker_id": (pa.string(), "as in clips"),
    "video_id": (pa.string(), "as in clips"),
    "clip_id": (pa.string(), "as in clips"),
    "stage": (pa.string(), "decode | landmarks | crop | error: where the input was given up"),
    "reason": (
        pa.string(),
        "empty | unreadable | truncated | timeout | io_error | too_small | grayscale | no_face | too_short | error",
    ),
    "error": (pa.string(), "human-readable detail (exception text for reason 'error')"),
    "pipeline_version": (pa.string(), "as in clips"),
}

CLIP_SCHEMA = pa.schema([pa.field(name, kind, nullable=False) for name, (kind, _) in CLIP_COLUMNS.items()])
REJECT_SCHEMA = pa.schema([pa.field(name, kind, nullable=False) for name, (kind, _) in REJECT_COLUMNS.items()])

REJECT_REASONS = tuple(REJECT_COLUMNS["reason"][1].split(" | "))
# Failures that may not happen again (a timeout on a busy machine, a network error, an unexpected
# exception): written to retry/, not rejects/, and the input is processed again by the next run.
TRANSIENT_REASONS = ("timeout", "io_error", "error")


class SchemaError(ValueError):
    pass


def _per_frame_lengths(column: pa.ListArray) -> np.ndarray:
    return np.diff(column.offsets.to_numpy())


def validate_table(table: pa.Table) -> None:
    """Raise SchemaError unless `table` is a valid clips table (columns, types, per-frame lengths)."""
    missing = [name for name in CLIP_SCHEMA.names if name not in table.column_names]
    if missing:
        raise SchemaError(f"missing columns: {', '.join(missing)}")
    for field in CLIP_SCHEMA:
        column = table.column(field.name)
        if column.type != field.type:
            raise SchemaError(f"column {field.name} has type {column.type}, expected {field.type}")
        if column.null_count:
            raise SchemaError(f"column {field.name} has {column.null_count} nulls")
    table = table.combine_chunks()
    frames = table.column("num_frames").to_numpy()
    if (frames < 1).any():
        raise SchemaError("num_frames must be >= 1")
    per_frame = {"frame_indices": 1, "frames_jpeg": 1, "masks_png": 1, "landmarks": 136, "crop_transforms": 6}
    for name, width in per_frame.items():
        lengths = _per_frame_lengths(table.column(name).chunk(0)) if table.num_rows else np.zeros(0)
        if not np.array_equal(lengths, frames * width):
            raise SchemaError(f"column {name} does not hold {width} value(s) per frame")
    keys = table.column("segment_key").to_pylist()
    if len(set(keys)) != len(keys):
        raise SchemaError("segment_key is not unique")
    segments = table.select(["segment_index", "num_segments"]).to_pydict()
    if any(not 0 <= i < n for i, n in zip(segments["segment_index"], segments["num_segments"])):
        raise SchemaError("segment_index out of range [0, num_segments)")


def validate_rejects(table: pa.Table) -> None:
    missing = [name for name in REJECT_SCHEMA.names if name not in table.column_names]
    if missing:
        raise SchemaError(f"rejects: missing columns: {', '.join(missing)}")
    unknown = set(table.column("reason").to_pylist()) - set(REJECT_REASONS)
    if unknown:
        raise SchemaError(f"rejects: unknown reasons {sorted(unknown)}")


def decode_image(data: bytes, flags: int) -> np.ndarray:
    """One frame (JPEG, cv2.IMREAD_COLOR_RGB) or mask (PNG, cv2.IMREAD_GRAYSCALE); SchemaError when it does not
    decode (the one place that says so, for every reader of clip rows)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if image is None:
        raise SchemaError("a frame or mask does not decode")
    return image


def decode_clip_row(row: dict) -> dict:
    """numpy arrays of one clip row (a dict as from table.to_pylist()):
    frames (T, S, S, 3) uint8 RGB, masks (T, S, S) uint8 {0, 1}, landmarks (T, 68, 2) float32,
    crop_transforms (T, 2, 3) float32, frame_indices (T,) int32, plus the scalar columns."""
    count, size = row["num_frames"], row["crop_size"]
    frames = [decode_image(data, cv2.IMREAD_COLOR_RGB) for data in row["frames_jpeg"]]
    masks = [decode_image(data, cv2.IMREAD_GRAYSCALE) for data in row["masks_png"]]
    if (len(frames), len(masks)) != (count, count) or any(frame.shape != (size, size, 3) for frame in frames) \
            or any(mask.shape != (size, size) for mask in masks):
        raise SchemaError(f"{row['segment_key']}: images do not match num_frames x crop_size")
    frames, masks = np.stack(frames), np.stack(masks)
    decoded = {key: value for key, value in row.items() if key not in ("frames_jpeg", "masks_png")}
    decoded.update(
        frames=frames,
        masks=(masks > 127).astype(np.uint8),
        landmarks=np.asarray(row["landmarks"], np.float32).reshape(count, 68, 2),
        crop_transforms=np.asarray(row["crop_transforms"], np.float32).reshape(count, 2, 3),
        frame_indices=np.asarray(row["frame_indices"], np.int32),
        settings=json.loads(row["settings_json"]),
    )
    return decoded


def encode_jpeg(image_rgb: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def encode_mask_png(mask: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", mask * np.uint8(255))
    assert ok
    return data.tobytes()


def describe() -> str:
    """The column documentation as text (for docs and --help)."""
    out = io.StringIO()
    for title, columns in (("clips", CLIP_COLUMNS), ("rejects", REJECT_COLUMNS)):
        out.write(f"{title}:\n")
        for name, (kind, text) in columns.items():
            out.write(f"  {name} ({kind}): {text}\n")
    return out.getvalue()
