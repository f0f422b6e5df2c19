"""What Ray Data's scheduling loop costs a training step that runs beside it, side by side; prints JSON.

    OMP_NUM_THREADS=1 python benchmarks/bench_ingest_overhead.py --data data/synth_train \
        [--config jobs/configs/cpu_recipe.yaml] [--steps 200] [--rounds 2] [--full | --read-only] \
        [--modes memory backoff]

Landmark warm-up steps (`--full`: full-objective steps; `--read-only`: no step, the fastest consumer, as the
tests' small models are) of the config's model on batches of the training dataset as jobs/train.py reads them
(a pass opened ahead, `jobs.data.OverlappedPasses`), in modes that take turns for `--rounds` rounds in one Ray
session:
- "memory": one batch read once and reused (no data pipeline running: the step's own speed; not with
  `--read-only`);
- "spinning": the dataset without `jobs.data_backoff.IdleBackoff` (Ray Data's loop as shipped);
- "fixed rest": the previous default, a 0.1 s sleep per loop iteration whenever output waits;
- "backoff": the dataset as the job reads it now.
Per mode: steps/s (median over rounds) and the data wait share.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cest.config import load_config  # noqa: E402
from cest.model import CESTModel  # noqa: E402
from cest.morphable import load_sfm  # noqa: E402
from cest.step import make_optimizer, train_step  # noqa: E402
from jobs.data import OverlappedPasses, to_batch, training_dataset  # noqa: E402
from jobs.data_backoff import IdleBackoff  # noqa: E402
from jobs.train import pass_starters  # noqa: E402


class FixedRest(IdleBackoff):
    """The rest as first shipped: 0.1 s whenever output waits, even while the consumer drains it fast."""

    def on_execution_step(self, executor) -> None:
        if not executor._consumer_idling():
            time.sleep(0.1)


def batches(data: str, config, rest: "type | None"):
    """Endless training batches of `data`, passes opened ahead, the loop resting by `rest` (None: not at all)."""
    dataset = training_dataset(data, config.data.frames_per_clip, config.model.image_size, seed=0)
    callbacks = dataset.context.custom_execution_callback_classes
    callbacks.remove(IdleBackoff)
    callbacks.extend([rest] if rest else [])
    next_pass = OverlappedPasses(pass_starters([dataset], config.data.clips_per_batch, 0)[0])
    try:
        while True:
            yield from next_pass()
    finally:
        next_pass.close()


def timed_steps(model, optimizer, config, source, steps: int, geometry_only: bool | None) -> dict:
    """`geometry_only` None: read the batches without a step."""
    waited, begin = 0.0, time.perf_counter()
    for _ in range(steps):
        asked = time.perf_counter()
        batch = next(source)
        waited += time.perf_counter() - asked
        if geometry_only is not None:
            train_step(model, optimizer, batch, config.loss, geometry_only=geometry_only)
    wall = time.perf_counter() - begin
    return {"steps_per_s": steps / wall, "wait_share": waited / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", default="jobs/configs/cpu_recipe.yaml")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--full", action="store_true", help="full-objective steps instead of warm-up steps")
    kind.add_argument("--read-only", action="store_true", help="read the batches without a step")
    parser.add_argument("--modes", nargs="+", choices=("memory", "spinning", "fixed rest", "backoff"),
                        help="only these modes (default: all; \"memory\" not with --read-only)")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    torch.manual_seed(0)
    config = load_config(args.config)
    model = CESTModel(config.model, load_sfm())
    optimizer = make_optimizer(model, config.optim)
    sources = {name: (lambda rest=rest: (to_batch(b) for b in batches(args.data, config, rest)))
               for name, rest in [("spinning", None), ("fixed rest", FixedRest), ("backoff", IdleBackoff)]}
    if not args.read_only:
        first = next(batches(args.data, config, IdleBackoff))
        sources = {"memory": lambda: iter(lambda: to_batch(first), None), **sources}
    sources = {name: make for name, make in sources.items() if name in (args.modes or sources)}
    geometry_only = None if args.read_only else not args.full
    results = {name: [] for name in sources}
    for _ in range(args.rounds):
        for name, make in sources.items():
            source = make()
            next(source)  # the pipeline started and its first batch read before the clock starts
            results[name].append(timed_steps(model, optimizer, config, source, args.steps, geometry_only))
            source.close() if hasattr(source, "close") else None
    summary = {name: {"steps_per_s": round(statistics.median(r["steps_per_s"] for r in runs), 2),
                      "wait_share": round(statistics.median(r["wait_share"] for r in runs), 3)}
               for name, runs in results.items()}
    print(json.dumps({"steps": args.steps, "rounds": args.rounds, "full": args.full, "read_only": args.read_only,
                      "torch_threads": torch.get_num_threads(), "modes": summary}, indent=1))


if __name__ == "__main__":
    main()
