"""The per-input work of each stage, as plain functions (Ray-free, testable), and the row format that
carries both clip rows and reject rows through one Ray Data stream."""

from __future__ import annotations

import dataclasses
import traceback

import cv2
import numpy as np
import pyarrow as pa

from pipelines import PIPELINE_VERSION
from pipelines.align import alignment_frame, apply_matrix, crop_matrices, scale_input, smooth_frames, warp
from pipelines.config import PreprocessConfig
from pipelines.decode import DecodedVideo, Reject, decode_video
from pipelines.identity import keep_primary_face
from pipelines.inputs import VideoInput, is_image
from pipelines.landmarks import FaceLandmarker
from pipelines.masks import FaceMasker
from pipelines.schema import CLIP_SCHEMA, REJECT_SCHEMA, TRANSIENT_REASONS, encode_jpeg, encode_mask_png
from pipelines.tracking import FaceTracker, split_segments, track_runs

# Clip and reject rows travel together: the union of both schemas plus the row kind.
ROW_SCHEMA = pa.schema(
    [pa.field("row_kind", pa.string())]
    + [field.with_nullable(True) for field in CLIP_SCHEMA]
    + [field.with_nullable(True) for field in REJECT_SCHEMA if field.name not in CLIP_SCHEMA.names]
)


@dataclasses.dataclass
class Work:
    """One input on its way through the stages."""

    item: VideoInput
    video: DecodedVideo | None = None
    segments: list | None = None  # [(positions (n,), landmarks (n, 68, 2) working pixels)]
    reject: Reject | None = None


def _guarded(stage: str, work: Work, function):
    """Run one stage unless the input is already rejected; any failure becomes a reject, never a crash."""
    if work.reject is not None:
        return
    try:
        function(work)
    except Reject as reject:
        work.reject = reject
    except Exception as error:  # noqa: BLE001 - every input must end as rows; the text says what broke
        detail = "".join(traceback.format_exception_only(error)).strip()
        work.reject = Reject(stage, "error", detail + " | " + traceback.format_exc(limit=-3)[-1500:])
        work.video = None


def input_config(item: VideoInput, cfg: PreprocessConfig) -> PreprocessConfig:
    """The settings for this input: an image is a clip of one frame (the paper's single-image setting)."""
    return dataclasses.replace(cfg, min_segment_frames=1) if is_image(item.path) else cfg


def decode_stage(work: Work, cfg: PreprocessConfig) -> Work:
    cfg = input_config(work.item, cfg)

    def run(work):
        work.video = decode_video(work.item.path, cfg)
        if len(work.video.frames) < cfg.min_segment_frames:
            raise Reject("decode", "too_short", f"{len(work.video.frames)} frames < {cfg.min_segment_frames}")

    _guarded("decode", work, run)
    return work


def landmark_stage(work: Work, cfg: PreprocessConfig, landmarker: FaceLandmarker, identity=None) -> Work:
    """Face tracks -> segments; with `identity` (a FaceIdentity), only the primary person's tracks."""
    cfg = input_config(work.item, cfg)

    def run(work):
        runs = work.video.runs(cfg.frame_stride)
        tracks, stats = track_runs(FaceTracker(landmarker, cfg), work.video.frames, runs)
        if identity is not None:
            tracks = keep_primary_face(tracks, work.video.frames, identity, cfg.identity_threshold)
        work.segments = split_segments(tracks, cfg, stats)

    _guarded("landmarks", work, run)
    return work


def crop_segment(video: DecodedVideo, positions, landmarks, cfg: PreprocessConfig, masker: FaceMasker) -> dict:
    """Crops, masks, crop-space landmarks and source->crop transforms of one segment."""
    matrices = crop_matrices(smooth_frames(alignment_frame(landmarks), cfg.smooth_sigma), cfg.crop_size, cfg.crop_zoom)
    crop_landmarks = apply_matrix(matrices, landmarks).astype(np.float32)
    jpegs, pngs = [], []
    full = np.full(video.frames.shape[1:3], 255, np.uint8)
    for position, matrix, points in zip(positions, matrices, crop_landmarks):
        crop = warp(video.frames[position], matrix, cfg.crop_size)
        # Crop pixels (partly) outside the source frame are padding, never face.
        inside = warp(full, matrix, cfg.crop_size) == 255
        jpegs.append(encode_jpeg(crop, cfg.jpeg_quality))
        pngs.append(encode_mask_png(masker(crop, points) & inside))
    return {
        "frames_jpeg": jpegs,
        "masks_png": pngs,
        "landmarks": crop_landmarks.reshape(-1).tolist(),
        "crop_transforms": scale_input(matrices, *video.working_scale).reshape(-1).tolist(),
        "frame_indices": video.frame_indices[positions].tolist(),
        "num_frames": len(positions),
    }


def crop_stage(work: Work, cfg: PreprocessConfig, masker: FaceMasker) -> list[dict]:
    """The input's rows: one per segment, or one reject row."""
    rows = []

    def run(work):
        item, video = work.item, work.video
        for index, (positions, landmarks) in enumerate(work.segments):
            row = crop_segment(video, positions, landmarks, cfg, masker)
            row.update(
                row_kind="clip",
                segment_key=f"{item.speaker_id}/{item.video_id}/{item.clip_id}/{index:03d}",
                segment_index=index,
                num_segments=len(work.segments),
                fps=video.fps,
                source_width=video.source_size[0],
                source_height=video.source_size[1],
                crop_size=cfg.crop_size,
                landmark_backend=cfg.detector,
                settings_json=cfg.to_json(),
            )
            rows.append(row)

    _guarded("crop", work, run)
    if work.reject is not None:
        rows = [
            {
                "row_kind": "reject",
                "stage": work.reject.stage,
                "reason": work.reject.reason,
                "error": work.reject.detail,
            }
        ]
    common = dict(dataclasses.asdict(work.item), source_path=work.item.path, pipeline_version=PIPELINE_VERSION)
    common.pop("path")
    return [dict(row, **common) for row in rows]


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


def write_rows(item: VideoInput, rows: list[dict], output) -> dict:
    """One input's rows -> its file in the output (an `Output`); the result row for the driver."""
    table = rows_table(rows)
    kind = rows[0]["row_kind"]
    reason = rows[0].get("reason") or ""
    if kind == "reject" and reason in TRANSIENT_REASONS:
        kind = "retry"
    output.write_part(kind, item.input_id, table)
    frames = sum(row["num_frames"] for row in rows) if kind == "clip" else 0
    return dict(input_id=item.input_id, status=kind, reason=reason, num_rows=len(rows), num_frames=frames, done_ids=[])


def results_table(results: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(results, schema=RESULT_SCHEMA)


def process_input(
    item: VideoInput, cfg: PreprocessConfig, landmarker: FaceLandmarker, masker: FaceMasker, identity=None
) -> list[dict]:
    """All stages for one input, in this process."""
    cv2.setNumThreads(1)
    work = decode_stage(Work(item), cfg)
    work = landmark_stage(work, cfg, landmarker, identity)
    return crop_stage(work, cfg, masker)
