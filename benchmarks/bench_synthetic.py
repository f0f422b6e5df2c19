"""Synthetic benchmark costs: generator throughput (images/s at 224) and evaluation seconds per 1,000 images.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_synthetic.py [--clips 8] [--frames 4] [--threads 2]

Prints JSON. The generator row draws and renders `clips` x `frames` images at 224 (the JPEG/PNG encoding of
the Parquet writer included); the evaluation rows score an untrained model on them with
`jobs.synthetic_eval.evaluate` at the CPU benchmark size (jobs/configs/synthetic_cpu.yaml, 64 px) and at the
default size (224 px, UV 128), scaled to 1,000 images. The machine's load average is printed with the numbers.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from cest.config import ModelConfig, load_config
from cest.model import build_model
from cest.morphable import load_sfm
from cest.synthetic import SyntheticFaces, SyntheticSpec, load_background_photos
from jobs.synthetic import clip_generator, clip_rows, generate
from jobs.synthetic_eval import evaluate

CPU_CONFIG = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "synthetic_cpu.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "load_average_before": os.getloadavg()[0]}

    faces = SyntheticFaces(load_sfm(), SyntheticSpec(), load_background_photos())
    count = args.clips * args.frames
    start = time.perf_counter()
    for index in range(args.clips):
        clip_rows(faces.clip(args.frames, clip_generator(0, index)), f"bench/s/{index:06d}/000", "{}")
    results["generator_images_per_s_224"] = round(count / (time.perf_counter() - start), 2)

    with tempfile.TemporaryDirectory() as directory:
        generate(Path(directory), args.clips, args.frames, seed=0, log=lambda _: None)
        for name, model_config in (("cpu_64px", load_config(CPU_CONFIG).model), ("default_224px", ModelConfig())):
            torch.manual_seed(0)
            model = build_model(model_config)
            report = evaluate(model, directory)
            results[f"evaluation_s_per_1000_images_{name}"] = report["seconds_per_1000_images"]
    results["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
