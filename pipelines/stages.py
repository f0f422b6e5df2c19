"""The per-input work of every stage, as plain functions (Ray-free, testable), and the row format of
clip and reject rows.

`input_rows` runs all stages of one input in one process with bounded memory: the first decoding pass
tracks faces (the decoder helper sends frames in chunks of `decode_batch`), holding frames only while
the video's frames fit in `max_buffered_mib`; a longer video is decoded a second time for the crops. Rows
come out one segment at a time and go straight to the output file. The job runs it in CPU tasks or on
actors that keep the landmark model loaded (on a share of a GPU for FAN): no frame ever moves between
processes through Ray's object store.
"""

from __future__ import annotations

import dataclasses
import traceback

import cv2
import numpy as np
import pyarrow as pa

from pipelines import PIPELINE_VERSION
from pipelines.align import (
    alignment_frame,
    apply_matrix,
    crop_matrices,
    scale_input,
    smooth_frames,
    source_coverage,
    warp,
)
from pipelines.config import PreprocessConfig
from pipelines.decode import Reject, VideoStream, working_size
from pipelines.identity import keep_primary_face
from pipelines.inputs import VideoInput, is_image
from pipelines.landmarks import FaceLandmarker
from pipelines.masks import FaceMasker
from pipelines.schema import CLIP_SCHEMA, REJECT_SCHEMA, TRANSIENT_REASONS, encode_jpeg, encode_mask_png
from pipelines.tracking import FaceTracker, split_segments

# Clip and reject rows travel together: the union of both schemas plus the row kind.
ROW_SCHEMA = pa.schema(
    [pa.field("row_kind", pa.string())]
    + [field.with_nullable(True) for field in CLIP_SCHEMA]
    + [field.with_nullable(True) for field in REJECT_SCHEMA if field.name not in CLIP_SCHEMA.names]
)


def input_config(item: VideoInput, cfg: PreprocessConfig) -> PreprocessConfig:
    """The settings for this input: an image is a clip of one frame (the paper's single-image setting)."""
    return dataclasses.replace(cfg, min_segment_frames=1) if is_image(item.path) else cfg


def face_segments(tracker: FaceTracker, tracks, stats, cfg: PreprocessConfig, identity=None) -> list:
    """Tracks -> segments; with `identity` (a FaceIdentity), only the primary person's tracks."""
    if identity is not None:
        tracks = keep_primary_face(tracks, tracker.start_frames, identity, cfg.identity_threshold)
    return split_segments(tracks, cfg, stats)


@dataclasses.dataclass
class VideoFacts:
    """What a clip row says about its source video."""

    fps: float
    source_size: tuple[int, int]
    working_scale: tuple[float, float]
    frame_indices: np.ndarray  # (T,) source index of every decoded frame
    header_frames: int  # the container header's frame count (0: none)
    presented_frames: int  # frames the source presents (0: decoding stopped at max_frames)


def crop_rows(item: VideoInput, facts: VideoFacts, frames, segments, cfg: PreprocessConfig, masker: FaceMasker):
    """Clip rows of the segments, from an iterable of all decoded frames in order; a row is yielded
    as soon as its segment's last frame has gone by (only the segments' encoded crops are held)."""
    plans, wanted = [], {}
    for number, (positions, landmarks) in enumerate(segments):
        matrices = crop_matrices(smooth_frames(alignment_frame(landmarks), cfg.smooth_sigma), cfg.crop_size, cfg.crop_zoom)
        crop_landmarks = apply_matrix(matrices, landmarks).astype(np.float32)
        plans.append(
            dict(positions=positions, matrices=matrices, landmarks=crop_landmarks, masker=masker.for_segment(), jpegs=[], pngs=[])
        )
        for slot, position in enumerate(positions):
            wanted.setdefault(int(position), []).append((number, slot))
    for position, frame in enumerate(frames):
        for number, slot in wanted.get(position, []):
            plan = plans[number]
            matrix, points = plan["matrices"][slot], plan["landmarks"][slot]
            crop = warp(frame, matrix, cfg.crop_size)
            # Crop pixels (partly) outside the source frame are padding, never face.
            inside = source_coverage(frame.shape[:2], matrix, cfg.crop_size)
            plan["jpegs"].append(encode_jpeg(crop, cfg.jpeg_quality))
            plan["pngs"].append(encode_mask_png(plan["masker"](crop, points) & inside))
            if slot == len(plan["positions"]) - 1:
                yield _clip_row(item, facts, number, len(plans), plan, cfg)
                plans[number] = None  # its crops are in the row now


