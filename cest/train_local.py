"""In-memory training loop: `train(model, config, batches, steps)` over any iterable of `cest.step.Batch`.

`clip_batches` draws batches as the paper does (clips x frames per clip, random clips, random frames within a
clip) from a `FrameSet` held in memory (e.g. `jobs.frames.frames_from_rows`). For tests and small experiments
(jobs/synthetic_experiment.py); real training reads Parquet clips through Ray Data in jobs/train.py, and both
call the same `cest.step.train_step`.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from cest.config import Config, DataConfig
from cest.step import Batch, learning_rates, make_optimizer, set_learning_rates, train_step


@dataclass
class FrameSet:
    """Preprocessed frames of several clips: images (N,3,H,W) in [0,1], masks (N,1,H,W), landmarks (N,68,2)."""

    images: torch.Tensor
    masks: torch.Tensor
    landmarks: torch.Tensor
    clip_ids: torch.Tensor

    def __post_init__(self):
        Batch(self.images, self.masks, self.landmarks, self.clip_ids)  # same checks as a batch

    def __len__(self) -> int:
        return self.images.shape[0]


def clip_batches(frames: FrameSet, data: DataConfig, generator: torch.Generator) -> Iterator[Batch]:
    """Endless batches of `clips_per_batch` random clips x `frames_per_clip` random frames of each.

    Clips with fewer frames than `frames_per_clip` are not used; if fewer usable clips exist than a batch
    needs, an error says so.
    """
    clip_ids = frames.clip_ids
    members = [torch.nonzero(clip_ids == c).flatten() for c in clip_ids.unique()]
    members = [m for m in members if m.numel() >= data.frames_per_clip]
    if len(members) < data.clips_per_batch:
        raise ValueError(
            f"a batch needs {data.clips_per_batch} clips with >= {data.frames_per_clip} frames, "
            f"the frame set has {len(members)}"
        )
    while True:
        chosen = torch.randperm(len(members), generator=generator)[: data.clips_per_batch]
        index = torch.cat(
            [members[c][torch.randperm(members[c].numel(), generator=generator)[: data.frames_per_clip]] for c in chosen]
        )
        yield Batch(frames.images[index], frames.masks[index], frames.landmarks[index], clip_ids[index])


def train(
    model: torch.nn.Module,
    config: Config,
    batches: Iterable[Batch],
    steps: int,
    generator: torch.Generator | None = None,
    log: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Run `steps` training steps; returns each step's loss terms (floats). Stops on a non-finite loss."""
    optimizer = make_optimizer(model, config.optim)
    history = []
    model.train()
    for step, batch in zip(range(steps), batches):
        set_learning_rates(optimizer, learning_rates(config.optim, config.loss.landmark_warmup_steps, step, steps))
        terms = train_step(model, optimizer, batch, config.loss, generator,
                           geometry_only=step < config.loss.landmark_warmup_steps)
        history.append(terms)
        if log is not None:
            log(step, terms)
    if len(history) < steps:
        raise ValueError(f"the batch source ran out after {len(history)} of {steps} steps")
    return history
