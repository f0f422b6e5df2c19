"""Write a synthetic ground-truth set: `python -m jobs.synthetic --output data/synthetic --clips 64 --frames 4 --seed 0`.

Layout (the pipeline's output layout, so every training path reads it unchanged):
  clips/part-NNNNN.parquet          `pipelines.schema.CLIP_SCHEMA` rows: 224 crops (JPEG), rendered face masks,
                                    projected model landmarks; one segment per clip
  ground_truth/part-NNNNN.parquet   GROUND_TRUTH_SCHEMA, one row per clip, keyed by segment_key (per-frame
                                    arrays flattened in frame order, as in the clip rows)
  run_config.json                   seed, counts and the generator's ranges

Clip k is drawn from its own generator seeded by (seed, k), so a set is reproducible and any clip can be
regenerated alone. Sets with different seeds hold different identities (use them as train and held-out test).
"""

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch

from pipelines.schema import CLIP_SCHEMA, encode_jpeg, encode_mask_png, validate_table

GENERATOR_VERSION = "synthetic-1"
JPEG_QUALITY = 95  # the pipeline's crops are JPEG too; 95 keeps compression error under the metrics' noise
CLIPS_PER_FILE = 64

GROUND_TRUTH_SCHEMA = pa.schema([
    pa.field("segment_key", pa.string(), nullable=False),
    pa.field("num_frames", pa.int32(), nullable=False),
    pa.field("image_size", pa.int32(), nullable=False),
    pa.field("uv_size", pa.int32(), nullable=False),
    pa.field("viewpoint", pa.list_(pa.float32()), nullable=False),  # (T, 7) scale, rotation vector, translation
    pa.field("yaw_pitch_roll", pa.list_(pa.float32()), nullable=False),  # (T, 3) degrees, R = Rz Rx Ry
    pa.field("alpha_identity", pa.list_(pa.float32()), nullable=False),  # (K_id,) sd, fixed over the clip
    pa.field("alpha_expression", pa.list_(pa.float32()), nullable=False),  # (T, K_exp) blendshape weights
    pa.field("sh", pa.list_(pa.float32()), nullable=False),  # (T, 9) grey SH coefficients
    pa.field("reflectance_png", pa.binary(), nullable=False),  # (U, U, 3) 16-bit RGB PNG, fixed over the clip
])


def clip_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


def segment_key(seed: int, index: int) -> str:
    return f"synthetic/seed{seed}/{index:06d}/000"


