"""Training-step throughput of the CEST model on this machine; prints one JSON object.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_train_step.py [--batch 16] [--steps 5] [--sizes 224 112]
    python benchmarks/bench_train_step.py --device cuda --batch 128 --steps 20 --sizes 224 \
        --precisions bf16 fp32 --raster-backends nvdiffrast torch

Measures, with the default widths and loss settings unless stated:
- images/s of a full training step (forward, render, objective, backward, Adam) for CEST and IEST at each size;
- the cost of the symmetry and consistency terms: CEST step time with each / both, divided by photometric-only;
- per-step time with 8 frames per clip against 4 at the same total batch (the pairing keeps it flat).
On the CPU the settings of a size take turns step by step (the machine may be shared); each reports its median.
On CUDA each setting runs alone (its model built, timed, freed) so that its peak GPU memory is its own; the
first precision and raster backend listed are the baseline of the ratios, and every further combination
adds a CEST (and IEST) setting.
Inputs are random images with a full mask and the mean face's landmarks: the step's cost depends on the
predicted geometry (the mean face at initialisation), not on the pixels. UV size is 4/7 of the image size
rounded to a multiple of 64 (128 at 224, 64 at 112), the ModelConfig default ratio.
"""

import argparse
import copy
import json
import os
import platform
import statistics
import time

import torch

from cest.render.camera import project
from cest.config import PRECISIONS, RASTER_BACKENDS, DataConfig, LossConfig, ModelConfig, OptimConfig
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
    """A model, its optimiser and a fixed batch on `device`, ready to time training steps."""

    def __init__(self, morphable, model_config: ModelConfig, loss: LossConfig, data: DataConfig,
                 device: torch.device, precision: str):
        torch.manual_seed(0)
        self.device, self.precision = device, precision
        self.generator = torch.Generator(device).manual_seed(0)
        self.model = CESTModel(model_config, copy.deepcopy(morphable)).to(device)  # .to() moves in place
        self.optimizer = make_optimizer(self.model, OptimConfig())
        self.batch = make_batch(morphable, model_config.image_size, data, torch.Generator().manual_seed(0)).to(device)
        self.loss = loss
        self.step()  # warm-up: allocations, first-call overheads, cuDNN algorithm choice
        self.step()

    def step(self) -> float:
        start = time.perf_counter()
        train_step(self.model, self.optimizer, self.batch, self.loss, self.generator, self.precision)
        if self.device.type == "cuda":  # train_step already reads the loss terms back; wait for Adam too
            torch.cuda.synchronize()
        return time.perf_counter() - start


def interleaved_median_seconds(factories: dict, steps: int) -> dict[str, float]:
    """CPU: median step time of each setting, the settings taking turns so that load changes hit them all alike."""
    runners = {name: make() for name, make in factories.items()}
    times = {name: [] for name in runners}
    for _ in range(steps):
        for name, runner in runners.items():
            times[name].append(runner.step())
    return {name: statistics.median(values) for name, values in times.items()}


def isolated_median_seconds(factories: dict, steps: int) -> tuple[dict[str, float], dict[str, float]]:
    """CUDA: each setting alone on the GPU; its median step time and its peak allocated memory (MiB)."""
    seconds, peak_mib = {}, {}
    for name, make in factories.items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        runner = make()
        seconds[name] = statistics.median(runner.step() for _ in range(steps))
        peak_mib[name] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        del runner
    return seconds, peak_mib


def settings(morphable, size: int, args, device: torch.device) -> dict:
    """Factories of the timed settings at one image size: the term-cost and frames-per-clip settings at the
    baseline precision and backend, and CEST and IEST at every precision x backend."""
    four, eight = DataConfig(args.batch // 4, 4), DataConfig(args.batch // 8, 8)
    base_precision, base_backend = args.precisions[0], args.raster_backends[0]

    def runner(variant="cest", loss=LossConfig(), data=four, precision=base_precision, backend=base_backend):
        config = ModelConfig(variant=variant, image_size=size, uv_size=uv_size_for(size), raster_backend=backend)
        return lambda: StepRunner(morphable, config, loss, data, device, precision)

    factories = {}
    for precision in args.precisions:
        for backend in args.raster_backends:
            suffix = "" if (precision, backend) == (base_precision, base_backend) else f"_{precision}_{backend}"
            factories["cest" + suffix] = runner("cest", precision=precision, backend=backend)
            factories["iest" + suffix] = runner("iest", precision=precision, backend=backend)
    factories.update(
        photometric_only=runner(loss=LossConfig(symmetry=False, consistency=False)),
        symmetry=runner(loss=LossConfig(consistency=False)),
        consistency=runner(loss=LossConfig(symmetry=False)),
        eight_frames_per_clip=runner(data=eight),
    )
    return factories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="images per step (clips x 4 frames)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (after two warm-ups)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=PRECISIONS,
                        help="first = baseline of the ratios")
    parser.add_argument("--raster-backends", nargs="+", default=["auto"], choices=RASTER_BACKENDS,
                        help="first = baseline of the ratios")
    args = parser.parse_args()
    if args.batch % 8:
        raise SystemExit("--batch must be a multiple of 8 (clips of 4 and of 8 frames)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to PyTorch")
    morphable = load_sfm()
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "load_average_1min_before": os.getloadavg()[0],
        "batch": args.batch,
        "timed_steps": args.steps,
        "baseline": {"precision": args.precisions[0], "raster_backend": args.raster_backends[0]},
        "throughput_images_per_s": {},
    }
    for size in args.sizes:
        factories = settings(morphable, size, args, device)
        if device.type == "cuda":
            seconds, peak_mib = isolated_median_seconds(factories, args.steps)
            result[f"peak_gpu_memory_mib_{size}"] = peak_mib
        else:
            seconds = interleaved_median_seconds(factories, args.steps)
        for name in factories:
            if name.startswith(("cest", "iest")):
                result["throughput_images_per_s"][f"{name}_{size}"] = round(args.batch / seconds[name], 2)
        result[f"term_cost_ratio_cest_{size}"] = {
            name: round(seconds[key] / seconds["photometric_only"], 3)
            for name, key in [("symmetry", "symmetry"), ("consistency", "consistency"), ("both", "cest")]
        }
        result[f"step_seconds_cest_{size}_frames_per_clip"] = {
            "4": round(seconds["cest"], 4), "8": round(seconds["eight_frames_per_clip"], 4)
        }
    result["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
