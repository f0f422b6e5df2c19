"""Single-process training loop: `python -m cest.train_local --frames frames.npz --steps 100`.

Batches come from any iterable of `cest.step.Batch`; `clip_batches` builds them as the paper does
(clips x frames per clip, random clips, random frames within a clip) from a `FrameSet` held in memory, which
`load_frames` reads from an .npz file with the arrays images (N, 3, H, W) uint8, masks (N, H, W) uint8,
landmarks (N, 68, 2) float pixels and clip_ids (N,) int. The distributed job wraps the same `train_step`.
"""

import argparse
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cest.config import Config, DataConfig, load_config, save_config
from cest.step import Batch, make_optimizer, train_step


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


def save_frames(frames: FrameSet, path: str | Path) -> None:
    np.savez_compressed(
        path,
        images=(frames.images * 255).round().to(torch.uint8).numpy(),
        masks=frames.masks[:, 0].to(torch.uint8).numpy(),
        landmarks=frames.landmarks.numpy().astype(np.float32),
        clip_ids=frames.clip_ids.numpy().astype(np.int64),
    )


def load_frames(path: str | Path) -> FrameSet:
    with np.load(path) as data:
        missing = {"images", "masks", "landmarks", "clip_ids"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}")
        return FrameSet(
            images=torch.from_numpy(data["images"]).float() / 255,
            masks=torch.from_numpy(data["masks"]).float()[:, None],
            landmarks=torch.from_numpy(data["landmarks"]).float(),
            clip_ids=torch.from_numpy(data["clip_ids"]).long(),
        )


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
        terms = train_step(model, optimizer, batch, config.loss, generator)
        history.append(terms)
        if log is not None:
            log(step, terms)
    if len(history) < steps:
        raise ValueError(f"the batch source ran out after {len(history)} of {steps} steps")
    return history


def _print_terms(step: int, terms: dict[str, float]) -> None:
    print(f"step {step:5d} " + " ".join(f"{name} {value:.4f}" for name, value in terms.items()), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, required=True, help=".npz frame set (see module doc)")
    parser.add_argument("--config", type=Path, help="YAML config; defaults from cest/config.py")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--output", type=Path, help="directory for the final weights and the config used")
    args = parser.parse_args(argv)

    from cest.model import build_model  # the model needs the morphable model asset; keep --help light

    config = load_config(args.config) if args.config else Config()
    frames = load_frames(args.frames)
    if frames.images.shape[-1] != config.model.image_size:
        raise ValueError(f"frames are {frames.images.shape[-1]} px, config.model.image_size is {config.model.image_size}")
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = build_model(config.model)
    batches = clip_batches(frames, config.data, generator)
    start = time.perf_counter()

    def log(step: int, terms: dict[str, float]) -> None:
        if step % args.log_every == 0 or step == args.steps - 1:
            _print_terms(step, terms)

    history = train(model, config, batches, args.steps, generator, log)
    seconds = time.perf_counter() - start
    images = args.steps * config.data.batch_size
    print(f"{args.steps} steps, {images / seconds:.1f} images/s, final total {history[-1]['total']:.4f}")
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.output / "model.pt")
        save_config(config, args.output / "config.yaml")


if __name__ == "__main__":
    main()