def _png16(reflectance: torch.Tensor) -> bytes:
    rgb = (reflectance.permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16)
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def decode_reflectance(data: bytes) -> np.ndarray:
    """(3, U, U) float32 in [0, 1] from `reflectance_png`."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 65535).transpose(2, 0, 1)


def clip_rows(clip, key: str, settings: str) -> tuple[dict, dict]:
    """The clip row (CLIP_SCHEMA) and the ground-truth row of one `cest.synthetic.SyntheticClip`."""
    frames, size = clip.images.shape[0], clip.images.shape[-1]
    images = (clip.images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    masks = clip.masks[:, 0].numpy().astype(np.uint8)
    speaker, video, clip_id, _ = key.split("/")
    row = {
        "segment_key": key,
        "input_id": hashlib.sha1(key.encode()).hexdigest()[:16],
        "source_path": f"synthetic://{key}",
        "speaker_id": speaker, "video_id": video, "clip_id": clip_id,
        "segment_index": 0, "num_segments": 1, "num_frames": frames, "fps": 25.0,
        "header_frames": frames, "presented_frames": frames,
        "frame_indices": list(range(frames)),
        "source_width": size, "source_height": size, "crop_size": size,
        "frames_jpeg": [encode_jpeg(image, JPEG_QUALITY) for image in images],
        "masks_png": [encode_mask_png(mask) for mask in masks],
        "landmarks": clip.landmarks.flatten().tolist(),
        "crop_transforms": np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), frames).tolist(),  # crop = source
        "landmark_backend": "synthetic",  # projected model landmarks, exact
        "pipeline_version": GENERATOR_VERSION,
        "settings_json": settings,
    }
    truth = {
        "segment_key": key, "num_frames": frames, "image_size": size, "uv_size": clip.reflectance.shape[-1],
        "viewpoint": clip.viewpoint.flatten().tolist(),
        "yaw_pitch_roll": clip.yaw_pitch_roll.flatten().tolist(),
        "alpha_identity": clip.alpha_identity[0].tolist(),
        "alpha_expression": clip.alpha_expression.flatten().tolist(),
        "sh": clip.sh.flatten().tolist(),
        "reflectance_png": _png16(clip.reflectance),
    }
    return row, truth


def read_ground_truth(directory: str | Path) -> dict[str, dict]:
    """segment_key -> numpy arrays of its ground truth (shapes as in GROUND_TRUTH_SCHEMA, reflectance (3, U, U))."""
    table = ds.dataset(str(Path(directory) / "ground_truth"), format="parquet").to_table()
    out = {}
    for row in table.to_pylist():
        count = row["num_frames"]
        out[row["segment_key"]] = {
            "viewpoint": np.asarray(row["viewpoint"], np.float32).reshape(count, 7),
            "yaw_pitch_roll": np.asarray(row["yaw_pitch_roll"], np.float32).reshape(count, 3),
            "alpha_identity": np.asarray(row["alpha_identity"], np.float32),
            "alpha_expression": np.asarray(row["alpha_expression"], np.float32).reshape(count, -1),
            "sh": np.asarray(row["sh"], np.float32).reshape(count, 9),
            "reflectance": decode_reflectance(row["reflectance_png"]),
        }
    return out


def generate(output: Path, clips: int, frames: int, seed: int, log=print) -> dict:
    """Write `clips` clips of `frames` frames; returns the run summary (also written to run_config.json)."""
    from cest.morphable import load_sfm
    from cest.synthetic import SyntheticFaces, SyntheticSpec, load_background_photos

    spec = SyntheticSpec()
    faces = SyntheticFaces(load_sfm(), spec, load_background_photos())
    settings = json.dumps({"generator": GENERATOR_VERSION, "seed": seed, **dataclasses.asdict(spec)})
    (output / "clips").mkdir(parents=True, exist_ok=True)
    (output / "ground_truth").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for first in range(0, clips, CLIPS_PER_FILE):
        rows, truths = [], []
        for index in range(first, min(first + CLIPS_PER_FILE, clips)):
            clip = faces.clip(frames, clip_generator(seed, index))
            row, truth = clip_rows(clip, segment_key(seed, index), settings)
            rows.append(row)
            truths.append(truth)
        table = pa.Table.from_pylist(rows, schema=CLIP_SCHEMA)
        validate_table(table)
        part = f"part-{first // CLIPS_PER_FILE:05d}.parquet"
        pq.write_table(table, output / "clips" / part)
        pq.write_table(pa.Table.from_pylist(truths, schema=GROUND_TRUTH_SCHEMA), output / "ground_truth" / part)
        done = min(first + CLIPS_PER_FILE, clips)
        elapsed = time.perf_counter() - start
        log(f"{done}/{clips} clips, {done * frames / elapsed:.1f} images/s")
    summary = {"generator": GENERATOR_VERSION, "seed": seed, "clips": clips, "frames_per_clip": frames,
               "images": clips * frames, "seconds": round(time.perf_counter() - start, 2),
               "spec": dataclasses.asdict(spec)}
    (output / "run_config.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--clips", type=int, required=True, help="number of clips (identities)")
    parser.add_argument("--frames", type=int, default=4, help="frames per clip (1: single images)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.clips < 1 or args.frames < 1:
        print("error: --clips and --frames must be >= 1", file=sys.stderr)
        return 2
    if (args.output / "clips").is_dir() and any((args.output / "clips").iterdir()):
        print(f"error: {args.output} already holds clips; choose an empty directory", file=sys.stderr)
        return 2
    from cest.assets import AssetError

    try:
        summary = generate(args.output, args.clips, args.frames, args.seed)
    except AssetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {summary['images']} images in {summary['clips']} clips to {args.output} "
          f"({summary['images'] / summary['seconds']:.1f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
