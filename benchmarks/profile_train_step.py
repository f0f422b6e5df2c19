"""Where a training step's time goes: each part's share of a step; prints one JSON object.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/profile_train_step.py --config jobs/configs/cpu_recipe.yaml --threads 1
    python benchmarks/profile_train_step.py --config jobs/configs/cpu_recipe.yaml --set model.image_size=224 \
        --set model.uv_size=128

Times the forward parts by wrapping them (the four networks, the canonical crop, rasterization, unwrapping,
shading passes), the whole backward pass and the Adam update, over --steps steps on a fixed batch of random
images with the mean face's landmarks (the cost depends on the predicted geometry, not on the pixels). The
objective's own arithmetic is the rest of the step.
"""

import argparse
import functools
import json
import time
from collections import defaultdict

import torch

import cest.model
from cest.config import load_config
from cest.model import CESTModel
from cest.morphable import load_sfm
from cest.render.camera import project
from cest.render.renderer import Renderer
from cest.step import Batch, make_optimizer, train_step


def timed(seconds: dict, name: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        seconds[name] += time.perf_counter() - start
        return result

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a training config (jobs/configs/*.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.set)
    morphable = load_sfm()
    torch.manual_seed(0)
    model = CESTModel(config.model, morphable)
    optimizer = make_optimizer(model, config.optim)
    size, data = config.model.image_size, config.data
    landmarks = project(morphable.landmarks(morphable.mean_shape[None]), torch.tensor([[0.6, 0, 0.3, 0, 0, 0, 0.]]),
                        size)[..., :2]
    batch = Batch(torch.rand(data.batch_size, 3, size, size), torch.ones(data.batch_size, 1, size, size),
                  landmarks.expand(data.batch_size, -1, -1).contiguous(),
                  torch.arange(data.clips_per_batch).repeat_interleave(data.frames_per_clip))

    seconds = defaultdict(float)
    for name in ("rasterize", "unwrap", "shade"):
        setattr(Renderer, name, timed(seconds, name, getattr(Renderer, name)))
    cest.model.canonical_crop = timed(seconds, "canonical crop", cest.model.canonical_crop)
    for name in ("viewpoint_net", "shape_net", "reflectance_net", "illumination_net"):
        network = getattr(model, name)
        network.forward = timed(seconds, f"{name} forward", network.forward)
    torch.Tensor.backward = timed(seconds, "backward (all)", torch.Tensor.backward)
    optimizer.step = timed(seconds, "adam", optimizer.step)

    generator = torch.Generator().manual_seed(0)
    for _ in range(2):  # warm-up
        train_step(model, optimizer, batch, config.loss, generator)
    seconds.clear()
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, optimizer, batch, config.loss, generator)
    step = (time.perf_counter() - start) / args.steps
    parts = {name: round(value / args.steps / step, 3) for name, value in sorted(seconds.items(), key=lambda x: -x[1])}
    parts["rest (objective, transfers)"] = round(1 - sum(parts.values()), 3)
    print(json.dumps({"config": args.config, "overrides": args.set, "threads": args.threads,
                      "images_per_step": data.batch_size, "image_size": size, "step_seconds": round(step, 4),
                      "images_per_second": round(data.batch_size / step, 2), "share_of_step": parts}, indent=2))


if __name__ == "__main__":
    main()
