"""Training-step time of this checkout against another commit, side by side in one run; prints one JSON object.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/compare_train_step.py --base 1932c83 --threads 1 --rounds 4 \
        --config jobs/configs/synthetic_cpu.yaml --set data.clips_per_batch=8 --set data.frames_per_clip=2
    ... --this-set train.precision=bf16      # this checkout under bf16 autocast against the base in float32
    ... --landmark-warmup                    # landmark warm-up steps instead of full ones

The base commit is checked out into a temporary git worktree. Each round times both trees, one after the other
in fresh processes (model built, two warm-up steps, then --steps timed steps on one fixed batch of random images
with the mean face's landmarks), so that the machine's load changes hit both alike; the report gives each
tree's median step time (wall and process CPU: on a shared machine the CPU time is the steadier measure) over
all rounds and their ratios, and the loss terms of each tree's first step (the
same seed, so a speed-up that changes the losses shows here).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs inside each tree (its own cest package first on sys.path); uses only APIs both trees have.
TIMER = r"""
import json, statistics, sys, time, torch
config_path, steps, threads, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
overrides = sys.argv[5:]
torch.set_num_threads(threads)
from cest.config import load_config
from cest.model import CESTModel
from cest.morphable import load_sfm
from cest.render.camera import project
from cest.step import Batch, make_optimizer, train_step
config = load_config(config_path, overrides)
morphable = load_sfm()
torch.manual_seed(0)
model = CESTModel(config.model, morphable)
optimizer = make_optimizer(model, config.optim)
size, data = config.model.image_size, config.data
generator = torch.Generator().manual_seed(0)
viewpoint = torch.tensor([[0.6, 0, 0.3, 0, 0, 0, 0]])
landmarks = project(morphable.landmarks(morphable.mean_shape[None]), viewpoint, size)[..., :2]
batch = Batch(torch.rand(data.batch_size, 3, size, size, generator=generator),
              torch.ones(data.batch_size, 1, size, size), landmarks.expand(data.batch_size, -1, -1).contiguous(),
              torch.arange(data.clips_per_batch).repeat_interleave(data.frames_per_clip))
# A tree that predates train.precision trains in float32.
options = {"precision": config.train.precision} if getattr(config.train, "precision", "fp32") != "fp32" else {}
options |= {"geometry_only": True} if kind == "warmup" else {}
first = train_step(model, optimizer, batch, config.loss, torch.Generator().manual_seed(1), **options)
train_step(model, optimizer, batch, config.loss, torch.Generator().manual_seed(2), **options)
times, cpu_times = [], []
for step in range(steps):
    start, cpu_start = time.perf_counter(), time.process_time()
    train_step(model, optimizer, batch, config.loss, torch.Generator().manual_seed(3 + step), **options)
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu_start)
print(json.dumps({"seconds": times, "cpu_seconds": cpu_times, "first_step_terms": first}))
"""


def time_tree(tree: Path, args, overrides: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    kind = "warmup" if args.landmark_warmup else "full"
    result = subprocess.run([sys.executable, "-c", TIMER, str(Path(args.config).resolve()), str(args.steps),
                             str(args.threads), kind, *overrides], cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"timing {tree} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="commit (or ref) to compare this checkout with")
    parser.add_argument("--config", default=str(ROOT / "jobs/configs/synthetic_cpu.yaml"),
                        help="a config both trees can read (fields the base lacks fail there)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--this-set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="an override for this checkout only, e.g. train.precision=bf16 against a float32 base")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=3, help="base and this checkout alternate this many times")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--landmark-warmup", action="store_true",
                        help="time landmark warm-up steps (landmark and prior terms only) instead of full ones")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", args.base], cwd=ROOT, capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory() as scratch:
        base_tree = Path(scratch, "base")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base_tree), commit.stdout.strip()], cwd=ROOT,
                       check=True)
        try:
            runs = {"base": [], "this": []}
            for _ in range(args.rounds):
                runs["base"].append(time_tree(base_tree, args, args.set))
                runs["this"].append(time_tree(ROOT, args, args.set + args.this_set))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=True)
    report = {"base": commit.stdout.strip(), "config": args.config, "overrides": args.set,
              "overrides_this_checkout": args.this_set, "threads": args.threads,
              "load_average_1min": os.getloadavg()[0]}
    for key in ("seconds", "cpu_seconds"):
        medians = {name: median([t for run in found for t in run[key]]) for name, found in runs.items()}
        report[f"median_step_{key}"] = {name: round(value, 4) for name, value in medians.items()}
        report[f"speedup_{key}"] = round(medians["base"] / medians["this"], 3)
    print(json.dumps(report | {
        "first_step_terms": {name: found[0]["first_step_terms"] for name, found in runs.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
