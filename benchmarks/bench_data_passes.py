"""Waiting for data at pass boundaries: plain passes against `jobs.data.OverlappedPasses`, side by side.

    python benchmarks/bench_data_passes.py --data data/clips [--passes 6] [--step-seconds 0.06] [--rounds 2]

Reads `--passes` passes of the training dataset (as jobs/train.py builds it: 64 px, 8 clips x 2 frames,
the config's shuffle buffer) back to back, sleeping `--step-seconds` per batch as a training step would (0.06 s:
a landmark warm-up step at 64 px on one core), once with each pass started when the one before ends and once
with it opened while the one before is read. The modes alternate for `--rounds` rounds in one Ray session.
Prints one JSON object: per mode, the seconds spent waiting for batches and their share of the wall time.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.data import OverlappedPasses, training_dataset  # noqa: E402
from jobs.train import pass_starters  # noqa: E402


def read_passes(next_pass, passes: int, step_seconds: float) -> dict:
    waited, batches, begin = 0.0, 0, time.perf_counter()
    for _ in range(passes):
        asked = time.perf_counter()
        iterator = iter(next_pass())  # an overlapped pass may still be opening: that is waiting too
        waited += time.perf_counter() - asked
        while True:
            asked = time.perf_counter()
            batch = next(iterator, None)
            waited += time.perf_counter() - asked
            if batch is None:
                break
            batches += 1
            time.sleep(step_seconds)
    wall = time.perf_counter() - begin
    return {"wall_s": round(wall, 2), "wait_s": round(waited, 2), "wait_share": round(waited / wall, 3),
            "batches": batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/clips", help="a preprocess output or synthetic set")
    parser.add_argument("--passes", type=int, default=6)
    parser.add_argument("--step-seconds", type=float, default=0.06)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    dataset = training_dataset(args.data, frames=2, size=64, seed=0)
    results = {"plain": [], "overlapped": []}
    for _ in range(args.rounds):
        start = pass_starters([dataset], clips=8, buffer=16)[0]
        results["plain"].append(read_passes(start, args.passes, args.step_seconds))
        overlapped = OverlappedPasses(pass_starters([dataset], clips=8, buffer=16)[0])
        results["overlapped"].append(read_passes(overlapped, args.passes, args.step_seconds))
        overlapped.close()
    print(json.dumps({"data": args.data, "passes": args.passes, "step_seconds": args.step_seconds,
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
