"""Clip rows of `make preprocess` -> a frame set for the local training loop.

`python -m jobs.frames --clips data/clips --output frames.npz --size 64` reads every clip segment written by
the pipeline (validated against `pipelines.schema`), keeps up to `--frames-per-clip` evenly spaced frames of
each, resizes crops, masks and landmarks to `--size`, and writes the .npz that `python -m cest.train_local
--frames` trains on. Each segment is its own clip id (the unit of the consistency pairing).
"""

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pyarrow.dataset as ds
import torch

from cest.train_local import FrameSet, save_frames
from pipelines.schema import SchemaError, decode_clip_row, validate_table


def read_clip_rows(output_dir: str | Path) -> Iterator[dict]:
    """Decoded rows (see `pipelines.schema.decode_clip_row`) of every clip file of a preprocess output."""
    dataset = ds.dataset(str(Path(output_dir) / "clips"), format="parquet")
    for fragment in dataset.get_fragments():
        table = fragment.to_table()
        validate_table(table)
        for row in table.to_pylist():
            yield decode_clip_row(row)


def evenly_spaced(count: int, keep: int) -> np.ndarray:
    """Indices of `keep` frames spread over `count` (all of them when there are fewer)."""
    if count <= keep:
        return np.arange(count)
    return np.linspace(0, count - 1, keep).round().astype(int)


def frames_from_rows(rows: Iterable[dict], size: int, frames_per_clip: int) -> FrameSet:
    """Stack up to `frames_per_clip` frames of every clip row, resized from the crop size to `size`."""
    images, masks, landmarks, clip_ids = [], [], [], []
    for clip_id, row in enumerate(rows):
        keep = evenly_spaced(row["num_frames"], frames_per_clip)
        scale = size / row["crop_size"]
        for index in keep:
            images.append(cv2.resize(row["frames"][index], (size, size), interpolation=cv2.INTER_AREA))
            masks.append(cv2.resize(row["masks"][index], (size, size), interpolation=cv2.INTER_NEAREST))
            # Pixel coordinates measured from the image corner scale with the image.
            landmarks.append(row["landmarks"][index] * scale)
            clip_ids.append(clip_id)
    if not images:
        raise ValueError("no clip rows to read")
    return FrameSet(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255,
        masks=torch.from_numpy(np.stack(masks)).float()[:, None],
        landmarks=torch.from_numpy(np.stack(landmarks)).float(),
        clip_ids=torch.tensor(clip_ids),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, required=True, help="the output directory of `make preprocess`")
    parser.add_argument("--output", type=Path, required=True, help="the .npz to write")
    parser.add_argument("--size", type=int, default=224, help="image size to train at (crops are 224)")
    parser.add_argument("--frames-per-clip", type=int, default=16)
    args = parser.parse_args(argv)
    if not (args.clips / "clips").is_dir():
        print(f"error: {args.clips} holds no clips/ directory (run `make preprocess` first)", file=sys.stderr)
        return 2
    try:
        frames = frames_from_rows(read_clip_rows(args.clips), args.size, args.frames_per_clip)
    except (SchemaError, ValueError) as error:
        print(f"error: {args.clips}: {error}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_frames(frames, args.output)
    print(f"wrote {args.output}: {len(frames)} frames of {int(frames.clip_ids.max()) + 1} clips at {args.size} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
