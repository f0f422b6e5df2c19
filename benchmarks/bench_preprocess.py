"""End-to-end throughput of `make preprocess` on the real sample, as JSON.

    python benchmarks/bench_preprocess.py [--max-frames 96] [--input DIR]   (default: the registered sample clips)

Runs the job (embedded local Ray, dlib backend) with 1 and 2 CPUs, with and without tracking, plus a
decode-only job (the same decode stage, nothing after it) as the ceiling. Frames per second count the
frames written over the dataset's execution (Ray start-up excluded). Goals: 2 CPUs >= 1.8 x one CPU;
tracking >= 3 x detecting on every frame.

On a shared machine the wall-clock ratios depend on what else runs, so each run also reports the CPU
seconds used by this benchmark's process tree (driver, Ray, workers, decode helpers) and by everything
else on the machine during the run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cest.assets import fetch_dir  # noqa: E402
from pipelines.config import PreprocessConfig  # noqa: E402
from pipelines.inputs import discover_inputs  # noqa: E402
from pipelines.preprocess import run  # noqa: E402
from pipelines.stages import Work, decode_stage  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def process_tree_cpu_seconds(root: int) -> float:
    """utime + stime (+ waited-for children) of `root` and all its live descendants, from /proc."""
    parent, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
        ticks[int(entry)] = sum(int(value) for value in fields[11:15])
    children = collections.defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack.extend(children[pid])
    return total / TICKS


def machine_busy_cpu_seconds() -> float:
    user, nice, system, idle, iowait, *rest = (int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:])
    return (user + nice + system + sum(rest[:3])) / TICKS


@contextlib.contextmanager
def local_ray(cpus: int):
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        yield
    finally:
        ray.shutdown()


def measure(job) -> dict:
    """Run job() -> (frames, seconds); add this tree's and the rest of the machine's CPU seconds."""
    own, busy = process_tree_cpu_seconds(os.getpid()), machine_busy_cpu_seconds()
    frames, seconds = job()
    own = process_tree_cpu_seconds(os.getpid()) - own
    busy = machine_busy_cpu_seconds() - busy
    return {
        "frames": frames,
        "seconds": round(seconds, 2),
        "frames_per_second": round(frames / seconds, 2),
        "cpu_seconds_this_job": round(own, 1),
        "cpu_seconds_other_processes": round(max(0.0, busy - own), 1),
    }


def end_to_end(sample: str, cpus: int, tracking: bool, max_frames: int) -> dict:
    def job():
        with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as output:
            args = ["--input", sample, "--output", output, "--max-frames", str(max_frames)]
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
                assert run(args + ([] if tracking else ["--no-tracking"])) == 0
            summary = json.loads((Path(output) / "summary.json").read_text())
        return summary["run"]["frames"], summary["run"]["seconds"]

    with local_ray(cpus):
        return {"cpus": cpus, "tracking": tracking, **measure(job)}


def _decode_count(batch, cfg):
    import pyarrow as pa

    from pipelines.inputs import VideoInput

    works = [decode_stage(Work(VideoInput(**row)), cfg) for row in batch.to_pylist()]
    return pa.table({"frames": [0 if work.video is None else len(work.video.frames) for work in works]})


def decode_only(sample: str, cpus: int, max_frames: int) -> dict:
    import ray.data

    cfg = PreprocessConfig(max_frames=max_frames)
    rows = [dataclasses.asdict(item) for item in discover_inputs(sample)]

    def job():
        ray.data.DataContext.get_current().op_resource_reservation_enabled = False
        started = time.monotonic()
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        dataset = dataset.map_batches(_decode_count, batch_size=1, batch_format="pyarrow", fn_kwargs={"cfg": cfg})
        frames = dataset.sum("frames")
        return frames, time.monotonic() - started

    with local_ray(cpus):
        return {"cpus": cpus, **measure(job)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", help="videos directory (default: the sample clips, through cest.assets)")
    parser.add_argument("--max-frames", type=int, default=96, help="frames per clip (0: all)")
    args = parser.parse_args()
    args.input = args.input or str(fetch_dir("voxceleb_sample"))
    results = {
        "machine": {"cpus_visible": os.cpu_count(), "load_average_at_start": os.getloadavg(), "python": platform.python_version()},
        "max_frames_per_clip": args.max_frames,
        "decode_only": [decode_only(args.input, cpus, args.max_frames) for cpus in (1, 2)],
        "end_to_end": [
            end_to_end(args.input, cpus, tracking, args.max_frames) for tracking in (True, False) for cpus in (1, 2)
        ],
    }
    fps = {(row["cpus"], row["tracking"]): row["frames_per_second"] for row in results["end_to_end"]}
    results["speedup_2_vs_1_cpu"] = {
        "tracking": round(fps[2, True] / fps[1, True], 2),
        "detect_every_frame": round(fps[2, False] / fps[1, False], 2),
    }
    results["speedup_tracking_vs_detecting"] = {f"{cpus}_cpu": round(fps[cpus, True] / fps[cpus, False], 2) for cpus in (1, 2)}
    results["load_average_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
