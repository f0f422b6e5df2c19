"""Clip rows of a preprocess output held in memory: evaluation and small experiments read frames this way.

`read_clip_rows` yields every readable clip segment written by the pipeline (`pipelines.schema`), files and rows
that cannot be read skipped by the data-error policy (jobs/data_errors.py); `frames_from_rows` keeps up to
`frames_per_clip` evenly spaced frames of each, resized with their masks and landmarks, as a
`cest.train_local.FrameSet` (each segment its own clip id). Training reads the same Parquet through Ray Data
instead (jobs/data.py), drawing random frames every epoch.
"""

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from cest.config import DataConfig
from cest.train_local import FrameSet
from jobs.data_errors import SkipList, decode_or_skip, readable_rows, survey
from pipelines.schema import CLIP_SCHEMA


def read_clip_rows(output_dir: str | Path, skips: SkipList | None = None) -> Iterator[dict]:
    """Decoded rows (see `pipelines.schema.decode_clip_row`) of every readable clip file of a preprocess output.

    Files and rows that cannot be read are skipped into `skips` (default: named in warning lines only, bound
    data.max_skipped_fraction's default); after the last row, DataError when too many were."""
    skips = skips if skips is not None else SkipList(None, DataConfig().max_skipped_fraction)
    corpus = survey(str(output_dir), CLIP_SCHEMA.names)
    skips.track(corpus)
    for file in corpus.files:
        for row in readable_rows(corpus, file, skips):
            decoded, skip = decode_or_skip(row, file)
            if skip is not None:
                skips.add([skip])
                continue
            yield decoded
    skips.enforce()


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
