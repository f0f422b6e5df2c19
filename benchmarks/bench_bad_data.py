"""Fault drill for the data-error policy (jobs/data_errors.py): training throughput and the share of step time
spent waiting for data on a corpus with bad rows, against the same corpus without them.

    python benchmarks/bench_bad_data.py --data data/clips [--files 100] [--rows-per-file 2] [--bad-share 0.01]
                                        [--truncated-files 1] [--steps 40] [--workers 1]

Writes two corpora of --files clip files from the real rows of --data (each row copied under new segment keys,
cycling through them): "clean", and "faulty", where --bad-share of the rows are broken (in turn: frames that do not
decode, NaN landmarks, fewer frames than a sample needs; tests/bad_clips.py) and --truncated-files files are cut
in half. Both are trained with jobs/train.py (Ray Data ingest, --workers Ray Train workers, a bound of twice the
bad share plus 5%); the numbers are the medians of the logged windows after the first (which holds the start-up),
and the skips the faulty run listed. Prints one JSON object.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from jobs.data import training_corpus  # noqa: E402
from jobs.tracking import TRAIN  # noqa: E402
from benchmarks.bench_train_job import timed_run  # noqa: E402
from tests.bad_clips import broken_rows, truncate, write_rows  # noqa: E402


def real_rows(data: str) -> list[dict]:
    corpus = training_corpus(data)
    return [row for file in corpus.files for row in pq.read_table(file, filesystem=corpus.fs).to_pylist()
            if row["num_frames"] >= 4]


def write_corpora(rows: list[dict], directory: Path, files: int, rows_per_file: int, bad_share: float,
                  truncated_files: int, seed: int = 0) -> int:
    """directory/clean and directory/faulty (see the module doc); returns the number of bad rows."""
    total = files * rows_per_file
    bad = set(np.random.default_rng(seed).choice(total, round(bad_share * total), replace=False).tolist())
    kinds = list(broken_rows(rows[0]))
    for name in ("clean", "faulty"):
        (directory / name / "clips").mkdir(parents=True)
    for f in range(files):
        clean, faulty = [], []
        for r in range(rows_per_file):
            index = f * rows_per_file + r
            base = rows[index % len(rows)]
            row = dict(base, segment_key=f"drill{index:06d}/{base['segment_key']}")
            clean.append(row)
            faulty.append(broken_rows(row)[kinds[index % len(kinds)]] if index in bad else row)
        write_rows(directory / "clean" / "clips" / f"part-{f:05d}.parquet", clean)
        write_rows(directory / "faulty" / "clips" / f"part-{f:05d}.parquet", faulty)
    for f in range(files - truncated_files, files):
        path = directory / "faulty" / "clips" / f"part-{f:05d}.parquet"
        truncate(path, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return len(bad)


def train_on(data: Path, name: str, scratch: str, args, bound: float, client) -> dict:
    run_id, medians, wall = timed_run(client, str(data), name, scratch, args.config, args.steps, args.size,
                                      args.workers, args.cpus_per_worker,
                                      ("--set", f"data.max_skipped_fraction={bound}"))
    skipped = client.get_metric_history(run_id, TRAIN + "skipped_samples")
    listed = Path(scratch, "runs", name, "skipped.jsonl")
    return {"images_per_second": round(medians["images_per_second"], 2),
            "data_wait_share": round(medians["data_wait_share"], 4),
            "skipped_samples_metric": skipped[-1].value if skipped else None,
            "skipped_jsonl_entries": len(listed.read_text().splitlines()) if listed.exists() else 0,
            "wall_seconds_including_startup": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/clips", help="output of `make preprocess` (the real rows)")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rows-per-file", type=int, default=2)
    parser.add_argument("--bad-share", type=float, default=0.01)
    parser.add_argument("--truncated-files", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--config", default=str(ROOT / "jobs/configs/cpu_demo.yaml"))
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as scratch:
        bad = write_corpora(real_rows(args.data), Path(scratch), args.files, args.rows_per_file, args.bad_share,
                            args.truncated_files)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
        client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        bound = min(1.0, 2 * args.bad_share + 0.05)
        results = {name: train_on(Path(scratch, name), f"drill-{name}", scratch, args, bound, client)
                   for name in ("clean", "faulty")}
    print(json.dumps({"benchmark": "bad_data", "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                      "files": args.files, "rows": args.files * args.rows_per_file, "bad_rows": bad,
                      "truncated_files": args.truncated_files, "steps": args.steps, "workers": args.workers,
                      "image_size": args.size, "results": results}, indent=1))


if __name__ == "__main__":
    main()
