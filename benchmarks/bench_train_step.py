"""Training-step throughput of the CEST model on this machine; prints one JSON object.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_train_step.py [--batch 16] [--steps 5] [--sizes 224 112]

Measures, with the default widths and loss settings unless stated:
- images/s of a full training step (forward, render, objective, backward, Adam) for CEST and IEST at each size;
- the cost of the symmetry and consistency terms: CEST step time with each / both, divided by photometric-only;
- per-step time with 8 frames per clip against 4 at the same total batch (the pairing keeps it flat).
Within each size the settings take turns step by step (the machine may be shared); each reports its median.
Inputs are random images with a full mask and the mean face's landmarks: the step's cost depends on the
predicted geometry (the mean face at initialisation), not on the pixels. UV size is 4/7 of the image size
rounded to a multiple of 64 (128 at 224, 64 at 112), the ModelConfig default ratio.
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch

from cest.camera import project
from cest.config import DataConfig, LossConfig, ModelConfig, OptimConfig
from cest.model import CESTModel
from cest.morphable import load_sfm
from cest.step import Batch, make_optimizer, train_step


def uv_size_for(image_size: int) -> int:
    return max(64, round(image_size * 4 / 7 / 64) * 64)


def make_batch(morphable, image_size: int, data: DataConfig, generator: torch.Generator) -> Batch:
    count = data.batch_size
    viewpoint = torch.tensor([[0.75, 0, 0, 0, 0, 0.12, 0]]).expand(count, -1)
    landmarks = project(morphable.landmarks(morphable.mean_shape[None]), viewpoint[:1], image_size)[..., :2]
    return Batch(
        images=torch.rand(count, 3, image_size, image_size, generator=generator),
        masks=torch.ones(count, 1, image_size, image_size),
        landmarks=landmarks.expand(count, -1, -1).contiguous(),
        clip_ids=torch.arange(data.clips_per_batch).repeat_interleave(data.frames_per_clip),
    )


class StepRunner:
    """A model, its optimiser and a fixed batch, ready to time training steps."""

    def __init__(self, morphable, model_config: ModelConfig, loss: LossConfig, data: DataConfig):
        torch.manual_seed(0)
        self.generator = torch.Generator().manual_seed(0)
        self.model = CESTModel(model_config, morphable)
        self.optimizer = make_optimizer(self.model, OptimConfig())
        self.batch = make_batch(morphable, model_config.image_size, data, self.generator)
        self.loss = loss
        self.step()  # warm-up: allocations, first-call overheads

    def step(self) -> float:
        start = time.perf_counter()
        train_step(self.model, self.optimizer, self.batch, self.loss, self.generator)
        return time.perf_counter() - start


def interleaved_median_seconds(runners: dict[str, StepRunner], steps: int) -> dict[str, float]:
    """Median step time of each runner, the runners taking turns so that load changes hit them all alike."""
    times = {name: [] for name in runners}
    for _ in range(steps):
        for name, runner in runners.items():
            times[name].append(runner.step())
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="images per step (clips x 4 frames)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (after one warm-up)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    args = parser.parse_args()
    if args.batch % 8:
        raise SystemExit("--batch must be a multiple of 8 (clips of 4 and of 8 frames)")
    morphable = load_sfm()
    four, eight = DataConfig(args.batch // 4, 4), DataConfig(args.batch // 8, 8)
    result = {
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "load_average_1min_before": os.getloadavg()[0],
        "batch": args.batch,
        "timed_steps": args.steps,
        "throughput_images_per_s": {},
    }
    for size in args.sizes:
        cest = ModelConfig(variant="cest", image_size=size, uv_size=uv_size_for(size))
        iest = ModelConfig(variant="iest", image_size=size, uv_size=uv_size_for(size))
        runners = {
            "cest": StepRunner(morphable, cest, LossConfig(), four),
            "iest": StepRunner(morphable, iest, LossConfig(), four),
            "photometric_only": StepRunner(morphable, cest, LossConfig(symmetry=False, consistency=False), four),
            "symmetry": StepRunner(morphable, cest, LossConfig(consistency=False), four),
            "consistency": StepRunner(morphable, cest, LossConfig(symmetry=False), four),
            "eight_frames_per_clip": StepRunner(morphable, cest, LossConfig(), eight),
        }
        seconds = interleaved_median_seconds(runners, args.steps)
        del runners
        for variant in ("cest", "iest"):
            result["throughput_images_per_s"][f"{variant}_{size}"] = round(args.batch / seconds[variant], 2)
        result[f"term_cost_ratio_cest_{size}"] = {
            name: round(seconds[key] / seconds["photometric_only"], 3)
            for name, key in [("symmetry", "symmetry"), ("consistency", "consistency"), ("both", "cest")]
        }
        result[f"step_seconds_cest_{size}_frames_per_clip"] = {
            "4": round(seconds["cest"], 3), "8": round(seconds["eight_frames_per_clip"], 3)
        }
    result["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