def _clip_row(item: VideoInput, facts: VideoFacts, index: int, count: int, plan: dict, cfg: PreprocessConfig) -> dict:
    return dict(
        row_kind="clip",
        segment_key=f"{item.key}/{index:03d}",
        segment_index=index,
        num_segments=count,
        frames_jpeg=plan["jpegs"],
        masks_png=plan["pngs"],
        landmarks=plan["landmarks"].reshape(-1).tolist(),
        crop_transforms=scale_input(plan["matrices"], *facts.working_scale).reshape(-1).tolist(),
        frame_indices=facts.frame_indices[plan["positions"]].tolist(),
        num_frames=len(plan["positions"]),
        fps=facts.fps,
        header_frames=facts.header_frames,
        presented_frames=facts.presented_frames,
        source_width=facts.source_size[0],
        source_height=facts.source_size[1],
        crop_size=cfg.crop_size,
        landmark_backend=cfg.detector,
        settings_json=cfg.to_json(),
    )


def _reject_row(reject: Reject) -> dict:
    return {"row_kind": "reject", "stage": reject.stage, "reason": reject.reason, "error": reject.detail}


def _with_input(item: VideoInput, row: dict) -> dict:
    common = dict(dataclasses.asdict(item), source_path=item.path, pipeline_version=PIPELINE_VERSION)
    common.pop("path")
    return dict(row, **common)


def rows_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


# What a task reports to the driver about one input (its rows went to the output directly).
RESULT_SCHEMA = pa.schema(
    [
        ("input_id", pa.string()),
        ("status", pa.string()),  # clip | reject | retry | done (a batch of inputs found already done)
        ("reason", pa.string()),
        ("num_rows", pa.int64()),
        ("num_frames", pa.int64()),
        ("done_ids", pa.list_(pa.string())),
    ]
)


def write_rows(item: VideoInput, rows, output) -> dict:
    """One input's rows (any iterable: clip rows, or a reject row, possibly after some clip rows) ->
    its file in the output (an `Output`), one row group per row; the result row for the driver."""
    writer, frames, count = None, 0, 0
    try:
        for row in rows:
            if row["row_kind"] == "reject":
                if writer is not None:
                    writer.abort()
                kind = "retry" if row["reason"] in TRANSIENT_REASONS else "reject"
                output.write_part(kind, item.input_id, rows_table([row]))
                return dict(input_id=item.input_id, status=kind, reason=row["reason"], num_rows=1, num_frames=0, done_ids=[])
            writer = writer or output.writer("clip", item.input_id)
            writer.write(rows_table([row]))
            frames, count = frames + row["num_frames"], count + 1
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    writer.commit()
    return dict(input_id=item.input_id, status="clip", reason="", num_rows=count, num_frames=frames, done_ids=[])


def results_table(results: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(results, schema=RESULT_SCHEMA)


def input_rows(item: VideoInput, cfg: PreprocessConfig, landmarker: FaceLandmarker, masker: FaceMasker, identity=None):
    """All stages for one input in this process with bounded memory: its clip rows one segment at a
    time, or (also after some clip rows, when a later pass fails) one reject row."""
    cv2.setNumThreads(1)
    cfg = input_config(item, cfg)
    stage = "decode"
    try:
        with VideoStream(item.path, cfg) as stream:
            indices, buffer, room = [], [], cfg.max_buffered_mib * 2**20

            def first_pass():
                nonlocal buffer, room
                for index, frame in stream.frames():
                    indices.append(index)
                    room -= frame.nbytes
                    if buffer is not None and room >= 0:
                        buffer.append(frame)
                    else:
                        buffer = None  # too long to hold: the crops decode it again
                    yield index, frame

            stage = "landmarks"
            tracker = FaceTracker(landmarker, cfg)
            tracks, stats = tracker.track_pairs(first_pass(), cfg.frame_stride)
            if len(indices) < cfg.min_segment_frames:
                raise Reject("decode", "too_short", f"{len(indices)} frames < {cfg.min_segment_frames}")
            segments = face_segments(tracker, tracks, stats, cfg, identity)
            stage = "crop"
            width, height = working_size(*stream.source_size, cfg.max_side)
            facts = VideoFacts(
                stream.fps,
                stream.source_size,
                (width / stream.source_size[0], height / stream.source_size[1]),
                np.asarray(indices, np.int32),
                stream.reported_frames,
                stream.presented_frames,
            )
            frames = buffer if buffer is not None else (frame for _, frame in stream.frames())
            for row in crop_rows(item, facts, frames, segments, cfg, masker):
                yield _with_input(item, row)
    except Reject as reject:
        yield _with_input(item, _reject_row(reject))
    except Exception as error:  # noqa: BLE001 - every input must end as rows; the text says what broke
        detail = "".join(traceback.format_exception_only(error)).strip()
        reject = Reject(stage, "error", detail + " | " + traceback.format_exc(limit=-3)[-1500:])
        yield _with_input(item, _reject_row(reject))


def process_input(
    item: VideoInput, cfg: PreprocessConfig, landmarker: FaceLandmarker, masker: FaceMasker, identity=None
) -> list[dict]:
    """All rows of one input, in this process: its clip rows or one reject row."""
    rows = list(input_rows(item, cfg, landmarker, masker, identity))
    return rows[-1:] if rows[-1]["row_kind"] == "reject" else rows
