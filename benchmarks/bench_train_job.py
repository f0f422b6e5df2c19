"""Training-job throughput: images/s and the share of step time spent waiting for data, end to end through
jobs/train.py (Ray Data ingest of Parquet clips, Ray Train workers, MLflow), per image size and worker count.

    python benchmarks/bench_train_job.py --data data/clips [--sizes 64 112] [--workers 1 2] [--steps 40]

Each setting is a fresh run of `--steps` steps; the numbers are the medians of its logged windows after the
first (which holds Ray Data's and the workers' start-up). Prints one JSON object.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import tracking  # noqa: E402
from jobs.train import main as train  # noqa: E402


def metric_medians(client, run_id: str, names: list[str]) -> dict[str, float]:
    """name -> the median of the run's metric train/<name> after its first window."""
    medians = {}
    for name in names:
        history = sorted(client.get_metric_history(run_id, tracking.TRAIN + name), key=lambda m: m.step)[1:]
        medians[name] = statistics.median(m.value for m in history) if history else float("nan")
    return medians


def timed_run(client, data: str, name: str, scratch: str, config: str, steps: int, size: int, workers: int,
              cpus_per_worker: float, extra: tuple[str, ...] = ()) -> tuple[str, dict[str, float], float]:
    """Train `steps` steps through jobs/train.py; (MLflow run id, medians of images/s and data-wait share after
    the first window, wall seconds including start-up)."""
    started = time.perf_counter()
    code = train(["--data", data, "--config", config, "--name", name, "--storage", f"{scratch}/runs",
                  "--steps", str(steps), "--workers", str(workers), "--cpus-per-worker", str(cpus_per_worker),
                  "--set", f"model.image_size={size}", "--set", "train.log_every=5",
                  "--set", f"train.image_every={steps}", "--set", f"train.checkpoint_every={steps}", *extra])
    if code != 0:
        raise SystemExit(f"{name}: training exited with {code}")
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    run_id = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{name}'")[0].info.run_id
    medians = metric_medians(client, run_id, ["images_per_second", "data_wait_share"])
    return run_id, medians, round(time.perf_counter() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/clips", help="output of `make preprocess`")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5)
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "jobs/configs/cpu_demo.yaml"))
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
        client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        for size in args.sizes:
            for workers in args.workers:
                _, medians, wall = timed_run(client, args.data, f"bench-{size}-{workers}", scratch, args.config,
                                             args.steps, size, workers, args.cpus_per_worker)
                results.append({"image_size": size, "workers": workers, "cpus_per_worker": args.cpus_per_worker,
                                "steps": args.steps, "images_per_second": round(medians["images_per_second"], 2),
                                "data_wait_share": round(medians["data_wait_share"], 4),
                                "wall_seconds_including_startup": wall})
    print(json.dumps({"benchmark": "train_job", "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
